"""The OpenAI Chat Completions codec: round trips through both directions.

Requests, responses and streams encoded by one side decode to the same values on the other; our
server-side bytes validate against the official ``openai`` SDK's models, and answers from
OpenAI-compatible servers (Ollama, vLLM) that omit optional fields still decode.
"""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from controller._clock import FakeClock
from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)
from controller.wire._sse import SSEParser
from controller.wire.openai import OpenAIClientCodec, OpenAIServerCodec, stream_usage_requested
from tests.wire_openai_support import WEATHER_TOOL, decode_all, events, sse_lines


def conversation() -> Request:
    """Tool calls and results in our model, as a conversation begun elsewhere would hold them."""
    return Request(
        system="You are a weather bot.",
        messages=(
            Message(role="user", content="Weather in Boston and Paris?"),
            Message(
                role="assistant",
                content="Checking both.",
                tool_calls=(
                    ToolCall(
                        id="call_1",
                        name="get_current_weather",
                        arguments='{"location":"Boston, MA"}',
                    ),
                    ToolCall(
                        id="call_2",
                        name="get_current_weather",
                        arguments='{ "location" : "Paris" }',
                    ),
                ),
            ),
            Message(role="tool", content='{"temp": 22}', tool_call_id="call_1"),
            Message(role="tool", content="upstream timeout", tool_call_id="call_2", is_error=True),
            Message(role="assistant", content="Boston is 22C; Paris failed."),
            Message(role="user", content="Thanks"),
        ),
        tools=(WEATHER_TOOL, ToolDefinition(name="noop")),
        tool_choice="get_current_weather",
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop=("END", "STOP"),
    )


# ---------------------------------------------------------------- round trips


def _round_trip(request: Request) -> Request:
    call = OpenAIClientCodec().build(request, "gpt-4o", "k")
    model, decoded = OpenAIServerCodec().parse_request(json.loads(json.dumps(call.body)))
    assert model == "gpt-4o"
    return decoded


def test_conversation_with_tools_survives_the_format() -> None:
    """What lets a conversation begun on another provider continue on OpenAI and back."""
    original = conversation()
    assert _round_trip(original) == original
    streaming = Request(messages=original.messages, stream=True)
    assert _round_trip(streaming) == streaming


@pytest.mark.parametrize("choice", ["auto", "none", "required", "get_current_weather"])
def test_tool_choice_round_trips(choice: str) -> None:
    request = Request(
        messages=(Message(role="user", content="x"),), tools=(WEATHER_TOOL,), tool_choice=choice
    )
    assert _round_trip(request).tool_choice == choice


@pytest.mark.parametrize(
    "message",
    [
        Message(role="assistant", content="plain answer"),
        Message(
            role="assistant",
            content="",
            tool_calls=(ToolCall(id="call_9", name="lookup", arguments='{"q": "a\\u00e9"}'),),
        ),
        Message(
            role="assistant",
            content="Let me check.",
            tool_calls=(
                ToolCall(id="a", name="one", arguments="{}"),
                ToolCall(id="b", name="two", arguments='{"n":2}'),
            ),
        ),
    ],
)
def test_response_round_trips_and_validates_with_the_sdk(message: Message) -> None:
    finish = FinishReason.TOOL_CALLS if message.tool_calls else FinishReason.LENGTH
    original = Response(
        id="chatcmpl-7",
        model="gpt-4o-2024-08-06",
        message=message,
        finish_reason=finish,
        usage=Usage(11, 5),
        provider="openai",
    )
    body = OpenAIServerCodec(clock=FakeClock()).render_response(original)
    sdk = ChatCompletion.model_validate(body)
    assert sdk.created == 1_800_000_000
    assert sdk.usage is not None
    assert sdk.usage.total_tokens == 16
    wire = json.dumps(body).encode()
    assert OpenAIClientCodec().parse_response(wire, "gpt-4o") == original


STREAM_CHUNKS = [
    StreamChunk(text="Hel"),
    StreamChunk(text="lo"),
    StreamChunk(tool_call=ToolCallDelta(index=0, id="call_1", name="get_weather")),
    StreamChunk(tool_call=ToolCallDelta(index=0, arguments='{"city":')),
    StreamChunk(tool_call=ToolCallDelta(index=0, arguments='"Paris"}')),
    StreamChunk(tool_call=ToolCallDelta(index=1, id="call_2", name="noop", arguments="{}")),
    StreamChunk(finish_reason=FinishReason.TOOL_CALLS),
    StreamChunk(usage=Usage(30, 12)),
]


