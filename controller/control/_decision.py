"""What one :func:`~controller.control.decide.decide` call works with and hands back.

The records (:class:`Transition`, :class:`Decision`, :class:`Episodes`, :class:`ProbeResult` and
their kinds) are imported from :mod:`controller.control.decide`, which re-exports them; a
:class:`Candidate` is a provider that should trip, and :class:`Pass` the scratch space of one
call, shared by the state machine (``_machine.py``, ``_stall.py``) and the tripping and
last-usable guard (``_tripping.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from controller.control._members import Members
from controller.control.config import TripwireConfig
from controller.control.promql import PromqlSignal
from controller.control.state import HealthState, ProviderStatus, RoutingState, split_key
from controller.signals.window import ProviderSignals, SignalSnapshot

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
class Candidate:
    name: str
    reason: str
    signals: ProviderSignals
    error_rate: float
    requests: int
    cause: TripCause


class Pass:
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
        self.panics: list[tuple[str, Candidate]] = []  # tiers newly in panic, this pass

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
