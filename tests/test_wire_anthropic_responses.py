"""The Anthropic Messages codec: the client's ``parse_response``.

Golden non-streamed bodies are written the way Anthropic's Messages and Tool use pages document
them (the tool-use example gains the ``type`` and ``usage`` every real answer carries); pins how
``stop_reason`` maps to our finish reasons, that cached input tokens are counted, that unknown
blocks are skipped, and that a broken body raises ``MalformedResponse``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller._errors import MalformedResponse
from controller.model import FinishReason, Message, Response, ToolCall, Usage
from tests.wire_anthropic_support import CLIENT, MODEL

# ------------------------------------------------------------ client: parse_response (golden)

GOLDEN_TEXT_RESPONSE = b"""{
  "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "model": "claude-3-7-sonnet-20250219",
  "role": "assistant",
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "type": "message",
  "usage": {"input_tokens": 2095, "output_tokens": 503}
}"""

GOLDEN_TOOL_USE_RESPONSE = b"""{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "model": "claude-opus-4-1-20250805",
  "stop_reason": "tool_use",
  "role": "assistant",
  "content": [
    {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
     "input": {"location": "San Francisco, CA", "unit": "celsius"}}
  ],
  "usage": {"input_tokens": 384, "output_tokens": 86, "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 6}
}"""


def test_parse_response_golden_text() -> None:
    assert CLIENT.parse_response(GOLDEN_TEXT_RESPONSE, MODEL) == Response(
        id="msg_013Zva2CMHLNnXjNJJKqJ2EF",
        model="claude-3-7-sonnet-20250219",
        message=Message(role="assistant", content="Hi! My name is Claude."),
        finish_reason=FinishReason.STOP,
        usage=Usage(2095, 503),
        provider="anthropic",
    )


def test_parse_response_golden_tool_use_counts_cached_input() -> None:
    response = CLIENT.parse_response(GOLDEN_TOOL_USE_RESPONSE, MODEL)
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(400, 86, 6)  # 6 of the 400 read from the cache
    assert response.message == Message(
        role="assistant",
        content="I'll check the current weather in San Francisco for you.",
        tool_calls=(
            ToolCall(
                id="toolu_01A09q90qw90lq917835lq9",
                name="get_weather",
                arguments='{"location": "San Francisco, CA", "unit": "celsius"}',
            ),
        ),
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("pause_turn", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: FinishReason) -> None:
    body = json.loads(GOLDEN_TEXT_RESPONSE)
    body["stop_reason"] = stop
    assert CLIENT.parse_response(json.dumps(body).encode(), MODEL).finish_reason is finish


def test_parse_response_skips_blocks_our_model_cannot_hold() -> None:
    body = json.loads(GOLDEN_TEXT_RESPONSE)
    body["content"].insert(0, {"type": "thinking", "thinking": "...", "signature": "s"})
    response = CLIENT.parse_response(json.dumps(body).encode(), MODEL)
    assert response.message.content == "Hi! My name is Claude."


def _broken(path: tuple[str | int, ...], value: Any) -> bytes:
    body = json.loads(GOLDEN_TOOL_USE_RESPONSE)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(body).encode()


_DELETE = object()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"type": "error", "error": {"type": "api_error", "message": "x"}}',
        _broken(("content",), _DELETE),
        _broken(("content",), "text"),
        _broken(("id",), _DELETE),
        _broken(("usage",), _DELETE),
        _broken(("usage", "output_tokens"), "86"),
        _broken(("stop_reason",), None),
        _broken(("content", 1, "input"), '{"location": "SF"}'),
        _broken(("content", 1, "id"), _DELETE),
        _broken(("content", 0, "type"), _DELETE),
        _broken(("content", 0), "text"),
    ],
)
def test_malformed_responses_raise_malformed_response(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        CLIENT.parse_response(body, MODEL)
