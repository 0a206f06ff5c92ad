"""The OpenAI Chat Completions codec: fidelity to the documented wire format, and round trips.

Golden fixtures are written the way OpenAI's API reference and guides show them (the
``chatcmpl-123`` examples of "Create chat completion", the function-calling guide's streamed
tool call, the documented error bodies), so these tests pin the real format, not just our own
self-consistency.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from controller._clock import FakeClock
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
)
from controller.wire._base import SSEEvent
from controller.wire._sse import SSEParser
from controller.wire.openai import (
    TOOL_ERROR_PREFIX,
    OpenAIClientCodec,
    OpenAIServerCodec,
    stream_usage_requested,
)

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
WEATHER_TOOL = ToolDefinition(
    name="get_current_weather",
    description="Get the current weather in a given location",
    parameters=WEATHER_PARAMETERS,
)


def events(raw: bytes) -> list[SSEEvent]:
    return SSEParser().feed(raw)


def decode_all(raw: bytes, model: str = "gpt-4o-mini") -> tuple[list[StreamChunk], bool]:
    decoder = OpenAIClientCodec().stream_decoder(model)
    chunks: list[StreamChunk] = []
    for event in events(raw):
        chunks += decoder.feed(event)
    return chunks, decoder.done


def sse_lines(*payloads: str) -> bytes:
    return "".join(f"data: {p}\n\n" for p in payloads).encode()


def conversation() -> Request:
    """Tool calls and results in our model, as a conversation begun elsewhere would hold them."""
    return Request(
        system="You are a weather bot.",
        messages=(
            Message(role="user", content="Weather in Boston and Paris?"),
            Message(
                role="assistant",
                content="Checking both.",
                tool_calls=(
                    ToolCall(
                        id="call_1",
                        name="get_current_weather",
                        arguments='{"location":"Boston, MA"}',
                    ),
                    ToolCall(
                        id="call_2",
                        name="get_current_weather",
                        arguments='{ "location" : "Paris" }',
                    ),
                ),
            ),
            Message(role="tool", content='{"temp": 22}', tool_call_id="call_1"),
            Message(role="tool", content="upstream timeout", tool_call_id="call_2", is_error=True),
            Message(role="assistant", content="Boston is 22C; Paris failed."),
            Message(role="user", content="Thanks"),
        ),
        tools=(WEATHER_TOOL, ToolDefinition(name="noop")),
        tool_choice="get_current_weather",
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop=("END", "STOP"),
    )


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
        (404, b'{"error":"model \'llama9\' not found"}', BadRequest, "model 'llama9' not found"),
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


# ---------------------------------------------------------------- client: building calls


def test_build_plain_request() -> None:
    request = Request(system="Be brief.", messages=(Message(role="user", content="Hi"),))
    call = OpenAIClientCodec().build(request, "gpt-4o-mini", "sk-secret")
    assert call.path == "/chat/completions"
    assert dict(call.headers) == {"Authorization": "Bearer sk-secret"}
    assert dict(call.query) == {}
    assert call.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
    }


def test_build_full_request() -> None:
    request = Request(
        messages=(Message(role="user", content="Hi"),),
        tools=(WEATHER_TOOL,),
        tool_choice="required",
        max_tokens=100,
        temperature=0.0,
        top_p=1.0,
        stop=("\n",),
        stream=True,
    )
    body = OpenAIClientCodec().build(request, "gpt-4o", None).body
    assert body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
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
        "tool_choice": "required",
        "max_tokens": 100,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_build_for_azure_style_endpoint() -> None:
    codec = OpenAIClientCodec(
        provider_kind="azure.ai.openai",
        auth="api-key",
        path="/openai/deployments/{model}/chat/completions",
        query={"api-version": "2024-10-21"},
        include_usage_option=False,
    )
    request = Request(messages=(Message(role="user", content="Hi"),), stream=True)
    call = codec.build(request, "my-gpt4o", "azure-key")
    assert call.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert dict(call.query) == {"api-version": "2024-10-21"}
    assert dict(call.headers) == {"api-key": "azure-key"}
    assert "stream_options" not in call.body
    assert call.body["stream"] is True
    assert codec.provider_kind == "azure.ai.openai"


def test_build_without_auth() -> None:
    request = Request(messages=(Message(role="user", content="Hi"),))
    assert dict(OpenAIClientCodec(auth="none").build(request, "llama3", "ignored").headers) == {}
    assert dict(OpenAIClientCodec().build(request, "llama3", None).headers) == {}


def test_secrets_stay_out_of_reprs() -> None:
    codec = OpenAIClientCodec()
    call = codec.build(Request(messages=(Message(role="user", content="Hi"),)), "m", "sk-TOPSECRET")
    assert call.headers["Authorization"] == "Bearer sk-TOPSECRET"
    assert "TOPSECRET" not in repr(call)
    assert "TOPSECRET" not in repr(call.headers)
    assert "***" in repr(call.headers)
    assert "TOPSECRET" not in repr(codec)


def test_assistant_tool_call_turn_sends_null_content_and_error_prefix() -> None:
    request = Request(
        messages=(
            Message(role="assistant", tool_calls=(ToolCall(id="c1", name="f", arguments="{}"),)),
            Message(role="tool", content="boom", tool_call_id="c1", is_error=True),
        )
    )
    messages = OpenAIClientCodec().build(request, "m", None).body["messages"]
    assert messages == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": TOOL_ERROR_PREFIX + "boom"},
    ]


# ---------------------------------------------------------------- round trips


def _round_trip(request: Request) -> Request:
    call = OpenAIClientCodec().build(request, "gpt-4o", "k")
    model, decoded = OpenAIServerCodec().parse_request(json.loads(json.dumps(call.body)))
    assert model == "gpt-4o"
    return decoded


def test_conversation_with_tools_survives_the_format() -> None:
    """What lets a conversation begun on another provider continue on OpenAI and back."""
    original = conversation()
    assert _round_trip(original) == original
    streaming = Request(messages=original.messages, stream=True)
    assert _round_trip(streaming) == streaming


@pytest.mark.parametrize("choice", ["auto", "none", "required", "get_current_weather"])
def test_tool_choice_round_trips(choice: str) -> None:
    request = Request(
        messages=(Message(role="user", content="x"),), tools=(WEATHER_TOOL,), tool_choice=choice
    )
    assert _round_trip(request).tool_choice == choice


@pytest.mark.parametrize(
    "message",
    [
        Message(role="assistant", content="plain answer"),
        Message(
            role="assistant",
            content="",
            tool_calls=(ToolCall(id="call_9", name="lookup", arguments='{"q": "a\\u00e9"}'),),
        ),
        Message(
            role="assistant",
            content="Let me check.",
            tool_calls=(
                ToolCall(id="a", name="one", arguments="{}"),
                ToolCall(id="b", name="two", arguments='{"n":2}'),
            ),
        ),
    ],
)
def test_response_round_trips_and_validates_with_the_sdk(message: Message) -> None:
    finish = FinishReason.TOOL_CALLS if message.tool_calls else FinishReason.LENGTH
    original = Response(
        id="chatcmpl-7",
        model="gpt-4o-2024-08-06",
        message=message,
        finish_reason=finish,
        usage=Usage(11, 5),
        provider="openai",
    )
    body = OpenAIServerCodec(clock=FakeClock()).render_response(original)
    sdk = ChatCompletion.model_validate(body)
    assert sdk.created == 1_800_000_000
    assert sdk.usage is not None
    assert sdk.usage.total_tokens == 16
    wire = json.dumps(body).encode()
    assert OpenAIClientCodec().parse_response(wire, "gpt-4o") == original


STREAM_CHUNKS = [
    StreamChunk(text="Hel"),
    StreamChunk(text="lo"),
    StreamChunk(tool_call=ToolCallDelta(index=0, id="call_1", name="get_weather")),
    StreamChunk(tool_call=ToolCallDelta(index=0, arguments='{"city":')),
    StreamChunk(tool_call=ToolCallDelta(index=0, arguments='"Paris"}')),
    StreamChunk(tool_call=ToolCallDelta(index=1, id="call_2", name="noop", arguments="{}")),
    StreamChunk(finish_reason=FinishReason.TOOL_CALLS),
    StreamChunk(usage=Usage(30, 12)),
]


def _encode(chunks: list[StreamChunk], *, usage: bool = True) -> bytes:
    server = OpenAIServerCodec(clock=FakeClock())
    encoder = server.stream_encoder(id="chatcmpl-s", model="gpt-4o", include_usage=usage)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


def test_stream_round_trip_gives_the_same_chunks() -> None:
    raw = _encode(STREAM_CHUNKS)
    decoder = OpenAIClientCodec().stream_decoder("gpt-4o")
    parser = SSEParser()
    decoded: list[StreamChunk] = []
    for i in range(0, len(raw), 7):  # bytes arrive in arbitrary slices
        for event in parser.feed(raw[i : i + 7]):
            assert decoder.done is False
            decoded += decoder.feed(event)
    assert decoded == STREAM_CHUNKS
    assert decoder.done is True


def test_stream_bytes_are_what_the_api_sends() -> None:
    raw = _encode([StreamChunk(text="Hi"), StreamChunk(finish_reason=FinishReason.STOP)])
    frame = (
        '{"id":"chatcmpl-s","object":"chat.completion.chunk","created":1800000000,"model":"gpt-4o",'
    )
    assert raw == sse_lines(
        frame + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        '"logprobs":null,"finish_reason":null}]}',
        frame
        + '"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
        frame + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
        "[DONE]",
    )
    for event in events(raw)[:-1]:
        ChatCompletionChunk.model_validate_json(event.data)


def test_usage_chunk_only_when_requested() -> None:
    chunks = [StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(3, 4))]
    with_usage = events(_encode(chunks))
    usage_chunk = ChatCompletionChunk.model_validate_json(with_usage[-2].data)
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 3
    without = [e.data for e in events(_encode(chunks, usage=False))]
    assert len(without) == 3
    assert all('"usage"' not in data for data in without)
    assert stream_usage_requested({"stream": True, "stream_options": {"include_usage": True}})
    assert not stream_usage_requested({"stream": True})


def test_encoder_starts_itself_and_follows_the_served_model() -> None:
    encoder = OpenAIServerCodec(clock=FakeClock()).stream_encoder(id="i", model="alias")
    raw = encoder.encode(StreamChunk(text="x", model="gpt-4o-2024-08-06")) + encoder.end()
    parsed = [json.loads(e.data) for e in events(raw)[:-1]]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[1]["model"] == "gpt-4o-2024-08-06"
    assert encoder.start() == b""


def test_decoder_reports_a_different_served_model_once() -> None:
    raw = sse_lines(
        '{"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"a"}}]}',
        '{"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"b"}}]}',
    )
    chunks, done = decode_all(raw, model="gpt-4o")
    assert chunks == [StreamChunk(text="a", model="gpt-4o-2024-08-06"), StreamChunk(text="b")]
    assert done is False


def test_compatible_stream_without_ids_usage_or_done() -> None:
    """Ollama/vLLM style: no id, usage on the finish chunk, no ``[DONE]``."""
    raw = sse_lines(
        '{"choices":[{"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}',
        '{"choices":[{"delta":{},"finish_reason":"length"}],'
        '"usage":{"prompt_tokens":5,"completion_tokens":7}}',
    )
    chunks, done = decode_all(raw)
    assert chunks == [
        StreamChunk(text="Hi"),
        StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(5, 7)),
    ]
    assert done is False


def test_compatible_response_without_optional_fields() -> None:
    body = b'{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":null}]}'
    response = OpenAIClientCodec(provider_kind="ollama").parse_response(body, "llama3")
    assert response == Response(
        id="",
        model="llama3",
        message=Message(role="assistant", content="ok"),
        finish_reason=FinishReason.STOP,
        provider="ollama",
    )


def test_legacy_function_call_finish_maps_to_tool_calls() -> None:
    body = b'{"choices":[{"message":{"content":"x"},"finish_reason":"function_call"}]}'
    assert OpenAIClientCodec().parse_response(body, "m").finish_reason is FinishReason.TOOL_CALLS


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
    BadRequest("no such model", status=404),
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
        assert back.retry_after == err.retry_after


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


# ---------------------------------------------------------------- server: request validation


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_body(model=None), "'model'"),
        ({"model": "gpt-4o"}, "'messages'"),
        (_body(messages="hi"), "'messages'"),
        (_body(messages=[]), "'messages'"),
        (_body(messages=["hi"]), "'messages[0]'"),
        (_body(messages=[{"content": "hi"}]), "'messages[0].role'"),
        (_body(messages=[{"role": "robot", "content": "hi"}]), "'messages[0].role'"),
        (_body(messages=[{"role": "user"}]), "'messages[0].content'"),
        (_body(messages=[{"role": "user", "content": 5}]), "'messages[0].content'"),
        (
            _body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "'messages[0].content[0].type'",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "'messages[0].content[0].text'",
        ),
        (_body(messages=[{"role": "tool", "content": "r"}]), "'messages[0].tool_call_id'"),
        (
            _body(
                messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]
            ),
            "'messages[0].tool_calls[0].function'",
        ),
        (
            _body(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": {}},
                            }
                        ],
                    }
                ]
            ),
            "'messages[0].tool_calls[0].function.arguments'",
        ),
        (_body(tools=[{"type": "function", "function": {}}]), "'tools[0].function.name'"),
        (_body(tools=[{"type": "web_search"}]), "'tools[0].type'"),
        (
            _body(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            "'tools[0].function.parameters'",
        ),
        (_body(tool_choice="sometimes"), "'tool_choice'"),
        (_body(tool_choice={"type": "function", "function": {}}), "'tool_choice.function.name'"),
        (_body(max_tokens="10"), "'max_tokens'"),
        (_body(max_completion_tokens=True), "'max_completion_tokens'"),
        (_body(temperature="hot"), "'temperature'"),
        (_body(top_p=[1]), "'top_p'"),
        (_body(stop=5), "'stop'"),
        (_body(stop=["a", 5]), "'stop'"),
        (_body(stream="yes"), "'stream'"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        OpenAIServerCodec().parse_request(body)
    assert type(caught.value) is BadRequest
    assert field in caught.value.message
    assert caught.value.status == 400
    status, rendered, _ = OpenAIServerCodec().render_error(caught.value)
    assert status == 400
    assert rendered["error"]["type"] == "invalid_request_error"


def test_bad_request_body_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="'body'"):
        OpenAIServerCodec().parse_request(["not", "an", "object"])


def test_server_accepts_the_variants_the_sdks_send() -> None:
    body = {
        "model": "ignored-when-path-names-it",
        "messages": [
            {"role": "system", "content": "Rule one."},
            {"role": "developer", "content": [{"type": "text", "text": "Rule two."}]},
            {
                "role": "user",
                "name": "alice",
                "content": [{"type": "text", "text": "Part A"}, {"type": "text", "text": "Part B"}],
            },
        ],
        "max_completion_tokens": 50,
        "max_tokens": 10,
        "temperature": 1,
        "stop": "###",
        "n": 1,
        "seed": 42,
        "logprobs": False,
        "stream": False,
        "stream_options": None,
        "metadata": {"x": "y"},
    }
    model, request = OpenAIServerCodec().parse_request(body)
    assert model == "ignored-when-path-names-it"
    assert request == Request(
        system="Rule one.\n\nRule two.",
        messages=(Message(role="user", content="Part A\nPart B"),),
        max_tokens=50,
        temperature=1.0,
        stop=("###",),
    )
    deployment, _ = OpenAIServerCodec().parse_request(
        {"messages": [{"role": "user", "content": "x"}]}, path_model="my-deployment"
    )
    assert deployment == "my-deployment"


def test_tool_definition_defaults_survive() -> None:
    _, request = OpenAIServerCodec().parse_request(
        _body(tools=[{"type": "function", "function": {"name": "ping"}}])
    )
    assert request.tools == (ToolDefinition(name="ping"),)
    assert request.tools[0].parameters == {"type": "object", "properties": {}}
