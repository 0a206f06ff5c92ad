"""What a :class:`~controller.runtime.Runtime` does when something changes: a config file saved
(:func:`apply_config`), a kill switch set (:func:`apply_kill_switch`, from the file, an
operator or the fleet), a routing flip (:func:`on_transition`), a fleet role lost or regained, a
deferred job dead, PromQL unanswered. Each lists, audits, traces and alerts as the change asks;
they are the runtime's methods, kept apart from it (``Runtime`` hands them itself).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry.trace import Tracer

from controller._alerting import alert_for_transition, kill_switch_alert, rejected_alert
from controller._errors import ConfigError
from controller._runtime_build import (
    answer_cache,
    build_tiers,
    membership,
    model_names,
    probe_models,
)
from controller._spend_shadow import shadow_plans
from controller._status import event_entry
from controller.config import Config
from controller.config._model import ENV_DISABLE, ENV_PIN
from controller.control.audit import kill_switch_record, transition_record
from controller.control.decide import Transition
from controller.control.state import KillSwitch
from controller.fleet import Role
from controller.jobs import Job
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent

if TYPE_CHECKING:
    from controller.runtime import Runtime

log = logging.getLogger("controller.runtime")  # the name these warnings had before the split

# Config sections whose change needs a restart (hot reload: kill_switch, tiers, aliases,
# translation).
_RESTART_SECTIONS = (
    "providers",
    "controller",
    "notify",
    "telemetry",
    "state",
    "gateway",
    "spend",
    "routing",
    "jobs",
    "promql",
)


def apply_config(rt: Runtime, config: Config) -> None:
    """Take a new valid config: routing tables and kill switch now, the rest on restart.

    Sections that need a restart keep their running values, so status and alerts never
    show settings that are not in force.
    """
    changed = [s for s in _RESTART_SECTIONS if getattr(config, s) != getattr(rt.config, s)]
    for section in changed:
        log.warning("config section %r changed: restart to apply it", section)
    if "providers" in changed:
        log.warning("providers changed: tiers and aliases are kept until the restart too")
        config = rt.config.model_copy(update={"kill_switch": config.kill_switch})
    else:
        config = config.model_copy(update={s: getattr(rt.config, s) for s in _RESTART_SECTIONS})
    try:
        switch = config.effective_kill_switch(rt.env)
    except ConfigError as err:
        reject_config(rt, err)
        return
    rt.config = config
    rt._names = model_names(config)
    rt.router.tiers = build_tiers(config)
    if rt.router.cache is None:  # a tier's ladder may have gained its cache rung
        rt.router.cache = answer_cache(config, rt.clock, rt.env)
    rt.router.droppable = frozenset(config.translation.droppable)
    rt.shadow.plans = shadow_plans(config)
    rt.controller.set_tiers(membership(config))
    rt._models = probe_models(config)
    if rt.fleet is not None or switch != rt.holder.current.kill_switch:
        apply_kill_switch(rt, switch, changed_by="config")


def reject_config(rt: Runtime, err: ConfigError) -> None:
    rt.notify(rejected_alert(err, at=rt.clock.wall(), routes=rt.routes()))


def apply_kill_switch(rt: Runtime, switch: KillSwitch, *, changed_by: str) -> None:
    before = rt.holder.current.kill_switch
    if rt.fleet is not None:  # this replica's own switch: environment > fleet > file
        from_env = bool(rt.env.get(ENV_PIN, "").strip()) or ENV_DISABLE in rt.env
        rt.fleet.set_local_switch(switch, from_env=from_env)
        after = rt.holder.current.kill_switch
        if after != before:
            log.warning("kill switch %s (by %s)", after.describe(), changed_by)
            audit_switch(rt, before, after, by=changed_by)
            alert = kill_switch_alert(before, after, at=rt.clock.wall(), routes=rt.routes())
            rt.notify(alert)
        return
    state = rt.controller.set_kill_switch(switch, changed_by=changed_by)
    if rt.audit is not None:
        record = kill_switch_record(
            before, switch, by=changed_by, at=state.updated_at, version=state.version
        )
        rt.audit.append(record)
    rt.notify(kill_switch_alert(before, switch, at=rt.clock.wall(), routes=rt.routes()))


def audit_switch(rt: Runtime, before: KillSwitch, after: KillSwitch, *, by: str) -> None:
    """A kill switch a fleet replica applied, in its audit log."""
    if rt.audit is not None:
        state = rt.holder.current
        record = kill_switch_record(before, after, by=by, at=rt.clock.wall(), version=state.version)
        rt.audit.append(record)


def on_fleet_role(rt: Runtime, before: Role, after: Role) -> None:
    """A replica that loses Redis decides alone: a critical alert says so, and another
    when it follows the fleet's decision again."""
    fleet = rt.fleet
    assert fleet is not None
    if after is Role.LOCAL:
        event = AlertEvent.FLEET_UNAVAILABLE
        detail = (
            f"Redis did not answer for {fleet.cfg.lease_seconds:g}s: this replica routes on "
            "its last state and trips providers on its own traffic until Redis is back"
        )
    elif before is Role.LOCAL:
        event = AlertEvent.FLEET_RESTORED
        detail = f"following the fleet's version {fleet.holder.current.version} again"
    else:
        return
    _alert(rt, event, detail, provider=fleet.replica)


