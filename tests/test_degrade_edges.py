"""The degradation ladder at its edges: a step-down tier that cannot take the request, the
memory a cache-enabled tier's streams keep for the cache, and a cache whose SQLite thread
died with answers still queued."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import openai
import pytest

from controller._alerting import LadderWatch
from controller._clock import FakeClock
from controller.events import AttemptReason, RouteEvent, RouteOutcome
from controller.model import FinishReason, Message, Request, Response, StreamChunk
from controller.notify.alert import Alert, AlertEvent
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing.plan import Degrade, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import AnswerCache, Router
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS
from tests.test_degrade import DEGRADED, REPLY, STATIC_TEXT, _ask, ladder


async def test_a_step_down_tier_that_cannot_take_the_request_is_passed_over(
    tmp_path: Path,
) -> None:
    """``logprobs`` only goes to a provider of the client's format (OpenAI); the step-down
    tier has an Anthropic one. The tier's outage is the provider's fault, not the caller's:
    the ladder goes on to its next rung (the static text), never a 400 naming the tier."""
    async with ladder(tmp_path) as env:
        env.primary.set_fault(FaultMode.ERROR_503)
        async with openai.AsyncOpenAI(
            base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="t", messages=_ask("x"), logprobs=True
            )
        answer = raw.parse()
        assert (answer.choices[0].message.content, raw.headers.get(DEGRADED)) == (
            STATIC_TEXT,
            "static",
        )
        assert env.backup.requests == 0
        # ... nor the tier's own providers asked again in the step-down's name
        assert [(a.provider, a.reason) for a in env.recorder.attempts] == [
            ("primary", AttemptReason.PRIMARY)
        ]
        assert env.recorder.routes[-1].degraded == "static"


async def test_a_stream_keeps_for_the_cache_no_more_than_the_cache_holds() -> None:
    """A long answer on a cache-enabled tier: what the stream keeps to cache it once whole
    stays within the cache's own bound (beyond it the answer could not be cached anyway)."""
    reply = " ".join(f"word{i}" for i in range(400))  # ~3.6 kB of text, 400 chunks
    cache = AnswerCache(max_bytes=1000)
    async with FakeProvider(name="p", reply=reply) as fake:
        tier = TierPlan(
            name="t", targets=(Target(provider="p", model="m"),), degrade=Degrade(cache=True)
        )
        router = Router(
            tiers={"t": tier},
            providers={"p": adapter(fake, "openai", "p")},
            listeners=[Recorder()],
            retry=never_retry,
            default_timeouts=TIMEOUTS,
            cache=cache,
        )
        ask = Request(messages=(Message(role="user", content="count"),), stream=True)
        stream = await router.stream(ask, tier="t")
        text, most = [], 0
        async for chunk in stream:
            text.append(chunk.text)
            kept: list[StreamChunk] | None = getattr(stream, "_kept", None)
            held = sum(len(c.text) for c in kept) if kept else 0
            most = max(most, held)
        await router.aclose()
    assert "".join(text) == reply
    assert most <= 1000
    assert len(cache) == 0  # too big to keep


