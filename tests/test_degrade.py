"""When a whole tier is down: the degradation ladder's config and the router's view of a
degraded tier (what triage acts on)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from controller._errors import ConfigError
from controller.config import parse_config
from controller.control.state import HealthState, ProviderStatus, RoutingState, StateHolder
from controller.providers import HttpProvider, codec_for
from controller.routing.plan import Degrade, Priority, Target, TierPlan
from controller.routing.router import Router

CONFIG = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  frontier:
    targets: [{provider: a, model: m}, {provider: b, model: m}]
    degrade:
      step_down: fast
      cache: true
      static: "Sorry, try again in a few minutes."
      priority: defer
      healthy_below: 0.6
  fast:
    targets: [{provider: b, model: small}]
    degrade: {step_down: %s}
"""


def test_the_ladder_is_read_from_the_tier() -> None:
    degrade = parse_config(CONFIG % "null").tiers["frontier"].degrade
    assert degrade.plan() == Degrade(
        step_down="fast",
        cache=True,
        static="Sorry, try again in a few minutes.",
        priority=Priority.DEFER,
        healthy_below=0.6,
    )
    assert parse_config(CONFIG % "null").tiers["fast"].degrade.plan() == Degrade()


@pytest.mark.parametrize(
    ("lower", "says"),
    [
        (
            "frontier",
            "config:8: tiers.frontier.degrade.step_down: steps down in a loop (frontier -> fast",
        ),
        ("nowhere", "config:15: tiers.fast.degrade.step_down: unknown tier 'nowhere'"),
    ],
)
def test_a_ladder_that_loops_or_names_no_tier_is_refused_at_its_line(lower: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(CONFIG % lower)
    assert str(refused.value).startswith(says)


def _router(below: float, states: dict[str, HealthState]) -> Router:
    providers = {
        name: HttpProvider(name=name, codec=codec_for("openai"), base_url="http://127.0.0.1:9/v1")
        for name in ("a", "b", "c")
    }
    targets = tuple(Target(provider=name, model="m") for name in providers)
    tier = TierPlan(name="t", targets=targets, degrade=Degrade(healthy_below=below))
    statuses = {
        name: ProviderStatus(
            state=state, traffic_share=0.0 if state is HealthState.TRIPPED else 1.0
        )
        for name, state in states.items()
    }
    holder = StateHolder(RoutingState(providers=MappingProxyType(statuses)))
    return Router(tiers={"t": tier}, providers=providers, state=holder)


TRIPPED = HealthState.TRIPPED


@pytest.mark.parametrize(
    ("below", "states", "degraded"),
    [
        (0.0, {}, False),
        (0.0, {"a": TRIPPED, "b": TRIPPED}, False),  # one target left: not degraded by default
        (0.0, {"a": TRIPPED, "b": TRIPPED, "c": TRIPPED}, True),  # panic
        (0.5, {"a": TRIPPED}, False),  # 2 of 3 in rotation
        (0.5, {"a": TRIPPED, "b": TRIPPED}, True),  # 1 of 3 < half
    ],
)
def test_a_tier_is_degraded_in_panic_or_below_its_healthy_share(
    below: float, states: dict[str, HealthState], degraded: bool
) -> None:
    assert _router(below, states).degraded("t") is degraded
    assert _router(below, states).degraded("no-such-tier") is False
