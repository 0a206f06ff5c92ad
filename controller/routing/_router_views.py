"""What the router tells of a tier without routing a request: the plan its requests would be
tried on now, whether its providers take a client's body as it came, whether it is degraded,
and a provider's per-attempt limits.

Each is a method of :class:`~controller.routing.router.Router` (its class body takes these
functions as they are: no call added between a caller and the work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.providers.base import Timeouts
from controller.routing.plan import Plan, Strategy, TierPlan, calm, in_rotation, make_plan

if TYPE_CHECKING:
    from controller.routing.router import Router


def plan(self: Router, tier: TierPlan) -> Plan:
    """The targets a request on ``tier`` would be tried on now, in order (kill switch,
    controller state and the tier's strategy applied). A priority tier's plan depends on
    nothing else while no provider is recovering (no traffic share to draw against), so it
    is kept per tier until the routing state (or the tier) changes."""
    state = self.state.current
    priority = tier.strategy is Strategy.PRIORITY
    if priority:
        kept = self._plans.get(tier.name)
        if kept is not None and kept[0] is state and kept[1] is tier:
            return kept[2]
    plan = make_plan(
        tier,
        state,
        default_models=self._default_models,
        rng=self._rng,
        latency_of=self.latency.latency,
    )
    if priority and calm(state):
        self._plans[tier.name] = (state, tier, plan)
    return plan


def takes_as_is(self: Router, wire_format: str, tier: str) -> bool:
    """Whether every provider that may serve a request on ``tier`` now takes a client's
    body of ``wire_format`` as it came (then the gateway need not decode it): every target
    and the context fallback of that format and lacking nothing, a kill switch pin among
    them, and no prompt recording (which needs the decoded turns)."""
    plan = self.tiers.get(tier)
    if plan is None or self._capture:
        return False
    pin = self.state.current.kill_switch.pin
    kept = self._as_is.get((wire_format, tier))
    if kept is not None and kept[0] is plan and kept[1] == pin:
        return kept[2]  # the answer depends on nothing else (targets, formats are fixed)
    fallback = (plan.context_fallback,) if plan.context_fallback else ()
    targets = (*plan.targets, *fallback)
    if pin is not None and all(t.provider != pin for t in targets):
        taken = False  # the pinned provider serves with its own model, of whatever format
    else:
        taken = all(self._capability.own(wire_format, t) for t in targets)
    self._as_is[(wire_format, tier)] = (plan, pin, taken)
    return taken


def degraded(self: Router, tier: str) -> bool:
    """Whether ``tier`` is degraded now (triage acts on it): every target out of rotation
    (panic), or a share of them in rotation below its ``degrade.healthy_below``."""
    plan_for = self.tiers.get(tier)
    if plan_for is None:
        return False
    if self.plan(plan_for).panic:
        return True
    below = plan_for.degrade.healthy_below
    if below <= 0:
        return False
    state, targets = self.state.current, plan_for.targets
    healthy = sum(1 for t in targets if in_rotation(state, t.provider, t.model))
    return healthy < below * len(targets)


def timeouts_for(self: Router, provider: str) -> Timeouts:
    """The per-attempt limits configured for ``provider``."""
    return self._limits.of(provider)
