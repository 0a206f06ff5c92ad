"""The OpenAI Chat Completions codec: errors both directions, and malformed answers.

Every provider error survives being rendered by our server side and parsed back by the client
side, in a plain response and mid-stream; bodies and stream events that break the documented
format are rejected as ``MalformedResponse``.
"""

from __future__ import annotations

import json
import math

import pytest

from controller._errors import (
    AuthFailed,
    BadRequest,
    CallerError,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    RateLimited,
)
from controller.model import StreamChunk
from controller.wire._base import SSEEvent
from controller.wire.openai import OpenAIClientCodec, OpenAIServerCodec
from tests.wire_openai_support import events

# ---------------------------------------------------------------- errors: both directions

ERRORS: list[ProviderError] = [
    RateLimited("slow down", retry_after=7),
    RateLimited("slow down a little", retry_after=1.5),
    RateLimited("no hint"),
    AuthFailed("bad key", status=401),
    AuthFailed("suspended", status=403),
    Overloaded("overloaded", status=503),
    Overloaded("internal", status=500),
    BadRequest("bad field", status=400),
    ModelNotFound("no such model", status=404),
    ContextTooLong("too long"),
    ContentFiltered("filtered"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: f"{type(e).__name__}-{e.message}")
def test_errors_round_trip(err: ProviderError) -> None:
    status, body, headers = OpenAIServerCodec().render_error(err)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    back = OpenAIClientCodec().error_from(status, headers, json.dumps(body).encode(), "gpt-4o")
    assert type(back) is type(err)
    assert (back.message, back.status, back.model) == (err.message, status, "gpt-4o")
    if isinstance(err, RateLimited):
        assert isinstance(back, RateLimited)
        # Whole seconds on the wire, rounded up: never sooner than the provider asked.
        expected = None if err.retry_after is None else math.ceil(err.retry_after)
        assert back.retry_after == expected


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.2, "1"), (1.5, "2"), (7, "7"), (3.4e8, "340000000"), (0, "0")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    _, _, headers = OpenAIServerCodec().render_error(RateLimited("slow", retry_after=seconds))
    assert headers == {"Retry-After": header}


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "soon"])
def test_retry_after_that_is_not_a_finite_number_is_ignored(value: str) -> None:
    back = OpenAIClientCodec().error_from(429, {"Retry-After": value}, b"{}", "gpt-4o")
    assert isinstance(back, RateLimited)
    assert back.retry_after is None


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: f"{type(e).__name__}-{e.message}")
def test_in_stream_errors_round_trip(err: ProviderError) -> None:
    encoder = OpenAIServerCodec().stream_encoder(id="i", model="m")
    raw = encoder.start() + encoder.encode(StreamChunk(text="partial")) + encoder.error(err)
    decoder = OpenAIClientCodec().stream_decoder("m")
    *head, last = events(raw)
    assert [c for e in head for c in decoder.feed(e)] == [StreamChunk(text="partial")]
    with pytest.raises(ProviderError) as caught:
        decoder.feed(last)
    assert type(caught.value) is type(err)
    assert caught.value.message == err.message


def test_documented_in_stream_server_error() -> None:
    decoder = OpenAIClientCodec().stream_decoder("m")
    event = SSEEvent(
        data='{"error":{"message":"The server had an error while processing your request.",'
        '"type":"server_error","param":null,"code":null}}'
    )
    with pytest.raises(Overloaded, match="The server had an error"):
        decoder.feed(event)


# ---------------------------------------------------------------- malformed answers


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"id":"x"}',
        b'{"choices":[]}',
        b'{"choices":"nope"}',
        b'{"choices":[{"finish_reason":"stop"}]}',
        b'{"choices":[7]}',
        b'{"choices":[{"message":{"content":5},"finish_reason":"stop"}]}',
        b'{"choices":[{"message":{"content":"x"},"finish_reason":"exploded"}]}',
        b'{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":[1]}',
        b'{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":"9"}}',
        b'{"choices":[{"message":{"tool_calls":[{"id":"c"}]},"finish_reason":"tool_calls"}]}',
        b'{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":3}}]},'
        b'"finish_reason":"tool_calls"}]}',
        b"[]",
    ],
)
def test_malformed_responses(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        OpenAIClientCodec().parse_response(body, "m")


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent(data="{not json"),
        SSEEvent(data='{"id":"x"}'),
        SSEEvent(data="[1]"),
        SSEEvent(data='{"choices":["x"]}'),
        SSEEvent(data='{"choices":[{"delta":"x"}]}'),
        SSEEvent(data='{"choices":[{"delta":{"tool_calls":[5]}}]}'),
        SSEEvent(data='{"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]}'),
        SSEEvent(data='{"choices":[{"delta":{},"finish_reason":"weird"}]}'),
        SSEEvent(data='{"choices":[]}', event="ping"),
    ],
)
def test_malformed_stream_events(event: SSEEvent) -> None:
    with pytest.raises(MalformedResponse):
        OpenAIClientCodec().stream_decoder("m").feed(event)


def test_data_after_done_is_malformed_and_keepalives_are_not() -> None:
    decoder = OpenAIClientCodec().stream_decoder("m")
    assert decoder.feed(SSEEvent(data="")) == []
    assert decoder.feed(SSEEvent(data="[DONE]")) == []
    assert decoder.done is True
    with pytest.raises(MalformedResponse, match="after"):
        decoder.feed(SSEEvent(data='{"choices":[]}'))


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, AuthFailed), (402, AuthFailed), (403, AuthFailed), (404, ModelNotFound)],
)
def test_account_and_model_problems_are_the_providers_faults_not_the_callers(
    status: int, cls: type[ProviderError]
) -> None:
    """The model and the credentials come from the gateway's config: a 402 (out of credit) or a
    404 (a retired model) must fail over and count against the provider, never reach the client
    as its own 400 while a healthy backup sits idle."""
    err = OpenAIClientCodec().error_from(status, {}, b'{"error": {"message": "no"}}', "m")
    assert type(err) is cls
    assert not isinstance(err, CallerError)
    assert err.error_type in ("auth", "model_not_found")
