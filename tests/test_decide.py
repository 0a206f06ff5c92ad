"""decide() as a table: (state, snapshot, probes) → expected statuses and transitions.

Snapshots are built directly, so each row states exactly what the window saw. ``NOW`` is epoch
seconds, like ``ProviderStatus.since``; ``ago(x)`` is ``NOW - x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from controller.control.config import TripwireConfig
from controller.control.decide import (
    Decision,
    Episodes,
    ProbeResult,
    TransitionKind,
    decide,
)
from controller.control.state import HealthState, KillSwitch, ProviderStatus, RoutingState
from controller.signals import BucketCounts, ProviderSignals, SignalSnapshot

NOW = 1_800_000_000.0
H, T, P, R = (
    HealthState.HEALTHY,
    HealthState.TRIPPED,
    HealthState.PROBING,
    HealthState.RECOVERING,
)
TRIP, PROBE, FAILBACK, RECOVERED, PANIC = (
    TransitionKind.TRIP,
    TransitionKind.PROBE,
    TransitionKind.FAILBACK,
    TransitionKind.RECOVERED,
    TransitionKind.PANIC,
)
TIERS = {"frontier": ("a", "b")}


def ago(seconds: float) -> float:
    return NOW - seconds


def sig(
    requests: int = 0,
    faults: int = 0,
    *,
    run: int = 0,
    run_age: float | None = None,
    last_fault_age: float | None = None,
    errors: tuple[tuple[str, int], ...] = (),
    recent: tuple[BucketCounts, ...] | None = None,
) -> ProviderSignals:
    if recent is None:
        recent = (BucketCounts(age=0.5, requests=requests, faults=faults),) if requests else ()
    if faults and last_fault_age is None:
        last_fault_age = 0.2
    return ProviderSignals(
        window_seconds=30.0,
        requests=requests,
        successes=requests - faults,
        faults=faults,
        error_rate=faults / requests if requests else 0.0,
        errors_by_type=errors or ((("overloaded", faults),) if faults else ()),
        consecutive_failures=run,
        failure_run_age=run_age if run else None,
        last_fault_age=last_fault_age,
        failing_trace_ids=("0" * 31 + "1",) if faults else (),
        recent=recent,
    )


def st(
    state: HealthState = H, since: float = 0.0, trips: int = 0, share: float | None = None
) -> ProviderStatus:
    if share is None:
        share = 1.0 if state is H else 0.0
    return ProviderStatus(state=state, since=since, trip_count=trips, traffic_share=share)


@dataclass(frozen=True)
class Row:
    """One row: inputs, then the expected (state, share, trip_count) and events."""

    id: str
    providers: Mapping[str, ProviderStatus] = field(default_factory=dict)
    signals: Mapping[str, ProviderSignals] = field(default_factory=dict)
    probes: Mapping[str, ProbeResult] = field(default_factory=dict)
    cfg: Mapping[str, Any] = field(default_factory=dict)
    kill: KillSwitch = field(default_factory=KillSwitch)
    episodes: Episodes = field(default_factory=Episodes)
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: TIERS)
    # expected
    status: Mapping[str, tuple[HealthState, float, int]] = field(default_factory=dict)
    events: tuple[tuple[str, TransitionKind, HealthState, HealthState, bool], ...] = ()
    notices: tuple[tuple[str, TransitionKind, bool], ...] = ()
    changed: bool = True


ROWS = [
    Row("quiet: nothing changes", status={"a": (H, 1.0, 0)}, changed=False),
    Row(
        "error rate at threshold trips",
        signals={"a": sig(20, 10)},
        status={"a": (T, 0.0, 1), "b": (H, 1.0, 0)},
        events=(("a", TRIP, H, T, False),),
    ),
    Row("error rate below threshold", signals={"a": sig(20, 9)}, changed=False),
    Row(
        "volume gate: too few requests, short run",
        signals={"a": sig(9, 9, run=3, run_age=1.0)},
        changed=False,
    ),
    Row(
        "consecutive failures trip at low volume",
        signals={"a": sig(5, 5, run=5, run_age=1.0)},
        status={"a": (T, 0.0, 1)},
        events=(("a", TRIP, H, T, False),),
    ),
    Row(
        "auth errors trip as critical",
        signals={"a": sig(12, 12, errors=(("auth", 12),))},
        status={"a": (T, 0.0, 1)},
        events=(("a", TRIP, H, T, True),),
    ),
    Row(
        "last usable provider of a tier: panic, no ejection",
        providers={"b": st(T, ago(5), 1)},
        signals={"a": sig(20, 20)},
        status={"a": (H, 1.0, 0), "b": (T, 0.0, 1)},
        events=(("a", PANIC, H, H, True),),
        changed=False,
    ),
    Row(
        "panic already announced in this episode: silent",
        providers={"b": st(T, ago(5), 1)},
        signals={"a": sig(20, 20)},
        episodes=Episodes(panic=MappingProxyType({"frontier": ago(1)})),
        changed=False,
    ),
    Row(
        "both fail at once: the worse one trips, the other stays with a panic",
        signals={"a": sig(20, 12), "b": sig(20, 20)},
        status={"a": (H, 1.0, 0), "b": (T, 0.0, 1)},
        events=(("b", TRIP, H, T, False), ("a", PANIC, H, H, True)),
    ),
    Row(
        "the other provider is disabled by the kill switch: panic",
        signals={"a": sig(20, 20)},
        kill=KillSwitch(disable=("b",)),
        events=(("a", PANIC, H, H, True),),
        changed=False,
    ),
    Row(
        "a disabled provider may trip: routing loses nothing",
        signals={"b": sig(20, 20)},
        kill=KillSwitch(disable=("b",)),
        status={"b": (T, 0.0, 1)},
        events=(("b", TRIP, H, T, False),),
    ),
    Row(
        "a provider in no tier has no guard",
        signals={"solo": sig(20, 20)},
        status={"solo": (T, 0.0, 1)},
        events=(("solo", TRIP, H, T, False),),
    ),
    Row("cool-off not over", providers={"a": st(T, ago(14.9), 1)}, changed=False),
    Row(
        "cool-off over: probing",
        providers={"a": st(T, ago(15), 1)},
        status={"a": (P, 0.0, 1)},
        events=(("a", PROBE, T, P, False),),
    ),
    Row("third trip: cool-off 60 s", providers={"a": st(T, ago(59), 3)}, changed=False),
    Row(
        "third trip: probing after 60 s",
        providers={"a": st(T, ago(60), 3)},
        status={"a": (P, 0.0, 3)},
        events=(("a", PROBE, T, P, False),),
    ),
    Row(
        "cool-off capped by max_cooloff_seconds",
        providers={"a": st(T, ago(600), 40)},
        status={"a": (P, 0.0, 40)},
        events=(("a", PROBE, T, P, False),),
    ),
    Row(
        "probing: not enough successes yet",
        providers={"a": st(P, ago(5), 1)},
        probes={"a": ProbeResult(successes_in_a_row=2)},
        changed=False,
    ),
    Row("probing: no probe result", providers={"a": st(P, ago(50), 1)}, changed=False),
    Row(
        "probing: a failed probe re-trips it, counted (the next cool-off is longer)",
        providers={"a": st(P, ago(5), 1)},
        probes={"a": ProbeResult(successes_in_a_row=0, last_failure="timed out after 10s")},
        status={"a": (T, 0.0, 2)},
        events=(("a", TransitionKind.RETRIP, P, T, False),),
    ),
    Row(
        "probing: K successes start failback at the first step",
        providers={"a": st(P, ago(5), 1)},
        probes={"a": ProbeResult(successes_in_a_row=3)},
        status={"a": (R, 0.1, 1)},
        events=(("a", FAILBACK, P, R, False),),
    ),
    Row(
        "single failback step: straight to healthy",
        providers={"a": st(P, ago(5), 1)},
        probes={"a": ProbeResult(successes_in_a_row=3)},
        cfg={"failback_steps": (1.0,)},
        status={"a": (H, 1.0, 1)},
        events=(("a", RECOVERED, P, H, False),),
    ),
    Row(
        "recovering: first step holds",
        providers={"a": st(R, ago(9.9), 1, 0.1)},
        signals={"a": sig(10, 0)},
        changed=False,
    ),
    Row(
        "recovering: second step, no transition",
        providers={"a": st(R, ago(10), 1, 0.1)},
        signals={"a": sig(10, 0)},
        status={"a": (R, 0.5, 1)},
    ),
    Row(
        "recovering: last step is healthy",
        providers={"a": st(R, ago(20), 1, 0.5)},
        signals={"a": sig(10, 0)},
        status={"a": (H, 1.0, 1)},
        events=(("a", RECOVERED, R, H, False),),
    ),
    Row(
        "recovering: a fault since entering trips again",
        providers={"a": st(R, ago(15), 1, 0.5)},
        signals={"a": sig(10, 1, run=1, run_age=2.0, last_fault_age=2.0)},
        status={"a": (T, 0.0, 2)},
        events=(("a", TRIP, R, T, False),),
    ),
    Row(
        "recovering: a fault from before recovery does not count",
        providers={"a": st(R, ago(5), 1, 0.1)},
        signals={"a": sig(10, 1, run=1, run_age=8.0, last_fault_age=8.0)},
        changed=False,
    ),
    Row(
        "recovering last usable provider faults: panic, it stays",
        providers={"a": st(R, ago(5), 1, 0.1), "b": st(T, ago(5), 1)},
        signals={"a": sig(3, 1, run=1, run_age=1.0, last_fault_age=1.0)},
        status={"a": (R, 0.1, 1)},
        events=(("a", PANIC, R, R, True),),
        changed=False,
    ),
    Row(
        "just recovered: the outage's faults in the window do not re-trip",
        providers={"a": st(H, ago(3), 1)},
        signals={
            "a": sig(
                40,
                20,
                run=6,
                run_age=25.0,
                last_fault_age=24.0,
                recent=(
                    BucketCounts(age=0.5, requests=10, faults=0),
                    BucketCounts(age=1.5, requests=10, faults=0),
                    BucketCounts(age=25.0, requests=20, faults=20),
                ),
            )
        },
        changed=False,
    ),
    Row(
        "stable long enough: trip_count resets, silently",
        providers={"a": st(H, ago(300), 2)},
        status={"a": (H, 1.0, 0)},
    ),
    Row(
        "observe: a would-trip notice, no change",
        signals={"a": sig(20, 20)},
        cfg={"mode": "observe"},
        notices=(("a", TRIP, False),),
        changed=False,
    ),
    Row(
        "observe: once per episode",
        signals={"a": sig(20, 20)},
        cfg={"mode": "observe"},
        episodes=Episodes(would_trip=MappingProxyType({"a": ago(1)})),
        changed=False,
    ),
    Row(
        "observe: auth would trip as critical",
        signals={"a": sig(20, 20, errors=(("auth", 20),))},
        cfg={"mode": "observe"},
        notices=(("a", TRIP, True),),
        changed=False,
    ),
    Row(
        "observe: would-panic is a notice too",
        signals={"a": sig(20, 20), "b": sig(20, 20)},
        cfg={"mode": "observe"},
        notices=(("a", TRIP, False), ("b", PANIC, True)),
        changed=False,
    ),
    Row(
        "observe: recovery of an already tripped provider continues",
        providers={"a": st(T, ago(15), 1)},
        cfg={"mode": "observe"},
        status={"a": (P, 0.0, 1)},
        events=(("a", PROBE, T, P, False),),
    ),
    Row(
        "observe: a fault while recovering is a notice, failback goes on",
        providers={"a": st(R, ago(10), 1, 0.1)},
        signals={"a": sig(10, 1, run=1, run_age=1.0, last_fault_age=1.0)},
        cfg={"mode": "observe"},
        status={"a": (R, 0.5, 1)},
        notices=(("a", TRIP, False),),
    ),
]


def run_row(row: Row) -> Decision:
    cfg = TripwireConfig(**row.cfg)
    state = RoutingState(
        version=7, providers=MappingProxyType(dict(row.providers)), kill_switch=row.kill
    )
    snapshot = SignalSnapshot(
        taken_at=500.0,
        window_seconds=30.0,
        bucket_seconds=1.0,
        providers=MappingProxyType(dict(row.signals)),
    )
    return decide(state, snapshot, NOW, cfg, row.tiers, row.probes, episodes=row.episodes)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decide_table(row: Row) -> None:
    decision = run_row(row)
    got_status = {
        name: (s.state, s.traffic_share, s.trip_count)
        for name, s in decision.providers.items()
        if name in row.status
    }
    missing = {n: (H, 1.0, 0) for n in row.status if n not in decision.providers}
    assert {**got_status, **missing} == dict(row.status)
    got_events = tuple(
        (t.provider, t.kind, t.from_state, t.to_state, t.critical) for t in decision.transitions
    )
    assert got_events == row.events
    assert all(t.enforced for t in decision.transitions)
    got_notices = tuple((n.provider, n.kind, n.critical) for n in decision.notices)
    assert got_notices == row.notices
    assert not any(n.enforced for n in decision.notices)
    assert decision.changed is row.changed


def test_decide_is_pure() -> None:
    row = ROWS[1]
    assert run_row(row) == run_row(row)


def test_unchanged_decision_returns_the_same_table() -> None:
    state = RoutingState(providers=MappingProxyType({"a": st(T, ago(1), 1)}))
    snap = SignalSnapshot(taken_at=0.0, window_seconds=30.0, bucket_seconds=1.0)
    decision = decide(state, snap, NOW, TripwireConfig(), TIERS)
    assert decision.providers is state.providers
    assert decision.events == ()


def test_trip_transition_carries_the_numbers() -> None:
    row = Row("numbers", signals={"a": sig(20, 15, errors=(("timeout", 9), ("overloaded", 6)))})
    (trip,) = run_row(row).transitions
    assert trip.error_rate == pytest.approx(0.75)
    assert trip.requests == 20
    assert trip.window_seconds == 30.0
    assert trip.top_errors == (("timeout", 9), ("overloaded", 6))
    assert trip.trace_ids == ("0" * 31 + "1",)
    assert trip.at == NOW
    assert trip.trip_count == 1
    assert trip.traffic_share == 0.0
    assert "75%" in trip.reason
    assert "20 requests" in trip.reason


def test_status_since_and_reason_follow_the_transition() -> None:
    decision = run_row(Row("x", signals={"a": sig(5, 5, run=5, run_age=1.0)}))
    status = decision.providers["a"]
    assert status.since == NOW
    assert status.reason == "5 consecutive failures"


def test_down_for_measures_from_the_first_trip() -> None:
    episodes = Episodes(down_since=MappingProxyType({"a": ago(40)}))
    row = Row(
        "failback",
        providers={"a": st(P, ago(5), 1)},
        probes={"a": ProbeResult(successes_in_a_row=3)},
        episodes=episodes,
    )
    decision = run_row(row)
    assert decision.transitions[0].down_for == pytest.approx(40.0)
    assert decision.episodes.down_since["a"] == ago(40)


def test_a_resumed_tripped_provider_is_down_since_its_trip() -> None:
    decision = run_row(Row("resumed", providers={"a": st(T, ago(3), 1)}))
    assert decision.episodes.down_since == {"a": ago(3)}


def test_recovered_clears_down_since() -> None:
    row = Row(
        "recovered",
        providers={"a": st(R, ago(20), 1, 0.5)},
        episodes=Episodes(down_since=MappingProxyType({"a": ago(70)})),
    )
    decision = run_row(row)
    assert decision.transitions[0].down_for == pytest.approx(70.0)
    assert "a" not in decision.episodes.down_since


def test_episodes_expire_after_the_condition_clears() -> None:
    episodes = Episodes(
        would_trip=MappingProxyType({"a": ago(16), "b": ago(3)}),
        panic=MappingProxyType({"frontier": ago(100)}),
    )
    decision = run_row(Row("expiry", cfg={"mode": "observe"}, episodes=episodes))
    assert dict(decision.episodes.would_trip) == {"b": ago(3)}
    assert dict(decision.episodes.panic) == {}


# --- the config model ----------------------------------------------------------------------------


def test_config_defaults_are_documented_values() -> None:
    cfg = TripwireConfig()
    assert cfg.mode == "enforce"
    assert (cfg.window_seconds, cfg.bucket_seconds, cfg.min_requests) == (30.0, 1.0, 10)
    assert (cfg.error_rate_threshold, cfg.consecutive_failures) == (0.5, 5)
    assert cfg.failback_steps == (0.1, 0.5, 1.0)
    assert [cfg.cooloff_for(n) for n in (1, 2, 3, 10, 5000)] == [15, 30, 60, 600, 600]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"error_rate_threshold": 0.0}, "must be in \\(0, 1\\]"),
        ({"error_rate_threshold": 1.5}, "must be in \\(0, 1\\]"),
        ({"failback_steps": ()}, "at least one step"),
        ({"failback_steps": (0.5, 0.1, 1.0)}, "strictly increase"),
        ({"failback_steps": (0.1, 0.5)}, "last step must be 1.0"),
        ({"failback_steps": (0.0, 1.0)}, "must be in \\(0, 1\\]"),
        ({"bucket_seconds": 60.0}, "must not exceed window_seconds"),
        ({"window_seconds": 3600.0, "bucket_seconds": 0.5}, "at most 3600 buckets"),
        ({"max_cooloff_seconds": 5.0}, "at least cooloff_seconds"),
        ({"mode": "dry-run"}, "enforce"),
        ({"min_requests": 0}, "greater than or equal to 1"),
        ({"tick": 1.0}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TripwireConfig(**values)


def test_config_is_frozen() -> None:
    cfg = TripwireConfig()
    with pytest.raises(ValidationError):
        cfg.min_requests = 3


def test_one_outage_that_downs_several_tiers_is_one_panic_naming_them() -> None:
    """a is the last usable provider of two tiers, b of a third: one pass, one critical
    transition (one alert) naming the three tiers, not one per tier."""
    state = RoutingState(providers=MappingProxyType({"c": st(T, ago(1), 1)}))
    snapshot = SignalSnapshot(
        taken_at=500.0,
        window_seconds=30.0,
        bucket_seconds=1.0,
        providers=MappingProxyType({"a": sig(20, 20), "b": sig(20, 20)}),
    )
    tiers = {"fast": ("a", "c"), "frontier": ("a",), "cheap": ("b", "c")}
    decision = decide(state, snapshot, NOW, TripwireConfig(), tiers)
    (panic,) = decision.transitions
    assert panic.kind is TransitionKind.PANIC
    assert panic.critical
    assert panic.tiers == ("fast", "frontier", "cheap")
    assert "tiers 'fast', 'frontier', 'cheap' down: not ejecting a, b" in panic.reason
    again = decide(state, snapshot, NOW + 1, TripwireConfig(), tiers, episodes=decision.episodes)
    assert again.transitions == ()  # the same episode: not announced twice
