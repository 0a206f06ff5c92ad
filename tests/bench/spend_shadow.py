"""Benchmark: what spend accounting and the shadow comparison add to one request, in-process.

    python -m tests.bench.spend_shadow [--calls 200000] [--rounds 5]

Per request the router calls, when ``spend`` is configured, the spend listener once per attempt
(:meth:`Spend.on_attempt`: the price lookup, the cost, the budgets' totals) and the budget steer
once (:meth:`Spend.__call__`, nothing over budget: the usual case), and, always, the shadow's
draw (:meth:`Shadow.wants`; a tier without a shadow: a dict lookup). Each is timed with
``timeit`` (the best of ``--rounds``), beside an empty call for scale. Without prices or budgets
in the config the spend listener and steer are not attached at all.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from controller._clock import SystemClock
from controller.model import Usage
from controller.routing._shadow import Shadow, ShadowPlan
from controller.routing._spend import Budget, Price, Prices, Spend
from controller.routing.plan import Plan, Target, TierPlan
from tests.telemetry_support import attempt


def best_ns(call: Callable[[], object], calls: int, rounds: int) -> float:
    return min(timeit.repeat(call, number=calls, repeat=rounds)) / calls * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    clock = SystemClock()
    target = Target(provider="openai", model="gpt-4.1")
    tier = TierPlan(name="t", targets=(target, Target(provider="anthropic", model="claude")))
    plan = Plan(tier.targets)
    spend = Spend(
        prices=Prices({("openai", "gpt-4.1"): Price(input=2.0, output=8.0)}),
        budgets=[
            Budget(scope="provider", name="openai", daily_usd=1e12, enforce=True),
            Budget(scope="tier", name="t", daily_usd=1e12),
        ],
        clock=clock,
    )
    event = attempt(tier="t", provider="openai", model="gpt-4.1", usage=Usage(1200, 300))
    unshadowed = Shadow({}, clock=clock)
    shadowed = Shadow({"t": ShadowPlan(target=target, share=0.01)}, clock=clock)
    rows = {
        "empty call (scale)": lambda: None,
        "spend listener, priced, 2 budgets": lambda: spend.on_attempt(event),
        "budget steer, nothing over": lambda: spend(tier, plan),
        "shadow draw, tier without one": lambda: unshadowed.wants("t"),
        "shadow draw, tier with one": lambda: shadowed.wants("t"),
    }
    for name, call in rows.items():
        print(f"{name:36s} {best_ns(call, args.calls, args.rounds):8.0f} ns")


if __name__ == "__main__":
    main()
