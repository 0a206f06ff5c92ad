"""The OpenAI Chat Completions codec, client side: building the calls we send upstream.

Pins the request bodies, paths, query strings and auth headers the client codec produces for
OpenAI itself, Azure-style deployments and auth-less compatible servers, and that API keys never
leak into reprs.
"""

from __future__ import annotations

import json

from controller.model import Message, Request, ToolCall
from controller.wire._base import SSEEvent
from controller.wire.openai import TOOL_ERROR_PREFIX, OpenAIClientCodec, OpenAIStreamDecoder
from tests.wire_openai_support import WEATHER_PARAMETERS, WEATHER_TOOL

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


def test_several_choices_finish_when_the_last_one_does() -> None:
    """With n=2, choice 0 finishing first must not end the stream (the finish starts the wait
    for the terminator): its finish is reported once choice 1 has finished too."""

    def event(index: int, delta: dict[str, object], finish: str | None = None) -> SSEEvent:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        return SSEEvent(data=json.dumps({"model": "m", "choices": [choice]}))

    decoder = OpenAIStreamDecoder(model="m")
    got = [
        decoder.feed(event(0, {"role": "assistant", "content": ""})),
        decoder.feed(event(1, {"role": "assistant", "content": ""})),
        decoder.feed(event(0, {"content": "a"})),
        decoder.feed(event(1, {"content": "b"})),
        decoder.feed(event(0, {}, "stop")),
        decoder.feed(event(1, {"content": "c"})),
        decoder.feed(event(1, {}, "stop")),
    ]
    texts = [chunk.text for chunks in got for chunk in chunks if chunk.text]
    assert texts == ["a"]  # the chunks are choice 0's
    finishes = [i for i, chunks in enumerate(got) if any(c.finish_reason for c in chunks)]
    assert finishes == [6]  # after choice 1 finished, not at choice 0's own finish


def test_a_compatible_server_s_null_index_is_choice_zero() -> None:
    decoder = OpenAIStreamDecoder(model="m")
    event = {"choices": [{"index": None, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    chunks = decoder.feed(SSEEvent(data=json.dumps(event)))
    assert [c.text for c in chunks if c.text] == ["hi"]
    assert any(c.finish_reason for c in chunks)


_LATER_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"content": "more"}, "finish_reason": None}]},
    {"choices": [{"delta": {"content": ""}}], "usage": None},
    {"choices": [{"index": 0, "delta": None}]},
    {"choices": [{"index": 0, "delta": {"content": None, "role": "assistant"}}]},
    {"choices": [{"index": 0, "delta": {"content": 7}}]},
    {"choices": [{"index": 0, "delta": "text"}]},
    {"choices": [{"index": 1, "delta": {"content": "second choice"}}]},
    {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "nonsense"}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {}}]}}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    {"choices": [{"delta": {"content": "x"}}], "error": {"message": "overloaded"}},
    {"choices": "none"},
    {"error": {"message": "boom"}},
]


def _outcome(decoder: OpenAIStreamDecoder, data: str) -> object:
    try:
        return decoder.feed(SSEEvent(data=data))
    except Exception as exc:  # the outcome compared is the error's type and words
        return (type(exc).__name__, str(exc))


def test_the_quick_read_of_a_text_chunk_decodes_every_chunk_as_the_full_read_does() -> None:
    """After the first chunk (its model seen), a chunk that carries only text is read without
    the full decoder's steps; every other shape still goes through them: the outcome of each
    chunk is the one a decoder reading it in full gives."""
    first = json.dumps({"model": "m", "choices": [{"index": 0, "delta": {"content": "a"}}]})
    for chunk in _LATER_CHUNKS:
        data = json.dumps(chunk)
        running = OpenAIStreamDecoder(model="m")
        running.feed(SSEEvent(data=first))
        assert _outcome(running, data) == _outcome(OpenAIStreamDecoder(model="m"), data), chunk
