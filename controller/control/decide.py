"""The tripwire as a pure function: ``decide(state, snapshot, now, cfg, tiers) -> Decision``.

No I/O, no clock, no globals: the controller loop feeds it the current routing state and a frozen
:class:`~controller.signals.SignalSnapshot` and applies what comes back, so the whole state
machine is tested as a table. Per provider::

    healthy ─trip─► tripped ─cool-off─► probing ─K probes ok─► recovering ─last step─► healthy
       ▲               ▲ ▲                 │                       │
       │               │ └─ a probe fails ─┘                       │
       └───────────────┴────────── any fault while recovering ◄───┘

A failed probe sends the provider back to ``tripped`` with its trip count up (``RETRIP``, not
alerted: the outage it is part of was), so the cool-off grows through one long outage instead
of probing it every few seconds for as long as it lasts.

Time. ``now`` is epoch seconds, the same scale as ``ProviderStatus.since``, because the state
document outlives the process (a restart resumes a cool-off half way). The loop does not read the
wall clock for it each tick: it anchors the wall clock once and advances it by the *monotonic*
clock, so cool-offs and failback steps never jump with NTP. Signal ages (``last_fault_age``...)
are relative to the snapshot, which the loop takes just before calling ``decide``.

Hysteresis (no flip-flop at a borderline error rate): a provider trips at ``error_rate >=
threshold`` but never comes back by its error rate dropping below it. The way back is a cool-off
that doubles with each repeated trip, K successful probes in a row, and stepped failback during
which a single fault trips it again. Once healthy again, only traffic seen *since* the recovery
counts, so the faults of the outage it just left cannot trip it a second time. A provider that
hovers at the threshold is therefore out for ever-longer stretches, not toggled every tick.

Never eject the last usable provider of a tier: such a trip is refused and a critical ``PANIC``
transition is reported instead, once per episode (``Episodes`` is the memory of what was already
announced; the loop hands it back on the next call). In ``observe`` mode nothing is ejected:
trips become "would trip" notices, once per episode; providers already out of rotation still
recover, so switching to observe never strands one.

A provider can also trip as ``stalled`` (``cause``) while nothing fails: attempts have waited
past the limit learned from its own answers (``controller.stall``) while nothing it answered in
that time came within the limit (it is silent, or answers only late) and it answered no error.
Silence ends no attempt, so the windows above cannot see it; the snapshot's ``waits`` can. The
limit is learned from a baseline that leaves out the last 30 s, so a slowdown is judged by the
provider's speed before it. It applies to a healthy and to a recovering provider alike.

Failback steps do not emit transitions (the state stays ``recovering``; only ``traffic_share``
changes): a phone alert per step would be noise. The share is a pure function of the time since
entering ``recovering``: step k starts ``k * failback_step_seconds`` after ``since``.

PromQL rules (``promql``, :mod:`controller.control.promql`): a rule that fires trips its target
(cause ``promql``) as a fault would, a healthy one or a recovering one; while it fires, a probing
target is tripped again (``RETRIP``, a longer cool-off) however its probes went. A rule whose
Prometheus gave no usable answer (``unknown``) starts nothing and ends nothing: a probing target
its last answer held out waits in ``probing``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from controller.control._members import Members
from controller.control.config import StallConfig, TripwireConfig
from controller.control.promql import PromqlSignal
from controller.control.state import (
    HealthState,
    ProviderStatus,
    RoutingState,
    model_key,
    split_key,
)
from controller.signals.inflight import Waits, WaitSignals
from controller.signals.window import ProviderSignals, SignalSnapshot

AUTH_ERROR = "auth"

_EMPTY: Mapping[str, float] = MappingProxyType({})


class TransitionKind(enum.StrEnum):
    TRIP = "trip"  # healthy or recovering → tripped (a notice in observe mode)
    PROBE = "probe"  # tripped → probing, the cool-off is over
    RETRIP = "retrip"  # probing → tripped, a probe failed: a longer cool-off
    FAILBACK = "failback"  # probing → recovering, traffic starts coming back
    RECOVERED = "recovered"  # → healthy, full traffic
    PANIC = "panic"  # a trip was refused: it would leave a tier with no usable provider


class TripCause(enum.StrEnum):
    """Which signal tripped a provider (``Transition.cause``; empty for other transitions)."""

    ERROR_RATE = "error_rate"
    CONSECUTIVE = "consecutive_failures"
    STALLED = "stalled"  # attempts waiting past the learned limit, nothing answered
    FAILBACK_FAULT = "failback_fault"  # a fault while recovering
    STANDBY = "standby"  # idle probes of a provider standing by kept failing (control._idle)
    PROMQL = "promql"  # a PromQL rule naming it fires


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One change (or refused / would-be change) of one provider, with the numbers behind it.

    ``enforced`` is False for observe-mode notices. ``down_for`` (seconds since the trip) is set
    when traffic comes back. ``tier`` is set on PANIC. ``at`` is epoch seconds.
    """

    provider: str
    kind: TransitionKind
    from_state: HealthState
    to_state: HealthState
    reason: str
    at: float
    error_rate: float = 0.0
    requests: int = 0
    window_seconds: float = 0.0
    top_errors: tuple[tuple[str, int], ...] = ()
    trace_ids: tuple[str, ...] = ()
    critical: bool = False
    enforced: bool = True
    down_for: float | None = None
    tier: str | None = None
    tiers: tuple[str, ...] = ()  # PANIC: every tier this one outage left without a provider
    trip_count: int = 0
    traffic_share: float = 1.0
    cause: TripCause | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """The loop's probe bookkeeping for one provider in ``probing``."""

    successes_in_a_row: int = 0
    last_failure: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Episodes:
    """What was already announced, so a condition that holds for minutes alerts once.

    Each maps a provider (or a tier, for ``panic``) to the last time the condition held; an
    entry expires once the condition has been absent for ``cooloff_seconds``.
    ``down_since`` remembers when a provider was first tripped, for ``down_for``.
    """

    would_trip: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    panic: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    down_since: Mapping[str, float] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the loop applies. ``providers`` is ``state.providers`` itself when unchanged."""

    providers: Mapping[str, ProviderStatus]
    changed: bool
    transitions: tuple[Transition, ...]
    notices: tuple[Transition, ...]
    episodes: Episodes

    @property
    def events(self) -> tuple[Transition, ...]:
        """Everything to announce, transitions first."""
        return self.transitions + self.notices


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    reason: str
    signals: ProviderSignals
    error_rate: float
    requests: int
    cause: TripCause


class _Pass:
    """Mutable scratch space of one ``decide`` call; nothing of it escapes but the Decision."""

    def __init__(
        self,
        *,
        state: RoutingState,
        snapshot: SignalSnapshot,
        now: float,
        cfg: TripwireConfig,
        tiers: Mapping[str, Sequence[str]],
        probes: Mapping[str, ProbeResult],
        episodes: Episodes,
        promql: Sequence[PromqlSignal] = (),
    ) -> None:
        self.state, self.snapshot, self.now, self.cfg = state, snapshot, now, cfg
        self.tiers, self.probes = tiers, probes
        self.members = Members(tiers)
        self.promql: dict[str, list[PromqlSignal]] = {}
        for signal in promql:  # a model of a provider judged whole is the provider's
            provider, model = split_key(signal.target)
            key = signal.target if model is None or provider in self.members.multi else provider
            self.promql.setdefault(key, []).append(signal)
        self.table: dict[str, ProviderStatus] = dict(state.providers)
        # What the last-usable guard sees: the real table, or a what-if copy in observe mode.
        self.view = self.table if cfg.enforce else dict(state.providers)
        self.would_trip = dict(episodes.would_trip)
        self.panic = dict(episodes.panic)
        self.down_since = dict(episodes.down_since)
        self.transitions: list[Transition] = []
        self.notices: list[Transition] = []
        self.panics: list[tuple[str, _Candidate]] = []  # tiers newly in panic, this pass

    def names(self) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(self.members.names)
        seen.update(dict.fromkeys(sorted(self.state.providers)))
        seen.update(dict.fromkeys(sorted(self.snapshot.providers)))
        return list(seen)

    def signals(self, name: str) -> ProviderSignals:
        """What the windows saw of a provider, or of one model of it (``provider/model``)."""
        provider, model = split_key(name)
        if model is None:
            return self.snapshot.provider(name)
        found = self.snapshot.models.get((provider, model))
        return (
            found
            if found is not None
            else ProviderSignals(window_seconds=self.snapshot.window_seconds)
        )

    def status(self, name: str) -> ProviderStatus:
        return self.table.get(name) or self.state.status(name)

    def event(self, name: str, kind: TransitionKind, new: ProviderStatus, reason: str) -> None:
        old = self.status(name)
        self.table[name] = new
        self.transitions.append(self.make(name, kind, old.state, new, reason))

    def make(
        self,
        name: str,
        kind: TransitionKind,
        from_state: HealthState,
        new: ProviderStatus,
        reason: str,
        **extra: Any,
    ) -> Transition:
        sig = self.signals(name)
        made = Transition(
            provider=name,
            kind=kind,
            from_state=from_state,
            to_state=new.state,
            reason=reason,
            at=self.now,
            error_rate=sig.error_rate,
            requests=sig.requests,
            window_seconds=sig.window_seconds,
            top_errors=sig.top_errors(),
            trace_ids=sig.failing_trace_ids,
            trip_count=new.trip_count,
            traffic_share=new.traffic_share,
        )
        return replace(made, **extra) if extra else made

    def down_for(self, name: str) -> float | None:
        started = self.down_since.get(name)
        return None if started is None else max(0.0, self.now - started)

    def decision(self) -> Decision:
        changed = self.table != dict(self.state.providers)
        return Decision(
            providers=MappingProxyType(self.table) if changed else self.state.providers,
            changed=changed,
            transitions=tuple(self.transitions),
            notices=tuple(self.notices),
            episodes=Episodes(
                would_trip=MappingProxyType(self.would_trip),
                panic=MappingProxyType(self.panic),
                down_since=MappingProxyType(self.down_since),
            ),
        )


def decide(
    state: RoutingState,
    snapshot: SignalSnapshot,
    now: float,
    cfg: TripwireConfig,
    tiers: Mapping[str, Sequence[str]],
    probes: Mapping[str, ProbeResult] | None = None,
    *,
    episodes: Episodes | None = None,
    promql: Sequence[PromqlSignal] = (),
) -> Decision:
    """The next routing decision. Pure: same inputs, same Decision."""
    work = _Pass(
        state=state,
        snapshot=snapshot,
        now=now,
        cfg=cfg,
        tiers=tiers,
        probes=probes or {},
        episodes=episodes or Episodes(),
        promql=promql,
    )
    candidates: list[_Candidate] = []
    for name in work.names():
        found = _advance(work, name)
        if found is not None:
            candidates.append(found)
    candidates = _by_model(work, candidates)
    candidates.sort(key=lambda c: (-c.error_rate, -c.signals.consecutive_failures, c.name))
    for candidate in candidates:
        _trip(work, candidate)
    _announce_panic(work)
    _expire(work)
    return work.decision()


def _advance(work: _Pass, name: str) -> _Candidate | None:
    """Move one provider along its state machine; return it if it should trip."""
    status = work.status(name)
    if status.state is HealthState.TRIPPED:
        work.down_since.setdefault(name, status.since)
        _end_cooloff(work, name, status)
    elif status.state is HealthState.PROBING:
        _after_probes(work, name, status)
    elif status.state is HealthState.RECOVERING:
        fault = (
            _fault_while_recovering(work, name, status)
            or _promql_trip(work, name)
            or _stalled(work, name, since=status.since)
        )
        if fault is not None and work.cfg.enforce:
            return fault
        if fault is not None:
            _announce_would_trip(work, fault)
        _step(work, name, status)
    else:
        _forget_old_trips(work, name, status)
        return _healthy_trip(work, name, status) or _promql_trip(work, name) or _stalled(work, name)
    return None


def cooloff_left(status: ProviderStatus, now: float, cfg: TripwireConfig) -> float:
    """Seconds until a tripped provider's cool-off is over and it is probed (0 once it is)."""
    return max(0.0, status.since + cfg.cooloff_for(status.trip_count) - now)


