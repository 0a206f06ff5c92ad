"""Daily budgets in a fleet: each replica shares its day's totals through a real redis-server,
every replica judges the fleet's sum (alerts, enforcement, ``failover_budget_used``), each alert
goes out once per fleet and day; Redis away, a replica counts its own totals and no request
waits; a new UTC day starts the fleet afresh. Time is a FakeClock; the waits are polls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controller._clock import FakeClock
from controller.config import load_config
from controller.events import AttemptReason
from controller.fleet import RedisLink
from controller.fleet._spend import FleetSpend
from controller.fleet.config import FleetConfig
from controller.model import Message, Request, Usage
from controller.notify.alert import Alert, AlertEvent
from controller.providers.fake import FakeProvider
from controller.routing._spend import Budget, Price, Prices, Spend
from controller.routing.plan import Plan, Target, TierPlan
from controller.runtime import Runtime
from tests.conftest import Recorder
from tests.redis_support import RedisServer
from tests.telemetry_support import attempt

DAY = 86_400.0
REPLY = "one two three four five"  # the fake counts words: 5 output tokens
PROMPT = "hello there"  # 2 input tokens: 44 micro-USD a request on a at $2 / $8
HELLO = Request(messages=(Message(role="user", content=PROMPT),))

CONFIG = """\
providers:
  a: {{kind: openai, base_url: "{a}", api_key_env: A_KEY}}
  b: {{kind: anthropic, base_url: "{b}", api_key_env: B_KEY}}
tiers:
  t:
    targets: [{{provider: a, model: m-a}}, {{provider: b, model: m-b}}]
state:
  backend: redis
  path: "{state}"
  redis: {{prefix: budgets, replica: {replica}, timeout_seconds: 0.3}}
notify: {{cooldown_seconds: 1}}  # the fleet's claim per day does the work, not the cooldown
spend:
  path: ""
  prices:
    a: {{"*": {{input: 2, output: 8}}}}
    b: {{"*": {{input: 1, output: 1}}}}
  budgets: {{providers: {{a: {{daily_usd: 0.00022, enforce: true}}}}}}
"""


async def _until(check: Callable[[], bool], clock: FakeClock, *, within: float = 20.0) -> None:
    """Advance the clock a spend round at a time until ``check`` holds (polled, bounded)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        clock.advance(5.0)
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _replicas(
    tmp_path: Path, redis: RedisServer, clock: FakeClock
) -> AsyncIterator[list[Runtime]]:
    env = {
        "A_KEY": "sk-a-test-0123456789",
        "B_KEY": "sk-b-test-0123456789",
        "FAILOVER_REDIS_URL": redis.url,
    }
    async with FakeProvider(name="a", reply=REPLY) as a, FakeProvider(name="b", reply=REPLY) as b:
        runtimes = []
        for name in ("r1", "r2"):
            path = tmp_path / f"{name}.yaml"
            state = tmp_path / f"{name}-state.json"
            text = CONFIG.format(a=a.url("openai"), b=b.url("anthropic"), state=state, replica=name)
            path.write_text(text)
            runtimes.append(Runtime(load_config(path), env=env, clock=clock))
        for runtime in runtimes:
            await runtime.start()
        try:
            yield runtimes
        finally:
            for runtime in runtimes:
                await runtime.stop(grace=0.1)


def _events(runtimes: list[Runtime], event: AlertEvent) -> int:
    return sum(1 for r in runtimes for e in r.alerts if e["event"] == event)


