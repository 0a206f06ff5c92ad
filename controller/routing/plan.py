"""The routing view: which targets a request may try, in which order.

Precedence, highest first: the kill switch (pin / disable), the controller's state (tripped and
probing providers are skipped; recovering ones get their traffic share), then the tier's
configured order and strategy. If the controller has left a tier with nothing usable, every
target is tried in configured order anyway (panic): failing everything is never better.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controller._frozen import quick_init
from controller.control.state import RoutingState
from controller.events import AttemptEvent, Outcome, RouteEvent


class Strategy(enum.StrEnum):
    PRIORITY = "priority"  # configured order
    WEIGHTED = "weighted"  # random order, proportional to weight
    LEAST_LATENCY = "least_latency"  # fastest recent p50 first (unknown first, to learn it)
    COST = "cost"  # cheapest per token first


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One provider + model a tier may use."""

    provider: str
    model: str
    weight: float = 1.0
    cost_per_mtok: float = 0.0  # input + output price per million tokens, for Strategy.COST
    # Whether the model takes reasoning parameters; None: known by its name (wire._reasoning).
    reasoning: bool | None = None
    # What the model cannot honour whatever the format: "image", "document", "tools",
    # "response_format" (a text-only or small local model). A request using one skips it.
    lacks: frozenset[str] = frozenset()


class Priority(enum.StrEnum):
    """What a request gets while its tier is degraded (``x-failover-priority``)."""

    CRITICAL = "critical"  # whatever capacity is left, in order
    DEFER = "defer"  # accepted (202), kept durably, replayed once the tier is healthy again
    DROP = "drop"  # refused at once (503 with Retry-After)


@dataclass(frozen=True, slots=True, kw_only=True)
class Degrade:
    """What a tier does when every target of it failed, rung by rung (each opt-in): the
    ``step_down`` tier's targets, then the last good answer to the same request (``cache``),
    then the ``static`` text. And how its requests are triaged while it is degraded (in panic,
    or with a healthy share of its targets below ``healthy_below``): ``priority`` is a
    request's when it names none."""

    step_down: str | None = None
    cache: bool = False
    static: str | None = None
    priority: Priority = Priority.CRITICAL
    healthy_below: float = 0.0


NO_DEGRADE = Degrade()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hedge:
    """When an attempt that has produced nothing yet gets the next target started beside it
    (opt-in per tier): after ``after`` seconds, or after the ``quantile`` of the target's own
    recent times to answer (once it has ``min_samples``). At most ``per_second`` hedges a
    second per tier (a burst of as many), one per request."""

    after: float | None = None
    quantile: float | None = None
    per_second: float = 1.0
    min_samples: int = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class TierPlan:
    name: str
    targets: tuple[Target, ...]
    strategy: Strategy = Strategy.PRIORITY
    context_fallback: Target | None = None  # tried once after ContextTooLong
    hedge: Hedge | None = None
    degrade: Degrade = NO_DEGRADE
    # The share of requests served by the plan's second target first, to keep it measured
    # (routing._standby.WarmSteer); 0: off.
    warm_share: float = 0.0


@quick_init
@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[Target, ...]
    panic: bool = False
    reason: str = ""  # why the plan is empty, when it is


LatencyOf = Callable[[str], float | None]


class LatencyTracker:
    """EWMA of successful attempt durations per provider (for the least-latency strategy)."""

    def __init__(self, alpha: float = 0.2) -> None:
        self._alpha = alpha
        self._ewma: dict[str, float] = {}

    def on_attempt(self, event: AttemptEvent) -> None:
        if event.outcome is Outcome.SUCCESS:
            old = self._ewma.get(event.provider)
            value = event.duration if old is None else old + self._alpha * (event.duration - old)
            self._ewma[event.provider] = value

    def on_route(self, event: RouteEvent) -> None:
        return None

    def latency(self, provider: str) -> float | None:
        return self._ewma.get(provider)


def make_plan(
    tier: TierPlan,
    state: RoutingState,
    *,
    default_models: Mapping[str, str],
    rng: random.Random,
    latency_of: LatencyOf,
) -> Plan:
    """The ordered targets for one request on ``tier``."""
    switch = state.kill_switch
    if switch.pin is not None:
        pinned = [t for t in tier.targets if t.provider == switch.pin]
        if not pinned and switch.pin in default_models:
            pinned = [Target(provider=switch.pin, model=default_models[switch.pin])]
        if not pinned:
            why = f"kill switch pins {switch.pin}, which has no model for tier {tier.name}"
            return Plan((), reason=why)
        return Plan(tuple(pinned[:1]))
    allowed = [t for t in tier.targets if t.provider not in switch.disable]
    if not allowed:
        return Plan((), reason=f"kill switch disables every provider of tier {tier.name}")
    ordered = _order(allowed, tier.strategy, rng, latency_of)
    return _apply_health(ordered, state, rng)


def in_rotation(state: RoutingState, provider: str, model: str) -> bool:
    """Whether ``model`` of ``provider`` may take traffic now: the kill switch allows the
    provider and the controller gives it a share."""
    return state.kill_switch.allows(provider) and state.share(provider, model) > 0


def calm(state: RoutingState) -> bool:
    """No provider (or model) recovering: no traffic share a plan must draw against."""
    return all(s.traffic_share in (0.0, 1.0) for s in state.providers.values())


def _apply_health(ordered: Sequence[Target], state: RoutingState, rng: random.Random) -> Plan:
    first: list[Target] = []
    later: list[Target] = []
    for target in ordered:
        share = state.share(target.provider, target.model)
        if share >= 1.0 or (share > 0.0 and rng.random() < share):
            first.append(target)
        elif share > 0.0:
            later.append(target)  # recovering, not its turn: a fallback, not a first choice
    if not first and not later:
        return Plan(tuple(ordered), panic=True)
    return Plan((*first, *later))


def _order(
    targets: list[Target], strategy: Strategy, rng: random.Random, latency_of: LatencyOf
) -> list[Target]:
    if strategy is Strategy.WEIGHTED:
        # Efraimidis-Spirakis: one weighted random permutation in O(n log n).
        def key(t: Target) -> float:
            return float(rng.random() ** (1.0 / max(t.weight, 1e-9)))

        return sorted(targets, key=key, reverse=True)
    if strategy is Strategy.LEAST_LATENCY:
        return sorted(targets, key=lambda t: latency_of(t.provider) or 0.0)
    if strategy is Strategy.COST:
        return sorted(targets, key=lambda t: t.cost_per_mtok)
    return targets
