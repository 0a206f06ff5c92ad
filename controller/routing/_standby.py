"""Knowing the backups before they are needed: warm traffic and rate-limit headroom.

Two :data:`~controller.routing.router.Steer` s that move a request's first choice to the next
target of its plan, and the count that shows how the targets standing by are doing.

* :class:`WarmSteer`: a tier's ``warm_share`` of real requests is served by the next target in
  line (attempt reason ``warm``), so every backup's error rate, latency and token costs are
  measured on real work all the time. The client never pays for it: a warm attempt is not
  retried on the backup, and when it fails the request goes back to the primary in the same
  route (reason ``failover``); one still waiting after the backup's own p99 gets the primary
  started beside it (:mod:`._hedging`), the first answer wins. The failure counts in the
  backup's own window like any other fault (it is real news about the backup): enough of them
  in a row trip it while it stands by.
* :class:`HeadroomSteer`: a target whose rate-limit headers say it is nearly out of requests or
  tokens (:class:`~controller.signals.headroom.Headroom`) goes behind the others of the plan
  (reason ``headroom``) until its window resets.
* :class:`StandbyMetrics`: ``failover.standby`` counts the warm and probe attempts by provider,
  reason and outcome: the standby health a dashboard row shows per backup.

Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller.events import AttemptEvent, AttemptReason, RouteEvent
from controller.routing.plan import Plan, TierPlan
from controller.signals.headroom import Headroom
from controller.telemetry import names

__all__ = ["HeadroomSteer", "StandbyMetrics", "WarmSteer", "describe"]

Steered = tuple[Plan, AttemptReason, str] | None


class WarmSteer:
    """Sends ``tier.warm_share`` of a tier's requests to its plan's second target first."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def __call__(self, tier: TierPlan, plan: Plan) -> Steered:
        share = tier.warm_share
        if share <= 0.0 or plan.panic or len(plan.targets) < 2:
            return None
        if self._rng.random() >= share:
            return None
        first, second, *rest = plan.targets
        return Plan((second, first, *rest)), AttemptReason.WARM, first.provider


class HeadroomSteer:
    """Moves a plan's first target behind the others while it is low on rate-limit headroom
    (with every other low one); leaves the plan when all of them are low (nowhere better)."""

    __slots__ = ("_headroom",)

    def __init__(self, headroom: Headroom) -> None:
        self._headroom = headroom

    def __call__(self, tier: TierPlan, plan: Plan) -> Steered:
        headroom = self._headroom
        if not headroom.low or plan.panic or len(plan.targets) < 2:
            return None  # the usual case: one truth test
        first = plan.targets[0]
        if not headroom.is_low(first.provider, first.model):
            return None
        low = [headroom.is_low(t.provider, t.model) for t in plan.targets]
        kept = [t for t, out in zip(plan.targets, low, strict=True) if not out]
        if not kept:
            return None
        moved = [t for t, out in zip(plan.targets, low, strict=True) if out]
        return Plan((*kept, *moved)), AttemptReason.HEADROOM, first.provider


_STANDBY_REASONS = frozenset({AttemptReason.WARM, AttemptReason.PROBE})


class StandbyMetrics:
    """A router listener: ``failover.standby`` (provider, reason, outcome) for warm and probe
    attempts: how each target standing by answers the traffic that only measures it."""

    __slots__ = ("_counts",)

    def __init__(self, meter: Meter) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        meter.create_observable_counter(
            names.METRIC_STANDBY,
            callbacks=[self._observe],
            unit="{attempt}",
            description="Warm and probe attempts, by provider, reason and outcome",
        )

    def on_attempt(self, event: AttemptEvent) -> None:
        if event.reason in _STANDBY_REASONS:
            key = (event.provider, event.reason.value, event.outcome.value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def on_route(self, event: RouteEvent) -> None:
        return None

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        keys = (names.ATTR_PROVIDER, names.ATTR_REASON, names.ATTR_OUTCOME)
        return [
            Observation(count, dict(zip(keys, values, strict=True)))
            for values, count in self._counts.copy().items()
        ]


def describe(
    headroom: Headroom, failing: Mapping[str, str], tiers: Mapping[str, TierPlan]
) -> dict[str, Any]:
    """The status document's ``standby`` section: each tier's warm share, each target's latest
    rate-limit reading (limit, remaining and seconds to the reset as of that answer, per kind)
    and whether new requests skip it now, and the providers whose idle probes are failing."""
    limits: dict[str, Any] = {}
    for (provider, model), kinds in sorted(headroom.snapshot().items()):
        limits[f"{provider}/{model}"] = {
            "low": headroom.is_low(provider, model),
            **{
                kind: {"limit": r.limit, "remaining": r.remaining, "reset_seconds": r.reset}
                for kind, r in sorted(kinds.items())
            },
        }
    return {
        "warm_share": {name: t.warm_share for name, t in sorted(tiers.items()) if t.warm_share},
        "ratelimits": limits,
        "idle_probes_failing": dict(sorted(failing.items())),
    }
