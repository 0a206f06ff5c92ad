"""A silent provider: attempts seen while they wait, the ``stalled`` trip, rescue and hedging.

Fake providers over loopback (one hangs or answers late), the router and the controller on a
fake clock: the test moves time, so nothing here races a real timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller._clock import FakeClock
from controller._errors import AllProvidersFailed
from controller.control.config import StallConfig, TripwireConfig
from controller.control.decide import TransitionKind, TripCause, decide
from controller.control.loop import Controller
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
    StateHolder,
)
from controller.control.store import MemoryStateStore
from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.model import Message, Request, Response, StreamChunk
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing.plan import Hedge, Target, TierPlan
from controller.routing.router import CannedStream, RoutedStream, Router
from controller.signals.inflight import InFlight, Waits, WaitSignals
from controller.signals.window import SignalSnapshot, SignalWindows
from controller.telemetry import names
from controller.telemetry.setup import setup_telemetry
from tests.conftest import Recorder, adapter, drain
from tests.stalls_support import PATIENT, trip, until
from tests.stalls_support import two_providers as _router
from tests.telemetry_support import gauge_points, samples

HELLO = Request(messages=(Message(role="user", content="hello"),))
STREAM = Request(messages=HELLO.messages, stream=True)


# ----------------------------------------------------------------------------- the registry
def test_inflight_sees_waiting_attempts_oldest_first() -> None:
    clock = FakeClock()
    inflight = InFlight(clock, quantile=1.0, least=1)
    first = inflight.begin("a", stream=False)
    clock.advance(1.0)
    second = inflight.begin("a", stream=True)
    clock.advance(2.0)
    waits = inflight.snapshot()["a"]
    assert (waits.answers.waiting, waits.answers.oldest) == (1, 3.0)
    assert (waits.streams.waiting, waits.streams.oldest) == (1, 2.0)
    assert waits.waiting == 2
    assert waits.last_error_age is None
    assert inflight.waiting_on("a") == [first, second]
    inflight.answered(first)
    inflight.ended(second)
    clock.advance(0.5)
    after = inflight.snapshot()["a"]
    assert after.waiting == 0
    assert after.answers.samples == 1
    assert after.answers.typical == pytest.approx(3.0, rel=0.1)  # a log bin's middle
    assert after.answers.recent == ((0.5, 3.0),)  # (age, took)
    assert after.streams.samples == 0  # ended without an answer: no sample
    assert inflight.providers() == []


def _answer(inflight: InFlight, clock: FakeClock, took: float, *, stream: bool = False) -> None:
    waiter = inflight.begin("a", stream=stream)
    clock.advance(took)
    inflight.answered(waiter)


def test_the_baseline_leaves_out_the_last_30_seconds_once_older_answers_suffice() -> None:
    clock = FakeClock(start=0.0)
    inflight = InFlight(clock, quantile=0.99, least=20)
    for _ in range(40):  # a minute of answers in 0.5 s
        _answer(inflight, clock, 0.5)
        clock.advance(1.0)
    usual = inflight.typical("a", stream=False, quantile=0.99, least=20)
    assert usual == pytest.approx(0.5, rel=0.1)
    for _ in range(5):  # then 10x slower, for 25 s: not yet part of the baseline
        _answer(inflight, clock, 5.0)
    assert inflight.typical("a", stream=False, quantile=0.99, least=20) == usual
    clock.advance(200.0)  # two minutes on, the old answers are gone: only the slow ones left
    for _ in range(25):
        _answer(inflight, clock, 5.0)
    assert inflight.typical("a", stream=False, quantile=0.99, least=20) == pytest.approx(
        5.0, rel=0.1
    )


def test_an_error_answer_shows_the_provider_is_not_silent() -> None:
    clock = FakeClock()
    inflight = InFlight(clock)
    waiter = inflight.begin("a", stream=False)
    clock.advance(3.0)
    inflight.ended(waiter, responded=True)  # a 500 after 3 s
    assert inflight.snapshot()["a"].last_error_age == 0.0
    inflight.ended(waiter)  # twice is harmless
    assert inflight.snapshot()["a"].waiting == 0
    assert inflight.snapshot()["a"].answers.samples == 0  # an error is no answer


# ----------------------------------------------------------------------------- the decision
def _snapshot(waits: WaitSignals) -> SignalSnapshot:
    return SignalSnapshot(taken_at=0.0, window_seconds=30.0, bucket_seconds=1.0, waits={"a": waits})


def _waits(
    *,
    waiting: int,
    oldest: float,
    recent: tuple[tuple[float, float], ...] = (),
    error: float | None = None,
    stream: bool = False,
) -> WaitSignals:
    """A baseline of 0.5 s (limit: the 2 s floor); ``recent`` answers as (age, took)."""
    ages = (oldest, *(2.0,) * (waiting - 1))  # the others just past the 2 s limit
    kind = Waits(waiting=waiting, ages=ages, samples=50, typical=0.5, recent=recent)
    return WaitSignals(
        streams=kind if stream else Waits(),
        answers=Waits() if stream else kind,
        last_error_age=error,
    )


TIERS = {"t": ("a", "b")}


@pytest.mark.parametrize(
    ("waits", "trips"),
    [
        # limit = max(3 x 0.5 s, floor 2 s) = 2 s
        (_waits(waiting=3, oldest=2.1), True),  # silent
        (_waits(waiting=3, oldest=2.1, stream=True), True),
        (_waits(waiting=3, oldest=2.1, recent=((3.0, 0.4),)), True),  # its last answer is old
        (_waits(waiting=3, oldest=1.9), False),  # not waited long enough
        (_waits(waiting=3, oldest=2.1, recent=((0.3, 0.5),)), False),  # answers others in time
        (_waits(waiting=3, oldest=2.1, recent=((0.1, 5.0), (0.5, 5.0))), True),  # only late
        (_waits(waiting=3, oldest=2.1, error=0.2), False),  # answers errors: the error rate's
        (_waits(waiting=1, oldest=9.9), False),  # alone: needs 5 x the limit
        (_waits(waiting=1, oldest=10.1), True),
        (_waits(waiting=2, oldest=9.9), False),  # two past the limit: fewer than min_waiting
        (
            WaitSignals(answers=Waits(waiting=9, ages=(2.1, 1.9, 1.0), samples=50, typical=0.5)),
            False,  # nine waiting, but one past the limit
        ),
        (
            WaitSignals(answers=Waits(waiting=5, ages=(60.0,) * 5, samples=3, typical=0.5)),
            False,  # too little history: the attempt timeouts alone apply
        ),
    ],
)
def test_stall_rule(waits: WaitSignals, trips: bool) -> None:
    decision = decide(RoutingState(), _snapshot(waits), 100.0, TripwireConfig(), TIERS)
    assert (decision.providers.get("a") is not None) is trips
    if trips:
        (event,) = decision.transitions
        assert event.kind is TransitionKind.TRIP
        assert event.cause is TripCause.STALLED
        assert event.reason.startswith("stalled: ")
        assert "in the last 2.0s" in event.reason


def test_a_provider_10x_slower_than_its_baseline_trips_while_it_still_answers() -> None:
    """Hedging off, a slowdown that persists: every answer comes, but late. The baseline
    (what it took before) is not moved by the slow answers for 30 s, so it trips."""
    clock = FakeClock(start=0.0)
    inflight = InFlight(clock)
    for _ in range(60):
        _answer(inflight, clock, 0.5)
        clock.advance(0.5)
    waiting = [inflight.begin("a", stream=False) for _ in range(6)]
    clock.advance(2.5)
    for waiter in waiting[:2]:  # two of them answer, at 5x the usual time: late
        inflight.answered(waiter)
    clock.advance(1.0)  # the other four wait on, past the 2 s limit
    snapshot = SignalSnapshot(
        taken_at=0.0, window_seconds=30.0, bucket_seconds=1.0, waits=inflight.snapshot()
    )
    decision = decide(RoutingState(), snapshot, 100.0, TripwireConfig(), TIERS)
    (event,) = decision.transitions
    assert event.cause is TripCause.STALLED
    assert "2 answered, later than that" in event.reason


def test_stall_limit_is_learned_within_floor_and_ceiling() -> None:
    stall = StallConfig(factor=3, floor_seconds=2, ceiling_seconds=10, min_samples=5)
    assert stall.limit(0.1, 5) == 2.0
    assert stall.limit(1.5, 5) == 4.5
    assert stall.limit(30.0, 5) == 10.0
    assert stall.limit(1.5, 4) is None


def test_a_recovering_provider_that_stalls_trips_again() -> None:
    state = RoutingState(
        providers={"a": ProviderStatus(state=HealthState.RECOVERING, since=90.0, traffic_share=0.1)}
    )
    waits = _waits(waiting=3, oldest=2.5)
    decision = decide(state, _snapshot(waits), 100.0, TripwireConfig(), TIERS)
    assert decision.providers["a"].state is HealthState.TRIPPED
    assert decision.transitions[0].cause is TripCause.STALLED


def test_attempts_left_from_the_outage_do_not_trip_a_recovering_provider() -> None:
    """Recovering for 1 s: attempts that have waited 60 s began during the outage (with
    nowhere to be rescued to); they are not news about the provider now."""
    state = RoutingState(
        providers={"a": ProviderStatus(state=HealthState.RECOVERING, since=99.0, traffic_share=0.1)}
    )
    waits = _waits(waiting=3, oldest=60.0)
    assert not decide(state, _snapshot(waits), 100.0, TripwireConfig(), TIERS).changed


def test_stall_detection_can_be_turned_off() -> None:
    cfg = TripwireConfig(stall=StallConfig(enabled=False))
    waits = _waits(waiting=9, oldest=60.0)
    assert not decide(RoutingState(), _snapshot(waits), 100.0, cfg, TIERS).changed


# ----------------------------------------------------------------------------- the router
@pytest.mark.parametrize("stream", [False, True])
async def test_requests_waiting_on_a_provider_that_trips_are_rescued(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, stream: bool
) -> None:
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)
    request = STREAM if stream else HELLO
    call: Callable[[], Awaitable[object]] = (
        (lambda: router.stream(request, tier="t"))
        if stream
        else (lambda: router.complete(request, tier="t"))
    )
    waiting = [asyncio.ensure_future(call()) for _ in range(3)]
    await until(lambda: len(router.inflight.waiting_on("a")) == 3, "three requests wait on a")
    assert backup.requests == 0
    trip(holder, "a")  # what the controller publishes when it trips a
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 30)
    for answer in answers:
        assert answer.provider == "b"  # type: ignore[attr-defined]
        if stream:
            await drain(answer, [])  # type: ignore[arg-type]
    await router.aclose()
    assert backup.requests == 3
    lost = [e for e in recorder.attempts if e.provider == "a"]
    assert [e.error_type for e in lost] == ["stalled"] * 3
    assert all(e.outcome is Outcome.FAULT for e in lost)  # counted against the silent one
    rescues = [e for e in recorder.attempts if e.provider == "b"]
    assert {e.reason for e in rescues} == {AttemptReason.RESCUE}
    assert {e.failover_from for e in rescues} == {"a"}
    assert all(e.outcome is Outcome.SUCCESS for e in rescues)
    assert [r.outcome for r in recorder.routes] == [RouteOutcome.DEGRADED] * 3
    assert router.inflight.providers() == []


async def test_the_kill_switch_rescues_too_and_a_pinned_provider_is_left_alone(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)
    waiting = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "a request waits on a")
    holder.publish(holder.current.evolve(changed_by="t", now=1, kill_switch=KillSwitch(pin="a")))
    await asyncio.sleep(0.05)
    assert backup.requests == 0  # pinned to a: still in rotation, nothing to rescue
    holder.publish(
        holder.current.evolve(changed_by="t", now=2, kill_switch=KillSwitch(disable=("a",)))
    )
    answer = await asyncio.wait_for(waiting, 30)
    await router.aclose()
    assert answer.provider == "b"


async def test_a_request_with_nowhere_to_go_keeps_waiting(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The rescue needs a next target: on the last one, the attempt's own limits apply."""
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    backup.set_fault(FaultMode.HANG)
    primary.set_fault(FaultMode.AUTH)  # not retried: on to b at once
    waiting = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("b")), "the request waits on b")
    trip(holder, "b")
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await router.aclose()
    assert recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hedge_rescues_a_slow_attempt(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, stream: bool
) -> None:
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=2.0, per_second=1.0))
    primary.set_fault(FaultMode.HANG)  # slow beyond the hedge wait (the fake clock decides)
    request = STREAM if stream else HELLO
    task: asyncio.Future[Response | RoutedStream | CannedStream] = asyncio.ensure_future(
        router.stream(request, tier="t") if stream else router.complete(request, tier="t")
    )
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.9)
    await asyncio.sleep(0.05)
    assert backup.requests == 0  # before the hedge wait: nothing started
    clock.advance(0.2)
    answer = await asyncio.wait_for(task, 30)
    assert answer.provider == "b"
    if isinstance(answer, RoutedStream):
        await drain(answer, [])
    await router.aclose()
    hedge, first = sorted(recorder.attempts, key=lambda e: e.provider != "b")
    assert (first.provider, first.outcome, first.error_type) == ("a", Outcome.CANCELLED, "outpaced")
    assert (hedge.reason, hedge.outcome, hedge.failover_from) == (
        AttemptReason.HEDGE,
        Outcome.SUCCESS,
        "a",
    )
    assert recorder.routes[0].served_by == "b"


