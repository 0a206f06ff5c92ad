"""The alert record: what happened, with the facts a person needs to act on it from a phone.

An :class:`Alert` is built by whoever noticed the event (the controller loop, the config
watcher, the kill-switch watcher, a drill) and handed to the dispatcher. It carries numbers, not
prose: rendering into Telegram/Slack/log text lives in :mod:`controller.notify.messages`, so every
channel states the same facts.

A storm summary is an ``Alert`` too (``members`` holds the originals), so a sender has one job —
``send(alert)`` — whether it is one event or ten that arrived within the grouping window.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class AlertEvent(enum.StrEnum):
    PROVIDER_TRIPPED = "provider_tripped"
    PROVIDER_RECOVERED = "provider_recovered"
    # An idle probe of a target standing by failed: it tripped before it was needed.
    STANDBY_UNHEALTHY = "standby_unhealthy"
    TIER_ALL_DOWN = "tier_all_down"
    TIER_DEGRADED = "tier_degraded"  # a tier serves from its ladder (step-down, cache, static)
    TIER_RESTORED = "tier_restored"  # its own providers serve it again
    AUTH_FAILURE = "auth_failure"
    KILL_SWITCH_ENGAGED = "kill_switch_engaged"
    KILL_SWITCH_RELEASED = "kill_switch_released"
    CONFIG_REJECTED = "config_rejected"
    WOULD_TRIP = "would_trip"
    LATENCY_DEGRADED = "latency_degraded"
    FLEET_UNAVAILABLE = "fleet_unavailable"  # a replica lost Redis: it decides alone
    FLEET_RESTORED = "fleet_restored"
    PROMQL_UNAVAILABLE = "promql_unavailable"  # PromQL tripwires get no usable answer
    PROMQL_RESTORED = "promql_restored"
    OPERATOR_COMMAND = "operator_command"  # an operator acted from a chat (/pin, /ack, ...)
    JOB_DEAD_LETTER = "job_dead_letter"  # a deferred job failed every try (controller/jobs)
    BUDGET_WARNING = "budget_warning"  # a daily spend budget reached 80 %
    BUDGET_EXCEEDED = "budget_exceeded"  # a daily spend budget reached 100 %
    TEST = "test"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

DEFAULT_SEVERITY: Mapping[AlertEvent, Severity] = MappingProxyType(
    {
        AlertEvent.PROVIDER_TRIPPED: Severity.WARNING,
        AlertEvent.PROVIDER_RECOVERED: Severity.INFO,
        AlertEvent.STANDBY_UNHEALTHY: Severity.WARNING,
        AlertEvent.TIER_ALL_DOWN: Severity.CRITICAL,
        AlertEvent.TIER_DEGRADED: Severity.CRITICAL,
        AlertEvent.TIER_RESTORED: Severity.INFO,
        AlertEvent.AUTH_FAILURE: Severity.CRITICAL,
        AlertEvent.KILL_SWITCH_ENGAGED: Severity.WARNING,
        AlertEvent.KILL_SWITCH_RELEASED: Severity.INFO,
        AlertEvent.CONFIG_REJECTED: Severity.WARNING,
        AlertEvent.WOULD_TRIP: Severity.INFO,
        AlertEvent.LATENCY_DEGRADED: Severity.WARNING,
        AlertEvent.FLEET_UNAVAILABLE: Severity.CRITICAL,
        AlertEvent.FLEET_RESTORED: Severity.INFO,
        AlertEvent.PROMQL_UNAVAILABLE: Severity.WARNING,
        AlertEvent.PROMQL_RESTORED: Severity.INFO,
        AlertEvent.OPERATOR_COMMAND: Severity.INFO,
        AlertEvent.JOB_DEAD_LETTER: Severity.WARNING,
        AlertEvent.BUDGET_WARNING: Severity.WARNING,
        AlertEvent.BUDGET_EXCEEDED: Severity.CRITICAL,
        AlertEvent.TEST: Severity.INFO,
    }
)

# Events that undo each other: sending one clears the other's cooldown, so "tripped" after
# "recovered" is never swallowed as a duplicate of the first trip.
OPPOSITE: Mapping[AlertEvent, AlertEvent] = MappingProxyType(
    {
        AlertEvent.PROVIDER_TRIPPED: AlertEvent.PROVIDER_RECOVERED,
        AlertEvent.PROVIDER_RECOVERED: AlertEvent.PROVIDER_TRIPPED,
        AlertEvent.TIER_DEGRADED: AlertEvent.TIER_RESTORED,
        AlertEvent.TIER_RESTORED: AlertEvent.TIER_DEGRADED,
        AlertEvent.KILL_SWITCH_ENGAGED: AlertEvent.KILL_SWITCH_RELEASED,
        AlertEvent.KILL_SWITCH_RELEASED: AlertEvent.KILL_SWITCH_ENGAGED,
        AlertEvent.FLEET_UNAVAILABLE: AlertEvent.FLEET_RESTORED,
        AlertEvent.FLEET_RESTORED: AlertEvent.FLEET_UNAVAILABLE,
        AlertEvent.PROMQL_UNAVAILABLE: AlertEvent.PROMQL_RESTORED,
        AlertEvent.PROMQL_RESTORED: AlertEvent.PROMQL_UNAVAILABLE,
    }
)

# More events an event undoes, beyond its opposite: a provider's recovery also ends the episode
# its idle probes alerted about, so the next failure while it stands by is news again.
ALSO_CLEARS: Mapping[AlertEvent, tuple[AlertEvent, ...]] = MappingProxyType(
    {AlertEvent.PROVIDER_RECOVERED: (AlertEvent.STANDBY_UNHEALTHY,)}
)

DedupKey = tuple[AlertEvent, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alertable event. Rates are fractions (0.83 = 83 %); ``at`` is epoch seconds (UTC).

    ``routes`` maps each tier to the providers its traffic goes to now, in order. ``kill_switch``
    describes the active kill switch (``None`` = off). ``members`` is non-empty only on a storm
    summary built by :func:`combine`.
    """

    event: AlertEvent
    severity: Severity
    at: float
    provider: str | None = None
    tier: str | None = None
    error_rate: float | None = None
    requests: int | None = None
    window_seconds: float | None = None
    threshold: float | None = None
    top_errors: tuple[tuple[str, int], ...] = ()
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    kill_switch: str | None = None
    down_for_seconds: float | None = None
    trace_ids: tuple[str, ...] = ()
    detail: str | None = None
    observe_mode: bool = False
    members: tuple[Alert, ...] = ()
    # The destination (a sender's name, e.g. "telegram:111") the news came from: every other
    # one gets the alert, that one already knows (an operator's command from that chat).
    origin: str | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the caller's dict may change after submit() returned.
        frozen = MappingProxyType({k: tuple(v) for k, v in self.routes.items()})
        object.__setattr__(self, "routes", frozen)

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """The original alerts this message stands for (itself, unless a storm summary)."""
        return self.members or (self,)

    @property
    def dedup_key(self) -> DedupKey:
        """Same key within the cooldown = same news.

        Provider and tier scope the event. Operator actions and config errors also key on
        their content: pinning a *different* provider, or a *different* config error, is news.
        """
        content: str | None = None
        if self.event in (AlertEvent.KILL_SWITCH_ENGAGED, AlertEvent.KILL_SWITCH_RELEASED):
            content = self.kill_switch
        elif self.event in (AlertEvent.CONFIG_REJECTED, AlertEvent.OPERATOR_COMMAND):
            content = self.detail
        return (self.event, self.provider, self.tier, content)


def combine(alerts: Iterable[Alert]) -> Alert:
    """One summary for alerts that arrived together; a single alert is returned as is.

    The summary takes the most severe member's event and severity (the first such member
    wins), the earliest time, the latest routing and kill-switch state, and up to three trace
    IDs across members.
    """
    items = tuple(a for alert in alerts for a in alert.alerts)
    if not items:
        raise ValueError("combine() needs at least one alert")
    if len(items) == 1:
        return items[0]
    lead = max(items, key=lambda a: a.severity.rank)  # max() keeps the first of equals
    routes: dict[str, tuple[str, ...]] = {}
    for item in items:
        routes.update(item.routes)
    traces = tuple(dict.fromkeys(t for item in items for t in item.trace_ids))[:3]
    return Alert(
        event=lead.event,
        severity=lead.severity,
        at=min(a.at for a in items),
        routes=routes,
        kill_switch=items[-1].kill_switch,
        trace_ids=traces,
        observe_mode=all(a.observe_mode for a in items),
        members=items,
        origin=items[0].origin if len({a.origin for a in items}) == 1 else None,
    )
