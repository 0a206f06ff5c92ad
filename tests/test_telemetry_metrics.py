"""Telemetry: data-plane metrics — duration and token histograms, failover and request counters.

Everything is read back from real backends: here OTel's in-memory metric reader behind a real
TelemetryListener (the harness in tests/telemetry_support.py): explicit bucket bounds, units
and the attributes each point carries.
"""

from __future__ import annotations

import pytest

from controller.events import AttemptReason, Listener, RouteOutcome
from controller.telemetry import names
from controller.telemetry.otel import METRIC_UNITS
from tests.telemetry_support import BASE, FAILED, Harness, attempt, route
from tests.telemetry_support import otel as otel  # a fixture: the alias re-exports it for pytest


# --- metrics ------------------------------------------------------------------------------------
def test_duration_histogram_has_explicit_buckets_unit_and_attributes(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)
    otel.listener.on_attempt(FAILED)

    metric = otel.metric(names.METRIC_OPERATION_DURATION)
    assert metric.unit == "s"
    by_error = {
        p.attributes.get(names.ERROR_TYPE) if p.attributes else None: p
        for p in otel.histogram(names.METRIC_OPERATION_DURATION)
    }
    assert set(by_error) == {None, "rate_limited"}
    ok = by_error[None]
    assert tuple(ok.explicit_bounds) == names.DURATION_BUCKETS
    assert ok.count == 1
    assert ok.sum == pytest.approx(0.75)
    assert dict(ok.attributes or {}) == {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        names.SERVER_ADDRESS: "127.0.0.1",
        names.SERVER_PORT: 8443,
        names.FAILOVER_PROVIDER: "openai-primary",
        names.FAILOVER_TIER: "frontier",
    }
    # 0.75 s falls in the (0.64, 1.28] bucket
    assert list(ok.bucket_counts).index(1) == names.DURATION_BUCKETS.index(1.28)


def test_token_usage_is_split_by_token_type(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)
    otel.listener.on_attempt(FAILED)  # no usage: nothing recorded

    assert otel.metric(names.METRIC_TOKEN_USAGE).unit == "{token}"
    points = otel.histogram(names.METRIC_TOKEN_USAGE)
    by_type = {(p.attributes or {})[names.GEN_AI_TOKEN_TYPE]: p for p in points}
    assert set(by_type) == {"input", "output"}
    assert (by_type["input"].sum, by_type["input"].count) == (120, 1)
    assert (by_type["output"].sum, by_type["output"].count) == (30, 1)
    assert tuple(by_type["input"].explicit_bounds) == names.TOKEN_BUCKETS
    assert (by_type["input"].attributes or {})[names.GEN_AI_PROVIDER_NAME] == "openai"


def test_time_to_first_chunk_only_for_streams_that_got_one(otel: Harness) -> None:
    otel.listener.on_attempt(attempt(stream=True, time_to_first_chunk=0.3))
    otel.listener.on_attempt(attempt(stream=True, time_to_first_chunk=None))
    otel.listener.on_attempt(attempt(stream=False, time_to_first_chunk=0.9))

    (point,) = otel.histogram(names.METRIC_TIME_TO_FIRST_CHUNK)
    assert point.count == 1
    assert point.sum == pytest.approx(0.3)
    assert tuple(point.explicit_bounds) == names.DURATION_BUCKETS


def test_failovers_counter_counts_failover_and_context_fallback_only(otel: Harness) -> None:
    moved = {"failover_from": "openai-primary", "failover_cause": "rate_limited"}
    otel.listener.on_attempt(attempt(reason=AttemptReason.PRIMARY))
    otel.listener.on_attempt(attempt(reason=AttemptReason.RETRY, **moved))
    otel.listener.on_attempt(attempt(reason=AttemptReason.FAILOVER, provider="b", **moved))
    otel.listener.on_attempt(attempt(reason=AttemptReason.FAILOVER, provider="b", **moved))
    otel.listener.on_attempt(
        attempt(
            reason=AttemptReason.CONTEXT_FALLBACK,
            provider="c",
            failover_from="b",
            failover_cause="context_too_long",
        )
    )

    assert otel.counter(names.METRIC_FAILOVERS) == {
        frozenset({("from", "openai-primary"), ("to", "b"), ("reason", "rate_limited")}): 2,
        frozenset({("from", "b"), ("to", "c"), ("reason", "context_too_long")}): 1,
    }


def test_requests_counter_by_tier_outcome_and_server(otel: Harness) -> None:
    otel.listener.on_route(route())
    otel.listener.on_route(route(front="anthropic"))
    otel.listener.on_route(route(outcome=RouteOutcome.FAILED, served_by=None, tier="fast"))
    served = {("tier", "frontier"), ("outcome", "served"), ("served_by", "openai-primary")}
    assert otel.counter(names.METRIC_REQUESTS) == {
        frozenset({*served, ("front", "none")}): 1,  # a request made in code
        frozenset({*served, ("front", "anthropic")}): 1,
        frozenset(
            {("tier", "fast"), ("outcome", "failed"), ("served_by", "none"), ("front", "none")}
        ): 1,
    }


def test_degraded_answers_are_counted_by_rung(otel: Harness) -> None:
    otel.listener.on_route(
        route(outcome=RouteOutcome.DEGRADED, served_by="cache", degraded="cache")
    )
    otel.listener.on_route(route(outcome=RouteOutcome.DEGRADED))  # after a failover: no rung
    assert otel.counter(names.METRIC_DEGRADED) == {
        frozenset({("tier", "frontier"), ("rung", "cache")}): 1
    }


def test_listener_satisfies_the_listener_protocol(otel: Harness) -> None:
    listener: Listener = otel.listener
    listener.on_route(route(outcome=RouteOutcome.DEGRADED))
    assert sum(otel.counter(names.METRIC_REQUESTS).values()) == 1


def test_every_metric_name_has_a_unit() -> None:
    metric_names = {v for k, v in vars(names).items() if k.startswith("METRIC_")}
    assert set(METRIC_UNITS) == metric_names
