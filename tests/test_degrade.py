"""When a whole tier is down: the degradation ladder's config and the router's view of a
degraded tier (what triage acts on)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller._alerting import LadderWatch
from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import parse_config
from controller.control.state import HealthState, ProviderStatus, RoutingState, StateHolder
from controller.events import AttemptReason, Outcome, RouteEvent, RouteOutcome
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import FinishReason, Message, Request, Response, Usage
from controller.notify.alert import Alert, AlertEvent, Severity
from controller.notify.messages import headline
from controller.providers import HttpProvider, codec_for
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing.plan import Degrade, Priority, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import AnswerCache, Router
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS, GatewayTestBackend

CONFIG = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  frontier:
    targets: [{provider: a, model: m}, {provider: b, model: m}]
    degrade:
      step_down: fast
      cache: true
      static: "Sorry, try again in a few minutes."
      priority: defer
      healthy_below: 0.6
  fast:
    targets: [{provider: b, model: small}]
    degrade: {step_down: %s}
"""


def test_the_ladder_is_read_from_the_tier() -> None:
    degrade = parse_config(CONFIG % "null").tiers["frontier"].degrade
    assert degrade.plan() == Degrade(
        step_down="fast",
        cache=True,
        static="Sorry, try again in a few minutes.",
        priority=Priority.DEFER,
        healthy_below=0.6,
    )
    assert parse_config(CONFIG % "null").tiers["fast"].degrade.plan() == Degrade()