async def test_the_first_answer_wins_and_the_hedge_is_cancelled(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=1.0))
    primary.set_fault(Fault(mode=FaultMode.SLOW_FIRST_TOKEN, delay=0.3))
    backup.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.5)  # the hedge starts on b, which hangs; a answers after its 0.3 s
    answer = await asyncio.wait_for(task, 30)
    await until(lambda: len(recorder.attempts) == 2, "the hedge reports itself")
    await router.aclose()
    assert answer.provider == "a"
    by_provider = {e.provider: e for e in recorder.attempts}
    assert by_provider["a"].outcome is Outcome.SUCCESS
    assert (by_provider["b"].outcome, by_provider["b"].error_type) == (
        Outcome.CANCELLED,
        "outpaced",
    )
    assert by_provider["b"].reason is AttemptReason.HEDGE


async def test_hedges_are_bounded_by_the_tier_budget(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=1.0, per_second=1.0))
    primary.set_fault(FaultMode.HANG)
    tasks = [asyncio.ensure_future(router.complete(HELLO, tier="t")) for _ in range(3)]
    await until(lambda: len(router.inflight.waiting_on("a")) == 3, "three wait on a")
    clock.advance(1.0)
    done, pending = await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.05)
    assert len(done) == 1
    assert backup.requests == 1  # one token: one hedge, not three
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await router.aclose()


