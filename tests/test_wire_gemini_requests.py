"""The Gemini codec on the request side: golden requests, building calls and the routing helper.

Golden requests are written the way Google's Gemini API reference prints them (camelCase keys,
``functionDeclarations``, ``toolConfig``, legacy ``function`` role); these tests prove our server
side reads them with tool results paired to their calls, and that our client side builds the
documented ``generateContent`` / ``streamGenerateContent`` calls whose paths parse back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from controller._errors import BadRequest
from controller.model import Message, Request, ToolCall, ToolDefinition, text_message
from controller.wire.gemini import parse_path
from tests.wire_gemini_support import (
    CLIENT,
    CLOCK,
    GOLDEN_REQUEST,
    MODEL,
    SERVER,
    WEATHER,
    wire_round_trip,
)

# ----------------------------------------------------------------------------- golden: requests


def test_golden_request_decodes_with_results_paired_by_name() -> None:
    model, request = SERVER.parse_request(GOLDEN_REQUEST, "gemini-2.0-flash")
    assert model == "gemini-2.0-flash"
    assert request == Request(
        system="You are a helpful lighting system bot.",
        messages=(
            text_message("user", "Turn the lights down to a romantic level"),
            Message(
                role="assistant",
                tool_calls=(
                    ToolCall(
                        id="call_0",
                        name="set_light_values",
                        arguments='{"brightness":25,"color_temp":"warm"}',
                    ),
                ),
            ),
            Message(
                role="tool",
                tool_call_id="call_0",
                content='{"brightness":25,"colorTemperature":"warm"}',
            ),
        ),
        tools=(
            ToolDefinition(
                name="set_light_values",
                description="Sets the brightness and color temperature of a light.",
                parameters={
                    "type": "object",
                    "properties": {
                        "brightness": {
                            "type": "integer",
                            "description": "Light level from 0 to 100.",
                        },
                        "color_temp": {"type": "string", "enum": ["daylight", "cool", "warm"]},
                    },
                    "required": ["brightness", "color_temp"],
                },
            ),
        ),
        tool_choice="set_light_values",
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop=("END",),
    )


def test_golden_legacy_function_role_and_two_results_for_two_same_name_calls() -> None:
    body = {
        "contents": [
            {"parts": [{"text": "Weather in Paris and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "function",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"output": "24C"}}},
                ],
            },
        ]
    }
    _, request = SERVER.parse_request(body, MODEL)
    results = request.messages[2:]
    assert [(m.role, m.tool_call_id, m.content) for m in results] == [
        ("tool", "call_0", "18C"),
        ("tool", "call_1", "24C"),
    ]
    assert [c.id for c in request.messages[1].tool_calls] == ["call_0", "call_1"]


# ----------------------------------------------------------------------------- build


def test_build_plain_and_streaming_calls() -> None:
    request = Request(messages=(text_message("user", "Hi"),))
    call = CLIENT.build(request, MODEL, "secret-key-123")
    assert call.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert dict(call.headers) == {"x-goog-api-key": "secret-key-123"}
    assert dict(call.query) == {}
    assert call.body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert "secret-key-123" not in json.dumps(call.body)

    stream = CLIENT.build(replace(request, stream=True), "models/gemini-2.5-pro", None)
    assert stream.path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    assert dict(stream.query) == {"alt": "sse"}
    assert dict(stream.headers) == {}


def test_build_full_request_matches_the_documented_shape() -> None:
    request = Request(
        system="Be brief.",
        messages=(
            text_message("user", "Weather in Paris? And the time?"),
            Message(
                role="assistant",
                content="Let me check.",
                tool_calls=(
                    ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}'),
                    ToolCall(id="c2", name="get_time", arguments=""),
                ),
            ),
            Message(role="tool", tool_call_id="c1", content="18C"),
            Message(role="tool", tool_call_id="c2", content="clock down", is_error=True),
        ),
        tools=(WEATHER, CLOCK),
        tool_choice="required",
        max_tokens=100,
        temperature=0.5,
        top_p=1.0,
        stop=("\n\n",),
    )
    body = CLIENT.build(request, MODEL, "k").body
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris? And the time?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {
                        "functionCall": {
                            "name": "get_weather",
                            "args": {"city": "Paris"},
                            "id": "c1",
                        },
                        # replayed calls: Google's placeholder, on the first call of the turn
                        "thoughtSignature": "skip_thought_signature_validator",
                    },
                    {"functionCall": {"name": "get_time", "args": {}, "id": "c2"}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_weather",
                            "response": {"content": "18C"},
                            "id": "c1",
                        }
                    },
                    {
                        "functionResponse": {
                            "name": "get_time",
                            "response": {"error": "clock down"},
                            "id": "c2",
                        }
                    },
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather for a city.",
                        "parameters": WEATHER.parameters,
                    },
                    {"name": "get_time"},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {
            "maxOutputTokens": 100,
            "temperature": 0.5,
            "topP": 1.0,
            "stopSequences": ["\n\n"],
        },
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("get_weather", {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tool_choice_maps_both_ways(choice: str, config: dict[str, Any]) -> None:
    request = Request(messages=(text_message("user", "x"),), tools=(WEATHER,), tool_choice=choice)
    body = CLIENT.build(request, MODEL, None).body
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert wire_round_trip(request).tool_choice == choice


def test_build_rejects_a_result_for_an_unknown_call() -> None:
    request = Request(
        messages=(
            text_message("user", "x"),
            Message(role="tool", tool_call_id="nope", content="r"),
        )
    )
    with pytest.raises(BadRequest, match=r"messages\[1\]\.tool_call_id"):
        CLIENT.build(request, MODEL, None)


# ----------------------------------------------------------------------------- routing helper


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", ("gemini-2.5-flash", False)),
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", ("gemini-2.5-pro", True)),
        ("/v1/models/gemini-1.5-flash-002:generateContent", ("gemini-1.5-flash-002", False)),
        ("/v1beta/models/gemini-2.5-flash:countTokens", None),
        ("/v1beta/models/:generateContent", None),
        ("/v1/chat/completions", None),
    ],
)
def test_parse_path(path: str, expected: tuple[str, bool] | None) -> None:
    assert parse_path(path) == expected


def test_built_paths_parse_back() -> None:
    request = Request(messages=(text_message("user", "x"),), stream=True)
    assert parse_path(CLIENT.build(request, MODEL, None).path) == (MODEL, True)
