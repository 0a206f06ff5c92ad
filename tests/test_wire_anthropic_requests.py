"""The Anthropic Messages codec, both directions: requests.

Golden fixtures are written the way Anthropic's API reference documents the wire (Messages,
Streaming Messages, Tool use, Errors pages); where a doc snippet is abridged (the tool-use
response example omits ``type`` and ``usage``), the fields every real answer carries are added.
Bytes our server side produces are also validated against the official ``anthropic`` SDK's
response and stream-event models, because that SDK is pointed at our gateway. This file pins the
request side: the client's ``build``, the conversation round trip, and the server's
``parse_request`` (golden and malformed bodies); the other parts live in the sibling
``test_wire_anthropic_*`` files, with shared fixtures in ``tests/wire_anthropic_support.py``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

import pytest

from controller._errors import BadRequest, Overloaded
from controller.model import Message, Request, ToolCall
from controller.wire._base import ClientCodec, ServerCodec
from controller.wire.anthropic import DEFAULT_MAX_TOKENS
from tests.wire_anthropic_support import (
    CLIENT,
    MODEL,
    SERVER,
    WEATHER,
    WEATHER_SCHEMA,
    _conversation,
)


def test_codecs_satisfy_the_protocols() -> None:
    client: ClientCodec = CLIENT
    server: ServerCodec = SERVER
    assert client.provider_kind == "anthropic"
    assert server.render_error(Overloaded("busy"))[0] == 529


# ------------------------------------------------------------------------------ client: build


def test_build_targets_messages_with_auth_and_version_headers() -> None:
    call = CLIENT.build(Request(messages=(Message(role="user", content="Hi"),)), MODEL, "sk-ant-1")
    assert call.path == "/v1/messages"
    assert dict(call.headers) == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-1",
    }
    assert call.body == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_build_never_shows_the_api_key_in_a_repr() -> None:
    call = CLIENT.build(Request(messages=()), MODEL, "sk-ant-secret-value")
    assert "sk-ant-secret-value" not in repr(call)
    assert "sk-ant-secret-value" not in str(call.headers)
    assert "'x-api-key': '***'" in repr(call.headers)
    assert call.headers["x-api-key"] == "sk-ant-secret-value"  # masked in reprs only


def test_build_encodes_every_request_field_and_groups_tool_results() -> None:
    body = CLIENT.build(replace(_conversation(), stream=True), MODEL, None).body
    assert body == {
        "model": MODEL,
        "max_tokens": 512,
        "system": "You are a weather bot.",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_weather",
                        "input": {"location": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": "no station",
                        "is_error": True,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_3", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_3", "content": "sunny"}],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": WEATHER_SCHEMA,
            }
        ],
        "tool_choice": {"type": "auto"},
        "temperature": 0.25,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_maps_both_ways(choice: str, wire: dict[str, Any]) -> None:
    request = Request(
        messages=(Message(role="user", content="x"),),
        tools=(WEATHER,),
        tool_choice=choice,
        max_tokens=10,
    )
    body = CLIENT.build(request, MODEL, None).body
    assert body["tool_choice"] == wire
    assert SERVER.parse_request(body)[1].tool_choice == choice


# --------------------------------------------------------------- round trips: the conversation


def test_conversation_survives_build_then_parse_request() -> None:
    original = _conversation()
    body = json.loads(json.dumps(CLIENT.build(original, MODEL, "k").body))
    model, decoded = SERVER.parse_request(body)
    assert model == MODEL
    assert decoded == original


def test_conversation_survives_a_second_pass() -> None:
    """What the gateway decoded from an Anthropic client re-encodes to the same body."""
    body = CLIENT.build(_conversation(), MODEL, None).body
    decoded = dataclasses.replace(SERVER.parse_request(body)[1], source=None)  # translated
    again = CLIENT.build(decoded, MODEL, None).body
    assert again == body


def test_parse_request_accepts_raw_json_bytes() -> None:
    raw = json.dumps(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}
    )
    assert SERVER.parse_request(raw.encode()) == (
        "m",
        Request(messages=(Message(role="user", content="q"),), max_tokens=5),
    )


# -------------------------------------------------------------- server: parse_request (golden)

# The "Tool use" guide's conversation that hands a tool result back to Claude.
GOLDEN_TOOL_RESULT_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "tools": [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_SCHEMA,
        }
    ],
    "messages": [
        {"role": "user", "content": "What's the weather like in San Francisco?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "text",
                    "text": "I'll check the current weather in San Francisco for you.",
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "celsius"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "15 degrees",
                }
            ],
        },
    ],
}


def test_parse_request_golden_tool_result_conversation() -> None:
    model, request = SERVER.parse_request(GOLDEN_TOOL_RESULT_REQUEST)
    assert model == MODEL
    assert request == Request(
        messages=(
            Message(role="user", content="What's the weather like in San Francisco?"),
            Message(
                role="assistant",
                content="I'll check the current weather in San Francisco for you.",
                tool_calls=(
                    ToolCall(
                        id="toolu_01A09q90qw90lq917835lq9",
                        name="get_weather",
                        arguments='{"location": "San Francisco, CA", "unit": "celsius"}',
                    ),
                ),
            ),
            Message(
                role="tool", tool_call_id="toolu_01A09q90qw90lq917835lq9", content="15 degrees"
            ),
        ),
        tools=(WEATHER,),
        max_tokens=1024,
    )


def test_parse_request_splits_a_merged_user_turn_and_ignores_extras() -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "metadata": {"user_id": "u1"},  # the end user (Request.user), not a turn
        "thinking": {"type": "enabled", "budget_tokens": 50},
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use metric."},
        ],
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "b", "input": {"q": "ü"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "one"},
                            {"type": "text", "text": "two"},
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "t2", "is_error": True},
                    {"type": "text", "text": "now summarise"},
                    {"type": "text", "text": "in French"},
                ],
            },
        ],
        "stream": True,
    }
    _, request = SERVER.parse_request(body)
    assert request.system == "Be brief.\nUse metric."
    assert request.stream is True
    assert request.messages == (
        Message(
            role="assistant",
            tool_calls=(
                ToolCall(id="t1", name="a", arguments="{}"),
                ToolCall(id="t2", name="b", arguments='{"q": "ü"}'),
            ),
        ),
        Message(role="tool", tool_call_id="t1", content="one\ntwo"),
        Message(role="tool", tool_call_id="t2", content="", is_error=True),
        Message(role="user", content="now summarise\nin French"),
    )


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_body(max_tokens=None), "max_tokens: Field required"),
        (_body(max_tokens="10"), "max_tokens: Input should be a valid integer"),
        (_body(max_tokens=True), "max_tokens: Input should be a valid integer"),
        (_body(model=None), "model: Field required"),
        (_body(messages=None), "messages: Field required"),
        (_body(messages={"role": "user"}), "messages: Input should be a valid list"),
        (_body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
        (_body(messages=[{"role": "user"}]), "messages.0.content: Field required"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (
            _body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages.0.content.0.type: Field required",
        ),
        (
            _body(
                messages=[
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}
                ]
            ),
            "messages.0.content.0.input: Field required",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
            "messages.0.content.0.tool_use_id: Field required",
        ),
        (_body(tools=[{"name": "f"}]), "tools.0.input_schema: Field required"),
        (_body(tool_choice={"type": "some"}), "tool_choice.type"),
        (_body(tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
        (_body(temperature="hot"), "temperature: Input should be a valid number"),
        (_body(stop_sequences=["a", 1]), "stop_sequences.1"),
        ("not json", "invalid JSON"),
        ([1, 2], "request body"),
    ],
)
def test_parse_request_names_the_bad_field(body: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        SERVER.parse_request(body)
    assert field in caught.value.message
    assert type(caught.value) is BadRequest