def on_fleet_switch(rt: Runtime, before: KillSwitch, after: KillSwitch) -> None:
    """The leader announces an operator's fleet-wide kill switch (once, fleet-wide)."""
    log.warning("fleet kill switch %s (was %s)", after.describe(), before.describe())
    audit_switch(rt, before, after, by=rt.holder.current.changed_by)
    rt.notify(kill_switch_alert(before, after, at=rt.clock.wall(), routes=rt.routes()))


def on_transition(rt: Runtime, transition: Transition) -> None:
    """List the flip (status page), trace it, and alert when it is worth a page."""
    rt.events.appendleft(event_entry(transition))
    if rt.audit is not None:
        rt.audit.append(transition_record(transition, version=rt.holder.current.version))
    trace_flip(rt.tracer, transition, version=rt.holder.current.version)
    alert = alert_for_transition(
        transition,
        state=rt.holder.current,
        routes=rt.routes(),
        threshold=rt.config.controller.error_rate_threshold,
        observe=not rt.config.controller.enforce,
    )
    if alert is not None:
        rt.notify(alert)


def trace_flip(tracer: Tracer, transition: Transition, *, version: int) -> None:
    """A ``failover.routing_flip`` span holding the flip as its ``routing.flip`` event."""
    with tracer.start_as_current_span("failover.routing_flip") as span:
        span.add_event(
            "routing.flip",
            {
                "failover.provider": transition.provider,
                "failover.transition": transition.kind.value,
                "failover.state.from": transition.from_state.value,
                "failover.state.to": transition.to_state.value,
                "failover.state.version": version,
            },
        )


def on_dead_job(rt: Runtime, job: Job, error: str) -> None:
    """A deferred job ran out of tries: one alert per tier within the cooldown."""
    detail = f"job {job.id} failed {job.attempts} tries; last: {error[:300]}"
    _alert(rt, AlertEvent.JOB_DEAD_LETTER, detail, tier=job.tier)


def on_promql_unavailable(rt: Runtime, unavailable: bool, why: str) -> None:
    """One warning when PromQL tripwires stop getting answers, one when they are back."""
    event = AlertEvent.PROMQL_UNAVAILABLE if unavailable else AlertEvent.PROMQL_RESTORED
    detail = f"{why}; the built-in tripwire works on" if unavailable else why
    _alert(rt, event, detail)


def _alert(
    rt: Runtime,
    event: AlertEvent,
    detail: str,
    *,
    provider: str | None = None,
    tier: str | None = None,
) -> None:
    """Notify an alert of ``event`` at its default severity, with the routes of now."""
    alert = Alert(
        event=event,
        severity=DEFAULT_SEVERITY[event],
        at=rt.clock.wall(),
        provider=provider,
        tier=tier,
        detail=detail,
        routes=rt.routes(),
    )
    rt.notify(alert)
