"""The Gemini codec against the real wire format and against itself.

Golden bodies are written the way Google's Gemini API reference and its error pages print them
(camelCase keys, ``finishReason: STOP`` on function calls, usage on every stream chunk, the
``google.rpc`` error details); the round trips prove that what our server side renders is what
our client side reads back, with tool calls and results intact.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
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
    ToolDefinition,
    Usage,
    assemble,
    text_message,
)
from controller.wire import ClientCodec, ServerCodec, SSEEvent
from controller.wire._sse import SSEParser
from controller.wire.gemini import GeminiClientCodec, GeminiServerCodec, parse_path

MODEL = "gemini-2.5-flash"
CLIENT = GeminiClientCodec()
SERVER = GeminiServerCodec()

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
CLOCK = ToolDefinition(name="get_time")  # no parameters at all


def decode_stream(raw: bytes, model: str = MODEL) -> list[StreamChunk]:
    decoder = CLIENT.stream_decoder(model)
    chunks: list[StreamChunk] = []
    for event in SSEParser().feed(raw):
        chunks.extend(decoder.feed(event))
    assert decoder.done is False
    return chunks


def encode_stream(chunks: list[StreamChunk], *, model: str = MODEL) -> bytes:
    encoder = SERVER.stream_encoder(id="resp-1", model=model)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


def wire_round_trip(request: Request) -> Request:
    call = CLIENT.build(request, MODEL, "test-key")
    body = json.dumps(call.body).encode()
    model, decoded = SERVER.parse_request(body, MODEL)
    assert model == MODEL
    return decoded


def bad_request(body: Any) -> str:
    with pytest.raises(BadRequest) as info:
        SERVER.parse_request(body, MODEL)
    assert type(info.value) is BadRequest
    assert info.value.status == 400
    return info.value.message


def test_codecs_satisfy_the_protocols() -> None:
    client: ClientCodec = CLIENT
    server: ServerCodec = SERVER
    assert client.provider_kind == "gcp.gemini"
    assert server.render_response is not None


# ----------------------------------------------------------------------------- golden: answers

GOLDEN_TEXT_RESPONSE = b"""{
  "candidates": [
    {
      "content": {
        "parts": [
          {"text": "Artificial intelligence lets machines learn "},
          {"text": "patterns from data."}
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "avgLogprobs": -0.31748939752578736
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 4,
    "candidatesTokenCount": 11,
    "totalTokenCount": 15,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
    "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 11}]
  },
  "modelVersion": "gemini-2.0-flash",
  "responseId": "mUDuaKXzM4yWxN8Pj5aJ8AQ"
}"""

GOLDEN_FUNCTION_CALL_RESPONSE = b"""{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "functionCall": {
              "name": "schedule_meeting",
              "args": {
                "attendees": ["Bob", "Alice"],
                "date": "2025-03-27",
                "time": "10:00",
                "topic": "Q3 planning"
              }
            }
          },
          {"functionCall": {"name": "get_time", "args": {}}}
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {"promptTokenCount": 111, "candidatesTokenCount": 28, "totalTokenCount": 139},
  "modelVersion": "gemini-2.0-flash"
}"""


def test_golden_text_response_decodes() -> None:
    response = CLIENT.parse_response(GOLDEN_TEXT_RESPONSE, MODEL)
    assert response == Response(
        id="mUDuaKXzM4yWxN8Pj5aJ8AQ",
        model="gemini-2.0-flash",
        message=Message(
            role="assistant",
            content="Artificial intelligence lets machines learn patterns from data.",
        ),
        finish_reason=FinishReason.STOP,
        usage=Usage(4, 11),
    )


def test_golden_function_calls_read_as_tool_calls_with_invented_ids() -> None:
    response = CLIENT.parse_response(GOLDEN_FUNCTION_CALL_RESPONSE, MODEL)
    assert response.finish_reason is FinishReason.TOOL_CALLS  # Gemini itself said STOP
    assert response.message.tool_calls == (
        ToolCall(
            id="call_0",
            name="schedule_meeting",
            arguments='{"attendees":["Bob","Alice"],"date":"2025-03-27","time":"10:00",'
            '"topic":"Q3 planning"}',
        ),
        ToolCall(id="call_1", name="get_time", arguments="{}"),
    )
    assert response.message.content == ""
    assert response.id == ""  # this body has no responseId
    assert response.usage == Usage(111, 28)


def test_golden_function_call_ids_from_gemini_are_kept() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"id": "x1y2", "name": "get_time", "args": {}},
                            "thoughtSignature": "CiQB0e2Kb0TC",
                        }
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "modelVersion": "gemini-3-pro-preview",
    }
    response = CLIENT.parse_response(json.dumps(body).encode(), MODEL)
    assert response.message.tool_calls == (ToolCall(id="x1y2", name="get_time"),)
    assert response.model == "gemini-3-pro-preview"


def test_golden_thinking_tokens_count_as_output_and_thoughts_are_not_text() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "**Weighing the options** ...", "thought": True},
                        {"text": "Paris."},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 9,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 40,
            "totalTokenCount": 51,
        },
    }
    response = CLIENT.parse_response(json.dumps(body).encode(), MODEL)
    assert response.message.content == "Paris."
    assert response.usage == Usage(9, 42)
    assert response.model == MODEL  # no modelVersion: the requested model


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", FinishReason.STOP),
        ("OTHER", FinishReason.STOP),
    ],
)
def test_golden_finish_reasons_map(reason: str, expected: FinishReason) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert CLIENT.parse_response(json.dumps(body).encode(), MODEL).finish_reason is expected


def test_golden_safety_stop_without_content_is_an_empty_filtered_answer() -> None:
    body = {
        "candidates": [
            {
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            }
        ]
    }
    response = CLIENT.parse_response(json.dumps(body).encode(), MODEL)
    assert response.finish_reason is FinishReason.CONTENT_FILTER
    assert response.message == Message(role="assistant")


def test_golden_blocked_prompt_raises_content_filtered() -> None:
    body = b"""{
      "promptFeedback": {
        "blockReason": "SAFETY",
        "safetyRatings": [
          {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}
        ]
      },
      "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
      "modelVersion": "gemini-2.0-flash"
    }"""
    with pytest.raises(ContentFiltered, match="SAFETY"):
        CLIENT.parse_response(body, MODEL)


# ----------------------------------------------------------------------------- golden: streams

GOLDEN_TEXT_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"}}],'
    b'"usageMetadata": {"promptTokenCount": 4,"totalTokenCount": 4},'
    b'"modelVersion": "gemini-2.0-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " sky is blue"}],"role": "model"}}],'
    b'"usageMetadata": {"promptTokenCount": 4,"totalTokenCount": 4},'
    b'"modelVersion": "gemini-2.0-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " by day."}],"role": "model"},'
    b'"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 4,'
    b'"candidatesTokenCount": 7,"totalTokenCount": 11},"modelVersion": "gemini-2.0-flash",'
    b'"responseId": "Xx3aZ"}\r\n\r\n'
)


def test_golden_text_stream_decodes_to_deltas_with_usage_on_the_finish() -> None:
    chunks = decode_stream(GOLDEN_TEXT_STREAM)
    assert chunks == [
        StreamChunk(text="The", model="gemini-2.0-flash"),
        StreamChunk(text=" sky is blue"),
        StreamChunk(text=" by day.", finish_reason=FinishReason.STOP, usage=Usage(4, 7)),
    ]
    answer = assemble(chunks, id="r", model=MODEL)
    assert answer.message.content == "The sky is blue by day."
    assert answer.model == "gemini-2.0-flash"


def test_golden_stream_function_call_arrives_whole_and_finish_says_tool_calls() -> None:
    raw = (
        b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather",'
        b'"args": {"city": "Paris"}}}],"role": "model"},"index": 0}],'
        b'"usageMetadata": {"promptTokenCount": 30,"totalTokenCount": 30},'
        b'"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
        b'data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},'
        b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 30,'
        b'"candidatesTokenCount": 5,"totalTokenCount": 35},"modelVersion": "gemini-2.5-flash"}'
        b"\r\n\r\n"
    )
    chunks = decode_stream(raw)
    assert chunks == [
        StreamChunk(
            tool_call=ToolCallDelta(
                index=0, id="call_0", name="get_weather", arguments='{"city":"Paris"}'
            )
        ),
        StreamChunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(30, 5)),
    ]


def test_golden_stream_blocked_prompt_raises_content_filtered() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    event = SSEEvent(data='{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}')
    with pytest.raises(ContentFiltered):
        decoder.feed(event)


def test_golden_in_stream_error_event_raises_the_mapped_error() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    event = SSEEvent(
        data='{"error": {"code": 503, "message": "The model is overloaded. '
        'Please try again later.", "status": "UNAVAILABLE"}}'
    )
    with pytest.raises(Overloaded) as info:
        decoder.feed(event)
    assert info.value.status == 503
    assert info.value.message == "The model is overloaded. Please try again later."


# ----------------------------------------------------------------------------- golden: errors

QUOTA_429 = b"""{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]
      },
      {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
      {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}
    ]
  }
}"""  # noqa: E501

BAD_KEY_400 = b"""{
  "error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"}
      }
    ]
  }
}"""

TOO_LONG_400 = b"""{
  "error": {
    "code": 400,
    "message": "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).",
    "status": "INVALID_ARGUMENT"
  }
}"""  # noqa: E501


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, BAD_KEY_400, AuthFailed),
        (400, TOO_LONG_400, ContextTooLong),
        (
            400,
            b'{"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is '
            b'not specified", "status": "INVALID_ARGUMENT"}}',
            BadRequest,
        ),
        (
            403,
            b'{"error": {"code": 403, "message": "Permission denied: Consumer has been suspended.",'
            b' "status": "PERMISSION_DENIED"}}',
            AuthFailed,
        ),
        (
            500,
            b'{"error": {"code": 500, "message": "An internal error has occurred.", '
            b'"status": "INTERNAL"}}',
            Overloaded,
        ),
        (
            503,
            b'[{"error": {"code": 503, "message": "The model is overloaded.", '
            b'"status": "UNAVAILABLE"}}]',
            Overloaded,
        ),
        (502, b"<html>Bad Gateway</html>", Overloaded),
    ],
)
def test_golden_errors_map_by_type(status: int, body: bytes, cls: type[ProviderError]) -> None:
    err = CLIENT.error_from(status, {"content-type": "application/json"}, body, MODEL)
    assert type(err) is cls
    assert err.status == status
    assert err.model == MODEL


def test_golden_error_message_is_the_providers() -> None:
    err = CLIENT.error_from(400, {}, TOO_LONG_400, MODEL)
    assert err.message.startswith("The input token count (1200293) exceeds")
    assert CLIENT.error_from(502, {}, b"<html>", MODEL).message == "HTTP 502"


def test_golden_429_takes_retry_delay_from_retry_info() -> None:
    err = CLIENT.error_from(429, {}, QUOTA_429, MODEL)
    assert isinstance(err, RateLimited)
    assert err.retry_after == 34.0


def test_retry_after_header_wins_over_retry_info() -> None:
    err = CLIENT.error_from(429, {"Retry-After": "3"}, QUOTA_429, MODEL)
    assert isinstance(err, RateLimited)
    assert err.retry_after == 3.0


# ----------------------------------------------------------------------------- golden: requests

GOLDEN_REQUEST = b"""{
  "systemInstruction": {"parts": [{"text": "You are a helpful lighting system bot."}]},
  "contents": [
    {"role": "user", "parts": [{"text": "Turn the lights down to a romantic level"}]},
    {
      "role": "model",
      "parts": [
        {"functionCall": {"name": "set_light_values", "args": {"brightness": 25, "color_temp": "warm"}}}
      ]
    },
    {
      "role": "user",
      "parts": [
        {"functionResponse": {"name": "set_light_values", "response": {"brightness": 25, "colorTemperature": "warm"}}}
      ]
    }
  ],
  "tools": [
    {
      "functionDeclarations": [
        {
          "name": "set_light_values",
          "description": "Sets the brightness and color temperature of a light.",
          "parameters": {
            "type": "object",
            "properties": {
              "brightness": {"type": "integer", "description": "Light level from 0 to 100."},
              "color_temp": {"type": "string", "enum": ["daylight", "cool", "warm"]}
            },
            "required": ["brightness", "color_temp"]
          }
        }
      ]
    }
  ],
  "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["set_light_values"]}},
  "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256, "stopSequences": ["END"], "candidateCount": 1},
  "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
}"""  # noqa: E501


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
                        }
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


def test_build_rejects_arguments_that_are_not_an_object() -> None:
    call = ToolCall(id="c1", name="get_time", arguments="[1, 2]")
    request = Request(messages=(Message(role="assistant", tool_calls=(call,)),))
    with pytest.raises(BadRequest, match=r"messages\[0\]\.tool_calls\[0\]"):
        CLIENT.build(request, MODEL, None)


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


def test_render_response_refuses_arguments_gemini_cannot_carry() -> None:
    response = Response(
        id="r",
        model=MODEL,
        message=Message(role="assistant", tool_calls=(ToolCall(id="c", name="f", arguments="{"),)),
        finish_reason=FinishReason.TOOL_CALLS,
    )
    with pytest.raises(MalformedResponse):
        SERVER.render_response(response)


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
    if isinstance(err, RateLimited):
        assert isinstance(back, RateLimited)
        assert back.retry_after == err.retry_after
    without_header = CLIENT.error_from(status, {}, raw, MODEL)
    assert type(without_header) is type(err)
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
        "generationConfig": {"candidateCount": 1, "thinkingConfig": {"thinkingBudget": 0}},
        "somethingNew": {"a": 1},
    }
    model, request = SERVER.parse_request(json.dumps(body), MODEL)
    assert model == MODEL
    assert request == Request(messages=(text_message("user", "x"),))


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
