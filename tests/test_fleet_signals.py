"""The fleet's aggregate of signal windows, and the convergence after an outage. Pure: no Redis.

Three replicas' windows see a third of the traffic each; the leader's merged view must be what
one process seeing all of it would see, and ``decide()`` must trip on it exactly as it would.
"""

from __future__ import annotations

import random

import pytest

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.control.config import TripwireConfig
from controller.control.decide import decide
from controller.control.state import HealthState, ProviderStatus, RoutingState
from controller.events import Outcome
from controller.fleet import FleetConfig, RedisLink, converge
from controller.fleet._signals import decode_doc, encode_doc, fleet_snapshot
from controller.fleet.config import state_backend
from controller.signals import SignalSnapshot, SignalWindows
from tests.test_signals import attempt

WALL0 = 1_800_000_000.0
TIERS = {"frontier": ["openai", "anthropic"]}


def windows(clock: FakeClock) -> SignalWindows:
    return SignalWindows(clock=clock, window_seconds=30.0, bucket_seconds=1.0)


def spread(
    outcomes: list[Outcome], *, replicas: int = 3, seed: int = 7
) -> tuple[SignalSnapshot, SignalSnapshot]:
    """(one process that saw everything, the leader's merge of ``replicas`` that shared it).

    Each replica has its own monotonic clock (a different origin, as separate processes do) but
    the same wall clock; events arrive 0.1 s apart and go to a random replica."""
    rng = random.Random(seed)
    one_clock = FakeClock(start=1000.0, wall_start=WALL0)
    clocks = [FakeClock(start=50.0 + 333.3 * i, wall_start=WALL0) for i in range(replicas)]
    one, parts = windows(one_clock), [windows(c) for c in clocks]
    for outcome in outcomes:
        event = attempt(outcome, error_type="overloaded" if outcome is Outcome.FAULT else None)
        one.on_attempt(event)
        parts[rng.randrange(replicas)].on_attempt(event)
        for clock in (one_clock, *clocks):
            clock.advance(0.1)
    # Every replica pushed at some moment in the last push interval; the leader merges now.
    docs = []
    for i, (clock, part) in enumerate(zip(clocks[1:], parts[1:], strict=True)):
        pushed_at = clock.wall() - 0.1 * i
        raw = encode_doc(part.snapshot(), replica=f"r{i}", at=pushed_at, role="follower", version=1)
        found = decode_doc(raw)
        assert found is not None
        docs.append(found)
    merged = fleet_snapshot(parts[0].snapshot(), docs, now_wall=clocks[0].wall())
    return one.snapshot(), merged


def test_the_merge_counts_what_one_process_would() -> None:
    outcomes = [Outcome.SUCCESS] * 40 + [Outcome.FAULT, Outcome.SUCCESS] * 20 + [Outcome.FAULT] * 9
    one, merged = spread(outcomes)
    a, b = one.provider("openai"), merged.provider("openai")
    assert (b.requests, b.faults, b.successes) == (a.requests, a.faults, a.successes)
    assert b.error_rate == pytest.approx(a.error_rate)
    assert b.errors_by_type == a.errors_by_type
    for span in (1.0, 3.0, 5.0, 10.0):
        got = b.counts_since(span, bucket_seconds=1.0)
        want = a.counts_since(span, bucket_seconds=1.0)
        assert abs(got[0] - want[0]) <= 10  # a bucket's worth: replicas' buckets are not aligned
    assert merged.models[("openai", "gpt-x")].requests == a.requests


def test_decide_trips_on_the_merge_as_on_one_process() -> None:
    cfg = TripwireConfig(min_requests=20, error_rate_threshold=0.5, consecutive_failures=1000)
    outcomes = [Outcome.SUCCESS] * 10 + [Outcome.FAULT] * 15
    one, merged = spread(outcomes)
    now = WALL0 + 100
    state = RoutingState()
    single = decide(state, one, now, cfg, TIERS)
    fleet = decide(state, merged, now, cfg, TIERS)
    assert single.providers["openai"].state is HealthState.TRIPPED
    assert fleet.providers["openai"].state is HealthState.TRIPPED
    assert [t.requests for t in fleet.transitions] == [t.requests for t in single.transitions]


