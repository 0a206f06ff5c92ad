"""The Gemini codec against the real wire format: the answers, streams and errors Google sends.

Golden bodies are written the way Google's Gemini API reference and its error pages print them
(camelCase keys, ``finishReason: STOP`` on function calls, usage on every stream chunk, the
``google.rpc`` error details); these tests prove our client side reads each of them as the
provider-neutral response, stream chunks or mapped error it means.
"""

from __future__ import annotations

import json

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
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    assemble,
)
from controller.wire import ClientCodec, ServerCodec, SSEEvent
from tests.wire_gemini_support import CLIENT, MODEL, SERVER, decode_stream


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