async def test_two_replicas_at_60_percent_each_see_120_enforce_and_alert_once(
    tmp_path: Path, redis: RedisServer
) -> None:
    """a's budget is 220 micro-USD; each replica serves three requests on a (132, 60 %). The
    fleet's 264 (120 %) is what both judge: both send a's next request to b (reason budget),
    both report 1.2 used, and one budget_warning and one budget_exceeded go out in all.
    Before the fleet shared its totals each replica saw its 60 % and nothing happened."""
    clock = FakeClock()
    async with _replicas(tmp_path, redis, clock) as runtimes:
        recorders = [Recorder(), Recorder()]
        for runtime, recorder in zip(runtimes, recorders, strict=True):
            runtime.router.listeners.add(recorder)
            for _ in range(3):
                answer = await runtime.router.complete(HELLO, tier="t")
                assert answer.message.content == REPLY
            assert runtime.spend.spent("provider", "a") == pytest.approx(132e-6)  # its own
        await _until(lambda: all(r.spend.spent("provider", "a") > 200e-6 for r in runtimes), clock)
        await _until(lambda: _events(runtimes, AlertEvent.BUDGET_EXCEEDED) >= 1, clock)
        for _ in range(3):  # more rounds: nothing more is sent
            clock.advance(5.0)
            await asyncio.sleep(0.02)
        for runtime in runtimes:
            assert runtime.spend.spent("provider", "a") == pytest.approx(264e-6)
            await runtime.router.complete(HELLO, tier="t")
            metrics = runtime.render_metrics()[0].decode()
            used = 'failover_budget_used{name="a",scope="provider"} '
            line = next(x for x in metrics.splitlines() if x.startswith(used))
            assert float(line.removeprefix(used)) == pytest.approx(1.2)
        assert _events(runtimes, AlertEvent.BUDGET_EXCEEDED) == 1
        assert _events(runtimes, AlertEvent.BUDGET_WARNING) == 1
    for recorder in recorders:
        assert [(e.provider, e.reason) for e in recorder.attempts][-1] == (
            "b",
            AttemptReason.BUDGET,
        )


# --- the Spend against the fleet's Redis, without the rest of a replica --------------------------
BUDGET = Budget(scope="provider", name="a", daily_usd=100.0, enforce=True)
TIER = TierPlan(
    name="t", targets=(Target(provider="a", model="m"), Target(provider="b", model="m"))
)


def _spend(redis: RedisServer, clock: FakeClock, replica: str, alerts: list[Alert]) -> Spend:
    cfg = FleetConfig(prefix="unit", timeout_seconds=0.3)
    link = RedisLink(cfg, {"FAILOVER_REDIS_URL": redis.url})
    spend = Spend(
        prices=Prices({("a", "*"): Price(output=1e6)}),  # an output token costs $1
        budgets=[BUDGET],
        clock=clock,
        on_alert=alerts.append,
    )
    spend.shared = FleetSpend(link, replica)
    return spend


def _pay(spend: Spend, usd: int) -> None:
    spend.on_attempt(attempt(tier="t", provider="a", model="m", usage=Usage(0, usd)))


async def _close(*spends: Spend) -> None:
    for spend in spends:
        assert isinstance(spend.shared, FleetSpend)
        await spend.shared.link.aclose()