async def test_a_hedge_waits_for_the_learned_quantile(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock = FakeClock()
    inflight = InFlight(clock)
    for _ in range(20):  # a's history: every answer took 0.5 s
        waiter = inflight.begin("a", stream=False)
        clock.advance(0.5)
        inflight.answered(waiter)
    hedge = Hedge(quantile=0.95, min_samples=20)
    router = _router(primary, backup, recorder, clock, hedge=hedge, inflight=inflight)
    primary.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(inflight.waiting_on("a")), "the request waits on a")
    clock.advance(0.4)
    await asyncio.sleep(0.05)
    assert backup.requests == 0
    clock.advance(0.2)
    assert (await asyncio.wait_for(task, 30)).provider == "b"
    await router.aclose()


async def test_when_both_fail_the_request_fails_with_both_errors(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=1.0))
    primary.set_fault(FaultMode.HANG)
    backup.set_fault(FaultMode.ERROR_500)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.0)  # the hedge to b fails at once; a still waits
    await until(lambda: backup.requests >= 1, "the hedge reached b")
    await asyncio.sleep(0.05)
    assert not task.done()
    primary.clear_fault()
    await primary.stop()  # a's connection drops: its attempt fails too
    with pytest.raises(AllProvidersFailed) as caught:
        await asyncio.wait_for(task, 30)
    await router.aclose()
    assert {e.provider for e in caught.value.attempts} == {"a", "b"}
    assert recorder.routes[0].outcome is RouteOutcome.FAILED


