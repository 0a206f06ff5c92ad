"""The Anthropic Messages codec: errors.

Pins that every provider error round trips through ``render_error`` and ``error_from`` and as an
in-stream error event, the Anthropic status codes and error types we render, the golden body from
Anthropic's Errors page, and how ``error_from`` reads ``retry-after`` and non-JSON bodies.
"""

from __future__ import annotations

import json

import pytest
from anthropic.types import ErrorResponse as SDKErrorResponse

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from controller.model import StreamChunk
from tests.wire_anthropic_support import CLIENT, MODEL, SERVER, _decode

# --------------------------------------------------------------------------------- errors

ERRORS: list[ProviderError] = [
    RateLimited("rate limited", retry_after=7.0),
    RateLimited("rate limited, no hint"),
    AuthFailed("invalid x-api-key"),
    AuthFailed("key suspended", status=403),
    Overloaded("Overloaded"),
    Overloaded("Internal server error", status=500),
    BadRequest("messages: roles must alternate"),
    ModelNotFound("model not found", status=404),
    ContextTooLong("prompt is too long: 208310 tokens > 200000 maximum"),
    ContextTooLong("context window exceeded"),
    ContentFiltered("Output blocked by content filtering policy"),
    ContentFiltered("unsafe"),
    BadRequest("too big", status=413),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: f"{type(e).__name__}:{e.message}")
def test_every_error_round_trips_through_render_and_error_from(err: ProviderError) -> None:
    status, body, headers = SERVER.render_error(err)
    back = CLIENT.error_from(status, headers, json.dumps(body).encode(), MODEL)
    assert type(back) is type(err)
    assert err.message in back.message
    assert back.status == status
    assert back.model == MODEL
    if isinstance(err, RateLimited):
        assert isinstance(back, RateLimited)
        assert back.retry_after == err.retry_after


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: f"{type(e).__name__}:{e.message}")
def test_every_error_round_trips_as_an_in_stream_event(err: ProviderError) -> None:
    encoder = SERVER.stream_encoder(id="m", model=MODEL)
    decoder = CLIENT.stream_decoder(MODEL)
    _decode(encoder.start() + encoder.encode(StreamChunk(text="partial")), decoder)
    with pytest.raises(ProviderError) as caught:
        _decode(encoder.error(err), decoder)
    assert type(caught.value) is type(err)
    if SERVER.render_error(err)[0] != 413:  # request_too_large is documented, not in the SDK
        SDKErrorResponse.model_validate(SERVER.render_error(err)[1])


@pytest.mark.parametrize(
    ("err", "status", "error_type"),
    [
        (RateLimited("x", retry_after=7.0), 429, "rate_limit_error"),
        (AuthFailed("x"), 401, "authentication_error"),
        (AuthFailed("x", status=403), 403, "permission_error"),
        (Overloaded("x"), 529, "overloaded_error"),
        (Overloaded("x", status=500), 500, "api_error"),
        (BadRequest("x"), 400, "invalid_request_error"),
        (ModelNotFound("x"), 404, "not_found_error"),
        (BadRequest("x", status=413), 413, "request_too_large"),
        (ContextTooLong("x"), 400, "invalid_request_error"),
        (MalformedResponse("x"), 502, "api_error"),
        (ProviderTimeout("x", phase="total"), 504, "timeout_error"),
    ],
)
def test_render_error_uses_anthropic_status_and_type(
    err: ProviderError, status: int, error_type: str
) -> None:
    rendered = SERVER.render_error(err)
    assert rendered[0] == status
    assert rendered[1]["type"] == "error"
    assert rendered[1]["error"]["type"] == error_type
    assert rendered[2] == ({"Retry-After": "7"} if isinstance(err, RateLimited) else {})


def test_golden_error_body_from_the_errors_page() -> None:
    body = (
        b'{"type": "error", "error": {"type": "not_found_error", "message": '
        b'"The requested resource could not be found."}, '
        b'"request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}'
    )
    err = CLIENT.error_from(404, {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}, body, MODEL)
    assert type(err) is ModelNotFound  # the model comes from the gateway's config: a fault
    assert err.message == "The requested resource could not be found."
    assert err.status == 404


def test_error_from_reads_retry_after_and_survives_non_json_bodies() -> None:
    limited = CLIENT.error_from(429, {"retry-after": "12"}, b"{}", MODEL)
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 12.0
    html = CLIENT.error_from(413, {}, b"<html>413 Request Entity Too Large</html>", MODEL)
    assert type(html) is BadRequest
    assert html.status == 413
    assert "413 Request Entity Too Large" in html.message
    overloaded = CLIENT.error_from(529, {}, b"", MODEL)
    assert type(overloaded) is Overloaded
    billing = b'{"type":"error","error":{"type":"billing_error","message":"credit balance low"}}'
    assert type(CLIENT.error_from(400, {}, billing, MODEL)) is AuthFailed
