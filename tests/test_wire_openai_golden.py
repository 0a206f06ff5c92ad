"""The OpenAI Chat Completions codec: fidelity to the documented wire format.

Golden fixtures are written the way OpenAI's API reference and guides show them (the
``chatcmpl-123`` examples of "Create chat completion", the function-calling guide's streamed
tool call, the documented error bodies), so these tests pin the real format, not just our own
self-consistency. Building calls, round trips, errors and request validation live in the
sibling ``test_wire_openai_*`` modules.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelNotFound,
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
)
from controller.wire.openai import OpenAIClientCodec, OpenAIServerCodec
from tests.wire_openai_support import WEATHER_PARAMETERS, WEATHER_TOOL, decode_all, sse_lines

# ---------------------------------------------------------------- golden: documented bodies


def test_documented_response_decodes() -> None:
    body = b"""{
      "id": "chatcmpl-123",
      "object": "chat.completion",
      "created": 1677652288,
      "model": "gpt-4o-mini",
      "system_fingerprint": "fp_44709d6fcb",
      "choices": [{
        "index": 0,
        "message": {
          "role": "assistant",
          "content": "\\n\\nHello there, how may I assist you today?"
        },
        "logprobs": null,
        "finish_reason": "stop"
      }],
      "service_tier": "default",
      "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 12,
        "total_tokens": 21,
        "completion_tokens_details": {
          "reasoning_tokens": 0,
          "accepted_prediction_tokens": 0,
          "rejected_prediction_tokens": 0
        }
      }
    }"""
    response = OpenAIClientCodec().parse_response(body, "gpt-4o-mini")
    assert response == Response(
        id="chatcmpl-123",
        model="gpt-4o-mini",
        message=Message(role="assistant", content="\n\nHello there, how may I assist you today?"),
        finish_reason=FinishReason.STOP,
        usage=Usage(9, 12),
        provider="openai",
    )


def test_documented_tool_call_response_keeps_arguments_byte_stable() -> None:
    body = b"""{
      "id": "chatcmpl-abc123",
      "object": "chat.completion",
      "created": 1699896916,
      "model": "gpt-4o-mini",
      "choices": [
        {
          "index": 0,
          "message": {
            "role": "assistant",
            "content": null,
            "tool_calls": [
              {
                "id": "call_abc123",
                "type": "function",
                "function": {
                  "name": "get_current_weather",
                  "arguments": "{\\n\\"location\\": \\"Boston, MA\\"\\n}"
                }
              }
            ]
          },
          "logprobs": null,
          "finish_reason": "tool_calls"
        }
      ],
      "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
    }"""
    response = OpenAIClientCodec().parse_response(body, "gpt-4o-mini")
    call = ToolCall(
        id="call_abc123", name="get_current_weather", arguments='{\n"location": "Boston, MA"\n}'
    )
    assert response.message == Message(role="assistant", content="", tool_calls=(call,))
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(82, 17)


def test_documented_requests_decode_on_the_server_side() -> None:
    server = OpenAIServerCodec()
    model, request = server.parse_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
        }
    )
    assert model == "gpt-4o"
    assert request == Request(
        system="You are a helpful assistant.", messages=(Message(role="user", content="Hello!"),)
    )
    _, tools_request = server.parse_request(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "What is the weather like in Boston today?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_current_weather",
                        "description": "Get the current weather in a given location",
                        "parameters": WEATHER_PARAMETERS,
                    },
                }
            ],
            "tool_choice": "auto",
        }
    )
    assert tools_request.tools == (WEATHER_TOOL,)
    assert tools_request.tool_choice == "auto"


def test_documented_tool_result_turns_decode() -> None:
    """The function-calling guide's second request: the call, then its result, sent back."""
    _, request = OpenAIServerCodec().parse_request(
        {
            "model": "gpt-4.1",
            "messages": [
                {"role": "user", "content": "What's the weather like in Paris today?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_12345xyz",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"latitude":48.8566,"longitude":2.3522}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14"},
            ],
        }
    )
    call = ToolCall(
        id="call_12345xyz", name="get_weather", arguments='{"latitude":48.8566,"longitude":2.3522}'
    )
    assert request.messages[1:] == (
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="14", tool_call_id="call_12345xyz"),
    )


