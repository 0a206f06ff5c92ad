"""Benchmark: what warm traffic, idle probes and rate-limit headroom add to each request.

    python -m tests.bench.standby [--number 200000] [--repeat 7]

The per-request work they add is small and in-process, so it is timed directly (``timeit``,
the best of ``--repeat`` runs of ``--number`` calls, in microseconds per call): reading an
answer's headers for rate-limit fields (on every answer: a server that sends none, OpenAI's six,
Anthropic's nine), the two steers on a plan (both off, or on with nothing to move), and the
standby counter's look at an attempt event. The gateway's whole request is about 0.73 M
instructions (``tests.bench.instructions``); these figures say how much of it they can be.
"""

from __future__ import annotations

import argparse
import random
import timeit
from collections.abc import Callable

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.metrics import MeterProvider

from controller._clock import FakeClock
from controller.events import AttemptEvent, AttemptReason, Outcome
from controller.routing._standby import HeadroomSteer, StandbyMetrics, WarmSteer
from controller.routing.plan import Plan, Target, TierPlan
from controller.signals.headroom import Headroom

PLAIN = {"content-type": "application/json", "date": "Sun, 06 Dec 2026 14:00:00 GMT"}
PLAIN |= {"x-request-id": "req_1", "openai-processing-ms": "120", "server": "x"}
OPENAI = PLAIN | {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-reset-tokens": "9ms",
}
ANTHROPIC = PLAIN | {
    f"anthropic-ratelimit-{kind}-{field}": value
    for kind in ("requests", "tokens", "input-tokens")
    for field, value in (("limit", "1000"), ("remaining", "999"), ("reset", "2026-12-06T14:01:00Z"))
}


def cases() -> dict[str, Callable[[], object]]:
    clock = FakeClock()
    headroom = Headroom(clock, below=0.05)
    hook = headroom.hook("openai")
    plain, openai, anthropic = (
        CIMultiDictProxy(CIMultiDict(h)) for h in (PLAIN, OPENAI, ANTHROPIC)
    )
    targets = (Target(provider="openai", model="a"), Target(provider="anthropic", model="b"))
    off = TierPlan(name="t", targets=targets)
    warm = TierPlan(name="t", targets=targets, warm_share=0.01)
    plan = Plan(targets)
    warm_steer, headroom_steer = WarmSteer(random.Random(1)), HeadroomSteer(headroom)
    metrics = StandbyMetrics(MeterProvider().get_meter("bench"))
    event = AttemptEvent(
        request_id="r",
        tier="t",
        provider="openai",
        provider_kind="openai",
        model="a",
        attempt=1,
        reason=AttemptReason.PRIMARY,
        stream=False,
        start=0.0,
        end=0.1,
        start_wall=0.0,
        outcome=Outcome.SUCCESS,
    )
    return {
        "headers: none sent (every answer of such a server)": lambda: hook("a", plain),
        "headers: OpenAI's six": lambda: hook("a", openai),
        "headers: Anthropic's nine": lambda: hook("a", anthropic),
        "steers: warm off + headroom, nothing low": lambda: (
            warm_steer(off, plan),
            headroom_steer(off, plan),
        ),
        "steers: warm_share 0.01 + headroom, nothing low": lambda: (
            warm_steer(warm, plan),
            headroom_steer(warm, plan),
        ),
        "standby counter: a primary attempt": lambda: metrics.on_attempt(event),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    for name, call in cases().items():
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeat))
        print(f"{best / args.number * 1e6:8.3f} us  {name}")


if __name__ == "__main__":
    main()
