"""Shared fixtures for the OpenAI Chat Completions codec tests.

The documented ``get_current_weather`` tool (from OpenAI's function-calling guide) and the small
SSE helpers that feed raw stream bytes through our parser and the client-side stream decoder;
imported by the ``test_wire_openai_*`` modules.
"""

from __future__ import annotations

from typing import Any

from controller.model import StreamChunk, ToolDefinition
from controller.wire._base import SSEEvent
from controller.wire._sse import SSEParser
from controller.wire.openai import OpenAIClientCodec

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
WEATHER_TOOL = ToolDefinition(
    name="get_current_weather",
    description="Get the current weather in a given location",
    parameters=WEATHER_PARAMETERS,
)


def events(raw: bytes) -> list[SSEEvent]:
    return SSEParser().feed(raw)


def decode_all(raw: bytes, model: str = "gpt-4o-mini") -> tuple[list[StreamChunk], bool]:
    decoder = OpenAIClientCodec().stream_decoder(model)
    chunks: list[StreamChunk] = []
    for event in events(raw):
        chunks += decoder.feed(event)
    return chunks, decoder.done


def sse_lines(*payloads: str) -> bytes:
    return "".join(f"data: {p}\n\n" for p in payloads).encode()