def _end_cooloff(work: _Pass, name: str, status: ProviderStatus) -> None:
    cooloff = work.cfg.cooloff_for(status.trip_count)
    if work.now - status.since < cooloff:
        return
    new = replace(status, state=HealthState.PROBING, since=work.now, traffic_share=0.0)
    reason = f"cool-off of {cooloff:g}s over (trip #{status.trip_count}); probing"
    new = replace(new, reason=reason)
    work.event(name, TransitionKind.PROBE, new, reason)


def _after_probes(work: _Pass, name: str, status: ProviderStatus) -> None:
    rules = work.promql.get(name, ())
    firing = [r for r in rules if r.firing]
    if firing:
        _retrip(work, name, status, _promql_reason(firing, "still fires"), probe=False)
        return
    if any(r.holds_out for r in rules):
        return  # its rule's Prometheus did not answer: nothing moves it either way
    result = work.probes.get(name)
    if result is not None and result.last_failure is not None:
        _retrip(work, name, status, result.last_failure)
        return
    if result is None or result.successes_in_a_row < work.cfg.probe_successes:
        return
    first = work.cfg.failback_steps[0]
    ok = f"{result.successes_in_a_row} probes in a row succeeded"
    if first >= 1.0:
        _recovered(work, name, status, ok)
        return
    reason = f"{ok}; failback at {first:.0%} of traffic"
    new = replace(
        status, state=HealthState.RECOVERING, since=work.now, reason=reason, traffic_share=first
    )
    work.table[name] = new
    work.transitions.append(
        work.make(
            name, TransitionKind.FAILBACK, status.state, new, reason, down_for=work.down_for(name)
        )
    )


