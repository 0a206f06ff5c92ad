"""What the controller's transitions and the operator's actions say on a phone.

Glue between :mod:`controller.control` (transitions) and :mod:`controller.notify` (alerts): it
decides which transitions alert and with what severity. Probing and failback steps do not alert
(the status page and dashboard show them); trips, recoveries, panics, auth failures, kill-switch
changes and rejected configs do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controller._clock import Clock
from controller._errors import ConfigError
from controller.control.decide import Transition, TransitionKind, TripCause
from controller.control.state import KillSwitch, RoutingState
from controller.events import PROBE_TIER, AttemptEvent, RouteEvent
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent, Severity

Routes = Mapping[str, tuple[str, ...]]
_OWN_REASON = (TripCause.PROMQL, TripCause.STANDBY)


def _event(transition: Transition) -> AlertEvent | None:
    if transition.kind is TransitionKind.PANIC:
        return AlertEvent.TIER_ALL_DOWN
    if transition.kind is TransitionKind.RECOVERED:
        return AlertEvent.PROVIDER_RECOVERED
    if transition.kind is not TransitionKind.TRIP:
        return None
    if not transition.enforced:
        return AlertEvent.WOULD_TRIP
    if transition.cause is TripCause.STANDBY:  # even for a rejected key: the primary serves
        return AlertEvent.STANDBY_UNHEALTHY
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
        # A PromQL rule or failing idle probes tripped it: the error-rate threshold did not.
        threshold=None if transition.cause in _OWN_REASON else threshold,
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


_RUNG_WORDS = {
    "tier": "its step-down tier",
    "cache": "the last good answer to the same request",
    "static": "its static answer",
}


class LadderWatch:
    """A router listener: one alert when a tier's requests start being served from its ladder
    (``tiers.<name>.degrade``: no provider of the tier could serve), and one when its own
    providers serve it again, once they have for :attr:`QUIET` seconds with no degraded answer
    in between (a tier whose requests alternate between the two, in a partial outage, is in one
    degraded period, not a pair of alerts per request). Changes of rung in between are not news.
    """

    QUIET = 30.0  # seconds without a degraded answer before the tier is announced restored

    def __init__(
        self, notify: Callable[[Alert], None], clock: Clock, routes: Callable[[], Routes]
    ) -> None:
        self._notify, self._clock, self._routes = notify, clock, routes
        self._rungs: dict[str, str] = {}  # per tier: the rung of its degraded period, or ""
        self._last: dict[str, float] = {}  # per tier: when it last answered from its ladder

    def on_attempt(self, event: AttemptEvent) -> None:
        return None

    def on_route(self, event: RouteEvent) -> None:
        if event.served_by is None or event.tier == PROBE_TIER:
            return
        before = self._rungs.get(event.tier, "")
        if event.degraded:
            self._last[event.tier] = self._clock.monotonic()
        elif before and self._clock.monotonic() - self._last[event.tier] < self.QUIET:
            return  # still within the degraded period
        self._rungs[event.tier] = event.degraded
        if bool(before) == bool(event.degraded):
            return
        if event.degraded:
            kind = AlertEvent.TIER_DEGRADED
            detail = (
                f"no provider of the tier could serve; answered by {_RUNG_WORDS[event.degraded]}"
                f" ({event.served_by}), marked x-failover-degraded: {event.degraded}"
            )
        else:
            kind, detail = AlertEvent.TIER_RESTORED, f"served by {event.served_by}"
        self._notify(
            Alert(
                event=kind,
                severity=DEFAULT_SEVERITY[kind],
                at=self._clock.wall(),
                tier=event.tier,
                detail=detail,
                routes=self._routes(),
            )
        )
