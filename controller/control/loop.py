"""The controller loop: snapshot → decide → publish, a few times a second.

Each tick is synchronous and short: it reads the signal windows, asks the pure
:func:`~controller.control.decide.decide` what to do, and when the providers table changed it
writes a new version of the routing state (``changed_by="controller"``), saves it, publishes it to
the routers' :class:`StateHolder` and calls each ``on_transition`` callback once per transition.
A failing save is logged and the state is still published: routing must follow the decision even
when the disk is full. It is logged once when saving starts failing (no traceback for an OSError:
the path and the reason say it all) and once when it works again, not on every change of state.
A failing callback is logged and isolated from the others.

Probes run in the background, never inside a tick, so a hanging probe cannot delay a trip of
another provider: a tick starts a probe for each provider in ``probing`` whose last one began at
least ``probe_interval_seconds`` ago and has ended; a probe that outlives
``probe_timeout_seconds`` (on the injected clock) counts as failed. Their results are read by the
next tick. Without a prober the first failback step is the probe: ``probing`` moves on at once.

In a fleet (:mod:`controller.fleet`) ``deciding`` says whether this replica decides now (the
leader, or a replica deciding alone while Redis is away); the others only take snapshots for
their gauges and route on the leader's versions.

``promql`` hands each tick the PromQL tripwires' latest answers
(:mod:`controller.control._promql_eval` refreshes them in their own task; a tick never waits
on Prometheus).

Time: ``now()`` is epoch seconds anchored to the wall clock once, at construction, and advanced by
the monotonic clock, so the persisted ``since`` stays readable while cool-offs cannot jump with an
NTP step. Everything waits on the injected :class:`~controller._clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Counter, Meter, Observation

from controller._clock import Clock
from controller._errors import FailoverError
from controller._tasks import sleep_or_woken
from controller.control._idle import IdleProbes
from controller.control._members import Members
from controller.control.config import TripwireConfig
from controller.control.decide import (
    Decision,
    Episodes,
    ProbeResult,
    Transition,
    TransitionKind,
    cooloff_left,
    decide,
)
from controller.control.promql import PromqlSignal
from controller.control.state import HealthState, KillSwitch, RoutingState, StateHolder
from controller.control.store import StateStore
from controller.signals.window import SignalSnapshot
from controller.telemetry import names

log = logging.getLogger(__name__)

Prober = Callable[[str], Awaitable[bool]]
TransitionCallback = Callable[[Transition], None]


class SignalSource(Protocol):
    """What the loop reads each tick (``SignalWindows`` in production)."""

    def snapshot(self) -> SignalSnapshot: ...


@dataclass(slots=True)
class _ProbeTrack:
    """Probe bookkeeping for one stay in ``probing``; replaced when the provider re-enters it."""

    successes: int = 0
    last_failure: str | None = None
    last_started: float = -math.inf
    task: asyncio.Task[None] | None = None

    def result(self) -> ProbeResult:
        return ProbeResult(successes_in_a_row=self.successes, last_failure=self.last_failure)


class Controller:
    """Runs the tripwire. ``run()`` until ``stop()``; ``tick()`` is one step (tests, drills)."""

    def __init__(
        self,
        *,
        clock: Clock,
        windows: SignalSource,
        holder: StateHolder,
        store: StateStore,
        cfg: TripwireConfig,
        tiers: Mapping[str, Sequence[str]],
        prober: Prober | None = None,
        on_transition: Sequence[TransitionCallback] = (),
        meter: Meter | None = None,
        deciding: Callable[[], bool] | None = None,
        promql: Callable[[], Sequence[PromqlSignal]] | None = None,
    ) -> None:
        self._clock = clock
        self._deciding = deciding
        self._promql = promql
        self._windows = windows
        self._holder = holder
        self._store = store
        self._cfg = cfg
        self._tiers = {tier: tuple(members) for tier, members in tiers.items()}
        self._prober = prober
        self._callbacks = tuple(on_transition)
        self._wall0 = clock.wall()
        self._mono0 = clock.monotonic()
        self._episodes = Episodes()
        self._tracks: dict[str, _ProbeTrack] = {}
        self._snapshot: SignalSnapshot | None = None
        self._last_tick_wall: float | None = None
        self._last_tick_mono = -math.inf
        self._wake = asyncio.Event()
        self._stopping = False
        self._resumed = False
        self._failed_saves = 0  # in a row: the first is logged, then quiet until one succeeds
        self.idle: IdleProbes | None = None  # probes of idle providers (the runtime sets it)
        self._trips: Counter | None = None
        if meter is not None:
            _register_gauges(self, meter)
            self._trips = meter.create_counter(
                names.METRIC_TRIPS, unit="{trip}", description="Trips, by the signal that tripped"
            )

    # --- time and state ---------------------------------------------------------------------

    def now(self) -> float:
        """Epoch seconds that advance with the monotonic clock (see the module docstring)."""
        return self._wall0 + (self._clock.monotonic() - self._mono0)

    @property
    def state(self) -> RoutingState:
        return self._holder.current

    @property
    def snapshot(self) -> SignalSnapshot | None:
        """The snapshot of the last tick (what the gauges show)."""
        return self._snapshot

    @property
    def last_tick(self) -> float | None:
        return self._last_tick_wall

    @property
    def config(self) -> TripwireConfig:
        return self._cfg

    def known_providers(self) -> list[str]:
        """The providers (and models of a provider serving several) the controller judges."""
        seen: dict[str, None] = dict.fromkeys(Members(self._tiers).names)
        seen.update(dict.fromkeys(sorted(self._holder.current.providers)))
        return list(seen)

    def next_look_in(self, providers: Iterable[str]) -> float | None:
        """Seconds until the controller next looks at one of ``providers`` that is out of
        rotation: the rest of a tripped one's cool-off, the wait for a probing one's next probe;
        the soonest of these. None when none of them is out of rotation (the controller knows
        nothing about when a provider in rotation stops failing)."""
        state = self._holder.current
        waits: list[float] = []
        for name in providers:
            status = state.status(name)
            if status.state is HealthState.TRIPPED:
                waits.append(cooloff_left(status, self.now(), self._cfg))
            elif status.state is HealthState.PROBING:
                waits.append(self._next_probe_in(name))
        return min(waits, default=None)

    def _next_probe_in(self, name: str) -> float:
        """Seconds until a probing provider's next probe starts (at a tick: one is due)."""
        track = self._tracks.get(name)
        if track is None or self._prober is None:  # it is scheduled (or moves on) next tick
            return self._cfg.tick_seconds
        due = track.last_started + self._cfg.probe_interval_seconds
        return max(0.0, due - self._clock.monotonic())

    def set_tiers(self, tiers: Mapping[str, Sequence[str]]) -> None:
        """New tier membership (a config reload): the next tick's decide() judges by it."""
        self._tiers = {tier: tuple(members) for tier, members in tiers.items()}

    def resume(self) -> RoutingState:
        """Publish the last saved decision. ``run()`` calls it unless it was called already."""
        state = self._store.load()
        self._holder.publish(state)
        self._resumed = True
        log.info("controller resumed routing state version %d", state.version)
        return state

    def set_kill_switch(self, kill_switch: KillSwitch, *, changed_by: str) -> RoutingState:
        """The operator's override: a new version, saved and published (unchanged → no-op)."""
        current = self._holder.current
        if current.kill_switch == kill_switch:
            return current
        state = current.evolve(changed_by=changed_by, now=self.now(), kill_switch=kill_switch)
        self._publish(state)
        log.warning("kill switch %s (by %s)", kill_switch.describe(), changed_by)
        return state

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if not self._resumed:
            self.resume()
        self._stopping = False
        while not self._stopping:
            try:
                self.tick()
            except Exception:  # a bug in one tick must not kill the tripwire for good
                log.exception("controller tick failed")
            await self._pause()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self.idle is not None:
            self.idle.stop()
        for track in self._tracks.values():
            if track.task is not None:
                track.task.cancel()

    def wake(self) -> None:
        """Tick soon rather than at the next interval (a failure was seen).

        Never lost, but rate-limited: a woken tick comes at least ``tick_seconds / 5`` after the
        previous one, so a storm of failures cannot turn the loop into a busy spin.
        """
        self._wake.set()

    async def _pause(self) -> None:
        if not self._wake.is_set():
            await sleep_or_woken(self._clock, self._cfg.tick_seconds, self._wake)
        if self._wake.is_set() and not self._stopping:
            self._wake.clear()
            rest = self._cfg.tick_seconds / 5 - (self._clock.monotonic() - self._last_tick_mono)
            if rest > 0:
                await self._clock.sleep(rest)

    def tick(self) -> Decision:
        """One decision: snapshot, decide on the probe results so far, apply, start probes.

        A replica that does not decide (a fleet's follower) only takes the snapshot its gauges
        show, and runs no probes: it routes on the version the leader wrote."""
        now = self.now()
        snapshot = self._windows.snapshot()
        state = self._holder.current
        if self._deciding is not None and not self._deciding():
            return self._follow(snapshot, now)
        decision = decide(
            state,
            snapshot,
            now,
            self._cfg,
            self._tiers,
            self._probe_results(state),
            episodes=self._episodes,
            promql=self._promql() if self._promql is not None else (),
        )
        self._episodes = decision.episodes
        if decision.changed:
            self._publish(
                state.evolve(changed_by="controller", now=now, providers=decision.providers)
            )
        self._snapshot = snapshot
        self._last_tick_wall = now
        self._last_tick_mono = self._clock.monotonic()
        self._announce(decision.events)
        self._schedule_probes()
        return decision

    def _follow(self, snapshot: SignalSnapshot, now: float) -> Decision:
        self._snapshot = snapshot
        self._last_tick_wall = now
        self._last_tick_mono = self._clock.monotonic()
        for track in self._tracks.values():
            if track.task is not None:
                track.task.cancel()
        self._tracks.clear()
        providers = self._holder.current.providers
        return Decision(
            providers=providers, changed=False, transitions=(), notices=(), episodes=self._episodes
        )

    def _publish(self, state: RoutingState) -> None:
        self._save(state)
        self._holder.publish(state)

    def _save(self, state: RoutingState) -> None:
        try:
            self._store.save(state)
        except Exception as exc:  # best effort: routing follows the decision regardless
            if not self._failed_saves:
                _log_save_failure(state.version, exc)
            else:
                log.debug("routing state version %d not saved either: %s", state.version, exc)
            self._failed_saves += 1
            return
        if self._failed_saves:
            log.info(
                "routing state saved again (version %d) after %d failed save%s",
                state.version,
                self._failed_saves,
                "s" if self._failed_saves > 1 else "",
            )
            self._failed_saves = 0

    def _announce(self, events: Iterable[Transition]) -> None:
        for event in events:
            if self.idle is not None:  # a trip its idle probes caused: cause standby
                event = self.idle.tag(event)
            _log_transition(event)
            if self._trips is not None and event.kind is TransitionKind.TRIP and event.enforced:
                cause = event.cause.value if event.cause is not None else "other"
                self._trips.add(1, {names.ATTR_PROVIDER: event.provider, names.ATTR_CAUSE: cause})
            for callback in self._callbacks:
                try:
                    callback(event)
                except Exception:  # one broken subscriber must not silence the others
                    log.exception("on_transition callback %r failed", callback)

    # --- probes -------------------------------------------------------------------------------

    def _probe_results(self, state: RoutingState) -> dict[str, ProbeResult]:
        probing = [n for n, s in state.providers.items() if s.state is HealthState.PROBING]
        if self._prober is None:
            enough = ProbeResult(successes_in_a_row=self._cfg.probe_successes)
            return dict.fromkeys(probing, enough)
        return {n: self._tracks[n].result() for n in probing if n in self._tracks}

    def _schedule_probes(self) -> None:
        if self.idle is not None:
            self.idle.schedule(self.known_providers(), self._holder.current)
        probing = {
            n for n, s in self._holder.current.providers.items() if s.state is HealthState.PROBING
        }
        for name in [n for n in self._tracks if n not in probing]:
            track = self._tracks.pop(name)
            if track.task is not None:
                track.task.cancel()
        if self._prober is None:
            return
        mono = self._clock.monotonic()
        for name in sorted(probing):
            track = self._tracks.setdefault(name, _ProbeTrack())
            busy = track.task is not None and not track.task.done()
            if not busy and mono - track.last_started >= self._cfg.probe_interval_seconds:
                track.last_started = mono
                track.task = asyncio.get_running_loop().create_task(self._probe(name, track))

    async def _probe(self, name: str, track: _ProbeTrack) -> None:
        assert self._prober is not None  # only scheduled when there is a prober
        ok, why = await _probe_once(self._prober, name, clock=self._clock, cfg=self._cfg)
        if ok:
            track.successes += 1
        else:
            track.successes = 0
            track.last_failure = why
            log.info("probe of %s failed: %s", name, why)