def _retrip(
    work: _Pass, name: str, status: ProviderStatus, failure: str, *, probe: bool = True
) -> None:
    count = status.trip_count + 1
    cooloff = work.cfg.cooloff_for(count)
    why = f"probe failed ({failure})" if probe else failure
    reason = f"{why}; cool-off {cooloff:g}s (trip #{count})"
    new = ProviderStatus(
        state=HealthState.TRIPPED,
        since=work.now,
        reason=reason,
        trip_count=count,
        traffic_share=0.0,
    )
    work.event(name, TransitionKind.RETRIP, new, reason)


def _step(work: _Pass, name: str, status: ProviderStatus) -> None:
    steps = work.cfg.failback_steps
    index = int(max(0.0, work.now - status.since) // work.cfg.failback_step_seconds)
    if index >= len(steps) - 1:
        _recovered(work, name, status, f"failback through {len(steps)} steps without a fault")
    elif steps[index] != status.traffic_share:
        work.table[name] = replace(status, traffic_share=steps[index])


def _recovered(work: _Pass, name: str, status: ProviderStatus, reason: str) -> None:
    new = replace(
        status, state=HealthState.HEALTHY, since=work.now, reason=reason, traffic_share=1.0
    )
    work.table[name] = new
    down_for = work.down_for(name)
    work.down_since.pop(name, None)
    work.transitions.append(
        work.make(name, TransitionKind.RECOVERED, status.state, new, reason, down_for=down_for)
    )


def _forget_old_trips(work: _Pass, name: str, status: ProviderStatus) -> None:
    """Healthy for ``stable_seconds`` after a recovery: the next trip is a first trip again."""
    if status.trip_count and work.now - status.since >= work.cfg.stable_seconds:
        work.table[name] = replace(status, trip_count=0)


def _healthy_trip(work: _Pass, name: str, status: ProviderStatus) -> _Candidate | None:
    sig = work.signals(name)
    cfg = work.cfg
    elapsed = max(0.0, work.now - status.since)
    requests, faults = sig.counts_since(elapsed, bucket_seconds=work.snapshot.bucket_seconds)
    rate = faults / requests if requests else 0.0
    if requests >= cfg.min_requests and rate >= cfg.error_rate_threshold:
        reason = (
            f"error rate {rate:.0%} over {requests} requests in {sig.window_seconds:g}s "
            f"(threshold {cfg.error_rate_threshold:.0%})"
        )
        return _Candidate(name, reason, sig, rate, requests, TripCause.ERROR_RATE)
    run_age = sig.failure_run_age
    run = sig.consecutive_failures if run_age is not None and run_age <= elapsed else 0
    if run >= cfg.consecutive_failures:
        reason = f"{run} consecutive failures"
        return _Candidate(name, reason, sig, rate, requests, TripCause.CONSECUTIVE)
    return None


def _promql_trip(work: _Pass, name: str) -> _Candidate | None:
    """A PromQL rule naming ``name`` fires (an unknown one never trips anything)."""
    firing = [r for r in work.promql.get(name, ()) if r.firing]
    if not firing:
        return None
    sig = work.signals(name)
    reason = _promql_reason(firing, "fires")
    return _Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.PROMQL)


