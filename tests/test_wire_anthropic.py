"""The Anthropic Messages codec, both directions.

Golden fixtures are written the way Anthropic's API reference documents the wire (Messages,
Streaming Messages, Tool use, Errors pages); where a doc snippet is abridged (the tool-use
response example omits ``type`` and ``usage``), the fields every real answer carries are added.
Bytes our server side produces are also validated against the official ``anthropic`` SDK's
response and stream-event models, because that SDK is pointed at our gateway.
"""

# ruff: noqa: E501  (golden SSE fixtures stay byte-for-byte as documented, long lines included)
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse as SDKErrorResponse
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    Overloaded,
    ProviderError,
    ProviderTimeout,
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
    ToolDefinition,
    Usage,
    assemble,
)
from controller.wire._base import ClientCodec, ServerCodec, SSEEvent, StreamDecoder
from controller.wire._sse import SSEParser
from controller.wire.anthropic import DEFAULT_MAX_TOKENS, AnthropicClientCodec, AnthropicServerCodec

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


def test_build_refuses_tool_arguments_that_are_not_a_json_object() -> None:
    bad = Message(role="assistant", tool_calls=(ToolCall(id="c", name="f", arguments="[1,"),))
    with pytest.raises(BadRequest, match=r"messages\.0.*'c'"):
        CLIENT.build(Request(messages=(bad,)), MODEL, None)


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
    again = CLIENT.build(SERVER.parse_request(body)[1], MODEL, None).body
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
        "metadata": {"user_id": "u1"},  # unknown to our model: ignored
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
        (_body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
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
        (
            _body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": ""}}],
                    }
                ]
            ),
            "messages.0.content.0.type",
        ),
        (_body(tools=[{"name": "f"}]), "tools.0.input_schema: Field required"),
        (_body(tool_choice={"type": "some"}), "tool_choice.type"),
        (_body(tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
        (_body(temperature="hot"), "temperature: Input should be a valid number"),
        (_body(stop_sequences=["a", 1]), "stop_sequences.1"),
        (_body(system=[{"type": "image"}]), "system.0.type"),
        ("not json", "invalid JSON"),
        ([1, 2], "request body"),
    ],
)
def test_parse_request_names_the_bad_field(body: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        SERVER.parse_request(body)
    assert field in caught.value.message
    assert type(caught.value) is BadRequest


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
    assert response.usage == Usage(400, 86)
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


# ------------------------------------------------------------------- client: stream (golden)

GOLDEN_TEXT_STREAM = """event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", \
"type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", \
"stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, \
"usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""

# The "Streaming Messages" page's example of a streamed tool call (text block, then tool_use).
GOLDEN_TOOL_STREAM = r"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def test_golden_text_stream_decodes_to_chunks_and_sets_done() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    chunks = _decode(GOLDEN_TEXT_STREAM[: GOLDEN_TEXT_STREAM.index("event: message_stop")], decoder)
    assert chunks == [
        StreamChunk(text="Hello", model="claude-opus-4-1-20250805"),
        StreamChunk(text="!"),
        StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(25, 15)),
    ]
    assert decoder.done is False
    assert _decode('event: message_stop\ndata: {"type": "message_stop"}\n\n', decoder) == []
    assert decoder.done is True


def test_golden_tool_stream_assembles_the_documented_call() -> None:
    chunks = _decode(GOLDEN_TOOL_STREAM)
    assert chunks[2] == StreamChunk(
        tool_call=ToolCallDelta(index=0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather")
    )
    response = assemble(chunks, id="x", model=MODEL)
    assert response.message == Message(
        role="assistant",
        content="Okay, let's check the weather.",
        tool_calls=(
            ToolCall(
                id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                name="get_weather",
                arguments='{"location": "San Francisco, CA", "unit": "fahrenheit"}',
            ),
        ),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(472, 89)


def test_tool_call_index_counts_tool_blocks_only() -> None:
    """Anthropic block 3 (after text, tool, thinking) is our second tool call: index 1."""
    start = '{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}'
    events = [
        start,
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        '{"type":"content_block_start","index":1,"content_block":'
        '{"type":"tool_use","id":"a","name":"f","input":{}}}',
        '{"type":"content_block_start","index":2,"content_block":{"type":"thinking"}}',
        '{"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"x"}}',
        '{"type":"content_block_start","index":3,"content_block":'
        '{"type":"tool_use","id":"b","name":"g","input":{}}}',
        '{"type":"content_block_delta","index":3,"delta":'
        '{"type":"input_json_delta","partial_json":"{}"}}',
    ]
    decoder = CLIENT.stream_decoder(MODEL)
    chunks = [c for data in events for c in decoder.feed(SSEEvent(data=data))]
    assert [c.tool_call for c in chunks] == [
        ToolCallDelta(index=0, id="a", name="f"),
        ToolCallDelta(index=1, id="b", name="g"),
        ToolCallDelta(index=1, arguments="{}"),
    ]


def test_message_delta_input_tokens_win_over_message_start() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    decoder.feed(
        SSEEvent(
            data='{"type":"message_start","message":{"model":"m",'
            '"usage":{"input_tokens":3,"output_tokens":1}}}'
        )
    )
    chunks = decoder.feed(
        SSEEvent(
            data='{"type":"message_delta","delta":{"stop_reason":'
            '"max_tokens"},"usage":{"input_tokens":7,'
            '"cache_read_input_tokens":2,"output_tokens":9}}'
        )
    )
    assert chunks == [StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(9, 9), model="m")]


@pytest.mark.parametrize(
    ("error_type", "message", "expected"),
    [
        ("overloaded_error", "Overloaded", Overloaded),
        ("api_error", "Internal server error", Overloaded),
        ("rate_limit_error", "slow down", RateLimited),
        ("authentication_error", "invalid x-api-key", AuthFailed),
        (
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            ContextTooLong,
        ),
        ("invalid_request_error", "Output blocked by content filtering policy", ContentFiltered),
        ("invalid_request_error", "messages: roles must alternate", BadRequest),
    ],
)
def test_in_stream_error_event_raises_the_mapped_error(
    error_type: str, message: str, expected: type[ProviderError]
) -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    _decode(GOLDEN_TEXT_STREAM.split("event: content_block_start")[0], decoder)
    event = {"type": "error", "error": {"type": error_type, "message": message}}
    with pytest.raises(ProviderError) as caught:
        decoder.feed(SSEEvent(event="error", data=json.dumps(event)))
    assert type(caught.value) is expected
    assert caught.value.message == message


_START = '{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}'
_TEXT_BLOCK = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'


@pytest.mark.parametrize(
    "events",
    [
        [SSEEvent(data="{not json")],
        [SSEEvent(data='{"no_type": 1}')],
        [SSEEvent(data=_TEXT_BLOCK)],  # before message_start
        [SSEEvent(data=_START), SSEEvent(data=_START)],
        [SSEEvent(data=_START, event="content_block_start")],  # name and data disagree
        [SSEEvent(data='{"type":"message_start"}')],
        [
            SSEEvent(data=_START),
            SSEEvent(
                data='{"type":"content_block_delta","index":0,'
                '"delta":{"type":"text_delta","text":"x"}}'
            ),
        ],
        [SSEEvent(data=_START), SSEEvent(data=_TEXT_BLOCK), SSEEvent(data=_TEXT_BLOCK)],
        [
            SSEEvent(data=_START),
            SSEEvent(data=_TEXT_BLOCK),
            SSEEvent(
                data='{"type":"content_block_delta","index":0,'
                '"delta":{"type":"input_json_delta","partial_json":"{"}}'
            ),
        ],
        [
            SSEEvent(data=_START),
            SSEEvent(data=_TEXT_BLOCK),
            SSEEvent(data='{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}'),
        ],
        [SSEEvent(data=_START), SSEEvent(data='{"type":"content_block_stop","index":4}')],
        [SSEEvent(data=_START), SSEEvent(data='{"type":"message_delta","delta":{}}')],
        [
            SSEEvent(data=_START),
            SSEEvent(data='{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{}}'),
        ],
        [
            SSEEvent(data=_START),
            SSEEvent(data='{"type":"message_stop"}'),
            SSEEvent(data=_TEXT_BLOCK),
        ],
    ],
)
def test_malformed_stream_events_raise_malformed_response(events: list[SSEEvent]) -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    *valid, bad = events
    for event in valid:
        decoder.feed(event)
    with pytest.raises(MalformedResponse):
        decoder.feed(bad)


def test_unknown_event_types_are_skipped() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    decoder.feed(SSEEvent(data=_START))
    assert decoder.feed(SSEEvent(event="future_thing", data='{"type":"future_thing"}')) == []
    assert decoder.done is False


# ---------------------------------------------------- round trips: responses and streams


def _response(**changes: Any) -> Response:
    values: dict[str, Any] = {
        "id": "msg_01",
        "model": MODEL,
        "message": Message(
            role="assistant",
            content="Let me look.",
            tool_calls=(
                ToolCall(id="toolu_1", name="get_weather", arguments='{"location": "Paris"}'),
                ToolCall(id="toolu_2", name="get_time", arguments='{"tz": "Europe/Paris"}'),
            ),
        ),
        "finish_reason": FinishReason.TOOL_CALLS,
        "usage": Usage(120, 33),
        "provider": "anthropic",
    }
    values.update(changes)
    return Response(**values)


@pytest.mark.parametrize(
    "response",
    [
        _response(),
        _response(
            message=Message(role="assistant", content="Done."), finish_reason=FinishReason.STOP
        ),
        _response(
            message=Message(role="assistant", content="cut"), finish_reason=FinishReason.LENGTH
        ),
        _response(message=Message(role="assistant"), finish_reason=FinishReason.CONTENT_FILTER),
    ],
)
def test_render_response_round_trips_and_matches_the_sdk_model(response: Response) -> None:
    rendered = SERVER.render_response(response)
    SDKMessage.model_validate(rendered)  # what the official SDK will parse from our gateway
    body = json.dumps(rendered).encode()
    assert CLIENT.parse_response(body, "ignored") == response


def _chunks_for(response: Response) -> list[StreamChunk]:
    chunks = [StreamChunk(text="Let "), StreamChunk(text="me look.")]
    for index, call in enumerate(response.message.tool_calls):
        chunks.append(StreamChunk(tool_call=ToolCallDelta(index=index, id=call.id, name=call.name)))
        half = len(call.arguments) // 2
        chunks.append(
            StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[:half]))
        )
        chunks.append(
            StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[half:]))
        )
    chunks.append(StreamChunk(finish_reason=response.finish_reason, usage=response.usage))
    return chunks


def _encode_stream(chunks: list[StreamChunk], *, model: str = MODEL) -> bytes:
    encoder = SERVER.stream_encoder(id="msg_01", model=model)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


def test_stream_round_trip_gives_back_the_same_chunks() -> None:
    chunks = _chunks_for(_response())
    decoder = CLIENT.stream_decoder(MODEL)
    decoded = _decode(_encode_stream(chunks), decoder)
    assert decoded == [replace(chunks[0], model=MODEL), *chunks[1:]]
    assert decoder.done is True
    assert assemble(decoded, id="msg_01", model=MODEL, provider="anthropic") == _response()


def test_encoded_stream_is_a_valid_sdk_event_sequence() -> None:
    """Every event parses as the SDK's RawMessageStreamEvent and the SDK's own accumulator
    rebuilds the message, as ``client.messages.stream(...)`` would against our gateway."""
    raw = _encode_stream(_chunks_for(_response()))
    names = []
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in _events(raw):
        parsed = EVENT_ADAPTER.validate_json(event.data)
        assert parsed.type == event.event
        names.append(event.event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert snapshot is not None
    final = snapshot.to_dict()
    assert final["stop_reason"] == "tool_use"
    assert snapshot.usage.input_tokens == 120
    assert snapshot.usage.output_tokens == 33
    assert final["content"] == SERVER.render_response(_response())["content"]


def test_usage_arriving_after_the_finish_chunk_still_reaches_message_delta() -> None:
    """OpenAI sends usage in a separate chunk after the finish reason."""
    chunks = [
        StreamChunk(text="hi"),
        StreamChunk(finish_reason=FinishReason.STOP),
        StreamChunk(usage=Usage(4, 2)),
    ]
    decoded = _decode(_encode_stream(chunks))
    assert decoded[-1] == StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(4, 2))
    assert len([c for c in decoded if c.finish_reason]) == 1


def test_stream_without_usage_reports_zero_usage_at_end() -> None:
    decoded = _decode(
        _encode_stream([StreamChunk(text="x"), StreamChunk(finish_reason=FinishReason.LENGTH)])
    )
    assert decoded[-1] == StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(0, 0))


def test_encoder_refuses_a_tool_call_resumed_after_another_block() -> None:
    encoder = SERVER.stream_encoder(id="m", model=MODEL)
    encoder.start()
    encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=0, id="a", name="f")))
    encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=1, id="b", name="g")))
    with pytest.raises(MalformedResponse):
        encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=0, arguments="{}")))


# --------------------------------------------------------------------------------- errors

ERRORS: list[ProviderError] = [
    RateLimited("rate limited", retry_after=7.0),
    RateLimited("rate limited, no hint"),
    AuthFailed("invalid x-api-key"),
    AuthFailed("key suspended", status=403),
    Overloaded("Overloaded"),
    Overloaded("Internal server error", status=500),
    BadRequest("messages: roles must alternate"),
    BadRequest("model not found", status=404),
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
        (BadRequest("x", status=404), 404, "not_found_error"),
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
    assert type(err) is BadRequest
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