def test_closing_a_cache_whose_writer_died_with_a_full_queue_returns(tmp_path: Path) -> None:
    """The SQLite thread gives up (the database stayed locked past its timeout) with a full
    queue of answers behind it: closing the cache (the gateway's shutdown) must still return."""
    path = tmp_path / "answers.sqlite"
    cache = AnswerCache(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    answer = Response(
        id="a",
        model="m",
        message=Message(role="assistant", content="x"),
        finish_reason=FinishReason.STOP,
    )
    for i in range(1100):
        cache.put(f"key-{i}", answer)
    writer = getattr(cache, "_writer", None)
    assert writer is not None
    writer.join(timeout=10.0)  # it waits on the lock (2 s), then stops
    assert not writer.is_alive()
    closing = threading.Thread(target=cache.close, daemon=True)
    closing.start()
    closing.join(timeout=10.0)
    locker.close()
    assert not closing.is_alive(), "AnswerCache.close() hangs"
    assert len(cache) == 1000  # the memory side goes on


def test_a_tier_flapping_between_its_providers_and_its_ladder_alerts_once_each_way() -> None:
    """A partial outage: every other request of the tier is answered by its ladder. That is
    one degraded period (one critical alert), restored once the tier's own providers have
    served it for the quiet period with no degraded answer (one more alert), not a pair of
    alerts per request."""
    sent: list[Alert] = []
    clock = FakeClock()
    watch = LadderWatch(sent.append, clock, lambda: {"t": ("a",)})

    def served(by: str, rung: str = "") -> None:
        outcome = RouteOutcome.DEGRADED if rung else RouteOutcome.SERVED
        event = RouteEvent(
            request_id="r",
            tier="t",
            outcome=outcome,
            served_by=by,
            attempts=1,
            start=0.0,
            end=1.0,
            stream=False,
            degraded=rung,
        )
        watch.on_route(event)

    for _ in range(20):
        served("static", "static")
        clock.advance(0.5)
        served("b")
        clock.advance(0.5)
    assert [a.event for a in sent] == [AlertEvent.TIER_DEGRADED]
    clock.advance(LadderWatch.QUIET)
    served("b")
    assert [a.event for a in sent] == [AlertEvent.TIER_DEGRADED, AlertEvent.TIER_RESTORED]


async def test_a_step_down_attempt_names_the_provider_and_the_failure_it_steps_down_from(
    tmp_path: Path,
) -> None:
    async with ladder(tmp_path) as env:
        env.primary.set_fault(FaultMode.ERROR_503)
        async with openai.AsyncOpenAI(
            base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            await client.chat.completions.create(model="t", messages=_ask("x"))
        step = env.recorder.attempts[-1]
        assert (step.reason, step.provider) == (AttemptReason.STEP_DOWN, "backup")
        assert (step.failover_from, step.failover_cause) == ("primary", "overloaded")


def test_the_cache_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds the answers the tier gave (whatever they say), whatever the umask."""
    path = tmp_path / "state" / "answers.sqlite"
    cache = AnswerCache(path)
    cache.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_cache_path_that_cannot_be_made_leaves_the_cache_in_memory(tmp_path: Path) -> None:
    """As a failing disk does: logged once, the gateway starts, answers are kept in memory."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cache = AnswerCache(blocker / "answers.sqlite")
    answer = Response(
        id="a",
        model="m",
        message=Message(role="assistant", content="x"),
        finish_reason=FinishReason.STOP,
    )
    cache.put("k", answer)
    cache.close()
    assert len(cache) == 1


async def _ask_as(env: Any, key: str, text: str, *, stream: bool) -> tuple[str, str]:
    async with openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=key, max_retries=0) as c:
        if not stream:
            raw = await c.chat.completions.with_raw_response.create(model="t", messages=_ask(text))
            answer = raw.parse().choices[0].message.content or ""
            return answer, raw.headers.get(DEGRADED, "")
        streamed = await c.chat.completions.with_raw_response.create(
            model="t", messages=_ask(text), stream=True
        )
        pieces = [ch.choices[0].delta.content or "" async for ch in streamed.parse() if ch.choices]
        return "".join(pieces), streamed.headers.get(DEGRADED, "")


@pytest.mark.parametrize("stream", [False, True])
async def test_the_cache_never_answers_one_client_with_anothers_answer(
    tmp_path: Path, stream: bool
) -> None:
    """Two client keys ask the very same thing: while the tier is down, each gets back only an
    answer that it was given itself (the other one gets the static text)."""
    async with ladder(tmp_path, step_down=False) as env:
        assert await _ask_as(env, "sk-client-alice", "q", stream=stream) == (REPLY, "")
        env.primary.set_fault(FaultMode.ERROR_503)
        assert await _ask_as(env, "sk-client-bob", "q", stream=stream) == (STATIC_TEXT, "static")
        assert await _ask_as(env, "sk-client-alice", "q", stream=stream) == (REPLY, "cache")
