"""What the controller's transitions and the operator's actions say on a phone.

Glue between :mod:`controller.control` (transitions) and :mod:`controller.notify` (alerts): it
decides which transitions alert and with what severity. Probing and failback steps do not alert
(the status page and dashboard show them); trips, recoveries, panics, auth failures, kill-switch
changes and rejected configs do.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller._errors import ConfigError
from controller.control.decide import Transition, TransitionKind
from controller.control.state import KillSwitch, RoutingState
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent, Severity

Routes = Mapping[str, tuple[str, ...]]


def _event(transition: Transition) -> AlertEvent | None:
    if transition.kind is TransitionKind.PANIC:
        return AlertEvent.TIER_ALL_DOWN
    if transition.kind is TransitionKind.RECOVERED:
        return AlertEvent.PROVIDER_RECOVERED
    if transition.kind is not TransitionKind.TRIP:
        return None
    if not transition.enforced:
        return AlertEvent.WOULD_TRIP
    top = transition.top_errors[0][0] if transition.top_errors else ""
    if top == "auth":
        return AlertEvent.AUTH_FAILURE
    return AlertEvent.PROVIDER_TRIPPED


def alert_for_transition(
    transition: Transition,
    *,
    state: RoutingState,
    routes: Routes,
    threshold: float,
    observe: bool,
) -> Alert | None:
    """The alert for one transition, or None for steps that only the dashboard shows."""
    event = _event(transition)
    if event is None:
        return None
    severity = DEFAULT_SEVERITY[event]
    if transition.critical and event is AlertEvent.PROVIDER_TRIPPED:
        severity = Severity.CRITICAL
    switch = state.kill_switch
    return Alert(
        event=event,
        severity=severity,
        at=transition.at,
        provider=transition.provider,
        tier=", ".join(transition.tiers) if transition.tiers else transition.tier,
        error_rate=transition.error_rate,
        requests=transition.requests,
        window_seconds=transition.window_seconds,
        threshold=threshold,
        top_errors=transition.top_errors,
        routes=routes,
        kill_switch=switch.describe() if switch.active else None,
        down_for_seconds=transition.down_for,
        trace_ids=transition.trace_ids,
        detail=transition.reason,
        observe_mode=observe or not transition.enforced,
    )


def kill_switch_alert(before: KillSwitch, after: KillSwitch, *, at: float, routes: Routes) -> Alert:
    engaged = after.active
    event = AlertEvent.KILL_SWITCH_ENGAGED if engaged else AlertEvent.KILL_SWITCH_RELEASED
    detail = f"kill switch {after.describe()} (was: {before.describe()})"
    return Alert(
        event=event,
        severity=DEFAULT_SEVERITY[event],
        at=at,
        provider=after.pin,
        routes=routes,
        kill_switch=after.describe() if engaged else None,
        detail=detail,
    )


def rejected_alert(err: ConfigError, *, at: float, routes: Routes) -> Alert:
    return Alert(
        event=AlertEvent.CONFIG_REJECTED,
        severity=DEFAULT_SEVERITY[AlertEvent.CONFIG_REJECTED],
        at=at,
        routes=routes,
        detail=f"{err} — the previous config stays in force",
    )
