"""The Gemini codec against bad input: malformed provider bodies and bad client requests.

Malformed answers and stream events from the provider raise ``MalformedResponse`` (or the mapped
error when a 200 body carries one); bad requests from clients raise a 400 ``BadRequest`` that
names the offending field the way Google's ``INVALID_ARGUMENT`` messages do, while unknown
fields are ignored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller._errors import BadRequest, MalformedResponse, RateLimited
from controller.model import Reasoning, Request, ToolDefinition, text_message
from controller.wire import SSEEvent
from tests.wire_gemini_support import CLIENT, MODEL, SERVER


def bad_request(body: Any) -> str:
    with pytest.raises(BadRequest) as info:
        SERVER.parse_request(body, MODEL)
    assert type(info.value) is BadRequest
    assert info.value.status == 400
    return info.value.message


# ----------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"candidates": {}}',
        b'{"candidates": ["x"]}',
        b'{"candidates": [{"content": {"parts": {}}, "finishReason": "STOP"}]}',
        b'{"candidates": [{"content": {"parts": ["x"]}, "finishReason": "STOP"}]}',
        b'{"candidates": [{"content": {"parts": [{"text": 5}]}, "finishReason": "STOP"}]}',
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]},'
        b' "finishReason": "STOP"}]}',
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]},'
        b' "finishReason": "STOP"}]}',
        b'{"candidates": [{"content": {"parts": [{"text": "no finish"}]}}]}',
        b'{"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],'
        b' "usageMetadata": {"promptTokenCount": "4"}}',
        b'{"error": "boom"}',
    ],
)
def test_malformed_bodies_raise_malformed_response(body: bytes) -> None:
    with pytest.raises(MalformedResponse) as info:
        CLIENT.parse_response(body, MODEL)
    assert info.value.model == MODEL


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '"text"',
        '{"candidates": [{"finishReason": 3}]}',
        '{"candidates": [{"content": {"parts": [{"functionCall": {"name": 1}}]}}]}',
        '{"usageMetadata": {"candidatesTokenCount": true}}',
    ],
)
def test_malformed_stream_events_raise_malformed_response(data: str) -> None:
    with pytest.raises(MalformedResponse):
        CLIENT.stream_decoder(MODEL).feed(SSEEvent(data=data))


def test_error_in_a_200_body_is_raised_as_the_mapped_error() -> None:
    body = b'{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}'
    with pytest.raises(RateLimited):
        CLIENT.parse_response(body, MODEL)


# ----------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{oops", "Invalid JSON payload"),
        ([], "Invalid JSON payload"),
        ({}, "contents"),
        ({"contents": []}, "contents"),
        ({"contents": "hi"}, "'contents'"),
        ({"contents": ["hi"]}, "'contents[0]'"),
        ({"contents": [{"role": "user"}]}, "contents[0].parts"),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents[0].role"),
        ({"contents": [{"role": 1, "parts": [{"text": "x"}]}]}, "contents[0].role"),
        ({"contents": [{"parts": [{"text": 3}]}]}, "contents[0].parts[0].text"),
        ({"contents": [{"parts": [{"inlineData": {}}]}]}, "contents[0].parts[0]"),
        (
            {"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]},
            "contents[0].parts[0].functionCall.name",
        ),
        (
            {
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": 1}}]}
                ]
            },
            "contents[0].parts[0].functionCall.args",
        ),
        (
            {"contents": [{"parts": [{"functionResponse": {"response": {}}}]}]},
            "contents[0].parts[0].functionResponse.name",
        ),
        (
            {"contents": [{"role": "model", "parts": [{"functionResponse": {"name": "f"}}]}]},
            "contents[0].parts[0]",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"maxOutputTokens": "9"},
            },
            "generationConfig.maxOutputTokens",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": True}},
            "generationConfig.temperature",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"stopSequences": [1]}},
            "generationConfig.stopSequences[0]",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{}]}]},
            "tools[0].functionDeclarations[0].name",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}},
            },
            "toolConfig.functionCallingConfig.mode",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "systemInstruction": {"parts": "x"}},
            "systemInstruction.parts",
        ),
    ],
)
def test_bad_requests_name_the_field(body: Any, field: str) -> None:
    assert field in bad_request(body)


def test_missing_path_model_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="model"):
        SERVER.parse_request({"contents": [{"parts": [{"text": "x"}]}]}, None)


def test_unknown_fields_are_ignored() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x", "mystery": 1}], "extra": True}],
        "safetySettings": [],
        "cachedContent": "cachedContents/abc",
        "tools": [{"googleSearch": {}}],
        "generationConfig": {"candidateCount": 1, "thinkingConfig": {"includeThoughts": True}},
        "somethingNew": {"a": 1},
    }
    model, request = SERVER.parse_request(json.dumps(body), MODEL)
    assert model == MODEL
    assert request == Request(messages=(text_message("user", "x"),))


def test_a_thinking_budget_is_read() -> None:
    config = {"thinkingConfig": {"thinkingBudget": 0}}
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": config}
    _, request = SERVER.parse_request(body, MODEL)
    assert request.reasoning == Reasoning(budget_tokens=0)


def test_user_text_parts_join_by_line_and_thoughts_are_dropped() -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
            {"role": "model", "parts": [{"text": "hmm", "thought": True}, {"text": "ok"}]},
        ],
        "systemInstruction": {"role": "system", "parts": [{"text": "a"}, {"text": "b"}]},
        "tools": [
            {"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}
        ],
    }
    _, request = SERVER.parse_request(body, MODEL)
    assert request.messages == (
        text_message("user", "first\nsecond"),
        text_message("assistant", "ok"),
    )
    assert request.system == "a\nb"
    assert request.tools == (ToolDefinition(name="f", parameters={"type": "object"}),)
