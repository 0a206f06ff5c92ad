"""Knowing the backups before they are needed (issue 21 items 1, 2 and 4): warm traffic, idle
probes of targets standing by, and rate-limit headroom read from the providers' headers.

Real fake providers over HTTP on loopback, the official SDKs where a test is end to end,
injected clocks for every time that matters (no test sleeps to race a timer)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import parse_config
from controller.control.config import TripwireConfig
from controller.control.decide import TripCause
from controller.control.state import HealthState, StateHolder
from controller.events import AttemptReason, Outcome
from controller.model import Message, Request
from controller.notify.alert import AlertEvent
from controller.providers import HttpProvider, Provider
from controller.providers.fake import FakeProvider, Fault, FaultMode, RateLimits
from controller.routing._standby import HeadroomSteer, StandbyMetrics, WarmSteer
from controller.routing.plan import Hedge, Target, TierPlan
from controller.routing.router import Router
from controller.runtime import Runtime
from controller.signals.headroom import Headroom, parse_duration, readings
from controller.telemetry import names
from controller.telemetry.otel import TelemetryListener
from tests.conftest import Recorder, adapter
from tests.gateway_support import GatedProvider, gateway_env

HELLO = Request(messages=(Message(role="user", content="hello"),))
# A tier's own hedge with a fixed wait guards a warm attempt from the first request (it never
# fires in these tests: the fake answers in milliseconds).
GUARD = Hedge(after=60.0)


def _points(
    reader: InMemoryMetricReader,
) -> dict[tuple[str, tuple[tuple[str, object], ...]], float]:
    """Every counter and gauge point the reader collects: (name, sorted attributes) -> value."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[str, tuple[tuple[str, object], ...]], float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, NumberDataPoint):
                        attrs = tuple(sorted((point.attributes or {}).items()))
                        found[(metric.name, attrs)] = point.value
    return found


def warm_router(
    primary: FakeProvider,
    backup: FakeProvider,
    recorder: Recorder,
    share: float,
    seed: int,
    hedge: Hedge | None = None,
) -> Router:
    """``hedge``: the tier's own; without one a warm attempt is made only once the primary or
    the backup has the answer times its guard needs."""
    p, b = adapter(primary, "openai", "primary"), adapter(backup, "anthropic", "backup")
    targets = (Target(provider="primary", model="big"), Target(provider="backup", model="alt"))
    tier = TierPlan(name="frontier", targets=targets, warm_share=share, hedge=hedge)
    return Router(
        tiers={"frontier": tier},
        providers={"primary": p, "backup": b},
        listeners=[recorder],
        steers=[WarmSteer(random.Random(seed))],
    )


