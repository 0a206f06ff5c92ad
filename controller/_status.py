"""What the gateway shows of the running parts: each tier's plan, readiness, the status document.

Everything here reads a snapshot handed in (the routing state, the controller's last signals,
the providers) and builds plain values; nothing changes a part. The status document is what
``GET /status.json`` answers, ``failover status`` prints and ``controller/gateway/_status_page.py``
renders: its shape is theirs to rely on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from controller._drill import Drillable
from controller.control.config import TripwireConfig
from controller.control.decide import Transition
from controller.control.state import KillSwitch, RoutingState
from controller.routing.plan import LatencyOf, Plan, TierPlan, make_plan
from controller.signals.inflight import WaitSignals
from controller.signals.window import SignalSnapshot

TierPlans = list[tuple[str, Plan]]


def tier_plans(
    tiers: Mapping[str, TierPlan],
    state: RoutingState,
    *,
    default_models: Mapping[str, str],
    latency_of: LatencyOf,
) -> TierPlans:
    """Each tier's plan as a request would see it now (fixed seed: a stable view)."""
    return [
        (
            name,
            make_plan(
                tier,
                state,
                default_models=default_models,
                rng=random.Random(0),
                latency_of=latency_of,
            ),
        )
        for name, tier in tiers.items()
    ]


def tier_routes(plans: TierPlans) -> dict[str, tuple[str, ...]]:
    """Where each tier's traffic goes, in order (no randomness: the configured order)."""
    return {name: tuple(t.provider for t in plan.targets) for name, plan in plans}


def readiness(plans: TierPlans) -> tuple[bool, str]:
    """(ready, reason): every tier has a usable provider, else the first tier that has none."""
    for name, plan in plans:
        if not plan.targets:
            return False, f"tier {name}: {plan.reason}"
        if plan.panic:
            return False, f"tier {name}: every provider is tripped"
    return True, "ready"


def event_entry(transition: Transition) -> dict[str, Any]:
    """A controller transition as the status document's ``events`` list shows it."""
    observed = "" if transition.enforced else " (observe mode: not enforced)"
    text = (
        f"{transition.provider}: {transition.from_state.value} -> "
        f"{transition.to_state.value} ({transition.reason}){observed}"
    )
    entry: dict[str, Any] = {"time": transition.at, "text": text, "kind": transition.kind}
    if transition.cause is not None:
        entry["cause"] = transition.cause.value
    return entry


def status_document(
    *,
    state: RoutingState,
    snapshot: SignalSnapshot | None,
    tripwire: TripwireConfig,
    providers: Mapping[str, Drillable],
    plans: TierPlans,
    events: Iterable[dict[str, Any]],
    alerts: Iterable[dict[str, Any]],
    rungs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The status document: tiers with their current route, providers with state, error rate
    and threshold, the kill switch, recent routing events and alerts (newest first)."""
    return {
        "version": state.version,
        "updated_at": state.updated_at,
        "changed_by": state.changed_by,
        "mode": tripwire.mode,
        "window_seconds": tripwire.window_seconds,
        "tiers": [_tier(name, plan, (rungs or {}).get(name, "")) for name, plan in plans],
        "providers": [
            _provider(name, provider, state, snapshot, tripwire)
            for name, provider in providers.items()
        ],
        "models": [
            {
                "name": name,
                "state": status.state.value,
                "since": status.since,
                "reason": status.reason,
                "traffic_share": status.traffic_share,
            }
            for name, status in sorted(state.providers.items())
            if "/" in name  # one model of a provider serving several, judged on its own
        ],
        "kill_switch": _kill_switch(state.kill_switch),
        "events": list(events),
        "alerts": list(alerts),
    }


def _tier(name: str, plan: Plan, rung: str) -> dict[str, Any]:
    return {
        "name": name,
        "serving": plan.targets[0].provider if plan.targets else None,
        "route": [t.provider for t in plan.targets],
        "panic": plan.panic,
        "reason": plan.reason,
        # The rung of its ladder its last request was served from: "tier", "cache", "static";
        # "" when its own providers served it.
        "degraded": rung,
    }


def _provider(
    name: str,
    provider: Drillable,
    state: RoutingState,
    snapshot: SignalSnapshot | None,
    tripwire: TripwireConfig,
) -> dict[str, Any]:
    status = state.status(name)
    signals = snapshot.providers.get(name) if snapshot is not None else None
    waits = snapshot.waiting(name) if snapshot is not None else None
    return {
        "name": name,
        "kind": provider.kind,
        "state": status.state.value,
        "since": status.since,
        "reason": status.reason,
        "trip_count": status.trip_count,
        "traffic_share": status.traffic_share,
        "error_rate": signals.error_rate if signals else 0.0,
        "requests": signals.requests if signals else 0,
        "threshold": tripwire.error_rate_threshold,
        "waiting": waits.waiting if waits else 0,
        "stall_limit": _stall_limits(waits, tripwire) if waits else {},
        "drill": provider.drilling,
    }


def _stall_limits(waits: WaitSignals, tripwire: TripwireConfig) -> dict[str, float]:
    """The learned wait after which the provider counts as stalled, per kind, once learned."""
    stall = tripwire.stall
    limits = {
        kind: stall.limit(of.typical, of.samples)
        for kind, of in (("stream", waits.streams), ("whole", waits.answers))
    }
    return {kind: round(limit, 3) for kind, limit in limits.items() if limit is not None}


def _kill_switch(switch: KillSwitch) -> dict[str, Any]:
    return {
        "active": switch.active,
        "pin": switch.pin,
        "disable": list(switch.disable),
        "describe": switch.describe(),
    }
