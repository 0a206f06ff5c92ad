"""The controller loop on a FakeClock, through scripted outages fed as synthetic AttemptEvents.

``Sim`` plays the router: 10 requests a second; each goes to ``a`` according to ``a``'s traffic
share (a deterministic credit counter), otherwise to ``b``; a script says whether a request to a
provider faults at a given second. Time only moves through ``clock.advance``; the loop runs as a
real asyncio task and is given a few ``asyncio.sleep(0)`` turns after every step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from controller._clock import FakeClock
from controller.control.config import TripwireConfig
from controller.control.decide import Transition, TransitionKind
from controller.control.loop import Controller, Prober
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
    StateHolder,
)
from controller.control.store import MemoryStateStore, StateStore
from controller.events import AttemptEvent, AttemptReason, Outcome
from controller.signals import SignalWindows
from controller.telemetry import names
from tests.telemetry_support import gauge_points

H, T, P, R = (
    HealthState.HEALTHY,
    HealthState.TRIPPED,
    HealthState.PROBING,
    HealthState.RECOVERING,
)
Script = Callable[[str, float], bool]  # (provider, seconds since start) -> fault?


def never(provider: str, t: float) -> bool:
    return False


class Sim:
    def __init__(
        self,
        *,
        cfg: TripwireConfig | None = None,
        script: Script = never,
        probe_ok: Callable[[str], bool] = lambda name: True,
        store: StateStore | None = None,
        tiers: dict[str, tuple[str, ...]] | None = None,
        meter_provider: MeterProvider | None = None,
        prober: Prober | None = None,
        callbacks: tuple[Callable[[Transition], None], ...] = (),
    ) -> None:
        self.cfg = cfg or TripwireConfig()
        self.clock = FakeClock()
        self.start = self.clock.monotonic()
        self.script = script
        self.probe_ok = probe_ok
        self.probes: list[tuple[str, float]] = []
        self.windows = SignalWindows(clock=self.clock)
        self.holder = StateHolder()
        self.store = store or MemoryStateStore()
        self.events: list[Transition] = []
        self.history: list[tuple[float, HealthState, float]] = []
        self.sent = {"a": 0, "b": 0}
        self._credit = 0.0
        self.controller = Controller(
            clock=self.clock,
            windows=self.windows,
            holder=self.holder,
            store=self.store,
            cfg=self.cfg,
            tiers=tiers or {"frontier": ("a", "b")},
            prober=prober or self._probe,
            on_transition=[*callbacks, self.events.append],
            meter=meter_provider.get_meter("test") if meter_provider else None,
        )

    @property
    def t(self) -> float:
        return self.clock.monotonic() - self.start

    async def _probe(self, name: str) -> bool:
        self.probes.append((name, self.t))
        return self.probe_ok(name)

    def a(self) -> tuple[HealthState, float, int]:
        status = self.holder.current.status("a")
        return status.state, status.traffic_share, status.trip_count

    def kinds(self, provider: str = "a") -> list[TransitionKind]:
        return [e.kind for e in self.events if e.provider == provider]

    async def settle(self) -> None:
        for _ in range(8):
            await asyncio.sleep(0)

    async def run(self, seconds: float, *, rps: float = 10.0) -> None:
        for _ in range(round(seconds * rps)):
            self.request()
            self.clock.advance(1 / rps)
            await self.settle()
            self.history.append((self.t, *self.a()[:2]))

    def request(self) -> None:
        share = self.holder.current.status("a").traffic_share
        self._credit += share
        name = "b"
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            name = "a"
        elif not self.holder.current.status("b").usable:
            name = "a"  # panic: b is out too, the router tries a anyway
        self.send(name)

    def send(self, name: str) -> None:
        fault = self.script(name, self.t)
        self.sent[name] += 1
        self.windows.on_attempt(event(name, Outcome.FAULT if fault else Outcome.SUCCESS))
        if fault:
            self.controller.wake()

    def steps(self) -> list[tuple[HealthState, float]]:
        """Distinct (state, share) of ``a`` over time, consecutive duplicates dropped."""
        out: list[tuple[HealthState, float]] = [(H, 1.0)]
        for _, state, share in self.history:
            if out[-1] != (state, share):
                out.append((state, share))
        return out


def event(provider: str, outcome: Outcome, error_type: str = "overloaded") -> AttemptEvent:
    return AttemptEvent(
        request_id="r",
        tier="frontier",
        provider=provider,
        provider_kind="openai",
        model="m",
        attempt=1,
        reason=AttemptReason.PRIMARY,
        stream=False,
        start=0.0,
        end=0.2,
        start_wall=0.0,
        outcome=outcome,
        error_type=error_type if outcome is Outcome.FAULT else None,
        trace_id=0xABC if outcome is Outcome.FAULT else 0,
    )


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Sim], None]]:
    """Starts sims' loops and stops them (and awaits them) after the test."""
    tasks: list[tuple[Sim, asyncio.Task[None]]] = []

    def start(sim: Sim) -> None:
        tasks.append((sim, asyncio.get_running_loop().create_task(sim.controller.run())))

    yield start
    for sim, task in tasks:
        sim.controller.stop()
        await asyncio.wait_for(task, timeout=5)