async def _probe_once(
    prober: Prober, name: str, *, clock: Clock, cfg: TripwireConfig
) -> tuple[bool, str]:
    """One probe, bounded by ``probe_timeout_seconds`` on the injected clock."""
    probe = asyncio.ensure_future(prober(name))
    timer = asyncio.ensure_future(clock.sleep(cfg.probe_timeout_seconds))
    try:
        done, _ = await asyncio.wait({probe, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not probe.done():
            probe.cancel()
    if probe not in done or probe.cancelled():
        return False, f"timed out after {cfg.probe_timeout_seconds:g}s"
    error = probe.exception()
    if error is not None:
        return False, _describe(error)
    return (True, "") if probe.result() else (False, "the probe request failed")


def _log_save_failure(version: int, exc: Exception) -> None:
    """An OSError (missing directory, full disk) is the path and the reason; anything else is a
    bug in a store, and its traceback is worth one log record."""
    quiet = "routing goes on; not logged again until a save succeeds"
    if isinstance(exc, OSError):
        where = f" to {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        log.error(
            "could not save routing state version %d%s: %s (%s)", version, where, reason, quiet
        )
    else:
        log.error("could not save routing state version %d (%s)", version, quiet, exc_info=exc)


def _describe(error: BaseException) -> str:
    """Low-cardinality and secret-free: the error type, never the message (it may hold a URL)."""
    if isinstance(error, FailoverError):
        return error.error_type
    return type(error).__name__


def _log_transition(event: Transition) -> None:
    level = logging.WARNING if event.critical or event.kind is TransitionKind.TRIP else logging.INFO
    log.log(
        level,
        "%s%s: %s %s -> %s: %s",
        "" if event.enforced else "[observe] ",
        event.kind,
        event.provider,
        event.from_state,
        event.to_state,
        event.reason,
    )


def _register_gauges(controller: Controller, meter: Meter) -> None:
    """Observable gauges that read the controller's latest state and snapshot at export time."""

    def provider_state(_: CallbackOptions) -> Iterable[Observation]:
        state = controller.state
        for name in controller.known_providers():
            current = state.status(name).state
            for candidate in HealthState:
                yield Observation(
                    1 if candidate is current else 0,
                    {names.ATTR_PROVIDER: name, names.ATTR_STATE: candidate.value},
                )

    def error_rate(_: CallbackOptions) -> Iterable[Observation]:
        snap = controller.snapshot
        for name in controller.known_providers():
            rate = snap.provider(name).error_rate if snap is not None else 0.0
            yield Observation(rate, {names.ATTR_PROVIDER: name})

    def threshold(_: CallbackOptions) -> Iterable[Observation]:
        value = controller.config.error_rate_threshold
        for name in controller.known_providers():
            yield Observation(value, {names.ATTR_PROVIDER: name})

    def waiting(_: CallbackOptions) -> Iterable[Observation]:
        snap = controller.snapshot
        for name in controller.known_providers():
            count = snap.waiting(name).waiting if snap is not None else 0
            yield Observation(count, {names.ATTR_PROVIDER: name})

    def stall_limit(_: CallbackOptions) -> Iterable[Observation]:
        snap, stall = controller.snapshot, controller.config.stall
        if snap is None or not stall.enabled:
            return
        for name in controller.known_providers():
            waits = snap.waiting(name)
            for kind, of in (("stream", waits.streams), ("whole", waits.answers)):
                limit = stall.limit(of.typical, of.samples)
                if limit is not None:
                    yield Observation(limit, {names.ATTR_PROVIDER: name, names.ATTR_KIND: kind})

    def kill_switch(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if controller.state.kill_switch.active else 0)

    def version(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(controller.state.version)

    def last_tick(_: CallbackOptions) -> Iterable[Observation]:
        if controller.last_tick is not None:
            yield Observation(controller.last_tick)

    gauges: list[tuple[str, Callable[[CallbackOptions], Iterable[Observation]], str, str]] = [
        (names.METRIC_PROVIDER_STATE, provider_state, "", "1 for the provider's current state"),
        (names.METRIC_PROVIDER_ERROR_RATE, error_rate, "", "Error rate the tripwire sees"),
        (names.METRIC_TRIPWIRE_THRESHOLD, threshold, "", "Error rate at which it trips"),
        (names.METRIC_PROVIDER_WAITING, waiting, "{attempt}", "Attempts not answered yet"),
        (names.METRIC_STALL_LIMIT, stall_limit, "s", "Wait after which it counts as stalled"),
        (names.METRIC_KILL_SWITCH_ACTIVE, kill_switch, "", "1 when a kill switch is set"),
        (names.METRIC_STATE_VERSION, version, "", "Version of the routing state"),
        (names.METRIC_CONTROLLER_LAST_TICK, last_tick, "s", "Epoch seconds of the last tick"),
    ]
    for name, callback, unit, description in gauges:
        meter.create_observable_gauge(
            name, callbacks=[callback], unit=unit, description=description
        )
