"""Attacks on the standby features (issue 21 items 1, 2, 4), kept as regression tests: a warm
request must not cost its client, a stale idle-probe failure must not hide a primary's outage,
a rate-limit reset said to be far away must not keep a target away for good.

Real fake providers over HTTP on loopback, injected clocks (no test races a timer)."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import openai
import pytest

from controller._clock import FakeClock
from controller.config import parse_config
from controller.control.state import HealthState, StateHolder
from controller.events import AttemptReason
from controller.model import Message, Request
from controller.notify.alert import AlertEvent
from controller.providers import Provider
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._standby import WarmSteer
from controller.routing.plan import Hedge, Target, TierPlan
from controller.routing.router import Router
from controller.runtime import Runtime
from controller.signals.headroom import Headroom, parse_duration
from controller.telemetry.otel import TelemetryListener
from tests.conftest import Recorder, adapter
from tests.gateway_support import GatedProvider, gateway_env, wait_for

HELLO = Request(messages=(Message(role="user", content="hello"),))


# ----------------------------------------------------------------------------- headroom
@pytest.mark.parametrize("reset", ["inf", "1e999", "9" * 400 + "s", "99999999h"])
def test_a_reset_said_to_be_far_away_holds_a_target_an_hour_at_most(reset: str) -> None:
    clock = FakeClock()
    headroom = Headroom(clock, below=0.1, hold_seconds=60)
    headers = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": reset,
    }
    headroom.observe("openai", "gpt", headers)
    assert headroom.is_low("openai", "gpt")
    clock.advance(3601)
    assert not headroom.is_low("openai", "gpt")
    for reading in headroom.snapshot()[("openai", "gpt")].values():
        assert reading.reset is None or math.isfinite(reading.reset)


def test_an_rfc3339_reset_in_the_year_9999_holds_a_target_an_hour_at_most() -> None:
    clock = FakeClock()
    headroom = Headroom(clock, below=0.1)
    headers = {
        "anthropic-ratelimit-requests-limit": "100",
        "anthropic-ratelimit-requests-remaining": "1",
        "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
    }
    headroom.observe("anthropic", "claude", headers)
    assert headroom.is_low("anthropic", "claude")
    clock.advance(3601)
    assert not headroom.is_low("anthropic", "claude")


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "9" * 400 + "s"])
def test_a_duration_that_is_not_finite_is_no_duration(text: str) -> None:
    found = parse_duration(text)
    assert found is None or math.isfinite(found)


# ----------------------------------------------------------------------------- idle probes
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
routing: {{retry: {{max_tries_per_provider: 1}}}}  # no backoff sleeps on the fake clock
notify: {{cooldown_seconds: 600}}
state: {{path: ""}}
"""


async def _settle(rt: Runtime) -> None:
    rt.controller.tick()
    idle = rt.controller.idle
    assert idle is not None
    await asyncio.gather(*idle.running())


