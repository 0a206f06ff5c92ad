"""The Gemini codec against itself: requests, answers, streams and errors round trip.

These round trips prove that what our server side renders is what our client side reads back,
with tool calls and results intact: a conversation begun on another provider continues on Gemini
unchanged, streamed tool calls are sent whole and assemble the same, and every error keeps its
type, whether returned as a body or raised mid-stream.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
)
from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    assemble,
    text_message,
)
from controller.wire._sse import SSEParser
from tests.wire_gemini_support import (
    CLIENT,
    CLOCK,
    GOLDEN_REQUEST,
    MODEL,
    SERVER,
    WEATHER,
    decode_stream,
    wire_round_trip,
)


def encode_stream(chunks: list[StreamChunk], *, model: str = MODEL) -> bytes:
    encoder = SERVER.stream_encoder(id="resp-1", model=model)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


# ----------------------------------------------------------------------------- round trips

CONVERSATION = Request(
    system="You route weather questions.",
    messages=(
        text_message("user", "Weather in Paris and Rome, and the time?"),
        Message(
            role="assistant",
            content="Checking three things.",
            tool_calls=(
                ToolCall(id="call_abc", name="get_weather", arguments='{"city":"Paris"}'),
                ToolCall(id="call_def", name="get_weather", arguments='{"city":"Rome","unit":"C"}'),
                ToolCall(id="toolu_01", name="get_time", arguments="{}"),
            ),
        ),
        Message(role="tool", tool_call_id="call_def", content="24C"),
        Message(role="tool", tool_call_id="call_abc", content='{"temp": 18}'),
        Message(role="tool", tool_call_id="toolu_01", content="timeout", is_error=True),
        text_message("assistant", "Paris 18C, Rome 24C; the clock failed."),
        text_message("user", "Thanks!\nBye."),
    ),
    tools=(WEATHER, CLOCK),
    tool_choice="auto",
    max_tokens=512,
    temperature=0.7,
    top_p=0.95,
    stop=("STOP", "END"),
)


def test_conversation_with_tools_round_trips_unchanged() -> None:
    """A conversation begun on another provider continues on Gemini with its calls intact."""
    assert wire_round_trip(CONVERSATION) == CONVERSATION
    assert wire_round_trip(replace(CONVERSATION, stream=True)) == CONVERSATION


@pytest.mark.parametrize(
    "request_",
    [
        Request(messages=(text_message("user", "hi"),)),
        Request(messages=(text_message("user", ""), text_message("assistant", ""))),
        Request(
            messages=(text_message("user", "a"), text_message("user", "b")), tool_choice="none"
        ),
        Request(messages=(text_message("user", "t"),), temperature=0.0, max_tokens=1),
    ],
)
def test_small_requests_round_trip(request_: Request) -> None:
    assert wire_round_trip(request_) == request_


def test_gemini_native_conversation_is_stable_after_one_pass() -> None:
    _, first = SERVER.parse_request(GOLDEN_REQUEST, MODEL)
    assert wire_round_trip(first) == first


@pytest.mark.parametrize(
    "response",
    [
        Response(
            id="r-1",
            model="gemini-2.5-flash-001",
            message=text_message("assistant", "Hello there."),
            finish_reason=FinishReason.STOP,
            usage=Usage(12, 3),
        ),
        Response(
            id="r-2",
            model=MODEL,
            message=Message(
                role="assistant",
                content="Calling.",
                tool_calls=(
                    ToolCall(id="call_9", name="get_weather", arguments='{"city":"Oslo"}'),
                    ToolCall(id="call_10", name="get_time", arguments="{}"),
                ),
            ),
            finish_reason=FinishReason.TOOL_CALLS,
            usage=Usage(50, 20),
        ),
        Response(
            id="r-3",
            model=MODEL,
            message=text_message("assistant", "Cut sh"),
            finish_reason=FinishReason.LENGTH,
        ),
        Response(
            id="r-4",
            model=MODEL,
            message=Message(role="assistant"),
            finish_reason=FinishReason.CONTENT_FILTER,
            usage=Usage(7, 0),
        ),
    ],
)
def test_rendered_responses_parse_back(response: Response) -> None:
    body = json.dumps(SERVER.render_response(response)).encode()
    assert CLIENT.parse_response(body, "requested-model") == response


def test_rendered_response_has_the_documented_shape() -> None:
    response = Response(
        id="r-1",
        model=MODEL,
        message=Message(role="assistant", tool_calls=(ToolCall(id="c", name="get_time"),)),
        finish_reason=FinishReason.TOOL_CALLS,
        usage=Usage(3, 4),
    )
    assert SERVER.render_response(response) == {
        "candidates": [
            {
                "content": {
                    "parts": [{"functionCall": {"name": "get_time", "args": {}, "id": "c"}}],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        "modelVersion": MODEL,
        "responseId": "r-1",
    }


def test_text_stream_round_trips_chunk_for_chunk() -> None:
    chunks = [
        StreamChunk(text="Hel", model="gemini-2.5-flash-001"),
        StreamChunk(text="lo, "),
        StreamChunk(text="world.", finish_reason=FinishReason.STOP, usage=Usage(5, 3)),
    ]
    raw = encode_stream(chunks)
    assert raw.startswith(b"data: {")
    assert decode_stream(raw) == chunks


def test_tool_call_stream_round_trips_chunk_for_chunk() -> None:
    call = ToolCallDelta(index=0, id="call_a", name="get_weather", arguments='{"city":"Paris"}')
    chunks = [
        StreamChunk(text="Looking it up."),
        StreamChunk(tool_call=call, finish_reason=FinishReason.TOOL_CALLS, usage=Usage(10, 7)),
    ]
    assert decode_stream(encode_stream(chunks)) == chunks


def test_fragmented_tool_call_deltas_are_sent_whole_and_assemble_the_same() -> None:
    """OpenAI streams arguments in pieces; Gemini sends a call whole, so the encoder buffers."""
    chunks = [
        StreamChunk(tool_call=ToolCallDelta(index=0, id="c1", name="get_weather")),
        StreamChunk(tool_call=ToolCallDelta(index=0, arguments='{"city":')),
        StreamChunk(tool_call=ToolCallDelta(index=1, id="c2", name="get_time", arguments="{}")),
        StreamChunk(tool_call=ToolCallDelta(index=0, arguments='"Rome"}')),
        StreamChunk(finish_reason=FinishReason.TOOL_CALLS),
        StreamChunk(usage=Usage(40, 12)),  # usage after the finish, as OpenAI sends it
    ]
    decoded = decode_stream(encode_stream(chunks))
    assert decoded[-1] == StreamChunk(usage=Usage(40, 12))
    expected = assemble(chunks, id="resp-1", model=MODEL)
    assert assemble(decoded, id="resp-1", model=MODEL) == expected
    assert expected.message.tool_calls[0].arguments == '{"city":"Rome"}'


def test_unfinished_stream_flushes_buffered_calls_at_end_without_a_finish() -> None:
    encoder = SERVER.stream_encoder(id="r", model=MODEL)
    delta = ToolCallDelta(index=0, id="c1", name="get_time", arguments="{}")
    assert encoder.encode(StreamChunk(tool_call=delta)) == b""
    decoded = decode_stream(encoder.end())
    assert decoded == [StreamChunk(tool_call=delta)]
    assert all(c.finish_reason is None for c in decoded)
    assert SERVER.stream_encoder(id="r", model=MODEL).end() == b""


def test_usage_before_the_finish_is_reported_with_the_finish() -> None:
    chunks = [
        StreamChunk(text="a", usage=Usage(1, 1)),
        StreamChunk(finish_reason=FinishReason.STOP),
    ]
    assert decode_stream(encode_stream(chunks)) == [
        StreamChunk(text="a"),
        StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(1, 1)),
    ]


# ----------------------------------------------------------------------------- errors round trip


@pytest.mark.parametrize(
    "err",
    [
        RateLimited("Resource has been exhausted (e.g. check quota).", retry_after=2.5),
        RateLimited("slow down"),
        RateLimited("for a long while", retry_after=3.4e8),
        AuthFailed("API key not valid. Please pass a valid API key."),
        AuthFailed("Permission denied.", status=403),
        Overloaded("The model is overloaded. Please try again later."),
        Overloaded("An internal error has occurred.", status=500),
        BadRequest("* GenerateContentRequest.contents: contents is not specified"),
        ContextTooLong("prompt is too long: 210000 tokens > 200000 maximum"),
        ContextTooLong(
            "The input token count (5) exceeds the maximum number of tokens allowed (4)."
        ),
        ContentFiltered("prompt blocked by the provider: SAFETY"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_round_trip_by_type(err: ProviderError) -> None:
    status, body, headers = SERVER.render_error(err)
    raw = json.dumps(body).encode()
    back = CLIENT.error_from(status, headers, raw, MODEL)
    assert type(back) is type(err)
    assert back.status == status
    assert err.message in back.message
    without_header = CLIENT.error_from(status, {}, raw, MODEL)
    assert type(without_header) is type(err)
    if isinstance(err, RateLimited):
        assert isinstance(back, RateLimited)
        assert isinstance(without_header, RateLimited)
        # Retry-After is whole seconds rounded up (and wins); RetryInfo keeps the fraction.
        whole = None if err.retry_after is None else math.ceil(err.retry_after)
        assert back.retry_after == whole
        assert without_header.retry_after == err.retry_after
    # ...and the same error raised mid-stream keeps its type too.
    event = SSEParser().feed(SERVER.stream_encoder(id="r", model=MODEL).error(err))
    with pytest.raises(type(err)) as info:
        CLIENT.stream_decoder(MODEL).feed(event[0])
    assert type(info.value) is type(err)


def test_rendered_errors_use_googles_shape() -> None:
    status, body, headers = SERVER.render_error(RateLimited("quota", retry_after=7))
    assert status == 429
    assert headers == {"Retry-After": "7"}
    assert body == {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
        }
    }
    status, body, headers = SERVER.render_error(Overloaded("busy"))
    assert (status, body["error"]["status"], headers) == (503, "UNAVAILABLE", {})
    assert SERVER.render_error(AuthFailed("no"))[1]["error"]["status"] == "UNAUTHENTICATED"
    assert SERVER.render_error(BadRequest("bad"))[1]["error"]["status"] == "INVALID_ARGUMENT"
