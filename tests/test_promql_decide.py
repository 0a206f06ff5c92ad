"""PromQL rules in decide(): the same state machine as the built-in tripwire, table-style.

A firing rule trips its target (cause ``promql``) like a fault; while it fires a probing target
is tripped again with a longer cool-off; a rule whose Prometheus gave no usable answer
(``unknown``) trips nothing and brings nothing back.
"""

from __future__ import annotations

import pytest

from controller._alerting import alert_for_transition
from controller.control.config import TripwireConfig
from controller.control.decide import Decision, ProbeResult, TransitionKind, TripCause, decide
from controller.control.promql import PromqlSignal, RuleState
from controller.control.state import HealthState, ProviderStatus, RoutingState
from controller.notify.alert import AlertEvent
from controller.notify.messages import headline, why
from controller.signals import SignalSnapshot

NOW = 1_800_000_000.0
CFG = TripwireConfig(cooloff_seconds=10, failback_steps=(0.5, 1.0))
TIERS = {"frontier": ("a", "b"), "multi": ("c/x", "c/y", "b")}
EMPTY = SignalSnapshot(taken_at=0.0, window_seconds=30.0, bucket_seconds=1.0)
OK = ProbeResult(successes_in_a_row=3)


def rule(state: RuleState, *, target: str = "a", held: bool = False) -> PromqlSignal:
    return PromqlSignal(
        rule="latency_slo",
        target=target,
        state=state,
        held=held or state is RuleState.FIRING,
        value=20.0 if state is RuleState.FIRING else None,
        series=1 if state is RuleState.FIRING else 0,
        detail="1 series, value 20" if state is RuleState.FIRING else "",
    )


def run(
    providers: dict[str, ProviderStatus],
    *signals: PromqlSignal,
    cfg: TripwireConfig = CFG,
    probes: dict[str, ProbeResult] | None = None,
) -> Decision:
    state = RoutingState(providers=providers)
    return decide(state, EMPTY, NOW, cfg, TIERS, probes, promql=signals)


def status(state: HealthState, *, since: float = NOW - 1, trips: int = 0) -> ProviderStatus:
    share = 1.0 if state is HealthState.HEALTHY else 0.0
    return ProviderStatus(state=state, since=since, trip_count=trips, traffic_share=share)


def test_a_firing_rule_trips_a_healthy_target_with_its_cause_and_reason() -> None:
    decision = run({}, rule(RuleState.FIRING))
    [trip] = decision.transitions
    assert (trip.provider, trip.kind, trip.cause) == ("a", TransitionKind.TRIP, TripCause.PROMQL)
    assert trip.reason == "PromQL rule latency_slo fires (1 series, value 20)"
    assert decision.providers["a"].state is HealthState.TRIPPED
    alert = alert_for_transition(
        trip, state=RoutingState(), routes={"frontier": ("b",)}, threshold=0.5, observe=False
    )
    assert alert is not None
    assert alert.event is AlertEvent.PROVIDER_TRIPPED
    assert headline(alert) == "🔴 a tripped"
    assert alert.detail == trip.reason
    assert why(alert) is not None
    assert "threshold" not in (why(alert) or "")


@pytest.mark.parametrize("state", [RuleState.CLEAR, RuleState.UNKNOWN])
def test_a_rule_that_is_clear_or_unknown_trips_nothing(state: RuleState) -> None:
    decision = run({}, rule(state), rule(state, held=True))
    assert decision.transitions == ()
    assert not decision.changed


def test_while_the_rule_fires_a_probing_target_is_tripped_again_with_a_longer_cooloff() -> None:
    decision = run(
        {"a": status(HealthState.PROBING, trips=1)}, rule(RuleState.FIRING), probes={"a": OK}
    )
    [retrip] = decision.transitions
    assert retrip.kind is TransitionKind.RETRIP
    assert decision.providers["a"].state is HealthState.TRIPPED
    assert decision.providers["a"].trip_count == 2
    assert retrip.reason == (
        "PromQL rule latency_slo still fires (1 series, value 20); cool-off 20s (trip #2)"
    )


def test_an_unknown_rule_that_last_fired_keeps_a_probing_target_waiting() -> None:
    """Prometheus down: its probes succeeded, but nothing untrips it on a rule nobody can read."""
    held = rule(RuleState.UNKNOWN, held=True)
    decision = run({"a": status(HealthState.PROBING, trips=1)}, held, probes={"a": OK})
    assert decision.transitions == ()
    assert not decision.changed
    forgotten = rule(RuleState.UNKNOWN)  # an unknown rule that never fired holds nothing
    moved = run({"a": status(HealthState.PROBING, trips=1)}, forgotten, probes={"a": OK})
    assert [t.kind for t in moved.transitions] == [TransitionKind.FAILBACK]


def test_a_clear_rule_lets_the_target_come_back_the_built_in_way() -> None:
    tripped = {"a": status(HealthState.TRIPPED, since=NOW - 11, trips=1)}
    assert [t.kind for t in run(tripped, rule(RuleState.CLEAR)).transitions] == [
        TransitionKind.PROBE
    ]
    probing = {"a": status(HealthState.PROBING, trips=1)}
    decision = run(probing, rule(RuleState.CLEAR), probes={"a": OK})
    assert [t.kind for t in decision.transitions] == [TransitionKind.FAILBACK]


def test_a_rule_firing_during_failback_trips_again() -> None:
    recovering = ProviderStatus(
        state=HealthState.RECOVERING, since=NOW - 1, trip_count=1, traffic_share=0.5
    )
    decision = run({"a": recovering}, rule(RuleState.FIRING))
    [trip] = decision.transitions
    assert (trip.kind, trip.cause, trip.from_state) == (
        TransitionKind.TRIP,
        TripCause.PROMQL,
        HealthState.RECOVERING,
    )


def test_observe_mode_only_says_it_would_trip() -> None:
    decision = run({}, rule(RuleState.FIRING), cfg=CFG.model_copy(update={"mode": "observe"}))
    assert decision.transitions == ()
    assert not decision.changed
    [notice] = decision.notices
    assert notice.reason.startswith("would trip (observe mode): PromQL rule latency_slo fires")


def test_the_last_usable_target_is_never_ejected_by_a_rule() -> None:
    tripped_b = {"b": status(HealthState.TRIPPED, trips=1)}
    decision = run(tripped_b, rule(RuleState.FIRING))
    assert [t.kind for t in decision.transitions] == [TransitionKind.PANIC]
    assert "a" not in decision.providers or decision.providers["a"].usable


def test_a_rule_on_a_provider_serving_several_models_trips_it_whole() -> None:
    decision = run({}, rule(RuleState.FIRING, target="c"))
    assert [t.provider for t in decision.transitions] == ["c"]
    one_model = run({}, rule(RuleState.FIRING, target="c/x"))
    assert [t.provider for t in one_model.transitions] == ["c/x"]


def test_a_rule_on_the_one_model_of_a_provider_trips_the_provider() -> None:
    """A provider serving one model is judged whole: a rule naming its model trips it."""
    state = RoutingState()
    tiers = {"t": ("a/m", "b/m")}
    decision = decide(state, EMPTY, NOW, CFG, tiers, promql=(rule(RuleState.FIRING, target="a/m"),))
    assert [(t.provider, t.kind) for t in decision.transitions] == [("a", TransitionKind.TRIP)]
