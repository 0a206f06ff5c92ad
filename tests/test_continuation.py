"""Mid-stream continuation: a stream cut after it reached the client goes on elsewhere.

Two fakes give the same canonical answer (as two deployments of one model would, or as a
model asked the same at temperature 0), so a continuation can be checked word for word: the
official SDKs must receive the whole answer, once, whatever cut it, and the fake that
continued must have been asked the right thing (a prefill of exactly the text delivered, or
the request as it came). What cannot be continued ends with the clean in-stream error.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller.config import parse_config
from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import Message, Request, StreamChunk
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._continue import Diverged, Overlap, continuation_request
from controller.routing._resume import takes_prefill
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.runtime import Runtime
from tests.conftest import FORMATS, Recorder
from tests.gateway_support import GatewayTestBackend

REPLY = "One two three four five six seven eight nine ten."
LIMITS = Timeouts(connect=2.0, first_token=5.0, idle=0.5, total=10.0, terminator_grace=0.1)
USER: Any = [{"role": "user", "content": "count to ten"}]
TOOL: Any = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


@dataclass
class Env:
    url: str
    first: FakeProvider
    second: FakeProvider
    recorder: Recorder


@asynccontextmanager
async def gateway(
    first: tuple[str, bool], second: tuple[str, bool], *, second_reply: str = REPLY
) -> AsyncIterator[Env]:
    """A gateway whose tier ``t`` has ``first`` then ``second``: (wire format, takes prefill)."""
    recorder = Recorder()
    async with (
        FakeProvider(name="first", reply=REPLY) as a,
        FakeProvider(name="second", reply=second_reply) as b,
    ):
        router = _router(_provider("first", a, *first), _provider("second", b, *second), recorder)
        tracer = TracerProvider().get_tracer("tests.continuation")
        meter = MeterProvider().get_meter("tests.continuation")
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        async with GatewayServer(
            create_app(backend, settings=GatewaySettings()), host="127.0.0.1", port=0, grace=2.0
        ) as server:
            yield Env(server.url, a, b, recorder)
        await router.aclose()


def _router(first: HttpProvider, second: HttpProvider, recorder: Recorder) -> Router:
    """Tier ``t``: ``first`` (model m-1), then ``second`` (m-2); no retries."""
    targets = (Target(provider="first", model="m-1"), Target(provider="second", model="m-2"))
    return Router(
        tiers={"t": TierPlan(name="t", targets=targets)},
        providers={"first": first, "second": second},
        listeners=[recorder],
        retry=never_retry,
        default_timeouts=LIMITS,
        deadline=20.0,
        rng=random.Random(7),
    )


def _provider(name: str, fake: FakeProvider, kind: str, prefill: bool) -> HttpProvider:
    return HttpProvider(
        name=name,
        codec=codec_for(kind),
        base_url=fake.url(FORMATS.get(kind, "openai")),
        api_key="sk-test-not-a-secret",
        takes_prefill=prefill,
    )


async def _openai_text(env: Env, **extra: Any) -> str:
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="t", messages=USER, stream=True, **extra
        )
        text, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"  # the SDK saw a finished answer, not a cut one
    return "".join(text)


async def _openai_pieces(env: Env, into: list[str], **extra: Any) -> None:
    """The text pieces a stream delivers, kept in ``into`` when it then fails."""
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="t", messages=USER, stream=True, **extra
        )
        async for chunk in stream:
            into.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - keep what came


async def _anthropic_text(env: Env) -> str:
    async with (
        anthropic.AsyncAnthropic(base_url=env.url, api_key="sk-client", max_retries=0) as client,
        client.messages.stream(model="t", max_tokens=64, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]  # one block, continued
    return "".join(block.text for block in message.content if block.type == "text")


def _continued(env: Env, *, prefilled: str | None) -> None:
    """The second fake was asked to continue: with ``prefilled`` as the last (assistant)
    turn, or (None) with the request as it came."""
    last = env.second.seen[-1].request.messages[-1]
    if prefilled is None:
        assert (last.role, last.content) == ("user", "count to ten")
    else:
        assert (last.role, last.content) == ("assistant", prefilled)
    cut, more = env.recorder.attempts[-2:]
    assert (cut.provider, cut.outcome) == ("first", Outcome.FAULT)  # counted against it
    assert (more.provider, more.reason, more.outcome) == (
        "second",
        AttemptReason.CONTINUATION,
        Outcome.SUCCESS,
    )
    assert more.failover_from == "first"
    assert env.recorder.routes[-1].outcome is RouteOutcome.DEGRADED


# ------------------------------------------------------------------- faults, both formats
@pytest.mark.parametrize(
    "mode", [FaultMode.CUT_STREAM, FaultMode.STALL_STREAM, FaultMode.END_STREAM]
)
async def test_openai_client_gets_the_whole_answer_from_a_prefilled_continuation(
    mode: FaultMode,
) -> None:
    """Same format (relayed as the provider sent it) until the cut, then encoded."""
    async with gateway(("openai_compatible", True), ("openai_compatible", True)) as env:
        env.first.set_fault(Fault(mode=mode, after_chunks=4))
        assert await _openai_text(env) == REPLY
        _continued(env, prefilled="One two three four")


async def test_anthropic_client_gets_the_whole_answer_in_one_text_block() -> None:
    """The relayed Anthropic stream is taken over mid-block: the continuation's text goes on
    in the block the provider opened, then the message ends as the API's does."""
    async with gateway(("anthropic", True), ("anthropic", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
        assert await _anthropic_text(env) == REPLY
        _continued(env, prefilled="One two three")


# The SDK's async transport subclasses aiohttp's ClientSession, which aiohttp discourages.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
async def test_a_gemini_client_gets_the_whole_answer_after_its_relayed_stream_is_cut() -> None:
    async with gateway(("gemini", True), ("gemini", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=4))
        options = types.HttpOptions(
            base_url=env.url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        client = genai.Client(api_key="g-client-key", http_options=options)
        stream = await client.aio.models.generate_content_stream(model="t", contents="count to ten")
        texts = [chunk.text or "" async for chunk in stream]
        assert "".join(texts) == REPLY
        last = env.second.seen[-1].request.messages
        assert (last[-1].role, last[-1].content) == ("assistant", "One two three four")
        assert json.loads(env.second.seen[-1].body)["contents"][-1]["role"] == "model"


async def test_a_translated_stream_is_continued_on_a_provider_of_a_third_format() -> None:
    """OpenAI client, Anthropic provider (encoded by the gateway), Gemini continuation: no
    prefill there, so a restart whose repeated words are not sent twice."""
    async with gateway(("anthropic", True), ("gemini", False)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=5))
        assert await _openai_text(env) == REPLY
        _continued(env, prefilled=None)


async def test_a_refused_prefill_is_retried_as_a_restart_and_never_becomes_the_answer() -> None:
    async with gateway(("openai_compatible", True), ("openai_compatible", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=2))
        env.second.set_fault(Fault(mode=FaultMode.REFUSE_PREFILL))
        assert await _openai_text(env) == REPLY
        refused, restarted = env.second.seen
        assert refused.request.messages[-1].role == "assistant"
        assert restarted.request.messages[-1].role == "user"
        reasons = [(a.provider, a.reason, a.outcome) for a in env.recorder.attempts]
        assert reasons == [
            ("first", AttemptReason.PRIMARY, Outcome.FAULT),
            ("second", AttemptReason.CONTINUATION, Outcome.CALLER_ERROR),
            ("second", AttemptReason.CONTINUATION, Outcome.SUCCESS),
        ]


async def test_the_cut_provider_itself_continues_when_it_is_the_only_one_left() -> None:
    """A tier of one provider (a flaky connection, not an outage): the same provider is asked
    to continue."""
    async with gateway(("anthropic", True), ("anthropic", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=6, count=1))
        env.second.set_fault(Fault(mode=FaultMode.ERROR_503))
        assert await _anthropic_text(env) == REPLY
        continued = env.first.seen[-1].request.messages[-1]
        assert (continued.role, continued.content) == ("assistant", "One two three four five six")


# ------------------------------------------------------------------- what is not continued
async def test_a_restart_that_says_something_else_ends_with_the_clean_error() -> None:
    other = "Uno dos tres cuatro cinco seis siete ocho nueve diez."
    async with gateway(("openai", False), ("openai", False), second_reply=other) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
        received: list[str] = []
        with pytest.raises(openai.APIError):
            await _openai_pieces(env, received)
        assert "".join(received) == "One two three"  # nothing of the restart reached it
        last = env.recorder.attempts[-1]
        assert (last.reason, last.error_type) == (
            AttemptReason.CONTINUATION,
            "continuation_diverged",
        )
        assert last.outcome is Outcome.CANCELLED  # a model need not say the same twice


async def test_a_tool_call_cut_mid_arguments_is_never_spliced() -> None:
    async with gateway(("openai_compatible", True), ("openai_compatible", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=2))  # name, half
        with pytest.raises(openai.APIError):
            await _openai_pieces(env, [], tools=[TOOL])
        assert env.second.requests == 0


async def test_several_answers_at_once_are_not_continued() -> None:
    """``n: 2``: the text delivered is one choice's, so no continuation can be right."""
    async with gateway(("openai_compatible", True), ("openai_compatible", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=2))
        with pytest.raises(openai.APIError):
            await _openai_text(env, n=2)
        assert env.second.requests == 0
        assert env.first.requests == 1


async def test_what_a_translation_would_lose_is_kept_by_continuing_in_the_clients_format() -> None:
    """``logprobs`` passes only to a provider of the client's format: the Anthropic target is
    passed over, and the cut provider itself continues from the client's own body (every
    member kept) with the prefill appended."""
    async with gateway(("openai_compatible", True), ("anthropic", True)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3, count=1))
        assert await _openai_text(env, logprobs=True) == REPLY
        assert env.second.requests == 0
        body = json.loads(env.first.seen[-1].body)
        assert body["logprobs"] is True
        assert body["messages"][-1] == {"role": "assistant", "content": "One two three"}
        assert body["model"] == "m-1"


# ------------------------------------------------------------------- the router alone
async def test_the_router_continues_a_stream_and_reports_the_continuation() -> None:
    async with (
        FakeProvider(name="first", reply=REPLY) as a,
        FakeProvider(name="second", reply=REPLY) as b,
    ):
        recorder = Recorder()
        first, second = (
            _provider("first", a, "anthropic", True),
            _provider("second", b, "openai", False),
        )
        router = _router(first, second, recorder)
        a.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
        hello = Request(messages=(Message(role="user", content="count to ten"),), stream=True)
        stream = await router.stream(hello, tier="t")
        chunks: list[StreamChunk] = [c async for c in stream]
        await router.aclose()
    assert "".join(c.text for c in chunks) == REPLY
    assert sum(1 for c in chunks if c.finish_reason) == 1
    assert (stream.continued, stream.provider) == (1, "second")
    assert recorder.routes[-1].served_by == "second"


# ------------------------------------------------------------------- pieces
def test_a_prefill_never_ends_in_whitespace_and_the_trimmed_part_is_matched() -> None:
    hello = Request(messages=(Message(role="user", content="hi"),))
    request, pending = continuation_request(hello, "One two ", prefill=True, own=False)
    assert request.messages[-1] == Message(role="assistant", content="One two")
    assert pending == " "
    overlap = Overlap(pending, prefilled=True)
    taken = overlap.take(StreamChunk(text=" three"))
    assert taken == StreamChunk(text="three")  # the space went out already
    assert overlap.take(StreamChunk(text=" four")) == StreamChunk(text=" four")


def test_a_restart_must_repeat_the_text_across_chunk_boundaries() -> None:
    overlap = Overlap("One two", prefilled=False)
    assert overlap.take(StreamChunk(text="One")) is None
    taken = overlap.take(StreamChunk(text=" two three"))
    assert taken == StreamChunk(text=" three")
    with pytest.raises(Diverged):
        Overlap("One two", prefilled=False).take(StreamChunk(text="One three"))


def test_prefill_is_on_by_kind_and_set_per_provider() -> None:
    config = parse_config(
        json.dumps(
            {
                "providers": {
                    "a": {"kind": "anthropic", "api_key_env": "A_KEY"},
                    "o": {"kind": "openai", "api_key_env": "O_KEY"},
                    "c": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"},
                    "off": {"kind": "anthropic", "api_key_env": "A_KEY", "prefill": False},
                    "on": {"kind": "gemini", "api_key_env": "G_KEY", "prefill": True},
                },
                "tiers": {"t": {"targets": [{"provider": "a", "model": "m"}]}},
                "state": {"path": ""},
            }
        )
    )
    expected = {"a": True, "o": False, "c": True, "off": False, "on": True}
    assert {name: p.takes_prefill for name, p in config.providers.items()} == expected
    # ... and the router's providers (wrapped for drills) say so, as the continuation reads it
    keys = {"A_KEY": "sk-a-test-key", "O_KEY": "sk-o-test-key", "G_KEY": "g-test-key"}
    router = Runtime(config, env=keys).router
    assert {name: takes_prefill(p) for name, p in router.providers.items()} == expected


async def test_a_continuation_that_fails_leaves_the_cut_as_the_reason() -> None:
    async with gateway(("openai", False), ("openai", False)) as env:
        env.first.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
        env.second.set_fault(Fault(mode=FaultMode.ERROR_503))
        with pytest.raises(openai.APIError) as caught:
            await _openai_text(env)
        assert "503" not in str(caught.value)  # the client hears of the cut, not of the 503
        outcomes = [(a.provider, a.reason, a.error_type) for a in env.recorder.attempts]
        cut = ("first", AttemptReason.CONTINUATION, "connection")  # cut again each time
        refused = ("second", AttemptReason.CONTINUATION, "overloaded")
        # Bounded by the router's max_attempts (6): the cut provider, then each in turn.
        assert outcomes == [
            ("first", AttemptReason.PRIMARY, "connection"),
            *[refused, cut] * 2,
            refused,
        ]
        assert env.recorder.routes[-1].outcome is RouteOutcome.FAILED
