"""Edges of the two chat fronts: requests the real APIs refuse, and answers that are odd but real.

* ``messages: []`` and a ``max_tokens`` below 1 are refused with a 400 naming the field, in each
  front's format, and nothing reaches a provider (``count_tokens`` keeps taking no max_tokens).
* A tool call whose arguments hold no JSON object (an OpenAI model stopped by max_tokens in the
  middle of them) is still an answer: the Anthropic front gives it, streamed or not, as a
  ``tool_use`` with ``input: {}`` and ``stop_reason: max_tokens``, and logs which call it was.
* A stream from an OpenAI provider learns the input tokens only at its end; the Anthropic front
  sends them in ``message_delta``, where the official SDK's accumulator takes them from.

Real parts throughout: a gateway on 127.0.0.1, a real Router, fake providers speaking the real
wire formats, and the official SDKs as clients.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anthropic
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import FinishReason, Message, Request, Response, ToolCall, Usage
from controller.providers.fake import FakeProvider
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from tests.conftest import Recorder, adapter
from tests.gateway_support import (
    TIMEOUTS,
    GatewayEnv,
    GatewayTestBackend,
    hello,
    hello_anthropic,
    post,
)
from tests.gateway_test_support import CHAT, MESSAGES
from tests.gateway_test_support import env as env  # fixtures: the aliases re-export them for pytest
from tests.gateway_test_support import http as http

COUNT = "/v1/messages/count_tokens"
TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
ASK: Any = [{"role": "user", "content": "weather in Paris?"}]

# ---------------------------------------------------------------- requests the real APIs refuse


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (hello_anthropic(messages=[]), "messages: at least one message is required"),
        (hello_anthropic(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
        (hello_anthropic(max_tokens=-5), "max_tokens: Input should be greater than or equal to 1"),
        (hello_anthropic(max_tokens=0, stream=True), "max_tokens"),
    ],
)
async def test_anthropic_front_refuses_no_messages_and_no_room(
    env: GatewayEnv, http: aiohttp.ClientSession, body: Any, words: str
) -> None:
    status, answer, _ = await post(http, env.url + MESSAGES, body)
    assert status == 400
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "invalid_request_error"
    assert words in answer["error"]["message"]
    assert env.primary.requests == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (hello(messages=[]), "messages"),
        (hello(max_tokens=0), "max_tokens"),
        (hello(max_completion_tokens=-1), "max_completion_tokens"),
        (hello(max_completion_tokens=100, max_tokens=0), "max_tokens"),
        (hello(stream=True, max_tokens=0), "max_tokens"),
    ],
)
async def test_openai_front_refuses_them_naming_the_param(
    env: GatewayEnv, http: aiohttp.ClientSession, body: Any, param: str
) -> None:
    status, answer, _ = await post(http, env.url + CHAT, body)
    assert status == 400
    error = answer["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert f"'{param}'" in error["message"]
    assert env.primary.requests == 0


async def test_count_tokens_still_takes_no_max_tokens(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post(http, env.url + COUNT, {"model": "claude-test", "messages": ASK})
    assert status == 200
    assert answer["input_tokens"] > 0


# ---------------------------------------------------------------- tool arguments that are no object


class _CutFake(FakeProvider):
    """The fake, answering everything with one tool call whose arguments are ``arguments``,
    stopped by max_tokens (an OpenAI model cut mid-arguments sends exactly that)."""

    def __init__(self, arguments: str) -> None:
        super().__init__(name="cut")
        self._arguments = arguments

    def answer(self, request: Request, model: str) -> Response:
        call = ToolCall(id="call_cut", name="get_weather", arguments=self._arguments)
        return Response(
            id="fake-cut-1",
            model=model,
            message=Message(role="assistant", tool_calls=(call,)),
            finish_reason=FinishReason.LENGTH,
            usage=Usage(11, 7),
            provider=self.name,
        )


def _claude(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=url, api_key="sk-ant-client", max_retries=0, timeout=10.0
    )


@asynccontextmanager
async def _claude_over_cut_openai(arguments: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """An Anthropic SDK client of a gateway whose only provider is a ``_CutFake``, in OpenAI
    format (model alias ``cut``)."""
    tracing, metering = TracerProvider(), MeterProvider()
    async with _CutFake(arguments) as fake:
        router = Router(
            tiers={
                "cut": TierPlan(
                    name="cut", targets=(Target(provider="cut-openai", model="gpt-cut"),)
                )
            },
            providers={"cut-openai": adapter(fake, "openai", "cut-openai")},
            retry=never_retry,
            default_timeouts=TIMEOUTS,
        )
        backend = GatewayTestBackend(
            router=router,
            tracer=tracing.get_tracer("tests.front_edges"),
            meter=metering.get_meter("tests.front_edges"),
            recorder=Recorder(),
        )
        app = create_app(backend, settings=GatewaySettings())
        async with (
            GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server,
            _claude(server.url) as claude,
        ):
            yield claude
        await router.aclose()
    tracing.shutdown()
    metering.shutdown()


async def _ask(claude: anthropic.AsyncAnthropic, *, stream: bool) -> anthropic.types.Message:
    tools: Any = [TOOL]
    if not stream:
        return await claude.messages.create(model="cut", max_tokens=5, messages=ASK, tools=tools)
    async with claude.messages.stream(model="cut", max_tokens=5, messages=ASK, tools=tools) as s:
        return await s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "arguments",
    ['{"city": "Par', '["Paris"]', "Paris, France", "null"],
    ids=["cut", "list", "junk", "null"],
)
async def test_tool_arguments_that_are_no_object_give_empty_input(
    caplog: pytest.LogCaptureFixture, arguments: str, stream: bool
) -> None:
    async with _claude_over_cut_openai(arguments) as claude:
        with caplog.at_level(logging.WARNING, logger="controller.wire"):
            message = await _ask(claude, stream=stream)
    assert message.stop_reason == "max_tokens"
    [block] = message.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_cut", "get_weather", {})
    assert message.usage.input_tokens == 11
    [warning] = [r for r in caplog.records if r.name == "controller.wire._anthropic_server"]
    assert "'call_cut'" in warning.getMessage()
    assert "'get_weather'" in warning.getMessage()
    assert "Par" not in warning.getMessage()  # the arguments are the caller's content
    relayed = stream and arguments.startswith("{")  # an object is streamed as it comes
    sent = "relayed as it came" if relayed else ("held back" if stream else "sent as input {}")
    assert sent in warning.getMessage()  # says what the client got


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_arguments_that_are_an_object_pass_unchanged(
    caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    async with _claude_over_cut_openai(' {"city": "Paris"}') as claude:
        with caplog.at_level(logging.WARNING, logger="controller.wire"):
            message = await _ask(claude, stream=stream)
    [block] = message.content
    assert block.type == "tool_use"
    assert block.input == {"city": "Paris"}
    assert [r for r in caplog.records if r.name.startswith("controller.wire")] == []


# ---------------------------------------------------------------- stream usage, read by the SDK


async def test_streamed_input_tokens_reach_the_sdk_final_message(env: GatewayEnv) -> None:
    """``gpt-test`` is served by the OpenAI-format provider, whose stream reports usage in its
    last chunk: the SDK's final message must still carry the input tokens."""
    async with (
        _claude(env.url) as claude,
        claude.messages.stream(
            model="gpt-test", max_tokens=64, system="Be brief.", messages=ASK
        ) as stream,
    ):
        final = await stream.get_final_message()
    seen = env.primary.seen[-1]
    assert seen.format == "openai"
    assert (
        final.usage.input_tokens == env.primary.answer(seen.request, seen.model).usage.input_tokens
    )
    assert final.usage.output_tokens > 0
