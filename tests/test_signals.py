"""The tripwire's sliding windows, driven by synthetic AttemptEvents and a FakeClock."""

from __future__ import annotations

import pytest

from controller._clock import FakeClock
from controller.events import AttemptEvent, AttemptReason, Outcome, RouteEvent, RouteOutcome
from controller.signals import MAX_TRACE_IDS, ProviderSignals, SignalWindows


def attempt(
    outcome: Outcome,
    *,
    provider: str = "openai",
    model: str = "gpt-x",
    duration: float = 0.1,
    error_type: str | None = None,
    trace_id: int = 0,
) -> AttemptEvent:
    if outcome is Outcome.FAULT and error_type is None:
        error_type = "overloaded"
    return AttemptEvent(
        request_id="r",
        tier="frontier",
        provider=provider,
        provider_kind="openai",
        model=model,
        attempt=1,
        reason=AttemptReason.PRIMARY,
        stream=False,
        start=0.0,
        end=duration,
        start_wall=0.0,
        outcome=outcome,
        error_type=error_type,
        trace_id=trace_id,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def windows(clock: FakeClock) -> SignalWindows:
    return SignalWindows(clock=clock, window_seconds=30.0, bucket_seconds=1.0)


def signals(windows: SignalWindows, provider: str = "openai") -> ProviderSignals:
    return windows.snapshot().provider(provider)


def test_only_faults_count_toward_the_error_rate(windows: SignalWindows) -> None:
    for outcome in [Outcome.SUCCESS] * 6 + [Outcome.FAULT] * 2:
        windows.on_attempt(attempt(outcome))
    for outcome in [Outcome.CALLER_ERROR] * 5 + [Outcome.CANCELLED] * 3:
        windows.on_attempt(attempt(outcome, error_type="bad_request"))
    sig = signals(windows)
    assert (sig.requests, sig.successes, sig.faults) == (8, 6, 2)
    assert (sig.caller_errors, sig.cancelled) == (5, 3)
    assert sig.error_rate == pytest.approx(0.25)


def test_errors_by_type_counts_faults_sorted_by_count(windows: SignalWindows) -> None:
    for kind in ["timeout", "rate_limited", "rate_limited", "auth", "rate_limited", "timeout"]:
        windows.on_attempt(attempt(Outcome.FAULT, error_type=kind))
    windows.on_attempt(attempt(Outcome.CALLER_ERROR, error_type="bad_request"))
    assert signals(windows).errors_by_type == (("rate_limited", 3), ("timeout", 2), ("auth", 1))
    assert signals(windows).top_errors(1) == (("rate_limited", 3),)


def test_old_buckets_expire_with_the_clock(windows: SignalWindows, clock: FakeClock) -> None:
    for _ in range(4):
        windows.on_attempt(attempt(Outcome.FAULT))
    clock.advance(10)
    for _ in range(6):
        windows.on_attempt(attempt(Outcome.SUCCESS))
    assert signals(windows).requests == 10
    clock.advance(20.5)  # the faults' bucket (30.5 s old) has left the 30 s window
    sig = signals(windows)
    assert (sig.requests, sig.faults, sig.error_rate) == (6, 0, 0.0)
    assert sig.errors_by_type == ()
    clock.advance(10)
    assert signals(windows).requests == 0


def test_a_reused_bucket_forgets_what_it_held(windows: SignalWindows, clock: FakeClock) -> None:
    windows.on_attempt(attempt(Outcome.FAULT, error_type="timeout"))
    clock.advance(30)  # same ring slot, next lap
    windows.on_attempt(attempt(Outcome.SUCCESS))
    sig = signals(windows)
    assert (sig.requests, sig.faults, sig.errors_by_type) == (1, 0, ())


def test_latency_percentiles_within_the_bin_resolution(windows: SignalWindows) -> None:
    # 100 successes at 10 ms, 20 ms, ..., 1000 ms
    for i in range(1, 101):
        windows.on_attempt(attempt(Outcome.SUCCESS, duration=i / 100))
    windows.on_attempt(attempt(Outcome.FAULT, duration=60.0))  # a slow timeout is not latency
    sig = signals(windows)
    assert sig.latency_p50 == pytest.approx(0.50, rel=0.10)
    assert sig.latency_p95 == pytest.approx(0.95, rel=0.10)
    assert sig.latency_p99 == pytest.approx(0.99, rel=0.10)


def test_latency_is_none_without_successes(windows: SignalWindows) -> None:
    windows.on_attempt(attempt(Outcome.FAULT))
    sig = signals(windows)
    assert (sig.latency_p50, sig.latency_p95, sig.latency_p99) == (None, None, None)


def test_latency_expires_with_its_bucket(windows: SignalWindows, clock: FakeClock) -> None:
    windows.on_attempt(attempt(Outcome.SUCCESS, duration=5.0))
    clock.advance(31)
    windows.on_attempt(attempt(Outcome.SUCCESS, duration=0.05))
    assert signals(windows).latency_p99 == pytest.approx(0.05, rel=0.10)


def test_consecutive_failures_reset_by_success_only(windows: SignalWindows) -> None:
    for _ in range(3):
        windows.on_attempt(attempt(Outcome.FAULT))
    windows.on_attempt(attempt(Outcome.CALLER_ERROR, error_type="bad_request"))
    windows.on_attempt(attempt(Outcome.CANCELLED))
    windows.on_attempt(attempt(Outcome.FAULT))
    assert signals(windows).consecutive_failures == 4
    windows.on_attempt(attempt(Outcome.SUCCESS))
    assert signals(windows).consecutive_failures == 0
    windows.on_attempt(attempt(Outcome.FAULT))
    assert signals(windows).consecutive_failures == 1


def test_a_stale_failure_run_starts_over(windows: SignalWindows, clock: FakeClock) -> None:
    for _ in range(4):
        windows.on_attempt(attempt(Outcome.FAULT))
    clock.advance(45)
    assert signals(windows).consecutive_failures == 0
    windows.on_attempt(attempt(Outcome.FAULT))
    sig = signals(windows)
    assert sig.consecutive_failures == 1
    assert sig.failure_run_age == 0.0


def test_fault_ages_are_relative_to_the_snapshot(windows: SignalWindows, clock: FakeClock) -> None:
    windows.on_attempt(attempt(Outcome.FAULT))
    clock.advance(2)
    windows.on_attempt(attempt(Outcome.FAULT))
    clock.advance(3)
    sig = signals(windows)
    assert sig.last_fault_age == pytest.approx(3.0)
    assert sig.failure_run_age == pytest.approx(5.0)
    assert signals(windows, "never-seen").last_fault_age is None


def test_counts_since_uses_only_recent_buckets(windows: SignalWindows, clock: FakeClock) -> None:
    for _ in range(5):
        windows.on_attempt(attempt(Outcome.FAULT))
    clock.advance(10)
    for _ in range(3):
        windows.on_attempt(attempt(Outcome.SUCCESS))
    clock.advance(1)
    windows.on_attempt(attempt(Outcome.FAULT))
    sig = signals(windows)
    assert sig.counts_since(2.0, bucket_seconds=1.0) == (4, 1)
    assert sig.counts_since(60.0, bucket_seconds=1.0) == (9, 6)


def test_failing_trace_ids_keep_the_last_few(windows: SignalWindows, clock: FakeClock) -> None:
    windows.on_attempt(attempt(Outcome.FAULT, trace_id=0))  # tracing off: no id
    for i in range(1, 8):
        windows.on_attempt(attempt(Outcome.FAULT, trace_id=i))
    windows.on_attempt(attempt(Outcome.CALLER_ERROR, error_type="bad_request", trace_id=99))
    windows.on_attempt(attempt(Outcome.SUCCESS, trace_id=98))
    ids = signals(windows).failing_trace_ids
    assert len(ids) == MAX_TRACE_IDS
    assert ids == tuple(format(i, "032x") for i in range(3, 8))
    clock.advance(31)
    assert signals(windows).failing_trace_ids == ()


def test_provider_and_model_series_are_separate(windows: SignalWindows) -> None:
    windows.on_attempt(attempt(Outcome.FAULT, model="big"))
    windows.on_attempt(attempt(Outcome.SUCCESS, model="small"))
    windows.on_attempt(attempt(Outcome.SUCCESS, provider="anthropic", model="big"))
    snap = windows.snapshot()
    assert snap.providers["openai"].requests == 2
    assert snap.providers["openai"].error_rate == 0.5
    assert snap.models[("openai", "big")].error_rate == 1.0
    assert snap.models[("openai", "small")].error_rate == 0.0
    assert snap.models[("anthropic", "big")].requests == 1


def test_route_events_do_not_count(windows: SignalWindows) -> None:
    windows.on_route(
        RouteEvent(
            request_id="r",
            tier="t",
            outcome=RouteOutcome.FAILED,
            served_by=None,
            attempts=2,
            start=0.0,
            end=1.0,
            stream=False,
        )
    )
    assert windows.snapshot().providers == {}


def test_rejects_a_bucket_longer_than_the_window(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        SignalWindows(clock=clock, window_seconds=1.0, bucket_seconds=2.0)