async def test_an_idle_probe_that_failed_once_does_not_hide_a_later_outage_under_traffic(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    """The primary's idle probe fails once at night; the morning's traffic then serves fine, so
    it is no longer standing by. Its outage at noon, under traffic, is a page (provider_tripped,
    critical), not 'backup unhealthy while standing by' (a warning)."""
    clock = FakeClock()
    config = parse_config(
        IDLE_CONFIG.format(primary=primary.url("openai"), backup=backup.url("anthropic"))
    )
    rt = Runtime(config, env={"PRIMARY_KEY": "sk-p", "BACKUP_KEY": "sk-b"}, clock=clock)
    rt.controller.resume()
    try:
        clock.advance(31)  # a quiet night: both idle
        primary.set_fault(Fault(mode=FaultMode.ERROR_500, count=1))  # one blip on its probe
        await _settle(rt)
        assert rt.controller.idle is not None
        assert rt.controller.idle.failing("primary") is not None
        for _ in range(20):  # the morning: the primary serves
            answer = await rt.router.complete(HELLO, tier="frontier")
            assert answer.provider == "primary"
            clock.advance(0.2)
            await _settle(rt)
        primary.set_fault(FaultMode.ERROR_500)  # noon: down, under traffic
        for _ in range(6):
            await rt.router.complete(HELLO, tier="frontier")
            await _settle(rt)
        assert rt.holder.current.status("primary").state is HealthState.TRIPPED
        events = [a["event"] for a in rt.alerts]
        assert AlertEvent.STANDBY_UNHEALTHY not in events
        assert AlertEvent.PROVIDER_TRIPPED in events
    finally:
        rt.controller.stop()
        await rt.router.aclose()
        rt.telemetry.shutdown(timeout=1)


async def test_a_probe_reported_after_the_failed_idle_probe_is_still_standing_by(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    """An idle probe that timed out is given up before its attempt is reported (the cancelled
    request reports itself later, on a real clock a moment after): that attempt, or any other
    probe or warm one, is the backup standing by, not serving; its failure still counts as a
    standby one."""
    clock = FakeClock()
    config = parse_config(
        IDLE_CONFIG.format(primary=primary.url("openai"), backup=backup.url("anthropic"))
    )
    rt = Runtime(config, env={"PRIMARY_KEY": "sk-p", "BACKUP_KEY": "sk-b"}, clock=clock)
    rt.controller.resume()
    idle = rt.controller.idle
    assert idle is not None
    try:
        backup.set_fault(FaultMode.AUTH)
        clock.advance(31)
        await _settle(rt)
        assert idle.failing("backup") is not None
        clock.advance(0.5)
        assert not await rt.router.probe("backup", "alt")  # reported after the probe ended
        assert idle.failing("backup") is not None
        assert list(rt.status()["standby"]["idle_probes_failing"]) == ["backup"]
    finally:
        rt.controller.stop()
        await rt.router.aclose()
        rt.telemetry.shutdown(timeout=1)


def _warm(primary: FakeProvider, backup: FakeProvider, recorder: Recorder, **kw: object) -> Router:
    p, b = adapter(primary, "openai", "primary"), adapter(backup, "anthropic", "backup")
    targets = (Target(provider="primary", model="big"), Target(provider="backup", model="alt"))
    tier = TierPlan(name="frontier", targets=targets, warm_share=1.0)
    return Router(
        tiers={"frontier": tier},
        providers={"primary": p, "backup": b},
        listeners=[recorder],
        steers=[WarmSteer(random.Random(1))],
        **kw,  # type: ignore[arg-type]
    )


async def test_a_hanging_backup_costs_nothing_before_any_answer_time_is_known(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """Right after a start (or under 20 answers in two minutes, i.e. any quiet tier) there is no
    p99 to guard a warm attempt with: it must not be sent, or a hanging backup holds the
    client for the backup's timeouts (120 s) before the primary is asked."""
    router = _warm(primary, backup, recorder)
    backup.set_fault(FaultMode.HANG)
    try:
        response = await asyncio.wait_for(router.complete(HELLO, tier="frontier"), 30)
    finally:
        await router.aclose()
    assert response.provider == "primary"
    assert [e.reason for e in recorder.attempts] == [AttemptReason.PRIMARY]


async def test_warm_traffic_never_takes_the_only_attempt(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """routing.max_attempts 1: a failing warm attempt would leave the client with an error."""
    router = _warm(primary, backup, recorder, max_attempts=1)
    backup.set_fault(FaultMode.ERROR_500)
    try:
        response = await router.complete(HELLO, tier="frontier")
    finally:
        await router.aclose()
    assert response.provider == "primary"
    assert backup.requests == 0


async def test_a_warm_attempt_is_guarded_when_the_tiers_hedge_budget_is_spent(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The tier's own hedge guards a warm attempt; its budget (per_second) is for hedging, and
    a warm request must not be left to a hanging backup's timeouts because it is spent."""
    clock = FakeClock()
    p, b = adapter(primary, "openai", "primary"), adapter(backup, "anthropic", "backup")
    targets = (Target(provider="primary", model="big"), Target(provider="backup", model="alt"))
    tier = TierPlan(
        name="frontier",
        targets=targets,
        warm_share=1.0,
        hedge=Hedge(after=1.0, per_second=0.001),  # one hedge, then one every 1000 s
    )
    router = Router(
        tiers={"frontier": tier},
        providers={"primary": p, "backup": b},
        listeners=[recorder],
        steers=[WarmSteer(random.Random(1))],
        clock=clock,
    )
    backup.set_fault(FaultMode.HANG)

    async def one(n: int) -> str:
        task = asyncio.ensure_future(router.complete(HELLO, tier="frontier"))
        # The warm attempt is at the backup (a real socket away), its guard armed.
        await wait_for(lambda: backup.requests >= n, within=30)
        clock.advance(1.0)
        return (await task).provider

    try:
        assert await asyncio.wait_for(one(1), 30) == "primary"  # the budget's one hedge
        assert await asyncio.wait_for(one(2), 30) == "primary"
    finally:
        await router.aclose()


def _only_backup_has_tools(
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
        "backup-openai": adapter(backup, "openai", "backup-openai"),
    }
    targets = (
        Target(provider="primary-openai", model="gpt-big", lacks=frozenset({"tools"})),
        Target(provider="backup-openai", model="gpt-alt"),
    )
    tier = TierPlan(name="frontier", targets=targets, warm_share=1.0, hedge=Hedge(after=60.0))
    return Router(
        tiers={"frontier": tier},
        providers=providers,
        state=state,
        listeners=[recorder, telemetry],
        steers=[WarmSteer(random.Random(3))],
    )


async def test_a_request_only_the_backup_can_honour_is_served_by_it_as_a_primary() -> None:
    """warm_share 1, a primary that lacks tools: a request with tools can only be the backup's.
    Taken as a warm attempt it was not retried, and the backup's one 500 reached the client; it
    is the request's first choice (reason primary), retried as one is."""
    tools: list[Any] = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    hello: list[Any] = [{"role": "user", "content": "hello"}]
    async with gateway_env(router_for=_only_backup_has_tools) as env:
        env.backup.set_fault(Fault(mode=FaultMode.ERROR_500, count=1))
        async with openai.AsyncOpenAI(
            base_url=env.url + "/v1", api_key="k", max_retries=0
        ) as client:
            answer = await client.chat.completions.create(
                model="frontier", messages=hello, tools=tools
            )
        assert answer.model == "gpt-alt"
        first, second = env.recorder.attempts
        assert (first.reason, first.provider) == (AttemptReason.PRIMARY, "backup-openai")
        assert (second.reason, second.provider) == (AttemptReason.RETRY, "backup-openai")