# ----------------------------------------------------------------------------- end to end
class _Loop:
    """Router + signal windows + controller on one fake clock (ticks by hand)."""

    def __init__(
        self,
        primary: FakeProvider,
        backup: FakeProvider,
        recorder: Recorder,
        meter: MeterProvider | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.holder = StateHolder()
        self.windows = SignalWindows(clock=self.clock)
        self.router = _router(
            primary,
            backup,
            recorder,
            self.clock,
            holder=self.holder,
            inflight=self.windows.inflight,
        )
        self.router.listeners.add(self.windows)
        self.controller = Controller(
            clock=self.clock,
            windows=self.windows,
            holder=self.holder,
            store=MemoryStateStore(),
            cfg=TripwireConfig(cooloff_seconds=5, probe_interval_seconds=1, failback_steps=(1.0,)),
            tiers={"t": ("a", "b")},
            prober=lambda name: self.router.probe(name, "big"),
            meter=meter.get_meter("test") if meter is not None else None,
        )

    async def warm(self, n: int = 25) -> None:
        for _ in range(n):
            assert (await self.router.complete(HELLO, tier="t")).provider == "a"

    async def run_for(self, seconds: float, step: float = 0.25) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.controller.tick()
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hanging_provider_trips_as_stalled_and_every_request_is_served(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, stream: bool
) -> None:
    loop = _Loop(primary, backup, recorder)
    await loop.warm()  # history: a answers (instantly on the fake clock): limit = the 2 s floor
    primary.set_fault(FaultMode.HANG)
    router = loop.router
    waiting: list[asyncio.Future[Response | RoutedStream | CannedStream]] = [
        asyncio.ensure_future(
            router.stream(STREAM, tier="t") if stream else router.complete(HELLO, tier="t")
        )
        for _ in range(4)
    ]
    await until(lambda: len(loop.router.inflight.waiting_on("a")) == 4, "four wait on a")
    await loop.run_for(1.75)
    assert loop.holder.current.status("a").state is HealthState.HEALTHY
    await loop.run_for(0.5)  # past the limit: tripped, the waiting requests rescued
    assert loop.holder.current.status("a").state is HealthState.TRIPPED
    assert "stalled" in loop.holder.current.status("a").reason
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 30)
    assert {a.provider for a in answers} == {"b"}
    for answer in answers:
        if isinstance(answer, RoutedStream):
            chunks: list[StreamChunk] = []
            await drain(answer, chunks)
            assert "".join(c.text for c in chunks).startswith("Hello from backup")
    after = await loop.router.complete(HELLO, tier="t")  # straight to b, a is out
    assert after.provider == "b"
    assert recorder.attempts[-1].reason is AttemptReason.PRIMARY
    primary.clear_fault()
    await loop.run_for(12.0)  # cool-off, three probes, back in
    assert loop.holder.current.status("a").state is HealthState.HEALTHY
    assert (await loop.router.complete(HELLO, tier="t")).provider == "a"
    await loop.router.aclose()