def test_no_replica_alone_has_the_volume_the_fleet_trips_on() -> None:
    """The reason for the merge: with min_requests above any replica's share, only the
    aggregate trips."""
    cfg = TripwireConfig(min_requests=20, error_rate_threshold=0.5, consecutive_failures=1000)
    clock = FakeClock(start=10.0, wall_start=WALL0)
    alone = windows(clock)
    for _ in range(9):
        alone.on_attempt(attempt(Outcome.FAULT))
    decision = decide(RoutingState(), alone.snapshot(), WALL0 + 100, cfg, TIERS)
    assert "openai" not in decision.providers or decision.providers["openai"].state is (
        HealthState.HEALTHY
    )


def test_a_run_of_faults_counts_fleet_wide_unless_a_success_came_after_it() -> None:
    one, merged = spread([Outcome.SUCCESS] * 10 + [Outcome.FAULT] * 12)
    assert merged.provider("openai").consecutive_failures == 12
    assert one.provider("openai").consecutive_failures == 12
    _, merged = spread([Outcome.FAULT] * 12 + [Outcome.SUCCESS] * 30)
    assert merged.provider("openai").consecutive_failures == 0


def test_a_document_older_than_the_window_adds_nothing() -> None:
    clock = FakeClock(start=10.0, wall_start=WALL0)
    old = windows(clock)
    for _ in range(50):
        old.on_attempt(attempt(Outcome.FAULT))
    doc = decode_doc(encode_doc(old.snapshot(), replica="r", at=WALL0, role="f", version=1))
    assert doc is not None
    local = windows(FakeClock(start=10.0, wall_start=WALL0))
    merged = fleet_snapshot(local.snapshot(), [doc], now_wall=WALL0 + 31)
    assert merged.provider("openai").requests == 0


def test_an_unreadable_document_is_refused() -> None:
    assert decode_doc(b"{}") is None
    assert decode_doc(b"not json") is None
    assert decode_doc(b'{"schema": 1, "w": 30}') is None


def test_converge_keeps_what_is_furthest_out_of_rotation() -> None:
    healthy = ProviderStatus()
    tripped = ProviderStatus(state=HealthState.TRIPPED, since=5.0, trip_count=1, traffic_share=0.0)
    recovering = ProviderStatus(state=HealthState.RECOVERING, since=9.0, traffic_share=0.5)
    table = converge(
        {"openai": healthy, "anthropic": recovering},
        [{"openai": tripped}, {"anthropic": healthy, "gemini": recovering}],
    )
    assert table == {"openai": tripped, "anthropic": recovering, "gemini": recovering}


def test_fleet_config_refuses_a_lease_shorter_than_two_pushes() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        FleetConfig(lease_seconds=0.5, push_seconds=0.3)
    assert FleetConfig().renew_seconds == pytest.approx(2.0 / 3)


def test_the_environment_chooses_the_state_backend_over_the_file() -> None:
    assert state_backend("file", {}) == "file"
    assert state_backend("file", {"FAILOVER_STATE_BACKEND": "redis"}) == "redis"
    assert state_backend("redis", {"FAILOVER_STATE_BACKEND": " "}) == "redis"
    with pytest.raises(ConfigError, match="FAILOVER_STATE_BACKEND"):
        state_backend("file", {"FAILOVER_STATE_BACKEND": "etcd"})


def test_a_redis_url_is_required_and_never_repeated() -> None:
    secret = "redis://:hunter2@10.0.0.1:6379/0"
    with pytest.raises(ConfigError, match="FAILOVER_REDIS_URL is not set"):
        RedisLink(FleetConfig(), {})
    with pytest.raises(ConfigError) as caught:
        RedisLink(FleetConfig(), {"FAILOVER_REDIS_URL": secret.replace("redis", "http", 1)})
    assert "hunter2" not in str(caught.value)