async def test_redis_away_leaves_requests_alone_and_each_replica_counts_its_own(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Frozen, then killed: a round ends within its bound and each replica judges its own
    totals (said once in the log); the lines it reached stay reached. Redis back (empty), the
    replicas publish again and the fleet's sum is judged once more."""
    clock = FakeClock()
    one: list[Alert] = []
    two: list[Alert] = []
    r1, r2 = _spend(redis, clock, "r1", one), _spend(redis, clock, "r2", two)
    try:
        _pay(r1, 30)
        _pay(r2, 30)
        await r1.sync()
        await r2.sync()
        await r1.sync()
        assert r1.spent("provider", "a") == r2.spent("provider", "a") == 60.0

        redis.freeze()
        _pay(r1, 10)  # the request path never reaches Redis
        with caplog.at_level(logging.WARNING, logger="controller.routing._spend"):
            started = time.monotonic()
            await asyncio.wait_for(r1.sync(), 5.0)  # each command bounded: 0.6 s at most
            assert time.monotonic() - started < 5.0
            assert r1.spent("provider", "a") == 40.0  # its own
            redis.kill()
            await r1.sync()
            await r2.sync()
            assert r2.spent("provider", "a") == 30.0
            _pay(r2, 55)  # alone it reaches 85 %: alerted here, as a claim cannot be made
            assert r2.spent("provider", "a") == 85.0
            await r2.sync()
        said = [r.getMessage() for r in caplog.records]
        assert (
            said.count("spend: the fleet's totals are unavailable; budgets count this replica's")
            == 2
        )  # once per replica, not per round
        assert [a.event for a in two] == [AlertEvent.BUDGET_WARNING]
        assert one == []

        await redis.start()  # same port, nothing kept
        await r1.sync()
        await r2.sync()
        await r1.sync()
        assert r1.spent("provider", "a") == r2.spent("provider", "a") == 125.0
        assert r1(TIER, Plan(TIER.targets)) is not None  # enforced on both
        assert r2(TIER, Plan(TIER.targets)) is not None
        for spend in (r1, r2):
            await spend.sync()
        events = [a.event for a in one + two]
        # r2's warning went out unclaimed while Redis was away; r2 claimed it on its first
        # round back, before r1 judged the fleet's 125. Each line went out once.
        assert events.count(AlertEvent.BUDGET_WARNING) == 1
        assert events.count(AlertEvent.BUDGET_EXCEEDED) == 1
    finally:
        await _close(r1, r2)


async def test_an_alert_sent_while_redis_froze_is_not_sent_again_by_another_replica(
    redis: RedisServer,
) -> None:
    """r2 crosses both lines (its 85 and r1's last read 30) while Redis is frozen and alerts
    unclaimed; once Redis answers it claims those alerts, so r1, judging the fleet's 115 % next,
    sends neither again: one budget_warning and one budget_exceeded in all."""
    clock = FakeClock()
    one: list[Alert] = []
    two: list[Alert] = []
    r1, r2 = _spend(redis, clock, "r1", one), _spend(redis, clock, "r2", two)
    try:
        _pay(r1, 30)
        _pay(r2, 30)
        for spend in (r1, r2, r1):
            await spend.sync()
        redis.freeze()
        _pay(r2, 55)  # 85 alone, 115 in the fleet
        assert two == []  # queued for the claim, off the request path
        await r2.sync()
        sent = [AlertEvent.BUDGET_WARNING, AlertEvent.BUDGET_EXCEEDED]
        assert [a.event for a in two] == sent  # no claim could be made: sent
        redis.thaw()
        await r2.sync()
        await r1.sync()
        assert r1.spent("provider", "a") == r2.spent("provider", "a") == 115.0
        assert [a.event for a in two] == sent
        assert one == []
    finally:
        await _close(r1, r2)


async def test_a_new_utc_day_starts_the_fleet_afresh(redis: RedisServer) -> None:
    """Both replicas over budget at 23:59:59 UTC; at midnight both judge 0 and route a first
    again; the new day's spending is shared under the new day and alerts again once."""
    start = 1_800_000_000.0 - 1_800_000_000.0 % DAY + DAY - 1.0  # 23:59:59 UTC
    clock = FakeClock(wall_start=start)
    one: list[Alert] = []
    two: list[Alert] = []
    r1, r2 = _spend(redis, clock, "r1", one), _spend(redis, clock, "r2", two)
    try:
        _pay(r1, 70)
        _pay(r2, 70)
        for spend in (r1, r2, r1):
            await spend.sync()
        assert r1(TIER, Plan(TIER.targets)) is not None
        assert r2(TIER, Plan(TIER.targets)) is not None
        assert r1.spent("provider", "a") == 140.0

        clock.advance(2.0)  # 00:00:01 the next day
        for spend in (r1, r2):
            await spend.sync()
            assert spend.spent("provider", "a") == 0.0
            assert spend(TIER, Plan(TIER.targets)) is None
        _pay(r1, 50)
        _pay(r2, 50)
        for spend in (r1, r2, r1, r2):
            await spend.sync()
        assert r1.spent("provider", "a") == r2.spent("provider", "a") == 100.0
        exceeded = [a for a in one + two if a.event is AlertEvent.BUDGET_EXCEEDED]
        assert len(exceeded) == 2  # one yesterday, one today
        assert exceeded[0].at < start + 1.0 < exceeded[1].at

        link = r1.shared.link if isinstance(r1.shared, FleetSpend) else None
        assert link is not None
        today = int(clock.wall() // DAY)
        ttl = await link._client.pttl(f"unit:spend:{today}")
        assert 0 < ttl <= 2 * DAY * 1000
        assert await link._client.pttl(f"unit:spend:{today}:alerted") > 0
    finally:
        await _close(r1, r2)