def _promql_reason(firing: Sequence[PromqlSignal], verb: str) -> str:
    said = "; ".join(
        f"{r.rule} {verb} ({r.detail})" if r.detail else f"{r.rule} {verb}" for r in firing
    )
    return f"PromQL rule {said}"


def _stalled(work: _Pass, name: str, *, since: float | None = None) -> _Candidate | None:
    """Attempts waiting past the learned limit while the provider answered nothing within it for
    as long: ``min_waiting`` of them, or one waiting ``alone_factor`` times the limit. With
    ``since`` (a recovering provider) only attempts started after it count: those left waiting
    from the outage (with nowhere to be rescued to) are not news."""
    cfg = work.cfg.stall
    waits = work.snapshot.waiting(name)  # per provider: a model key has none
    if not cfg.enabled or not waits.waiting:
        return None
    within = None if since is None else max(0.0, work.now - since)
    for stream in (True, False):
        reason = _stall_reason(waits, stream, work.cfg, within)
        if reason is not None:
            sig = work.snapshot.provider(name)
            return _Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.STALLED)
    return None


def _stall_reason(
    waits: WaitSignals, stream: bool, cfg: TripwireConfig, within: float | None
) -> str | None:
    stall = cfg.stall
    ages = [a for a in waits.kind(stream).ages if within is None or a <= within]
    limit, learned = _limit(waits, stream, stall)
    if limit is None or not ages or ages[0] < limit:
        return None
    alive = [waits.last_error_age] + [
        of.answered_within(bound)
        for of, bound in (
            (waits.streams, _limit(waits, True, stall)[0] or limit),
            (waits.answers, _limit(waits, False, stall)[0] or limit),
        )
    ]
    if any(age is not None and age < limit for age in alive):
        return None  # it answers others in time (or with errors): not silent, not slow
    past = sum(1 for age in ages if age >= limit)
    if past < stall.min_waiting and ages[0] < limit * stall.alone_factor:
        return None
    late = sum(1 for of in (waits.streams, waits.answers) for age, _ in of.recent if age < limit)
    what = f"{late} answered, later than that" if late else "nothing answered"
    assert learned.typical is not None  # a limit was learned from it
    return (
        f"stalled: {past} waiting past the limit, the oldest {ages[0]:.1f}s; {what} in the last "
        f"{limit:.1f}s (limit: {stall.factor:g} x p{stall.quantile * 100:g} of its "
        f"{'first chunks' if learned is waits.streams else 'answers'}, {learned.typical:.2f}s)"
    )