def outage(start: float, end: float = 1e9, who: str = "a") -> Script:
    return lambda name, t: name == who and start <= t < end


async def test_trips_within_one_second_of_onset(running: Callable[[Sim], None]) -> None:
    sim = Sim(script=outage(20.0))
    running(sim)
    await sim.run(20.0)
    assert sim.events == []
    onset = sim.controller.now()
    await sim.run(1.0)
    (trip,) = sim.events
    assert (trip.provider, trip.kind, trip.to_state) == ("a", TransitionKind.TRIP, T)
    assert trip.at - onset <= 1.0
    assert trip.reason == "5 consecutive failures"
    assert trip.trace_ids == (format(0xABC, "032x"),)
    assert sim.a() == (T, 0.0, 1)
    assert sim.holder.current.version == 1
    assert sim.holder.current.changed_by == "controller"
    assert isinstance(sim.store, MemoryStateStore)
    assert sim.store.load() == sim.holder.current


async def test_gradual_failback_in_steps(running: Callable[[Sim], None]) -> None:
    sim = Sim(script=outage(5.0, 10.0))
    running(sim)
    await sim.run(60.0)
    assert sim.steps() == [(H, 1.0), (T, 0.0), (P, 0.0), (R, 0.1), (R, 0.5), (H, 1.0)]
    kinds = [TransitionKind.TRIP, TransitionKind.PROBE, TransitionKind.FAILBACK]
    assert sim.kinds() == [*kinds, TransitionKind.RECOVERED]
    trip, probe, failback, recovered = sim.events
    assert probe.at - trip.at == pytest.approx(15.0, abs=0.3)
    assert recovered.at - failback.at == pytest.approx(20.0, abs=0.3)
    assert recovered.down_for == pytest.approx(recovered.at - trip.at)
    assert failback.down_for == pytest.approx(failback.at - trip.at)
    assert sim.holder.current.version == 5  # trip, probe, 10 %, 50 %, healthy
    assert [n for n, _ in sim.probes] == ["a"] * 3
    assert sim.probes[1][1] - sim.probes[0][1] == pytest.approx(2.0, abs=0.3)


async def test_fault_during_failback_trips_again(running: Callable[[Sim], None]) -> None:
    failing = {"a": False}
    sim = Sim(script=lambda name, t: name == "a" and (5 <= t < 10 or failing["a"]))
    running(sim)
    while sim.a()[:2] != (R, 0.5):
        await sim.run(0.1)
        assert sim.t < 60
    failing["a"] = True
    await sim.run(2.0)  # at 50 % share a gets 5 requests a second
    assert sim.a() == (T, 0.0, 2)
    retrip = sim.events[-1]
    assert (retrip.kind, retrip.from_state, retrip.trip_count) == (TransitionKind.TRIP, R, 2)
    assert "during failback at 50%" in retrip.reason
    failing["a"] = False
    await sim.run(retrip.at + 30.0 - sim.controller.now() - 0.5)
    assert sim.a()[0] is T  # the second cool-off is 30 s
    await sim.run(1.0)
    assert sim.a()[0] is P