# ------------------------------------------------------------------------------ warm traffic
async def test_warm_share_is_honoured_over_2000_requests(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = warm_router(primary, backup, recorder, share=0.05, seed=2026)
    served = [(await router.complete(HELLO, tier="frontier")).provider for _ in range(2000)]
    await router.aclose()
    warm = [e for e in recorder.attempts if e.reason is AttemptReason.WARM]
    # Binomial(2000, 0.05): mean 100, sd 9.7; the fixed seed makes it exact, the bounds say
    # what any seed must meet (4.5 sd).
    assert 56 <= len(warm) <= 144
    assert len(warm) == backup.requests
    assert all(e.provider == "backup" and e.failover_from == "primary" for e in warm)
    # Nobody paid for a second attempt, but for the warm attempts' guard: the primary started
    # beside a warm attempt slower than the backup's own p99 (about 1 in 100 of them by design,
    # more on a busy machine), whose request either may serve: a warm attempt the guard beat is
    # reported abandoned (cancelled), never as the backup's fault.
    guards = [e for e in recorder.attempts if e.reason is AttemptReason.HEDGE]
    assert all(e.provider == "primary" for e in guards)
    assert len(guards) < len(warm)
    beaten = [e for e in warm if e.outcome is not Outcome.SUCCESS]
    assert all(e.outcome is Outcome.CANCELLED for e in beaten)
    assert len(beaten) <= len(guards)
    assert len(recorder.attempts) == 2000 + len(guards)
    assert len(warm) - len(guards) <= served.count("backup") <= len(warm)


async def test_warm_share_off_by_default(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = warm_router(primary, backup, recorder, share=0.0, seed=1)
    for _ in range(200):
        await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert backup.requests == 0


async def test_a_failing_warm_request_goes_back_to_the_primary_without_retrying_the_backup(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = warm_router(primary, backup, recorder, share=1.0, seed=1, hedge=GUARD)
    backup.set_fault(FaultMode.ERROR_500)  # a 5xx would be retried on a primary
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "primary"
    assert backup.requests == 1
    warm, back = recorder.attempts
    assert (warm.reason, warm.provider, warm.outcome) == (
        AttemptReason.WARM,
        "backup",
        Outcome.FAULT,
    )
    assert (back.reason, back.provider, back.failover_from) == (
        AttemptReason.FAILOVER,
        "primary",
        "backup",
    )


async def test_standby_metric_counts_warm_attempts_by_outcome(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    router = warm_router(primary, backup, recorder, share=1.0, seed=1, hedge=GUARD)
    router.listeners.add(StandbyMetrics(meters.get_meter("t")))
    await router.complete(HELLO, tier="frontier")
    backup.set_fault(Fault(mode=FaultMode.AUTH, count=1))
    await router.complete(HELLO, tier="frontier")
    await router.aclose()
    points = {
        attrs: value
        for (name, attrs), value in _points(reader).items()
        if name == names.METRIC_STANDBY
    }
    assert points == {
        (("outcome", "success"), ("provider", "backup"), ("reason", "warm")): 1,
        (("outcome", "fault"), ("provider", "backup"), ("reason", "warm")): 1,
    }
    meters.shutdown()


def test_warm_share_is_read_from_the_tier_and_bounded_at_its_line() -> None:
    config = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t:
    targets: [{provider: a, model: m}]
    warm_share: %s
"""
    assert parse_config(config % "0.01").tiers["t"].warm_share == 0.01
    with pytest.raises(ConfigError) as refused:
        parse_config(config % "1.5")
    assert "config:6: tiers.t.warm_share" in str(refused.value)


# ------------------------------------------------------------------------------ headroom
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("7", 7.0)],
)
def test_openai_reset_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "6m0", "1s2x"])
def test_a_reset_that_is_no_duration_is_ignored(text: str) -> None:
    assert parse_duration(text) is None


def test_anthropic_headers_are_read_with_their_rfc3339_reset() -> None:
    wall = 1_800_000_000.0
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:30Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "oops",  # ignored, not an error
    }
    (reading,) = readings(headers, wall)
    assert (reading.kind, reading.limit, reading.remaining) == ("requests", 1000, 999)
    assert reading.reset == pytest.approx(30.0)


def test_headroom_gauges() -> None:
    clock = FakeClock()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    headroom = Headroom(clock, below=0.1)
    headroom.register(meters.get_meter("t"))
    headroom.observe(
        "openai",
        "gpt",
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-reset-requests": "30s",
        },
    )
    seen = _points(reader)
    target = (("kind", "requests"), ("model", "gpt"), ("provider", "openai"))
    assert seen[(names.METRIC_RATELIMIT_REMAINING, target)] == 5
    assert seen[(names.METRIC_RATELIMIT_LIMIT, target)] == 100
    assert seen[(names.METRIC_RATELIMIT_LOW, (("model", "gpt"), ("provider", "openai")))] == 1
    meters.shutdown()


def _headroom_router(clock: FakeClock, headroom: Headroom) -> Callable[..., Router]:
    def build(
        primary: FakeProvider,
        backup: FakeProvider,
        gated: GatedProvider,
        *,
        telemetry: TelemetryListener,
        recorder: Recorder,
        state: StateHolder,
        timeouts: object,
    ) -> Router:
        providers: dict[str, HttpProvider] = {
            "primary-openai": adapter(primary, "openai", "primary-openai"),
            "primary-anthropic": adapter(primary, "anthropic", "primary-anthropic"),
            "backup-openai": adapter(backup, "openai", "backup-openai"),
            "backup-anthropic": adapter(backup, "anthropic", "backup-anthropic"),
        }
        for name, provider in providers.items():
            provider.on_headers = headroom.hook(name)
        pairs = {
            "frontier": (("primary-openai", "gpt-big"), ("backup-anthropic", "claude-alt")),
            "claude": (("primary-anthropic", "claude-big"), ("backup-openai", "gpt-alt")),
        }
        tiers = {
            name: TierPlan(name=name, targets=tuple(Target(provider=p, model=m) for p, m in two))
            for name, two in pairs.items()
        }
        serving: dict[str, Provider] = dict(providers)
        return Router(
            tiers=tiers,
            providers=serving,
            state=state,
            listeners=[recorder, telemetry],
            clock=clock,
            steers=[HeadroomSteer(headroom)],
        )

    return build


async def _ask(sdk: str, url: str, stream: bool) -> str:
    """One answer through the gateway with the vendor's own SDK, whole or streamed; the model
    that served."""
    hello: list[Any] = [{"role": "user", "content": "hello"}]
    if sdk == "openai":
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
            if not stream:
                answer = await client.chat.completions.create(model="frontier", messages=hello)
                return answer.model
            chunks = await client.chat.completions.create(
                model="frontier", messages=hello, stream=True
            )
            models = [chunk.model async for chunk in chunks]  # the whole stream, read to its end
            return models[0]
    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as claude:
        if not stream:
            message = await claude.messages.create(model="claude", max_tokens=16, messages=hello)
            return message.model
        async with claude.messages.stream(model="claude", max_tokens=16, messages=hello) as events:
            return (await events.get_final_message()).model


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("sdk", "primary_name"), [("openai", "primary-openai"), ("anthropic", "primary-anthropic")]
)
async def test_rate_limit_headers_shift_traffic_before_the_429s_and_back_at_the_reset(
    sdk: str, primary_name: str, stream: bool
) -> None:
    """The primary's headers (OpenAI's x-ratelimit-*, a duration to the reset; Anthropic's
    anthropic-ratelimit-*, an RFC 3339 reset) say 10 requests a minute: once fewer than 20 %
    are left, new requests go to the backup (reason headroom) with no 429 seen; when the
    window resets on the injected clock, the primary serves again."""
    clock = FakeClock(wall_start=time.time())
    headroom = Headroom(clock, below=0.2)
    async with gateway_env(router_for=_headroom_router(clock, headroom)) as env:
        env.primary.set_rate_limits(
            RateLimits(requests=10, tokens=100_000, window_seconds=60), wall=clock.wall
        )
        served = [await _ask(sdk, env.url, stream) for _ in range(10)]
        assert served[:9] == [served[0]] * 9  # 9 answers left 1 of 10: below 20 %
        assert served[9] != served[0]
        shifted = env.recorder.attempts[9]
        assert (shifted.reason, shifted.failover_from) == (AttemptReason.HEADROOM, primary_name)
        assert all(e.outcome is Outcome.SUCCESS for e in env.recorder.attempts)  # no 429
        assert headroom.is_low(primary_name, served[0])
        clock.advance(61)  # the window resets
        assert await _ask(sdk, env.url, stream) == served[0]
        back = env.recorder.attempts[-1]
        assert (back.reason, back.provider) == (AttemptReason.PRIMARY, primary_name)
    assert env.primary.requests == 10


def test_headroom_config_keys() -> None:
    config = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t: {targets: [{provider: a, model: m}]}
routing:
  headroom: {below: %s, hold_seconds: 30}
"""
    assert parse_config(config % "0.05").routing.headroom.below == 0.05
    with pytest.raises(ConfigError) as refused:
        parse_config(config % "1")
    assert "config:6: routing.headroom.below" in str(refused.value)


# ------------------------------------------------------------------------------ idle probes
IDLE_CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
controller:
  probe_idle_seconds: 30
  probe_interval_seconds: 1
  consecutive_failures: 3
  cooloff_seconds: 5
  probe_successes: 2
  failback_steps: [1.0]
notify: {{cooldown_seconds: 600}}
state: {{path: ""}}
"""


async def _tick(rt: Runtime, clock: FakeClock, seconds: float) -> None:
    """Advance the clock, serve one request (the primary must), tick, finish its probes."""
    clock.advance(seconds)
    answer = await rt.router.complete(HELLO, tier="frontier")
    assert answer.provider == "primary"
    rt.controller.tick()
    idle = rt.controller.idle
    assert idle is not None
    await asyncio.gather(*idle.running())
    for _ in range(3):  # probes of a probing provider run in the loop's own tasks
        await asyncio.sleep(0.05)


async def test_an_idle_backup_with_a_bad_key_trips_and_alerts_while_the_primary_serves(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    clock = FakeClock()
    config = parse_config(
        IDLE_CONFIG.format(primary=primary.url("openai"), backup=backup.url("anthropic"))
    )
    env = {"PRIMARY_KEY": "sk-primary", "BACKUP_KEY": "sk-expired"}
    rt = Runtime(config, env=env, clock=clock)
    rt.controller.resume()
    backup.set_fault(FaultMode.AUTH)  # its key was revoked last week
    primary.set_rate_limits(RateLimits(requests=1000), wall=clock.wall)
    try:
        for _ in range(29):
            await _tick(rt, clock, 1.0)
        assert backup.requests == 0  # not idle for 30 s yet
        await _tick(rt, clock, 1.0)
        assert backup.requests == 1  # the first idle probe: 401
        assert rt.holder.current.status("backup").state is HealthState.HEALTHY  # one blip
        standing = rt.status()["standby"]
        assert list(standing["idle_probes_failing"]) == ["backup"]
        assert standing["ratelimits"]["primary/big"]["requests"]["limit"] == 1000
        assert standing["ratelimits"]["primary/big"]["low"] is False
        for _ in range(3):  # probed again each probe_interval_seconds while it fails
            await _tick(rt, clock, 1.0)
        status = rt.holder.current.status("backup")
        assert status.state is HealthState.TRIPPED
        standby = [a for a in rt.alerts if a["event"] == AlertEvent.STANDBY_UNHEALTHY]
        assert len(standby) == 1
        assert standby[0]["severity"] == "warning"
        assert "unhealthy while standing by" in standby[0]["text"]
        assert "threshold" not in standby[0]["text"]  # the error rate did not trip it
        assert not [a for a in rt.alerts if a["event"] == AlertEvent.AUTH_FAILURE]
        # Still broken through a cool-off and a failed probe: no second alert (once a period).
        for _ in range(8):
            await _tick(rt, clock, 1.0)
        assert len([a for a in rt.alerts if a["event"] == AlertEvent.STANDBY_UNHEALTHY]) == 1
        # The key is fixed: probes pass, it recovers, and the recovery is announced.
        backup.clear_fault()
        for _ in range(30):
            await _tick(rt, clock, 1.0)
            if rt.holder.current.status("backup").state is HealthState.HEALTHY:
                break
        assert rt.holder.current.status("backup").state is HealthState.HEALTHY
        assert [a for a in rt.alerts if a["event"] == AlertEvent.PROVIDER_RECOVERED]
        # The recovery cleared it: broken again (well within notify.cooldown_seconds), it is
        # news again once its idle probes trip it.
        backup.set_fault(FaultMode.AUTH)
        for _ in range(40):
            await _tick(rt, clock, 1.0)
            if rt.holder.current.status("backup").state is HealthState.TRIPPED:
                break
        assert rt.holder.current.status("backup").state is HealthState.TRIPPED
        assert len([a for a in rt.alerts if a["event"] == AlertEvent.STANDBY_UNHEALTHY]) == 2
    finally:
        rt.controller.stop()
        await rt.router.aclose()
        rt.telemetry.shutdown(timeout=1)


def test_the_idle_trip_carries_cause_standby() -> None:
    assert TripCause.STANDBY.value == "standby"


async def test_a_hanging_backup_costs_a_warm_request_only_the_backups_usual_time(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """No hedge configured: a warm attempt still gets the primary started beside it once it has
    waited the backup's own p99, instead of the backup's timeouts (120 s here)."""
    router = warm_router(primary, backup, recorder, share=1.0, seed=1)
    for _ in range(25):  # the primary's answer times (20 before the first warm one), then warm
        await router.complete(HELLO, tier="frontier")
    backup.set_fault(FaultMode.HANG)
    response = await asyncio.wait_for(router.complete(HELLO, tier="frontier"), 60)
    await router.aclose()
    assert response.provider == "primary"
    late = recorder.attempts[25:]
    by_reason = {e.reason: e for e in late}
    assert set(by_reason) == {AttemptReason.WARM, AttemptReason.HEDGE}
    assert by_reason[AttemptReason.HEDGE].provider == "primary"
    assert by_reason[AttemptReason.WARM].error_type == "outpaced"  # not the backup's fault


def test_probe_idle_seconds_is_read_and_refused_at_its_line() -> None:
    config = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t: {targets: [{provider: a, model: m}]}
controller:
  probe_idle_seconds: %s
"""
    assert parse_config(config % "300").controller.probe_idle_seconds == 300
    assert TripwireConfig().probe_idle_seconds == 0  # off unless set
    with pytest.raises(ConfigError) as refused:
        parse_config(config % "-1")
    assert "config:6: controller.probe_idle_seconds" in str(refused.value)


def _warm_router(lacks: frozenset[str]) -> Callable[..., Router]:
    def build(
        primary: FakeProvider,
        backup: FakeProvider,
        gated: GatedProvider,
        *,
        telemetry: TelemetryListener,
        recorder: Recorder,
        state: StateHolder,
        timeouts: object,
    ) -> Router:
        providers: dict[str, Provider] = {
            "primary-openai": adapter(primary, "openai", "primary-openai"),
            "backup-anthropic": adapter(backup, "anthropic", "backup-anthropic"),
        }
        targets = (
            Target(provider="primary-openai", model="gpt-big"),
            Target(provider="backup-anthropic", model="claude-alt", lacks=lacks),
        )
        tier = TierPlan(name="frontier", targets=targets, warm_share=1.0, hedge=GUARD)
        return Router(
            tiers={"frontier": tier},
            providers=providers,
            state=state,
            listeners=[recorder, telemetry],
            steers=[WarmSteer(random.Random(3))],
        )

    return build


async def test_a_request_the_backup_cannot_honour_is_not_warmed_on_it() -> None:
    """warm_share 1 and a backup that lacks tools: a request offering tools is the primary's,
    a first attempt (reason primary, retried as a primary is), not a warm one."""
    tools: list[Any] = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    hello: list[Any] = [{"role": "user", "content": "hello"}]
    async with gateway_env(router_for=_warm_router(frozenset({"tools"}))) as env:
        async with openai.AsyncOpenAI(
            base_url=env.url + "/v1", api_key="k", max_retries=0
        ) as client:
            plain = await client.chat.completions.create(model="frontier", messages=hello)
            with_tools = await client.chat.completions.create(
                model="frontier", messages=hello, tools=tools
            )
        assert plain.model == "claude-alt"  # warmed
        assert with_tools.model == "gpt-big"
        first, second = env.recorder.attempts
        assert (first.reason, first.provider) == (AttemptReason.WARM, "backup-anthropic")
        assert (second.reason, second.provider) == (AttemptReason.PRIMARY, "primary-openai")
