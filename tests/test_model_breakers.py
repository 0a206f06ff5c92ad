"""Breakers per model: a model that fails is ejected while its siblings on the same provider
keep serving; a provider whose every model fails trips as a whole."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from controller._clock import FakeClock
from controller.control.config import TripwireConfig
from controller.control.decide import Decision, TransitionKind, decide
from controller.control.loop import Controller
from controller.control.state import (
    HealthState,
    ProviderStatus,
    RoutingState,
    StateHolder,
    model_key,
    split_key,
)
from controller.control.store import MemoryStateStore
from controller.model import Message, Request
from controller.providers import Timeouts
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing.plan import Plan, Target, TierPlan, make_plan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.signals.window import ProviderSignals, SignalSnapshot, SignalWindows
from tests.conftest import Recorder, adapter

NOW = 1_800_000_000.0
HELLO = Request(messages=(Message(role="user", content="hello"),))
# a serves two models: big (tier "big", b behind it) and small (tier "small", alone)
TIERS = {"big": ("a/big", "b/alt"), "small": ("a/small",)}


def _sig(requests: int, faults: int) -> ProviderSignals:
    return ProviderSignals(
        window_seconds=30.0,
        requests=requests,
        successes=requests - faults,
        faults=faults,
        error_rate=faults / requests if requests else 0.0,
        errors_by_type=(("overloaded", faults),) if faults else (),
    )


def _decide(
    models: dict[tuple[str, str], tuple[int, int]],
    tiers: Mapping[str, Sequence[str]] = TIERS,
) -> Decision:
    by_provider: dict[str, tuple[int, int]] = {}
    for (provider, _), (requests, faults) in models.items():
        r, f = by_provider.get(provider, (0, 0))
        by_provider[provider] = (r + requests, f + faults)
    snapshot = SignalSnapshot(
        taken_at=500.0,
        window_seconds=30.0,
        bucket_seconds=1.0,
        providers=MappingProxyType({p: _sig(*rf) for p, rf in by_provider.items()}),
        models=MappingProxyType({k: _sig(*rf) for k, rf in models.items()}),
    )
    return decide(RoutingState(), snapshot, NOW, TripwireConfig(), tiers)


def test_a_failing_model_trips_alone_and_its_sibling_keeps_serving() -> None:
    decision = _decide({("a", "big"): (20, 20), ("a", "small"): (20, 0), ("b", "alt"): (5, 0)})
    (trip,) = decision.transitions
    assert (trip.provider, trip.kind) == ("a/big", TransitionKind.TRIP)
    assert decision.providers["a/big"].state is HealthState.TRIPPED
    assert "a" not in decision.providers  # the provider (50% over both) is not ejected


def test_a_provider_whose_every_model_fails_trips_as_a_whole() -> None:
    both_backed = {"big": ("a/big", "b/alt"), "small": ("a/small", "b/alt")}
    failing = {("a", "big"): (20, 20), ("a", "small"): (20, 20), ("b", "alt"): (5, 0)}
    decision = _decide(failing, both_backed)
    (trip,) = decision.transitions
    assert (trip.provider, trip.kind) == ("a", TransitionKind.TRIP)
    assert set(decision.providers) == {"a"}


def test_the_last_usable_target_of_a_tier_is_a_model_too() -> None:
    """a/small is all the tier 'small' has: it is not ejected; the tier panics."""
    decision = _decide({("a", "big"): (20, 0), ("a", "small"): (20, 20)})
    (panic,) = decision.transitions
    assert panic.kind is TransitionKind.PANIC
    assert panic.tiers == ("small",)
    assert not decision.changed


def test_a_single_model_provider_has_no_breaker_of_its_own() -> None:
    """b serves one model: judged as a whole, as before."""
    decision = _decide({("a", "big"): (20, 0), ("b", "alt"): (20, 20)})
    (trip,) = decision.transitions
    assert trip.provider == "b"


def test_the_plan_leaves_out_a_tripped_model_only() -> None:
    tripped = ProviderStatus(state=HealthState.TRIPPED, since=NOW, traffic_share=0.0)
    state = RoutingState(providers=MappingProxyType({model_key("a", "big"): tripped}))
    big = TierPlan(
        name="big", targets=(Target(provider="a", model="big"), Target(provider="b", model="alt"))
    )
    small = TierPlan(name="small", targets=(Target(provider="a", model="small"),))

    def plan(tier: TierPlan) -> Plan:
        return make_plan(
            tier, state, default_models={}, rng=random.Random(1), latency_of=lambda _: None
        )

    assert [t.provider for t in plan(big).targets] == ["b"]
    assert [(t.provider, t.model) for t in plan(small).targets] == [("a", "small")]
    assert state.share("a", "small") == 1.0
    assert state.share("a", "big") == 0.0


async def test_end_to_end_one_model_down_the_other_serves_then_it_comes_back(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    clock, holder = FakeClock(), StateHolder()
    windows = SignalWindows(clock=clock)
    a, b = adapter(primary, "openai", "a"), adapter(backup, "anthropic", "b")
    tiers = {
        name: TierPlan(
            name=name,
            targets=tuple(Target(provider=p, model=m or "") for p, m in map(split_key, keys)),
        )
        for name, keys in TIERS.items()
    }
    router = Router(
        tiers=tiers,
        providers={"a": a, "b": b},
        state=holder,
        listeners=[recorder, windows],
        clock=clock,
        default_timeouts=Timeouts(connect=5, first_token=30, total=30),
        inflight=windows.inflight,
        retry=never_retry,  # a retry's backoff would wait on the fake clock
    )

    async def probe(name: str) -> bool:
        provider, model = split_key(name)
        return await router.probe(provider, model or "big")

    controller = Controller(
        clock=clock,
        windows=windows,
        holder=holder,
        store=MemoryStateStore(),
        cfg=TripwireConfig(cooloff_seconds=5, probe_interval_seconds=1, failback_steps=(1.0,)),
        tiers=TIERS,
        prober=probe,
    )
    primary.set_fault(Fault(mode=FaultMode.ERROR_500, model="big"))
    for _ in range(6):  # big fails over to b each time; small is served by a
        assert (await router.complete(HELLO, tier="big")).provider == "b"
        assert (await router.complete(HELLO, tier="small")).provider == "a"
    controller.tick()
    assert holder.current.status("a/big").state is HealthState.TRIPPED
    assert holder.current.status("a").state is HealthState.HEALTHY
    asked = primary.requests
    assert (await router.complete(HELLO, tier="big")).provider == "b"  # a/big not even tried
    assert primary.requests == asked
    assert (await router.complete(HELLO, tier="small")).provider == "a"
    primary.clear_fault()
    for _ in range(40):  # cool-off, probes of a/big with model big, back in
        clock.advance(0.25)
        controller.tick()
        await asyncio.sleep(0.005)
    assert holder.current.status("a/big").state is HealthState.HEALTHY
    assert [s.model for s in primary.seen if s.request.max_tokens == 1][-1] == "big"  # probed
    assert (await router.complete(HELLO, tier="big")).provider == "a"
    controller.stop()
    await router.aclose()
