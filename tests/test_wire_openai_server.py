"""The OpenAI Chat Completions codec, server side: validating the requests clients send us.

Bad request bodies are rejected as ``BadRequest`` naming the offending field, and the variants
the official SDKs send (developer turns, content parts, ``max_completion_tokens``, a model named
by the path) decode to our model.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller._errors import BadRequest
from controller.model import Message, Request, ToolDefinition
from controller.wire.openai import OpenAIServerCodec

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
        seed=42,
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
