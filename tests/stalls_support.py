"""What the stall, rescue and hedge tests share: a router over two fake providers (a, then b)
on a fake clock, waiting for the loop to reach a state, and tripping a provider by hand."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from controller._clock import FakeClock
from controller.control.state import HealthState, ProviderStatus, StateHolder
from controller.events import Listener
from controller.providers import Timeouts
from controller.providers.fake import FakeProvider
from controller.routing.plan import Hedge, Target, TierPlan
from controller.routing.router import Router
from controller.signals.inflight import InFlight
from tests.conftest import adapter

# Long: a silent provider must be left by the rescue, never by one of these expiring.
PATIENT = Timeouts(connect=5.0, first_token=300.0, idle=300.0, total=300.0)


def two_providers(
    primary: FakeProvider,
    backup: FakeProvider,
    listener: Listener,
    clock: FakeClock,
    *,
    holder: StateHolder | None = None,
    hedge: Hedge | None = None,
    inflight: InFlight | None = None,
    max_attempts: int = 6,
) -> Router:
    """Tier ``t``: a (the primary fake, OpenAI format, model big), then b (Anthropic, alt)."""
    a, b = adapter(primary, "openai", "a"), adapter(backup, "anthropic", "b")
    targets = (Target(provider="a", model="big"), Target(provider="b", model="alt"))
    return Router(
        tiers={"t": TierPlan(name="t", targets=targets, hedge=hedge)},
        providers={"a": a, "b": b},
        state=holder,
        listeners=[listener],
        clock=clock,
        default_timeouts=PATIENT,
        deadline=600.0,
        max_attempts=max_attempts,
        rng=random.Random(3),
        inflight=inflight,
    )


async def until(check: Callable[[], bool], what: str) -> None:
    """Let the loop run (real sockets) until ``check`` holds; bounded."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def trip(holder: StateHolder, provider: str) -> None:
    """Publish ``provider`` tripped, as the controller would."""
    tripped = ProviderStatus(state=HealthState.TRIPPED, since=1.0, traffic_share=0.0)
    table = {**holder.current.providers, provider: tripped}
    holder.publish(holder.current.evolve(changed_by="test", now=1.0, providers=table))
