"""Shared fixtures for the Anthropic Messages codec tests (``tests/test_wire_anthropic_*.py``).

The model name, the codec pair, the weather tool, the SDK stream-event adapter, and the helpers
that parse/decode SSE bytes and build the tool-using conversation those tests round-trip.
"""

from __future__ import annotations

from typing import Any

from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from controller.model import Message, Request, StreamChunk, ToolCall, ToolDefinition
from controller.wire._base import SSEEvent, StreamDecoder
from controller.wire._sse import SSEParser
from controller.wire.anthropic import AnthropicClientCodec, AnthropicServerCodec

MODEL = "claude-opus-4-1-20250805"
CLIENT = AnthropicClientCodec()
SERVER = AnthropicServerCodec()
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
    },
    "required": ["location"],
}
WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather in a given location",
    parameters=WEATHER_SCHEMA,
)
EVENT_ADAPTER: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def _events(raw: str | bytes) -> list[SSEEvent]:
    return SSEParser().feed(raw.encode() if isinstance(raw, str) else raw)


def _decode(raw: str | bytes, decoder: StreamDecoder | None = None) -> list[StreamChunk]:
    decoder = decoder or CLIENT.stream_decoder(MODEL)
    return [chunk for event in _events(raw) for chunk in decoder.feed(event)]


def _conversation() -> Request:
    """A tool-using conversation as another provider (say OpenAI) would leave it in our model."""
    return Request(
        system="You are a weather bot.",
        messages=(
            Message(role="user", content="Weather in Paris and Rome?"),
            Message(
                role="assistant",
                content="Checking both.",
                tool_calls=(
                    ToolCall(id="call_1", name="get_weather", arguments='{"location": "Paris"}'),
                    ToolCall(id="call_2", name="get_weather", arguments='{"location": "Rome"}'),
                ),
            ),
            Message(role="tool", tool_call_id="call_1", content="18C, cloudy"),
            Message(role="tool", tool_call_id="call_2", content="no station", is_error=True),
            Message(role="user", content="And tomorrow?"),
            Message(
                role="assistant",
                tool_calls=(ToolCall(id="call_3", name="get_weather", arguments="{}"),),
            ),
            Message(role="tool", tool_call_id="call_3", content="sunny"),
        ),
        tools=(WEATHER,),
        tool_choice="auto",
        max_tokens=512,
        temperature=0.25,
        top_p=0.9,
        stop=("END",),
    )