def _limit(waits: WaitSignals, stream: bool, stall: StallConfig) -> tuple[float | None, Waits]:
    """The stall limit of one kind, and the history it was learned from: a stream with too
    little history of its own is judged by the whole answers' (a first chunk comes no later)."""
    learned = waits.kind(stream)
    if stream and learned.samples < stall.min_samples:
        learned = waits.answers
    return stall.limit(learned.typical, learned.samples), learned


def _fault_while_recovering(work: _Pass, name: str, status: ProviderStatus) -> _Candidate | None:
    sig = work.signals(name)
    age = sig.last_fault_age
    if age is None or age > max(0.0, work.now - status.since):
        return None
    top = sig.top_errors(1)
    what = f" ({top[0][0]})" if top else ""
    reason = f"fault during failback at {status.traffic_share:.0%} of traffic{what}"
    return _Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.FAILBACK_FAULT)


def _trip(work: _Pass, candidate: _Candidate) -> None:
    blocked = _tiers_left_empty(work, candidate.name)
    if blocked:
        for tier in blocked:
            _panic(work, candidate, tier)
        return
    status = work.view.get(candidate.name) or work.state.status(candidate.name)
    new = ProviderStatus(
        state=HealthState.TRIPPED,
        since=work.now,
        reason=candidate.reason,
        trip_count=status.trip_count + 1,
        traffic_share=0.0,
    )
    if not work.cfg.enforce:
        work.view[candidate.name] = new
        _announce_would_trip(work, candidate)
        return
    work.down_since.setdefault(candidate.name, work.now)
    critical = _is_auth(candidate.signals)
    work.table[candidate.name] = new
    work.transitions.append(
        work.make(
            candidate.name,
            TransitionKind.TRIP,
            status.state,
            new,
            candidate.reason,
            critical=critical,
            error_rate=candidate.error_rate,
            requests=candidate.requests,
            cause=candidate.cause,
        )
    )