async def test_no_flapping_at_a_borderline_error_rate(running: Callable[[Sim], None]) -> None:
    count = {"a": 0}

    def every_other(name: str, t: float) -> bool:
        if name != "a":
            return False
        count["a"] += 1
        return count["a"] % 2 == 0  # exactly the 50 % threshold, never 5 in a row

    sim = Sim(script=every_other)
    running(sim)
    await sim.run(180.0)
    trips = [e for e in sim.events if e.kind is TransitionKind.TRIP]
    assert TransitionKind.RECOVERED not in sim.kinds()  # never back to full traffic
    assert 2 <= len(trips) <= 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(trips)]
    assert gaps == sorted(gaps)
    for trip, gap in zip(trips, gaps, strict=False):
        assert gap >= sim.cfg.cooloff_for(trip.trip_count)


async def test_just_below_the_threshold_never_trips(running: Callable[[Sim], None]) -> None:
    count = {"a": 0}

    def forty_percent(name: str, t: float) -> bool:
        count[name] = count.get(name, 0) + 1
        return name == "a" and count["a"] % 5 in (0, 2)

    sim = Sim(script=forty_percent)
    running(sim)
    await sim.run(60.0)
    assert sim.events == []
    assert sim.holder.current.version == 0
    snapshot = sim.controller.snapshot
    assert snapshot is not None
    assert snapshot.provider("a").error_rate == pytest.approx(0.4, abs=0.02)


async def test_last_provider_panics_instead_of_ejecting(running: Callable[[Sim], None]) -> None:
    # everything fails; a's probes too, so a stays out and b is the last usable provider
    sim = Sim(script=lambda name, t: t >= 5.0, probe_ok=lambda name: False)
    running(sim)
    await sim.run(25.0)
    panics = [e for e in sim.events if e.kind is TransitionKind.PANIC]
    assert len(panics) == 1
    (panic,) = panics
    assert (panic.provider, panic.tier, panic.critical) == ("b", "frontier", True)
    assert "all providers of tier 'frontier' down" in panic.reason
    assert sim.holder.current.status("b").state is H  # never ejected
    assert not sim.holder.current.status("a").usable
    assert sim.kinds("b") == [TransitionKind.PANIC]


async def test_observe_mode_alerts_once_and_changes_nothing(
    running: Callable[[Sim], None],
) -> None:
    sim = Sim(cfg=TripwireConfig(mode="observe"), script=outage(5.0))
    running(sim)
    await sim.run(40.0)
    (notice,) = sim.events
    assert (notice.kind, notice.enforced, notice.provider) == (TransitionKind.TRIP, False, "a")
    assert notice.reason.startswith("would trip (observe mode)")
    assert sim.holder.current.version == 0
    assert sim.a() == (H, 1.0, 0)
    assert sim.sent["a"] == 400  # traffic kept flowing to the failing provider


async def test_a_failed_probe_retrips_with_a_longer_cooloff(
    running: Callable[[Sim], None],
) -> None:
    """One long outage: each failed probe sends it back to tripped, the cool-off doubling
    (15, 30, 60 s), instead of a probe every 2 s for as long as it lasts."""
    sim = Sim(script=outage(1.0), probe_ok=lambda name: False)
    running(sim)
    await sim.run(120.0)
    times = [t for _, t in sim.probes]
    assert len(times) == 3  # after 15 s, then 30 s, then 60 s of cool-off
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [pytest.approx(30.0, abs=0.6), pytest.approx(60.0, abs=0.6)]
    state, _, trips = sim.a()
    assert (state, trips) == (T, 4)
    assert sim.kinds().count(TransitionKind.RETRIP) == 3
    assert sim.kinds().count(TransitionKind.TRIP) == 1  # one outage, one trip alert


