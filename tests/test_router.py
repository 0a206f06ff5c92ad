"""The router over real HTTP against fake providers: failover, retries, streams, kill switch."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import pytest

from controller._clock import FakeClock
from controller._errors import (
    AllProvidersFailed,
    ContentFiltered,
    ContextTooLong,
    StreamInterrupted,
)
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
    StateHolder,
)
from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.model import FinishReason, Message, Request, StreamChunk, ToolDefinition
from controller.providers import HttpProvider, Timeouts
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._limits import AttemptLimits
from controller.routing.plan import Strategy, Target, TierPlan
from controller.routing.policy import DefaultRetryPolicy
from controller.routing.router import Router
from tests.conftest import Recorder, adapter, drain
from tests.telemetry_support import attempt

# Short enough to keep the timeout tests quick, long enough not to fire on a loaded CI box.
FAST = Timeouts(connect=1.0, first_token=1.0, idle=1.0, total=2.0, terminator_grace=0.1)
HELLO = Request(messages=(Message(role="user", content="hello"),))
STREAM = Request(messages=HELLO.messages, stream=True)


def two_tier(primary: HttpProvider, backup: HttpProvider, **tier: object) -> dict[str, TierPlan]:
    targets = (
        Target(provider=primary.name, model="big"),
        Target(provider=backup.name, model="alt"),
    )
    return {"frontier": TierPlan(name="frontier", targets=targets, **tier)}  # type: ignore[arg-type]


def make_router(
    primary: FakeProvider,
    backup: FakeProvider,
    recorder: Recorder,
    *,
    kinds: tuple[str, str] = ("openai", "anthropic"),
    **kw: object,
) -> Router:
    p, b = adapter(primary, kinds[0], "primary"), adapter(backup, kinds[1], "backup")
    tier_kw = {k: kw.pop(k) for k in ("context_fallback", "strategy") if k in kw}
    return Router(
        tiers=two_tier(p, b, **tier_kw),
        providers={"primary": p, "backup": b},
        listeners=[recorder],
        default_timeouts=FAST,
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )


async def _one_sleeping(clock: FakeClock) -> None:
    """Let the request run (real sockets) until it waits on the fake clock; bounded."""
    for _ in range(200):
        if clock.sleepers:
            break
        await asyncio.sleep(0.01)
    assert clock.sleepers == 1


async def test_primary_serves_when_healthy(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "primary"
    assert response.model == "big"
    assert backup.requests == 0
    (event,) = recorder.attempts
    assert event.outcome is Outcome.SUCCESS
    assert event.reason is AttemptReason.PRIMARY
    assert recorder.routes[0].outcome is RouteOutcome.SERVED


@pytest.mark.parametrize(
    "mode",
    [
        FaultMode.ERROR_500,
        FaultMode.RESET,
        FaultMode.HANG,
        FaultMode.AUTH,
        FaultMode.MALFORMED_BODY,
        FaultMode.RATE_LIMIT,
    ],
)
async def test_fails_over_to_backup(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, mode: FaultMode
) -> None:
    router = make_router(primary, backup, recorder)
    primary.set_fault(Fault(mode=mode, retry_after=30))
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "backup"
    assert response.model == "alt"
    assert response.message.content.startswith("Hello from backup")
    last = recorder.attempts[-1]
    assert last.reason is AttemptReason.FAILOVER
    assert last.failover_from == "primary"
    assert last.failover_cause == recorder.attempts[-2].error_type
    assert all(e.outcome is Outcome.FAULT for e in recorder.attempts[:-1])
    assert recorder.routes[-1].outcome is RouteOutcome.DEGRADED
    assert recorder.routes[-1].served_by == "backup"


async def test_one_transient_retry_then_failover(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder, retry=DefaultRetryPolicy(backoff_base=0.01))
    primary.set_fault(FaultMode.ERROR_503)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "backup"
    assert primary.requests == 2  # one retry of a transient 5xx, no more
    reasons = [e.reason for e in recorder.attempts]
    assert reasons == [AttemptReason.PRIMARY, AttemptReason.RETRY, AttemptReason.FAILOVER]


async def test_transient_error_recovers_on_retry(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder, retry=DefaultRetryPolicy(backoff_base=0.01))
    primary.set_fault(Fault(mode=FaultMode.RESET, count=1))
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "primary"
    assert backup.requests == 0


async def test_retry_after_is_honoured_without_a_second_early_attempt(
    primary: FakeProvider, recorder: Recorder
) -> None:
    """Alone in its tier, a 429 with Retry-After: 2 waits 2 s (fake clock) before trying again."""
    clock = FakeClock()
    p = adapter(primary, "openai", "primary")
    tier = TierPlan(name="solo", targets=(Target(provider="primary", model="m"),))
    router = Router(
        tiers={"solo": tier},
        providers={"primary": p},
        listeners=[recorder],
        clock=clock,
        default_timeouts=FAST,
    )
    primary.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=2, count=1))
    task = asyncio.create_task(router.complete(HELLO, tier="solo"))
    await _one_sleeping(clock)
    clock.advance(1.9)
    await asyncio.sleep(0.05)
    assert primary.requests == 1  # nothing before Retry-After
    clock.advance(0.2)
    response = await asyncio.wait_for(task, 5)
    await router.aclose()
    assert response.provider == "primary"
    assert primary.requests == 2
    assert [e.reason for e in recorder.attempts] == [AttemptReason.PRIMARY, AttemptReason.RETRY]


async def test_a_short_retry_after_is_waited_out_even_with_a_fallback(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """2 s <= wait_retry_after_under (3 s): the same model soon beats another one now."""
    clock = FakeClock()
    router = make_router(primary, backup, recorder, clock=clock)
    primary.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=2, count=1))
    task = asyncio.create_task(router.complete(HELLO, tier="frontier"))
    await _one_sleeping(clock)
    clock.advance(2.0)
    response = await asyncio.wait_for(task, 5)
    await router.aclose()
    assert response.provider == "primary"
    assert backup.requests == 0
    assert [e.reason for e in recorder.attempts] == [AttemptReason.PRIMARY, AttemptReason.RETRY]


async def test_long_retry_after_fails_over_instead_of_waiting(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    primary.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=60))
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "backup"
    assert primary.requests == 1


async def test_attempts_are_bounded(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(
        primary, backup, recorder, max_attempts=3, retry=DefaultRetryPolicy(backoff_base=0.01)
    )
    primary.set_fault(FaultMode.ERROR_500)
    backup.set_fault(FaultMode.ERROR_500)
    with pytest.raises(AllProvidersFailed) as caught:
        await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert primary.requests + backup.requests == 3
    assert len(caught.value.attempts) == 3
    assert "internal server error" in str(caught.value)  # the provider's reason reaches the caller
    assert recorder.routes[-1].outcome is RouteOutcome.FAILED


@pytest.mark.parametrize(
    ("mode", "error"),
    [(FaultMode.CONTEXT_TOO_LONG, ContextTooLong), (FaultMode.CONTENT_FILTER, ContentFiltered)],
)
async def test_caller_errors_are_not_retried_or_failed_over(
    primary: FakeProvider,
    backup: FakeProvider,
    recorder: Recorder,
    mode: FaultMode,
    error: type[Exception],
) -> None:
    router = make_router(primary, backup, recorder)
    primary.set_fault(mode)
    with pytest.raises(error):
        await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert primary.requests == 1
    assert backup.requests == 0
    assert recorder.attempts[0].outcome is Outcome.CALLER_ERROR


async def test_context_too_long_goes_to_the_larger_context_model(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    big = Target(provider="backup", model="long-context")
    router = make_router(primary, backup, recorder, context_fallback=big)
    primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert (response.provider, response.model) == ("backup", "long-context")
    assert recorder.attempts[-1].reason is AttemptReason.CONTEXT_FALLBACK


async def test_a_context_fallback_that_is_also_a_later_target_is_still_reached(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    """The tier's own next target is its context fallback: a 400 context_length_exceeded goes
    there (it used to come back as the 400: a fallback equal to any target was skipped)."""
    alt = Target(provider="backup", model="alt")  # the tier's second target, as make_router has it
    router = make_router(primary, backup, recorder, context_fallback=alt)
    primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert (response.provider, response.model) == ("backup", "alt")
    assert recorder.attempts[-1].reason is AttemptReason.CONTEXT_FALLBACK


@pytest.mark.parametrize(
    "mode", [FaultMode.ERROR_503, FaultMode.HANG, FaultMode.SLOW_FIRST_TOKEN, FaultMode.RESET]
)
async def test_stream_fails_over_before_first_chunk(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, mode: FaultMode
) -> None:
    router = make_router(primary, backup, recorder, retry=DefaultRetryPolicy(backoff_base=0.01))
    primary.set_fault(Fault(mode=mode, delay=2.0))
    stream = await router.stream(STREAM, tier="frontier")
    chunks = [c async for c in stream]
    await router.aclose()
    assert stream.provider == "backup"
    assert "".join(c.text for c in chunks).startswith("Hello from backup")
    assert chunks[-1].finish_reason is FinishReason.STOP or any(c.finish_reason for c in chunks)
    assert recorder.routes[-1].outcome is RouteOutcome.DEGRADED


@pytest.mark.parametrize("mode", [FaultMode.CUT_STREAM, FaultMode.STALL_STREAM])
async def test_stream_failure_after_first_chunk_is_explicit(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, mode: FaultMode
) -> None:
    """Cut after "Hello from primary.": the backup's restart begins "Hello from backup.", so
    it cannot continue the text delivered, and the stream ends with the error."""
    router = make_router(primary, backup, recorder)
    primary.set_fault(Fault(mode=mode, after_chunks=3))
    stream = await router.stream(STREAM, tier="frontier")
    chunks: list[StreamChunk] = []
    with pytest.raises(StreamInterrupted) as caught:
        await drain(stream, chunks)
    await router.aclose()
    assert "".join(c.text for c in chunks) == "Hello from primary."
    assert all(c.finish_reason is None for c in chunks)  # never a truncated "complete" answer
    assert caught.value.provider == "primary"  # the client hears of the cut
    cut, restart = recorder.attempts
    assert (cut.provider, cut.outcome) == ("primary", Outcome.FAULT)
    assert (restart.provider, restart.reason) == ("backup", AttemptReason.CONTINUATION)
    assert (restart.outcome, restart.error_type) == (Outcome.CANCELLED, "continuation_diverged")
    assert recorder.routes[-1].outcome is RouteOutcome.FAILED


async def test_stream_reports_ttfc_and_usage(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    stream = await router.stream(STREAM, tier="frontier")
    _ = [c async for c in stream]
    await router.aclose()
    (event,) = recorder.attempts
    assert event.outcome is Outcome.SUCCESS
    assert event.time_to_first_chunk is not None
    assert event.time_to_first_chunk >= 0
    assert event.usage is not None
    assert event.usage.output_tokens > 0


async def test_closing_a_stream_early_reports_cancelled(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    stream = await router.stream(STREAM, tier="frontier")
    await stream.aclose()
    await router.aclose()
    assert recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED  # not the gateway's failure


async def test_tripped_provider_is_skipped(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
    state = StateHolder(RoutingState(providers={"primary": tripped}))
    router = make_router(primary, backup, recorder, state=state)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "backup"
    assert primary.requests == 0  # no request waits on the dead provider
    assert recorder.routes[-1].outcome is RouteOutcome.SERVED


async def test_panic_mode_tries_everything_when_all_are_tripped(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
    state = StateHolder(RoutingState(providers={"primary": tripped, "backup": tripped}))
    router = make_router(primary, backup, recorder, state=state)
    response = await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert response.provider == "primary"
    assert recorder.routes[-1].panic
    assert recorder.routes[-1].outcome is RouteOutcome.DEGRADED


async def test_kill_switch_pin_and_disable(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    state = StateHolder(RoutingState(kill_switch=KillSwitch(pin="backup")))
    router = make_router(primary, backup, recorder, state=state)
    primary_down = Fault(mode=FaultMode.ERROR_500)
    assert (await router.complete(HELLO, tier="frontier")).provider == "backup"
    backup.set_fault(primary_down)  # pinned: nowhere else, even when it fails
    with pytest.raises(AllProvidersFailed):
        await router.complete(HELLO, tier="frontier")
    assert primary.requests == 0
    backup.clear_fault()
    state.publish(RoutingState(kill_switch=KillSwitch(disable=("primary",))))
    assert (await router.complete(HELLO, tier="frontier")).provider == "backup"
    state.publish(RoutingState(kill_switch=KillSwitch(disable=("primary", "backup"))))
    with pytest.raises(AllProvidersFailed, match="kill switch"):
        await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert primary.requests == 0


async def test_recovering_provider_gets_its_share(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    recovering = ProviderStatus(state=HealthState.RECOVERING, traffic_share=0.25)
    state = StateHolder(RoutingState(providers={"primary": recovering}))
    router = make_router(primary, backup, recorder, state=state)
    served = [(await router.complete(HELLO, tier="frontier")).provider for _ in range(80)]
    await router.aclose()
    share = served.count("primary") / len(served)
    assert 0.1 < share < 0.45


async def test_strategies_order_targets(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    p, b = adapter(primary, "openai", "primary"), adapter(backup, "openai", "backup")
    cheap_last = (
        Target(provider="primary", model="m", cost_per_mtok=10.0),
        Target(provider="backup", model="m", cost_per_mtok=1.0),
    )
    weighted = (
        Target(provider="primary", model="m", weight=1.0),
        Target(provider="backup", model="m", weight=9.0),
    )
    router = Router(
        tiers={
            "cheap": TierPlan(name="cheap", targets=cheap_last, strategy=Strategy.COST),
            "weighted": TierPlan(name="weighted", targets=weighted, strategy=Strategy.WEIGHTED),
            "fast": TierPlan(name="fast", targets=cheap_last, strategy=Strategy.LEAST_LATENCY),
        },
        providers={"primary": p, "backup": b},
        default_timeouts=FAST,
        rng=random.Random(3),
    )
    assert (await router.complete(HELLO, tier="cheap")).provider == "backup"
    served = [(await router.complete(HELLO, tier="weighted")).provider for _ in range(40)]
    assert served.count("backup") > 28
    # What the latency tracker learns from finished attempts, given directly: learning it from
    # a real 150 ms delay raced the machine's load (a busy box made the instant one slower).
    for _ in range(20):  # enough for the moving averages to settle on these
        for provider, took in (("primary", 0.150), ("backup", 0.001)):
            router.latency.on_attempt(attempt(provider=provider, start=10.0, end=10.0 + took))
    fast, slow = router.latency.latency("backup"), router.latency.latency("primary")
    assert fast is not None
    assert slow is not None
    assert slow > 0.1 > 0.01 > fast
    assert (await router.complete(HELLO, tier="fast")).provider == "backup"
    await router.aclose()


async def test_unknown_tier_is_a_clear_error(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    with pytest.raises(AllProvidersFailed, match="unknown tier 'nope'"):
        await router.complete(HELLO, tier="nope")
    await router.aclose()


async def test_content_is_captured_only_on_opt_in(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    await router.complete(HELLO, tier="frontier")
    assert recorder.attempts[-1].input_messages is None
    assert recorder.attempts[-1].output_messages is None
    opted = make_router(primary, backup, recorder, capture_content=True)
    await opted.complete(HELLO, tier="frontier")
    assert json.loads(recorder.attempts[-1].input_messages or "")[0]["content"] == "hello"
    assert "Hello from primary" in (recorder.attempts[-1].output_messages or "")
    await router.aclose()
    await opted.aclose()


async def test_probe_reports_a_probe_attempt(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    router = make_router(primary, backup, recorder)
    assert await router.probe("primary", "big")
    primary.set_fault(FaultMode.ERROR_503)
    assert not await router.probe("primary", "big")
    await router.aclose()
    assert [e.reason for e in recorder.attempts] == [AttemptReason.PROBE] * 2
    assert [e.outcome for e in recorder.attempts] == [Outcome.SUCCESS, Outcome.FAULT]


TOOLS = (ToolDefinition(name="weather", description="weather by city"),)


@pytest.mark.parametrize(
    "kinds", [("openai", "anthropic"), ("openai", "gemini"), ("gemini", "openai")]
)
async def test_tool_call_conversation_continues_on_another_provider(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder, kinds: tuple[str, str]
) -> None:
    """A tool call made on one provider's format, its result answered on another's."""
    router = make_router(primary, backup, recorder, kinds=kinds)
    ask = Request(messages=(Message(role="user", content="Paris?"),), tools=TOOLS)
    first = await router.complete(ask, tier="frontier")
    (call,) = first.message.tool_calls
    history = (
        *ask.messages,
        first.message,
        Message(role="tool", content="22C sunny", tool_call_id=call.id),
    )
    primary.set_fault(FaultMode.ERROR_503)  # the next turn must go to the other format
    second = await router.complete(Request(messages=history, tools=TOOLS), tier="frontier")
    await router.aclose()
    assert second.provider == "backup"
    assert second.message.content == "tool said: 22C sunny"
    seen = backup.seen[-1].request.messages
    assert seen[1].tool_calls[0].name == "weather"
    assert json.loads(seen[1].tool_calls[0].arguments) == {"input": "Paris?"}
    assert seen[2].role == "tool"
    assert seen[2].tool_call_id == seen[1].tool_calls[0].id
    assert seen[2].content == "22C sunny"


async def test_context_fallback_obeys_the_kill_switch(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    big = Target(provider="backup", model="long-context")
    state = StateHolder(RoutingState(kill_switch=KillSwitch(disable=("backup",))))
    router = make_router(primary, backup, recorder, context_fallback=big, state=state)
    primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
    with pytest.raises(ContextTooLong):
        await router.complete(HELLO, tier="frontier")
    await router.aclose()
    assert backup.requests == 0  # a disabled provider is out of every route, fallback too


async def test_a_priority_plan_is_kept_only_while_the_state_and_the_tier_stay_the_same(
    primary: FakeProvider, backup: FakeProvider, recorder: Recorder
) -> None:
    holder = StateHolder()
    router = make_router(primary, backup, recorder, state=holder)
    tier = router.tiers["frontier"]
    first = router.plan(tier)
    assert router.plan(tier) is first  # calm state, priority: kept
    tripped = ProviderStatus(state=HealthState.TRIPPED, since=1.0, traffic_share=0.0)
    holder.publish(holder.current.evolve(changed_by="t", now=1, providers={"primary": tripped}))
    assert [t.provider for t in router.plan(tier).targets] == ["backup"]  # the new state
    back = ProviderStatus(state=HealthState.RECOVERING, since=2.0, traffic_share=0.5)
    holder.publish(holder.current.evolve(changed_by="t", now=2, providers={"primary": back}))
    drawn = {router.plan(tier).targets[0].provider for _ in range(40)}
    assert drawn == {"primary", "backup"}  # a recovering share is drawn per request, not kept
    assert router.takes_as_is("openai", "frontier") is False  # backup speaks anthropic
    router.tiers = {"frontier": replace(tier, targets=tier.targets[:1])}  # a reload
    assert router.takes_as_is("openai", "frontier") is True
    await router.aclose()


def test_an_attempts_limits_cut_to_the_deadline_are_reused_only_within_50_ms() -> None:
    cutter = AttemptLimits({}, Timeouts())
    limits = Timeouts()  # total 120 s, the default deadline 120 s too
    first = cutter.bounded(limits, 119.999)
    assert first.total == 119.999
    again = cutter.bounded(limits, 120.0 - 0.0003)  # the next request, microseconds later
    assert again is first  # reused: at most 50 ms shorter than its deadline allows
    assert again.total <= 120.0 - 0.0003
    later = cutter.bounded(limits, 60.0)  # a failover half way: cut afresh
    assert later.total == 60.0
    assert cutter.bounded(limits, 119.0).total == 119.0  # never longer than allowed
    assert cutter.bounded(limits, 500.0) is limits  # far from the deadline: nothing to cut