def _by_model(work: _Pass, candidates: list[_Candidate]) -> list[_Candidate]:
    """A provider serving several models trips as a whole only when every model of it that had
    traffic would trip, or when it stalled (silence is the provider's); its models then need no
    trip of their own. Otherwise only the failing models trip, and their siblings serve on."""
    named = {c.name: c for c in candidates}
    whole = {
        name for name in named if split_key(name)[1] is None and _trips_whole(work, named, name)
    }
    kept = []
    for candidate in candidates:
        provider, model = split_key(candidate.name)
        if (provider in whole) == (model is None):
            kept.append(candidate)
    return kept


def _trips_whole(work: _Pass, named: Mapping[str, _Candidate], provider: str) -> bool:
    if provider not in work.members.multi or named[provider].cause in _WHOLE:
        return True
    served = [
        model_key(p, m)
        for (p, m), sig in work.snapshot.models.items()
        if p == provider and sig.requests
    ]
    return all(key in named for key in served)


_WHOLE = (TripCause.STALLED, TripCause.PROMQL)  # causes that are the provider's, not a model's


def _tiers_left_empty(work: _Pass, name: str) -> list[str]:
    """Tiers in which ``name`` (a provider, or one model of one) is the last target traffic can
    still go to."""
    disabled = set(work.state.kill_switch.disable)
    if split_key(name)[0] in disabled:
        return []
    blocked = []
    for tier, others in work.members.blocked_by(name):
        if not any(_target_usable(work, target, disabled) for target in others):
            blocked.append(tier)
    return blocked


def _target_usable(work: _Pass, target: tuple[str, str | None], disabled: set[str]) -> bool:
    provider, model = target
    if provider in disabled or not _usable(work, provider):
        return False
    return model is None or _usable(work, model_key(provider, model))


def _usable(work: _Pass, name: str) -> bool:
    found = work.view.get(name)
    return (found or work.state.status(name)).usable


def _panic(work: _Pass, candidate: _Candidate, tier: str) -> None:
    first = tier not in work.panic
    work.panic[tier] = work.now
    if first:
        work.panics.append((tier, candidate))


def _announce_panic(work: _Pass) -> None:
    """One PANIC for every tier this pass left without a provider: one outage that downs many
    tiers at once is one critical alert naming them all, not one per tier."""
    if not work.panics:
        return
    tiers = tuple(dict.fromkeys(tier for tier, _ in work.panics))
    lead = work.panics[0][1]
    kept = dict.fromkeys(c.name for _, c in work.panics)
    why = "; ".join(dict.fromkeys(f"{c.name}: {c.reason}" for _, c in work.panics))
    named = ", ".join(repr(t) for t in tiers)
    reason = (
        f"all providers of tier{'s' if len(tiers) > 1 else ''} {named} down: not ejecting "
        f"{', '.join(kept)}, the last usable ({why}); panic mode"
    )
    status = work.view.get(lead.name) or work.state.status(lead.name)
    event = work.make(
        lead.name,
        TransitionKind.PANIC,
        status.state,
        status,
        reason,
        critical=True,
        enforced=work.cfg.enforce,
        tier=tiers[0],
        tiers=tiers,
        error_rate=lead.error_rate,
        requests=lead.requests,
    )
    (work.transitions if work.cfg.enforce else work.notices).append(event)


def _announce_would_trip(work: _Pass, candidate: _Candidate) -> None:
    first = candidate.name not in work.would_trip
    work.would_trip[candidate.name] = work.now
    if not first:
        return
    status = work.status(candidate.name)
    would = replace(status, state=HealthState.TRIPPED, traffic_share=0.0)
    work.notices.append(
        work.make(
            candidate.name,
            TransitionKind.TRIP,
            status.state,
            would,
            f"would trip (observe mode): {candidate.reason}",
            critical=_is_auth(candidate.signals),
            enforced=False,
            error_rate=candidate.error_rate,
            requests=candidate.requests,
            cause=candidate.cause,
        )
    )


def _is_auth(sig: ProviderSignals) -> bool:
    return any(kind == AUTH_ERROR for kind, _ in sig.errors_by_type)


def _expire(work: _Pass) -> None:
    hold = work.cfg.cooloff_seconds
    for table in (work.would_trip, work.panic):
        for key in _stale(table.items(), work.now - hold):
            del table[key]


def _stale(items: Iterable[tuple[str, float]], before: float) -> list[str]:
    return [key for key, seen in items if seen < before]