async def test_low_traffic_one_request_alone_is_not_left_waiting(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    loop = _Loop(primary, backup, recorder)
    await loop.warm()
    primary.set_fault(FaultMode.HANG)
    first = asyncio.ensure_future(loop.router.stream(STREAM, tier="t"))
    await until(lambda: len(loop.router.inflight.waiting_on("a")) == 1, "it waits on a")
    await loop.run_for(5.0)
    second = asyncio.ensure_future(loop.router.complete(HELLO, tier="t"))  # 5 s later
    sent = loop.clock.monotonic()
    await until(lambda: len(loop.router.inflight.waiting_on("a")) == 2, "both wait on a")
    await loop.run_for(4.75)
    assert not first.done()  # alone past the limit: 5 x the 2 s limit before it trips
    await loop.run_for(0.5)
    answer = await asyncio.wait_for(first, 30)
    assert answer.provider == "b"
    await drain(answer, [])
    assert (await asyncio.wait_for(second, 30)).provider == "b"
    waited = loop.clock.monotonic() - sent
    assert waited <= 5.5  # the second did not wait for the first one's timeout (300 s here)
    third = await loop.router.complete(HELLO, tier="t")  # straight to b: a is out
    assert third.provider == "b"
    await loop.router.aclose()


async def test_the_dashboard_sees_what_waits_the_learned_limit_and_the_stall_trip(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    reader = InMemoryMetricReader()
    loop = _Loop(primary, backup, recorder, MeterProvider(metric_readers=[reader]))
    await loop.warm()
    primary.set_fault(FaultMode.HANG)
    waiting = [asyncio.ensure_future(loop.router.complete(HELLO, tier="t")) for _ in range(3)]
    await until(lambda: len(loop.router.inflight.waiting_on("a")) == 3, "three wait on a")
    await loop.run_for(1.0)
    points = gauge_points(reader)
    assert ({"provider": "a"}, 3.0) in points[names.METRIC_PROVIDER_WAITING]
    assert ({"provider": "a", "kind": "whole"}, 2.0) in points[names.METRIC_STALL_LIMIT]
    await loop.run_for(1.25)
    await asyncio.wait_for(asyncio.gather(*waiting), 30)
    await loop.run_for(0.25)
    points = gauge_points(reader)
    assert points[names.METRIC_TRIPS] == [({"provider": "a", "cause": "stalled"}, 1.0)]
    assert ({"provider": "a"}, 0.0) in points[names.METRIC_PROVIDER_WAITING]
    await loop.router.aclose()


async def test_hedges_and_rescues_are_counted_and_traced(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    telemetry = setup_telemetry(
        span_processors=[SimpleSpanProcessor(spans)], metric_readers=[reader], env={}
    )
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder, hedge=Hedge(after=1.0))
    router.listeners.add(telemetry.listener)
    primary.set_fault(FaultMode.HANG)
    hedged = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.0)
    await asyncio.wait_for(hedged, 30)
    rescued = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the next one waits on a")
    trip(holder, "a")
    await asyncio.wait_for(rescued, 30)
    await until(lambda: len(recorder.attempts) == 4, "every attempt reported")
    await asyncio.sleep(0)
    telemetry.listener.flush()
    await router.aclose()
    text = telemetry.render_prometheus()
    telemetry.shutdown(timeout=2.0)
    counted = {
        (labels.get("result") or labels.get("reason"), labels.get("provider") or labels["to"]): v
        for name, labels, v in samples(text)
        if name in (names.PROM_HEDGES, names.PROM_FAILOVERS)
    }
    assert counted == {
        ("started", "b"): 1,
        ("won", "b"): 1,
        ("wasted", "a"): 1,
        ("stalled", "b"): 1,
    }
    kinds = {
        (span.attributes or {}).get(names.ERROR_TYPE)
        for span in spans.get_finished_spans()
        if span.name == "chat big"
    }
    assert kinds == {"outpaced", "stalled"}


async def test_a_full_pool_sends_the_request_on_instead_of_queueing(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """a holds its only connection on a request it never answers: the next request waits for a
    connection only ``timeouts.pool`` (real time, 0.2 s), then goes to b. Not a fault of a."""
    a = HttpProvider(
        name="a",
        codec=codec_for("openai"),
        base_url=primary.url("openai"),
        api_key="sk-test-not-a-secret",
        max_connections=1,
    )
    b = adapter(backup, "anthropic", "b")
    targets = (Target(provider="a", model="big"), Target(provider="b", model="alt"))
    router = Router(
        tiers={"t": TierPlan(name="t", targets=targets)},
        providers={"a": a, "b": b},
        listeners=[recorder],
        default_timeouts=Timeouts(pool=0.2, first_token=300.0, total=300.0),
    )
    primary.set_fault(FaultMode.HANG)
    holder = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: primary.requests == 1, "a holds its one connection")
    answer = await asyncio.wait_for(router.complete(HELLO, tier="t"), 30)
    assert answer.provider == "b"
    assert primary.requests == 1  # the second request never reached a
    full = [e for e in recorder.attempts if e.error_type == "pool_full"]
    assert [(e.provider, e.outcome) for e in full] == [("a", Outcome.CANCELLED)]
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    await router.aclose()


async def test_an_attempt_that_raises_a_bug_is_not_left_waiting() -> None:
    """A provider that raises something outside the error tree (a bug) must not leave a waiter
    behind: it would look like an attempt waiting for ever and trip a healthy provider."""

    class Buggy:
        name = kind = wire_format = "buggy"
        server_address, server_port = "127.0.0.1", 0

        async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
            raise RuntimeError("a bug")

    tier = TierPlan(name="t", targets=(Target(provider="buggy", model="m"),))
    router = Router(tiers={"t": tier}, providers={"buggy": Buggy()})  # type: ignore[dict-item]
    with pytest.raises(RuntimeError):
        await router.complete(HELLO, tier="t")
    assert router.inflight.providers() == []


async def test_a_rescue_skips_another_model_of_the_provider_that_tripped(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    a, b = adapter(primary, "openai", "a"), adapter(backup, "anthropic", "b")
    targets = (
        Target(provider="a", model="big"),
        Target(provider="a", model="small"),
        Target(provider="b", model="alt"),
    )
    holder = StateHolder()
    router = Router(
        tiers={"t": TierPlan(name="t", targets=targets)},
        providers={"a": a, "b": b},
        state=holder,
        listeners=[recorder],
        clock=FakeClock(),
        default_timeouts=PATIENT,
    )
    primary.set_fault(FaultMode.HANG)
    waiting = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    trip(holder, "a")
    answer = await asyncio.wait_for(waiting, 30)
    await router.aclose()
    assert (answer.provider, answer.model) == ("b", "alt")
    assert primary.requests == 1  # a/small was not tried: a is out of rotation