@pytest.mark.parametrize(
    ("lower", "says"),
    [
        (
            "frontier",
            "config:8: tiers.frontier.degrade.step_down: steps down in a loop (frontier -> fast",
        ),
        ("nowhere", "config:15: tiers.fast.degrade.step_down: unknown tier 'nowhere'"),
    ],
)
def test_a_ladder_that_loops_or_names_no_tier_is_refused_at_its_line(lower: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(CONFIG % lower)
    assert str(refused.value).startswith(says)


def _router(below: float, states: dict[str, HealthState]) -> Router:
    providers = {
        name: HttpProvider(name=name, codec=codec_for("openai"), base_url="http://127.0.0.1:9/v1")
        for name in ("a", "b", "c")
    }
    targets = tuple(Target(provider=name, model="m") for name in providers)
    tier = TierPlan(name="t", targets=targets, degrade=Degrade(healthy_below=below))
    statuses = {
        name: ProviderStatus(
            state=state, traffic_share=0.0 if state is HealthState.TRIPPED else 1.0
        )
        for name, state in states.items()
    }
    holder = StateHolder(RoutingState(providers=MappingProxyType(statuses)))
    return Router(tiers={"t": tier}, providers=providers, state=holder)


TRIPPED = HealthState.TRIPPED


@pytest.mark.parametrize(
    ("below", "states", "degraded"),
    [
        (0.0, {}, False),
        (0.0, {"a": TRIPPED, "b": TRIPPED}, False),  # one target left: not degraded by default
        (0.0, {"a": TRIPPED, "b": TRIPPED, "c": TRIPPED}, True),  # panic
        (0.5, {"a": TRIPPED}, False),  # 2 of 3 in rotation
        (0.5, {"a": TRIPPED, "b": TRIPPED}, True),  # 1 of 3 < half
    ],
)
def test_a_tier_is_degraded_in_panic_or_below_its_healthy_share(
    below: float, states: dict[str, HealthState], degraded: bool
) -> None:
    assert _router(below, states).degraded("t") is degraded
    assert _router(below, states).degraded("no-such-tier") is False


# ------------------------------------------------------------------- the ladder, end to end
REPLY = "The answer from a provider that was up."
DEGRADED = "x-failover-degraded"
STATIC_TEXT = "We are degraded right now; please try again in a few minutes."


@dataclass
class Env:
    url: str
    primary: FakeProvider
    backup: FakeProvider
    recorder: Recorder
    cache: AnswerCache
    router: Router


@asynccontextmanager
async def ladder(tmp_path: Path, *, step_down: bool = True) -> AsyncIterator[Env]:
    """Tier ``t``: the primary fake (OpenAI format), stepping down to tier ``low`` (the backup
    fake, Anthropic format), then the cache, then the static answer."""
    recorder = Recorder()
    cache = AnswerCache(tmp_path / "answers.sqlite", clock=FakeClock())
    degrade = Degrade(step_down="low" if step_down else None, cache=True, static=STATIC_TEXT)
    async with (
        FakeProvider(name="primary", reply=REPLY) as primary,
        FakeProvider(name="backup", reply=REPLY) as backup,
    ):
        providers = {
            "primary": adapter(primary, "openai", "primary"),
            "backup": adapter(backup, "anthropic", "backup"),
        }
        tiers = {
            "t": TierPlan(
                name="t", targets=(Target(provider="primary", model="m-1"),), degrade=degrade
            ),
            "low": TierPlan(name="low", targets=(Target(provider="backup", model="m-2"),)),
        }
        router = Router(
            tiers=tiers,
            providers=providers,
            listeners=[recorder],
            retry=never_retry,
            default_timeouts=TIMEOUTS,
            cache=cache,
        )
        tracer = TracerProvider().get_tracer("tests.degrade")
        meter = MeterProvider().get_meter("tests.degrade")
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        app = create_app(backend, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
            yield Env(server.url, primary, backup, recorder, cache, router)
        await router.aclose()


def _ask(text: str) -> Any:
    return [{"role": "user", "content": text}]


async def _openai(env: Env, text: str, *, stream: bool) -> tuple[str, str]:
    """(answer text, x-failover-degraded) through the openai SDK."""
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        if not stream:
            raw = await client.chat.completions.with_raw_response.create(
                model="t", messages=_ask(text)
            )
            answer = raw.parse()
            return answer.choices[0].message.content or "", raw.headers.get(DEGRADED, "")
        streamed = await client.chat.completions.with_raw_response.create(
            model="t", messages=_ask(text), stream=True
        )
        pieces, finish = [], None
        async for chunk in streamed.parse():
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        assert finish == "stop"
        return "".join(pieces), streamed.headers.get(DEGRADED, "")


async def _anthropic(env: Env, text: str, *, stream: bool) -> tuple[str, str]:
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-client", max_retries=0
    ) as client:
        if not stream:
            raw = await client.messages.with_raw_response.create(
                model="t", max_tokens=64, messages=_ask(text)
            )
            message = await raw.parse()
            degraded = raw.headers.get(DEGRADED, "")
        else:
            async with client.messages.stream(
                model="t", max_tokens=64, messages=_ask(text)
            ) as events:
                message = await events.get_final_message()
                degraded = events.response.headers.get(DEGRADED, "")
    assert message.stop_reason == "end_turn"
    return "".join(b.text for b in message.content if b.type == "text"), degraded


ASK = {"openai": _openai, "anthropic": _anthropic}


@pytest.mark.parametrize("front", sorted(ASK))
@pytest.mark.parametrize("stream", [False, True])
async def test_each_rung_serves_in_turn_and_says_so(
    tmp_path: Path, front: str, stream: bool
) -> None:
    ask = ASK[front]
    async with ladder(tmp_path) as env:
        assert await ask(env, "seen before", stream=stream) == (REPLY, "")  # healthy, cached
        env.primary.set_fault(FaultMode.ERROR_503)
        assert await ask(env, "seen before", stream=stream) == (REPLY, "tier")
        step = [a for a in env.recorder.attempts if a.reason is AttemptReason.STEP_DOWN]
        assert [(a.provider, a.outcome) for a in step] == [("backup", Outcome.SUCCESS)]
        env.backup.set_fault(FaultMode.ERROR_503)
        assert await ask(env, "seen before", stream=stream) == (REPLY, "cache")
        assert await ask(env, "never asked", stream=stream) == (STATIC_TEXT, "static")
        assert env.router.rungs == {"t": "static"}  # what the status shows for the tier
        env.primary.clear_fault()
        assert await ask(env, "never asked", stream=stream) == (REPLY, "")
        assert env.router.rungs == {"t": ""}
        routes = [(r.outcome, r.served_by, r.degraded) for r in env.recorder.routes[:4]]
        assert routes == [
            (RouteOutcome.SERVED, "primary", ""),
            (RouteOutcome.DEGRADED, "backup", "tier"),
            (RouteOutcome.DEGRADED, "cache", "cache"),
            (RouteOutcome.DEGRADED, "static", "static"),
        ]


async def test_without_a_rung_that_serves_the_failure_stands(tmp_path: Path) -> None:
    async with ladder(tmp_path, step_down=False) as env:
        env.primary.set_fault(FaultMode.ERROR_503)
        env.recorder.routes.clear()
        async with openai.AsyncOpenAI(
            base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            answer = await client.chat.completions.create(model="t", messages=_ask("x"))
        assert answer.choices[0].message.content == STATIC_TEXT  # static is the last rung
        assert env.recorder.routes[-1].degraded == "static"


async def test_a_caller_error_never_goes_down_the_ladder(tmp_path: Path) -> None:
    async with ladder(tmp_path) as env:
        env.primary.set_fault(FaultMode.CONTENT_FILTER)  # a 400: the request's fault
        async with openai.AsyncOpenAI(
            base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="t", messages=_ask("x"))
        assert env.backup.requests == 0


# ------------------------------------------------------------------- the cache
def test_the_cache_outlives_a_restart_and_forgets_what_expired(tmp_path: Path) -> None:
    clock = FakeClock()
    answer = Response(
        id="a",
        model="m",
        message=Message(role="assistant", content="kept"),
        finish_reason=FinishReason.STOP,
        usage=Usage(3, 1),
        provider="p",
    )
    first = AnswerCache(tmp_path / "c.sqlite", ttl=60, clock=clock)
    key = first.key("t", Request(messages=(Message(role="user", content="q"),)))
    first.put(key, answer)
    first.close()
    again = AnswerCache(tmp_path / "c.sqlite", ttl=60, clock=clock)
    kept = again.get(key)
    assert kept is not None
    assert (kept.message.content, kept.usage, kept.provider) == ("kept", Usage(3, 1), "p")
    clock.advance(61)
    assert again.get(key) is None
    again.close()


def test_the_cache_is_bounded_by_entries_and_keys_ignore_stream() -> None:
    cache = AnswerCache(max_entries=2)
    asks = [Request(messages=(Message(role="user", content=str(i)),)) for i in range(3)]
    answer = Response(
        id="a",
        model="m",
        message=Message(role="assistant", content="x"),
        finish_reason=FinishReason.STOP,
    )
    for ask in asks:
        cache.put(cache.key("t", ask), answer)
    assert len(cache) == 2
    assert cache.get(cache.key("t", asks[0])) is None  # the oldest went
    streamed = Request(messages=asks[2].messages, stream=True)
    assert cache.key("t", streamed) == cache.key("t", asks[2])
    assert cache.key("u", asks[2]) != cache.key("t", asks[2])


# ------------------------------------------------------------------- the alerts
def test_one_alert_when_a_tier_starts_serving_degraded_and_one_when_it_stops() -> None:
    sent: list[Alert] = []
    clock = FakeClock()
    watch = LadderWatch(sent.append, clock, lambda: {"t": ("backup",)})

    def served(by: str | None, rung: str = "", tier: str = "t") -> None:
        outcome = RouteOutcome.DEGRADED if rung else RouteOutcome.SERVED
        if by is None:
            outcome = RouteOutcome.FAILED
        watch.on_route(
            RouteEvent(
                request_id="r",
                tier=tier,
                outcome=outcome,
                served_by=by,
                attempts=1,
                start=0.0,
                end=1.0,
                stream=False,
                degraded=rung,
            )
        )

    served("primary")
    served("backup", "tier")
    served("cache", "cache")  # another rung of the same degraded period: not news
    served(None)  # a failure says nothing about the ladder
    served("static", "static", tier="other")
    served("primary")  # within the quiet period after a degraded answer: not yet
    clock.advance(LadderWatch.QUIET)
    served("primary")
    assert [(a.event, a.tier) for a in sent] == [
        (AlertEvent.TIER_DEGRADED, "t"),
        (AlertEvent.TIER_DEGRADED, "other"),
        (AlertEvent.TIER_RESTORED, "t"),
    ]
    assert sent[0].severity is Severity.CRITICAL
    assert "its step-down tier (backup)" in (sent[0].detail or "")
    assert headline(sent[0]).endswith("tier t serving degraded answers")
    assert headline(sent[2]).endswith("tier t served by its own providers again")