def _encode(chunks: list[StreamChunk], *, usage: bool = True) -> bytes:
    server = OpenAIServerCodec(clock=FakeClock())
    encoder = server.stream_encoder(id="chatcmpl-s", model="gpt-4o", include_usage=usage)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


def test_stream_round_trip_gives_the_same_chunks() -> None:
    raw = _encode(STREAM_CHUNKS)
    decoder = OpenAIClientCodec().stream_decoder("gpt-4o")
    parser = SSEParser()
    decoded: list[StreamChunk] = []
    for i in range(0, len(raw), 7):  # bytes arrive in arbitrary slices
        for event in parser.feed(raw[i : i + 7]):
            assert decoder.done is False
            decoded += decoder.feed(event)
    assert decoded == STREAM_CHUNKS
    assert decoder.done is True


def test_stream_bytes_are_what_the_api_sends() -> None:
    raw = _encode([StreamChunk(text="Hi"), StreamChunk(finish_reason=FinishReason.STOP)])
    frame = (
        '{"id":"chatcmpl-s","object":"chat.completion.chunk","created":1800000000,"model":"gpt-4o",'
    )
    assert raw == sse_lines(
        frame + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        '"logprobs":null,"finish_reason":null}]}',
        frame
        + '"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
        frame + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
        "[DONE]",
    )
    for event in events(raw)[:-1]:
        ChatCompletionChunk.model_validate_json(event.data)


def test_usage_chunk_only_when_requested() -> None:
    chunks = [StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(3, 4))]
    with_usage = events(_encode(chunks))
    usage_chunk = ChatCompletionChunk.model_validate_json(with_usage[-2].data)
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 3
    without = [e.data for e in events(_encode(chunks, usage=False))]
    assert len(without) == 3
    assert all('"usage"' not in data for data in without)
    assert stream_usage_requested({"stream": True, "stream_options": {"include_usage": True}})
    assert not stream_usage_requested({"stream": True})


def test_encoder_starts_itself_and_follows_the_served_model() -> None:
    encoder = OpenAIServerCodec(clock=FakeClock()).stream_encoder(id="i", model="alias")
    raw = encoder.encode(StreamChunk(text="x", model="gpt-4o-2024-08-06")) + encoder.end()
    parsed = [json.loads(e.data) for e in events(raw)[:-1]]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[1]["model"] == "gpt-4o-2024-08-06"
    assert encoder.start() == b""


def test_decoder_reports_a_different_served_model_once() -> None:
    raw = sse_lines(
        '{"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"a"}}]}',
        '{"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"b"}}]}',
    )
    chunks, done = decode_all(raw, model="gpt-4o")
    assert chunks == [StreamChunk(text="a", model="gpt-4o-2024-08-06"), StreamChunk(text="b")]
    assert done is False


def test_compatible_stream_without_ids_usage_or_done() -> None:
    """Ollama/vLLM style: no id, usage on the finish chunk, no ``[DONE]``."""
    raw = sse_lines(
        '{"choices":[{"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}',
        '{"choices":[{"delta":{},"finish_reason":"length"}],'
        '"usage":{"prompt_tokens":5,"completion_tokens":7}}',
    )
    chunks, done = decode_all(raw)
    assert chunks == [
        StreamChunk(text="Hi"),
        StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(5, 7)),
    ]
    assert done is False


def test_compatible_response_without_optional_fields() -> None:
    body = b'{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":null}]}'
    response = OpenAIClientCodec(provider_kind="ollama").parse_response(body, "llama3")
    assert response == Response(
        id="",
        model="llama3",
        message=Message(role="assistant", content="ok"),
        finish_reason=FinishReason.STOP,
        provider="ollama",
    )


def test_legacy_function_call_finish_maps_to_tool_calls() -> None:
    body = b'{"choices":[{"message":{"content":"x"},"finish_reason":"function_call"}]}'
    assert OpenAIClientCodec().parse_response(body, "m").finish_reason is FinishReason.TOOL_CALLS