async def test_hanging_and_raising_probes_count_as_failures(
    running: Callable[[Sim], None], caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}

    async def prober(name: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.Event().wait()  # hangs until the controller gives up on it
        if calls["n"] == 2:
            raise ConnectionResetError("secret-token-in-message")
        return True

    cfg = TripwireConfig(probe_timeout_seconds=3.0)
    sim = Sim(cfg=cfg, script=outage(1.0, 2.0), prober=prober)
    running(sim)
    with caplog.at_level(logging.INFO, logger="controller.control.loop"):
        await sim.run(130.0)  # cool-offs 15, 30 (after the hang), 60 s (after the raise)
    assert "timed out after 3s" in caplog.text
    assert "ConnectionResetError" in caplog.text
    assert "secret-token" not in caplog.text
    assert sim.a()[0] is R  # then three good probes in a row
    assert calls["n"] == 5


async def test_wake_ticks_before_the_interval(running: Callable[[Sim], None]) -> None:
    sim = Sim(cfg=TripwireConfig(tick_seconds=10.0), script=outage(0.0))
    running(sim)
    await sim.settle()
    sim.clock.advance(3.0)  # the next regular tick is 7 s away
    await sim.settle()
    for _ in range(5):
        sim.send("a")
    await sim.settle()
    assert sim.a()[0] is T
    assert sim.controller.last_tick == pytest.approx(sim.clock.wall())


async def test_wake_is_rate_limited_but_not_lost(running: Callable[[Sim], None]) -> None:
    cfg = TripwireConfig(tick_seconds=10.0, consecutive_failures=1)
    sim = Sim(cfg=cfg, script=outage(0.0))
    running(sim)
    await sim.settle()
    sim.clock.advance(1.0)  # less than tick / 5 = 2 s after the first tick
    await sim.settle()
    sim.send("a")
    await sim.settle()
    assert sim.a()[0] is H  # not yet: too soon after the last tick
    sim.clock.advance(1.0)
    await sim.settle()
    assert sim.a()[0] is T  # 2 s after the last tick, well before the regular 10 s


async def test_callbacks_are_isolated(running: Callable[[Sim], None]) -> None:
    seen: list[TransitionKind] = []

    def broken(transition: Transition) -> None:
        raise RuntimeError("subscriber bug")

    sim = Sim(script=outage(1.0), callbacks=(broken, lambda e: seen.append(e.kind)))
    running(sim)
    await sim.run(3.0)
    assert seen == [TransitionKind.TRIP]
    assert sim.kinds() == [TransitionKind.TRIP]  # the callback after the broken one, too


class BrokenStore:
    """A store whose disk is full: save raises, load starts fresh."""

    def __init__(self) -> None:
        self.attempts = 0

    def load(self) -> RoutingState:
        return RoutingState()

    def save(self, state: RoutingState) -> None:
        self.attempts += 1
        raise OSError(28, "No space left on device")


async def test_failing_save_still_publishes(
    running: Callable[[Sim], None], caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore()
    sim = Sim(script=outage(1.0), store=store)
    running(sim)
    with caplog.at_level(logging.ERROR):
        await sim.run(3.0)
    assert sim.a()[0] is T
    assert store.attempts == 1
    assert "could not save routing state version 1" in caplog.text


async def test_resumes_a_cooloff_from_the_store(running: Callable[[Sim], None]) -> None:
    first = Sim(script=outage(1.0))
    running(first)
    await first.run(5.0)
    assert first.a()[0] is T
    second = Sim(store=first.store)
    second.clock.advance(5.0)  # same timeline; the restart took no time at all
    running(second)
    await second.settle()
    assert second.a() == (T, 0.0, 1)
    await second.run(10.0)  # the trip was at ~1.5 s on the shared timeline: now 15 s
    assert second.a()[0] is T
    await second.run(2.0)
    assert second.a()[0] is P  # the rest of the 15 s cool-off
    assert second.kinds() == [TransitionKind.PROBE]


async def test_kill_switch_publishes_a_new_version() -> None:
    sim = Sim()
    sim.controller.resume()
    state = sim.controller.set_kill_switch(KillSwitch(pin="b"), changed_by="operator")
    assert (state.version, state.changed_by, state.kill_switch.pin) == (1, "operator", "b")
    assert sim.holder.current is state
    assert sim.store.load() is state
    same = sim.controller.set_kill_switch(KillSwitch(pin="b"), changed_by="operator")
    assert same.version == 1


async def test_next_look_in_is_the_soonest_cooloff_end_or_probe() -> None:
    """What the gateway's Retry-After is made of: only providers out of rotation count."""
    cfg = TripwireConfig(cooloff_seconds=10, probe_interval_seconds=4, tick_seconds=0.5)
    sim = Sim(cfg=cfg, tiers={"t": ("a", "b", "c")})
    now = sim.controller.now()
    out = ProviderStatus(state=T, since=now - 3, trip_count=2, traffic_share=0.0)  # 20 s off
    probing = ProviderStatus(state=P, since=now, traffic_share=0.0)
    back = ProviderStatus(state=R, since=now, traffic_share=0.5)
    table = {"a": out, "c": probing, "r": back}
    sim.holder.publish(RoutingState(providers=table))
    look = sim.controller.next_look_in
    assert look(["a", "b"]) == 17.0  # b (healthy) tells nothing
    assert look(["b", "r"]) is None
    assert look([]) is None
    assert look(["a", "c"]) == 0.5  # c's first probe is scheduled at the next tick
    sim.controller.tick()  # starts c's probe
    sim.clock.advance(1.5)
    assert look(["a", "c"]) == 2.5  # the next one 4 s after it
    sim.clock.advance(30)
    assert look(["a"]) == 0.0  # over: it is probed at the next tick


async def test_gauges_read_the_latest_state(running: Callable[[Sim], None]) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sim = Sim(script=outage(1.0), meter_provider=provider)
    running(sim)
    await sim.run(3.0)
    sim.controller.set_kill_switch(KillSwitch(disable=("b",)), changed_by="operator")
    points = gauge_points(reader)
    state = {(a["provider"], a["state"]): v for a, v in points[names.METRIC_PROVIDER_STATE]}
    assert state[("a", "tripped")] == 1
    assert state[("a", "healthy")] == 0
    assert state[("b", "healthy")] == 1
    assert sum(v for (p, _), v in state.items() if p == "a") == 1
    rates = {a["provider"]: v for a, v in points[names.METRIC_PROVIDER_ERROR_RATE]}
    snapshot = sim.controller.snapshot
    assert snapshot is not None
    assert rates["a"] == snapshot.provider("a").error_rate > 0.3
    assert rates["b"] == 0.0
    assert {v for _, v in points[names.METRIC_TRIPWIRE_THRESHOLD]} == {0.5}
    assert points[names.METRIC_KILL_SWITCH_ACTIVE] == [({}, 1.0)]
    assert points[names.METRIC_STATE_VERSION] == [({}, 2.0)]
    ((_, last_tick),) = points[names.METRIC_CONTROLLER_LAST_TICK]
    assert last_tick == pytest.approx(sim.clock.wall(), abs=0.3)
    provider.shutdown()


async def test_stop_ends_run() -> None:
    sim = Sim()
    task = asyncio.get_running_loop().create_task(sim.controller.run())
    await sim.settle()
    sim.controller.stop()
    await asyncio.wait_for(task, timeout=5)
    assert task.done()
    assert sim.clock.sleepers == 0
