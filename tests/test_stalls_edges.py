"""Edge cases of the rescue and hedge races (:mod:`controller.routing._race`).

Fake providers over loopback, the router on a fake clock. Each test pins down one interleaving:
the client leaving while a companion attempt runs or before it ran, the companion answering as
the client leaves, a rescue at the deadline, hedging in panic. Every attempt must be reported
exactly once, and none may stay registered as waiting (it would trip a healthy provider).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from controller._clock import FakeClock
from controller.control.config import TripwireConfig
from controller.control.loop import Controller
from controller.control.state import HealthState, KillSwitch, StateHolder
from controller.control.store import MemoryStateStore
from controller.events import AttemptEvent, Outcome, RouteEvent, RouteOutcome
from controller.model import Message, Request
from controller.providers import Timeouts
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing.plan import Hedge, Target, TierPlan
from controller.routing.router import Router
from controller.signals.window import SignalWindows
from tests.conftest import Recorder, adapter
from tests.stalls_support import PATIENT, trip, until
from tests.stalls_support import two_providers as _router

HELLO = Request(messages=(Message(role="user", content="hello"),))


async def _turns(n: int = 10) -> None:
    """Let the loop run a few turns (no timer involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_rescue_cancelled_before_it_ran_is_reported_and_not_left_waiting(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The trip starts a rescue task; the client leaves in the same turn of the loop, so the
    rescue is cancelled before its first step. Its attempt was counted and registered: it must
    still be reported, and must not stay waiting on b (b would later trip as stalled)."""
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    task.cancel()  # the client goes: the request's task will run next ...
    trip(holder, "a")  # ... and the rescue task it creates after it, so it never ran
    with pytest.raises(asyncio.CancelledError):
        await task
    await _turns()
    await router.aclose()
    assert router.inflight.providers() == []  # nothing left waiting on b
    assert backup.requests == 0
    assert sorted((e.provider, e.outcome, e.error_type) for e in recorder.attempts) == [
        ("a", Outcome.CANCELLED, "cancelled"),
        ("b", Outcome.CANCELLED, "cancelled"),
    ]
    assert [r.outcome for r in recorder.routes] == [RouteOutcome.CANCELLED]
    assert recorder.routes[0].attempts == 2


async def test_the_client_leaving_while_a_hedge_runs_cancels_both_not_outpaced(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """Nothing answered: neither attempt was outpaced (that would count a wasted hedge)."""
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=1.0))
    primary.set_fault(FaultMode.HANG)
    backup.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.0)
    await until(lambda: bool(router.inflight.waiting_on("b")), "the hedge waits on b")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: len(recorder.attempts) == 2, "both attempts report")
    await router.aclose()
    assert router.inflight.providers() == []
    assert sorted((e.provider, e.outcome, e.error_type) for e in recorder.attempts) == [
        ("a", Outcome.CANCELLED, "cancelled"),
        ("b", Outcome.CANCELLED, "cancelled"),
    ]
    assert [r.outcome for r in recorder.routes] == [RouteOutcome.CANCELLED]


class _CancelOnAnswer(Recorder):
    """Cancels ``task`` (the client leaves) the moment ``provider`` answers: in the same turn
    of the loop as the companion's win."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self.provider = provider
        self.task: asyncio.Future[object] | None = None

    def on_attempt(self, event: AttemptEvent) -> None:
        super().on_attempt(event)
        if event.provider == self.provider and event.outcome is Outcome.SUCCESS:
            assert self.task is not None
            self.task.cancel()

    def on_route(self, event: RouteEvent) -> None:
        super().on_route(event)


async def test_the_client_leaving_as_the_rescue_answers_is_honoured(
    primary: FakeProvider, backup: FakeProvider
) -> None:
    clock, holder = FakeClock(), StateHolder()
    listener = _CancelOnAnswer("b")
    router = _router(primary, backup, listener, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)
    task: asyncio.Future[object] = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    listener.task = task
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    trip(holder, "a")
    with pytest.raises(asyncio.CancelledError):
        await task
    await _turns()
    await router.aclose()
    assert router.inflight.providers() == []
    assert len(listener.attempts) == 2
    assert [r.outcome for r in listener.routes] == [RouteOutcome.CANCELLED]


async def test_a_won_rescue_leaves_the_request_task_uncancelled(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The rescue's cancellation of the request's task is withdrawn: a timeout the caller
    sets afterwards in the same task still works (Python 3.11 counts cancellations)."""
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)

    async def caller() -> tuple[str, int, bool]:
        async with asyncio.timeout(60):  # the gateway's own bound around the request
            answer = await router.complete(HELLO, tier="t")
        me = asyncio.current_task()
        assert me is not None
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            timed_out = True
        return answer.provider, me.cancelling(), timed_out

    task = asyncio.ensure_future(caller())
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    trip(holder, "a")
    assert await asyncio.wait_for(task, 30) == ("b", 0, True)
    await router.aclose()
    assert router.inflight.providers() == []


async def test_no_hedge_in_panic(primary: FakeProvider, backup: FakeProvider) -> None:
    """Every provider of the tier tripped: the plan panics, and a hedge has nowhere to go."""
    clock, holder = FakeClock(), StateHolder()
    recorder = Recorder()
    router = _router(primary, backup, recorder, clock, holder=holder, hedge=Hedge(after=1.0))
    trip(holder, "a")
    trip(holder, "b")
    primary.set_fault(FaultMode.HANG)
    backup.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.providers()), "the request waits")
    clock.advance(5.0)
    await _turns()
    await asyncio.sleep(0.05)
    assert sum(len(router.inflight.waiting_on(p)) for p in ("a", "b")) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await router.aclose()
    assert len(recorder.attempts) == 1


async def test_a_rescue_respects_max_attempts(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock, holder = FakeClock(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder, max_attempts=1)
    primary.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    trip(holder, "a")
    await _turns()
    assert router.inflight.waiting_on("b") == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await router.aclose()
    assert backup.requests == 0


class _Jumpy(FakeClock):
    """A fake clock that, once ``jump`` is set, moves that far on every reading: time passes
    between two readings of the same step, as it does on a real clock."""

    jump = 0.0

    def monotonic(self) -> float:
        now = super().monotonic()
        if self.jump:
            self.advance(self.jump)
        return now


async def test_a_rescue_as_the_deadline_passes_does_not_raise_into_the_publisher(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The state watcher runs in the controller's tick and must not raise: a rescue reads the
    clock once to decide whether time is left, and goes with that reading (here 5 s left;
    a second reading would find the deadline passed and raise DeadlineExceeded)."""
    clock, holder = _Jumpy(), StateHolder()
    router = _router(primary, backup, recorder, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t", deadline=10.0))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(10.0 - 5.0)  # the deadline is 5 s away ...
    clock.jump = 6.0  # ... and passes between two readings of the clock
    try:
        trip(holder, "a")  # must not raise
    finally:
        clock.jump = 0.0
    answer = await asyncio.wait_for(task, 30)
    await router.aclose()
    assert answer.provider == "b"
    assert router.inflight.providers() == []
    assert len(recorder.attempts) == recorder.routes[0].attempts == 2


async def test_a_failed_rescue_moves_on_rather_than_leave_the_request_on_the_dead_provider(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """a hangs and trips; the rescue on b fails at once (500). The request must not then sit
    out a's whole timeout: c is next."""
    async with FakeProvider(name="third") as third:
        clock, holder = FakeClock(), StateHolder()
        names = {"a": primary, "b": backup, "c": third}
        router = Router(
            tiers={
                "t": TierPlan(
                    name="t",
                    targets=tuple(Target(provider=n, model="m") for n in names),
                )
            },
            providers={n: adapter(f, "openai", n) for n, f in names.items()},
            state=holder,
            listeners=[recorder],
            clock=clock,
            default_timeouts=PATIENT,
            deadline=600.0,
        )
        primary.set_fault(FaultMode.HANG)
        backup.set_fault(FaultMode.ERROR_500)
        task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
        await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
        trip(holder, "a")
        answer = await asyncio.wait_for(task, 10)
        await router.aclose()
    assert answer.provider == "c"
    assert router.inflight.providers() == []
    assert len(recorder.attempts) == recorder.routes[0].attempts


class _ExpireOnAnswer(Recorder):
    """Makes the caller's own ``asyncio.timeout`` expire the moment ``provider`` answers: in
    the same turn of the loop as the companion's win (two cancellations of one task)."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self.provider = provider
        self.bound: asyncio.Timeout | None = None

    def on_attempt(self, event: AttemptEvent) -> None:
        super().on_attempt(event)
        if event.provider == self.provider and event.outcome is Outcome.SUCCESS:
            assert self.bound is not None
            self.bound.reschedule(asyncio.get_running_loop().time())


async def test_the_callers_timeout_expiring_as_the_rescue_answers_is_a_timeout(
    primary: FakeProvider, backup: FakeProvider
) -> None:
    """Both cancellations are counted (Python 3.11): the rescue withdraws only its own, so the
    caller's timeout still turns into TimeoutError and the task is left with none pending."""
    clock, holder = FakeClock(), StateHolder()
    listener = _ExpireOnAnswer("b")
    router = _router(primary, backup, listener, clock, holder=holder)
    primary.set_fault(FaultMode.HANG)

    async def caller() -> tuple[str, int]:
        me = asyncio.current_task()
        assert me is not None
        try:
            async with asyncio.timeout(60) as bound:
                listener.bound = bound
                await router.complete(HELLO, tier="t")
        except TimeoutError:
            return "timeout", me.cancelling()
        return "answer", me.cancelling()

    task = asyncio.ensure_future(caller())
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    trip(holder, "a")
    assert await asyncio.wait_for(task, 30) == ("timeout", 0)
    await _turns()
    await router.aclose()
    assert router.inflight.providers() == []
    assert len(listener.attempts) == 2
    assert len(listener.routes) == 1


async def test_the_kill_switch_rescue_counts_no_fault_against_the_switched_off_provider(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The operator switches a off while requests are in progress on it (a is healthy, its
    answers simply take a while). They are rescued on b; a did not fail them: counted as
    faults, they would trip a (five in a row) and page about a provider nobody saw fail."""
    clock, holder = FakeClock(), StateHolder()
    windows = SignalWindows(clock=clock)
    router = _router(primary, backup, recorder, clock, holder=holder)
    router.listeners.add(windows)
    controller = Controller(
        clock=clock,
        windows=windows,
        holder=holder,
        store=MemoryStateStore(),
        cfg=TripwireConfig(),
        tiers={"t": ("a", "b")},
    )
    primary.set_fault(Fault(mode=FaultMode.SLOW_FIRST_TOKEN, delay=60.0))  # long answers
    waiting = [asyncio.ensure_future(router.complete(HELLO, tier="t")) for _ in range(6)]
    await until(lambda: len(router.inflight.waiting_on("a")) == 6, "six wait on a")
    off = KillSwitch(disable=("a",))
    holder.publish(holder.current.evolve(changed_by="operator", now=1, kill_switch=off))
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 30)
    assert {a.provider for a in answers} == {"b"}
    clock.advance(1.0)
    controller.tick()
    await router.aclose()
    lost = [e for e in recorder.attempts if e.provider == "a"]
    assert len(lost) == 6
    assert all(e.outcome is not Outcome.FAULT for e in lost)
    assert holder.current.status("a").state is HealthState.HEALTHY


async def test_a_probe_cut_by_its_timeout_still_reports_its_route(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """A probe of a hanging provider is cancelled when ``probe_timeout_seconds`` pass: its
    attempt is reported, and so is the route it belongs to (the attempt's span's parent)."""
    router = _router(primary, backup, recorder, FakeClock())
    primary.set_fault(FaultMode.HANG)
    probe = asyncio.ensure_future(router.probe("a", "big"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the probe waits on a")
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await router.aclose()
    assert router.inflight.providers() == []
    assert [e.outcome for e in recorder.attempts] == [Outcome.CANCELLED]
    assert [r.outcome for r in recorder.routes] == [RouteOutcome.CANCELLED]


async def test_a_reloaded_hedge_budget_applies_at_once(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The runtime replaces ``router.tiers`` on a config reload: a new ``per_second`` must
    take effect, not the bucket built from the old one."""
    clock = FakeClock()
    router = _router(primary, backup, recorder, clock, hedge=Hedge(after=1.0, per_second=1.0))
    primary.set_fault(FaultMode.HANG)
    first = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.0)  # the one hedge the old budget holds
    assert (await asyncio.wait_for(first, 30)).provider == "b"
    tier = router.tiers["t"]
    router.tiers = {"t": replace(tier, hedge=Hedge(after=0.1, per_second=50.0))}
    second = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(0.1)
    assert (await asyncio.wait_for(second, 30)).provider == "b"
    await router.aclose()


async def test_a_bug_in_the_hedged_attempt_takes_its_hedge_down_with_it(
    backup: FakeProvider, recorder: Recorder
) -> None:
    """The request's own attempt raises outside the error tree (a bug) while its hedge waits:
    the request fails with the bug, and the hedge must go with it, not run on (holding b's
    connection, waiting there) and later cancel whatever the request's task does next."""
    go = asyncio.Event()

    class Buggy:
        name = kind = "a"
        wire_format = "openai"
        server_address, server_port = "127.0.0.1", 0

        async def complete(self, request: Request, model: str, timeouts: Timeouts) -> object:
            await go.wait()
            raise RuntimeError("a bug")

        async def close(self) -> None:
            return None

    clock = FakeClock()
    targets = (Target(provider="a", model="m"), Target(provider="b", model="alt"))
    router = Router(
        tiers={"t": TierPlan(name="t", targets=targets, hedge=Hedge(after=1.0))},
        providers={"a": Buggy(), "b": adapter(backup, "anthropic", "b")},  # type: ignore[dict-item]
        listeners=[recorder],
        clock=clock,
        default_timeouts=PATIENT,
    )
    backup.set_fault(FaultMode.HANG)
    task = asyncio.ensure_future(router.complete(HELLO, tier="t"))
    await until(lambda: bool(router.inflight.waiting_on("a")), "the request waits on a")
    clock.advance(1.0)
    await until(lambda: bool(router.inflight.waiting_on("b")), "the hedge waits on b")
    go.set()
    with pytest.raises(RuntimeError):
        await task
    await _turns()
    assert router.inflight.providers() == []  # the hedge is gone too
    assert [e.provider for e in recorder.attempts] == ["b"]  # reported (a's bug is not)
    await router.aclose()
