"""The spend accounting and the shadow comparison, built from the config and attached to a
router (the runtime's wiring for :mod:`controller.routing._spend` and
:mod:`controller.routing._shadow`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from controller._clock import Clock
from controller.config import Config
from controller.notify.alert import Alert
from controller.routing._shadow import Shadow, ShadowPlan
from controller.routing._spend import Budget, Price, Prices, Spend
from controller.routing.plan import Target
from controller.routing.router import Router

__all__ = ["attach_spend_and_shadow", "prices", "shadow_plans", "spend_path"]


def prices(config: Config) -> Prices:
    """``spend.prices`` by (provider, model)."""
    return Prices(
        {
            (provider, model): Price(
                input=price.input, output=price.output, cached_input=price.cached_input
            )
            for provider, models in config.spend.prices.items()
            for model, price in models.items()
        }
    )


def budgets(config: Config) -> list[Budget]:
    found = config.spend.budgets
    return [
        *(
            Budget(scope="provider", name=n, daily_usd=b.daily_usd, enforce=b.enforce)
            for n, b in found.providers.items()
        ),
        *(
            Budget(scope="tier", name=n, daily_usd=b.daily_usd, enforce=b.enforce)
            for n, b in found.tiers.items()
        ),
    ]


def spend_path(config: Config, *, beside_state: bool) -> str | None:
    """Where the day's spend is kept: ``spend.path``, else beside the state file (None: in
    memory, as when the state has no file or the store was handed in)."""
    path = config.spend.path
    if path is None:
        state = config.state.path
        return str(Path(state).with_suffix(".spend.json")) if state and beside_state else None
    return path or None


def shadow_plans(config: Config) -> dict[str, ShadowPlan]:
    """Each tier's ``shadow``, for the tiers that have one."""
    plans: dict[str, ShadowPlan] = {}
    for name, tier in config.tiers.items():
        shadow = tier.shadow
        if shadow is None:
            continue
        target = Target(
            provider=shadow.target.provider,
            model=shadow.target.model,
            reasoning=shadow.target.reasoning,
            lacks=frozenset(shadow.target.lacks),
        )
        plans[name] = ShadowPlan(
            target=target,
            share=shadow.share,
            max_concurrency=shadow.max_concurrency,
            max_queue=shadow.max_queue,
            daily_requests=shadow.daily_requests,
            daily_usd=shadow.daily_usd,
        )
    return plans


def attach_spend_and_shadow(
    router: Router,
    config: Config,
    *,
    clock: Clock,
    meter: Meter,
    tracer: Tracer,
    on_alert: Callable[[Alert], None],
    beside_state: bool,
) -> tuple[Spend, Shadow]:
    """Cost every attempt and steer off enforced budgets (a listener and a steer of
    ``router``), and mirror the tiers' shadow share (``router.mirror``)."""
    priced = prices(config)
    spend = Spend(
        prices=priced,
        budgets=budgets(config),
        clock=clock,
        meter=meter,
        on_alert=on_alert,
        path=spend_path(config, beside_state=beside_state),
    )
    if config.spend.prices or budgets(config):  # nothing to count: no cost per request
        router.listeners.add(spend)
        router.steers.append(spend)
    shadow = Shadow(shadow_plans(config), clock=clock, prices=priced, meter=meter, tracer=tracer)
    shadow.attach(router)
    return spend, shadow