DOC_STREAM = sse_lines(
    '{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    '"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,'
    '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    '"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,'
    '"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    '"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,'
    '"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
    '{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    '"model":"gpt-4o-mini","choices":[],'
    '"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}',
    "[DONE]",
)


def test_documented_stream_decodes_and_terminates() -> None:
    chunks, done = decode_all(DOC_STREAM)
    assert chunks == [
        StreamChunk(text="Hello"),
        StreamChunk(finish_reason=FinishReason.STOP),
        StreamChunk(usage=Usage(9, 1)),
    ]
    assert done is True


def test_documented_streamed_tool_call_decodes() -> None:
    """Shape from the function-calling guide: later deltas carry ``id``/``name`` as null."""
    head = '{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4.1",'
    raw = sse_lines(
        head + '"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":'
        '[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}',
        head + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":null,"type":null,'
        '"function":{"arguments":"{\\"location\\":","name":null}}]},"finish_reason":null}]}',
        head + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        '"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}]}',
        head + '"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "[DONE]",
    )
    chunks, done = decode_all(raw, model="gpt-4.1")
    assert chunks[:3] == [
        StreamChunk(
            tool_call=ToolCallDelta(index=0, id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather")
        ),
        StreamChunk(tool_call=ToolCallDelta(index=0, arguments='{"location":')),
        StreamChunk(tool_call=ToolCallDelta(index=0, arguments='"Paris"}')),
    ]
    response = assemble(chunks, id="x", model="gpt-4.1")
    assert response.message.tool_calls == (
        ToolCall(
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather", arguments='{"location":"Paris"}'
        ),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert done is True


def _error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> ProviderError:
    return OpenAIClientCodec().error_from(status, headers or {}, json.dumps(body).encode(), "m")


def test_documented_context_length_error() -> None:
    message = (
        "This model's maximum context length is 4097 tokens. However, your messages resulted "
        "in 5000 tokens. Please reduce the length of the messages."
    )
    err = _error(
        400,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    assert type(err) is ContextTooLong
    assert (err.message, err.status, err.provider, err.model) == (message, 400, "openai", "m")


def test_documented_rate_limit_errors_keep_retry_after() -> None:
    limited = _error(
        429,
        {
            "error": {
                "message": "Rate limit reached for gpt-4o in org-x on requests per min",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        {"retry-after": "20"},
    )
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 20.0
    quota = _error(
        429,
        {
            "error": {
                "message": "You exceeded your current quota, please check your plan.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
        {"retry-after-ms": "1500"},
    )
    assert isinstance(quota, RateLimited)
    assert quota.retry_after == 1.5


def test_documented_auth_and_server_errors() -> None:
    auth = _error(
        401,
        {
            "error": {
                "message": "Incorrect API key provided: sk-abc***xyz.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )
    assert type(auth) is AuthFailed
    assert auth.status == 401
    overloaded = _error(
        503,
        {
            "error": {
                "message": "The engine is currently overloaded, please try again later",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )
    assert type(overloaded) is Overloaded
    assert overloaded.message == "The engine is currently overloaded, please try again later"


def test_azure_content_filter_error_is_content_filtered() -> None:
    err = _error(
        400,
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure "
                "OpenAI's content management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            }
        },
    )
    assert type(err) is ContentFiltered


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (404, b'{"error":"model \'llama9\' not found"}', ModelNotFound, "model 'llama9' not found"),
        (422, b'{"detail":"Field required"}', BadRequest, "Field required"),
        (502, b"<html>Bad Gateway</html>", Overloaded, "<html>Bad Gateway</html>"),
        (500, b"", Overloaded, "HTTP 500: unrecognised error body"),
        (400, b"[1, 2]", BadRequest, "HTTP 400: unrecognised error body"),
        (
            400,
            b'{"object":"error","message":"bad","type":"BadRequestError","code":400}',
            BadRequest,
            "bad",
        ),
    ],
)
def test_compatible_server_error_bodies(
    status: int, body: bytes, cls: type[ProviderError], message: str
) -> None:
    err = OpenAIClientCodec(provider_kind="ollama").error_from(status, {}, body, "llama9")
    assert type(err) is cls
    assert (err.message, err.provider) == (message, "ollama")
