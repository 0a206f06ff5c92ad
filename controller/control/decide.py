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

Where it is: the records and one call's scratch space in ``_decision.py``, each provider's state
machine in ``_machine.py`` (stalls: ``_stall.py``), tripping, the last-usable guard and observe
mode in ``_tripping.py``; this module runs one pass over them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.control._decision import (
    Candidate,
    Decision,
    Episodes,
    Pass,
    ProbeResult,
    Transition,
    TransitionKind,
    TripCause,
)
from controller.control._machine import advance
from controller.control._tripping import AUTH_ERROR, announce_panic, by_model, expire, trip
from controller.control.config import TripwireConfig
from controller.control.promql import PromqlSignal
from controller.control.state import ProviderStatus, RoutingState
from controller.signals.window import SignalSnapshot

# The records are defined in _decision.py; everything imports them from here.
__all__ = [
    "AUTH_ERROR",
    "Decision",
    "Episodes",
    "ProbeResult",
    "Transition",
    "TransitionKind",
    "TripCause",
    "cooloff_left",
    "decide",
]


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
    work = Pass(
        state=state,
        snapshot=snapshot,
        now=now,
        cfg=cfg,
        tiers=tiers,
        probes=probes or {},
        episodes=episodes or Episodes(),
        promql=promql,
    )
    candidates: list[Candidate] = []
    for name in work.names():
        found = advance(work, name)
        if found is not None:
            candidates.append(found)
    candidates = by_model(work, candidates)
    candidates.sort(key=lambda c: (-c.error_rate, -c.signals.consecutive_failures, c.name))
    for candidate in candidates:
        trip(work, candidate)
    announce_panic(work)
    expire(work)
    return work.decision()


def cooloff_left(status: ProviderStatus, now: float, cfg: TripwireConfig) -> float:
    """Seconds until a tripped provider's cool-off is over and it is probed (0 once it is)."""
    return max(0.0, status.since + cfg.cooloff_for(status.trip_count) - now)
