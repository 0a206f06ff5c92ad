"""Telemetry: the Prometheus text — the names and labels dashboards use, buckets, isolation.

Everything is read back from the Prometheus text the gateway would serve, rendered by real
Telemetry objects from setup_telemetry: data-plane and control-plane names, bucket bounds, the
content type, one Telemetry's metrics never leaking into another's, and the global OTel
providers left alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller.events import AttemptReason, RouteOutcome
from controller.telemetry import names
from controller.telemetry.otel import METRIC_UNITS, TelemetryListener
from controller.telemetry.setup import PROMETHEUS_CONTENT_TYPE, Telemetry, setup_telemetry
from tests.telemetry_support import BASE, FAILED, attempt, route, samples


# --- Prometheus ---------------------------------------------------------------------------------
def labels_of(rendered: bytes, sample_name: str) -> set[str]:
    found = [labels for name, labels, _ in samples(rendered) if name == sample_name]
    assert found, f"{sample_name} missing from /metrics"
    return set().union(*found)


def feed_everything(listener: TelemetryListener) -> None:
    listener.on_attempt(attempt(stream=True, time_to_first_chunk=0.2))
    listener.on_attempt(FAILED)
    listener.on_attempt(
        attempt(reason=AttemptReason.FAILOVER, failover_from="x", failover_cause="timeout")
    )
    listener.on_route(route(outcome=RouteOutcome.FAILED, served_by=None))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = setup_telemetry(env={})
    yield t
    t.shutdown(timeout=2)


def test_prometheus_exposes_the_data_plane_names_dashboards_use(telemetry: Telemetry) -> None:
    feed_everything(telemetry.listener)
    rendered = telemetry.render_prometheus()

    for histogram in (
        names.PROM_OPERATION_DURATION,
        names.PROM_TOKEN_USAGE,
        names.PROM_TIME_TO_FIRST_CHUNK,
    ):
        for suffix in ("_bucket", "_sum", "_count"):
            assert labels_of(rendered, histogram + suffix) >= {"gen_ai_provider_name"}
    assert labels_of(rendered, names.PROM_OPERATION_DURATION + "_bucket") >= {
        "error_type",
        "le",
        "gen_ai_request_model",
        "failover_provider",
        "failover_tier",
    }
    assert "gen_ai_token_type" in labels_of(rendered, names.PROM_TOKEN_USAGE + "_bucket")
    assert labels_of(rendered, names.PROM_REQUESTS) == {"tier", "outcome", "served_by", "front"}
    assert labels_of(rendered, names.PROM_FAILOVERS) == {"from", "to", "reason"}
    assert labels_of(rendered, names.PROM_TELEMETRY_DROPPED) == {"signal"}


def test_prometheus_bucket_bounds_and_values(telemetry: Telemetry) -> None:
    telemetry.listener.on_attempt(BASE)
    rendered = samples(telemetry.render_prometheus())

    buckets = {
        labels["le"]: value
        for name, labels, value in rendered
        if name == names.PROM_OPERATION_DURATION + "_bucket"
    }
    assert [float(le) for le in buckets if le != "+Inf"] == list(names.DURATION_BUCKETS)
    assert (buckets["0.64"], buckets["1.28"], buckets["+Inf"]) == (0, 1, 1)
    dropped = {
        labels["signal"]: value
        for name, labels, value in rendered
        if name == names.PROM_TELEMETRY_DROPPED
    }
    assert dropped == {"spans": 0.0, "metrics": 0.0, "events": 0.0}


def test_control_plane_units_give_the_documented_prometheus_names(telemetry: Telemetry) -> None:
    meter = telemetry.meter
    gauges = {
        names.METRIC_PROVIDER_STATE: names.PROM_PROVIDER_STATE,
        names.METRIC_PROVIDER_ERROR_RATE: names.PROM_PROVIDER_ERROR_RATE,
        names.METRIC_PROVIDER_WAITING: names.PROM_PROVIDER_WAITING,
        names.METRIC_STALL_LIMIT: names.PROM_STALL_LIMIT,
        names.METRIC_TRIPWIRE_THRESHOLD: names.PROM_TRIPWIRE_THRESHOLD,
        names.METRIC_KILL_SWITCH_ACTIVE: names.PROM_KILL_SWITCH_ACTIVE,
        names.METRIC_STATE_VERSION: names.PROM_STATE_VERSION,
        names.METRIC_CONTROLLER_LAST_TICK: names.PROM_CONTROLLER_LAST_TICK,
    }
    for metric in gauges:
        meter.create_gauge(metric, unit=METRIC_UNITS[metric]).set(1, {"provider": "p"})
    trips = meter.create_counter(names.METRIC_TRIPS, unit=METRIC_UNITS[names.METRIC_TRIPS])
    trips.add(1, {"provider": "p", "cause": "stalled"})
    alerts = meter.create_counter(names.METRIC_ALERTS, unit=METRIC_UNITS[names.METRIC_ALERTS])
    alerts.add(1, {"channel": "telegram", "event": "tripped", "result": "sent"})
    unit = METRIC_UNITS[names.METRIC_TOKEN_COUNTS]
    counts = meter.create_counter(names.METRIC_TOKEN_COUNTS, unit=unit)
    counts.add(1, {"tier": "t", "source": "estimate", "provider": ""})

    exposed = {name for name, _, _ in samples(telemetry.render_prometheus())}
    assert set(gauges.values()) <= exposed
    assert names.PROM_ALERTS in exposed
    assert names.PROM_TRIPS in exposed
    assert names.PROM_TOKEN_COUNTS in exposed


def test_prometheus_content_type_is_text_format_0_0_4(telemetry: Telemetry) -> None:
    assert telemetry.prometheus_content_type == PROMETHEUS_CONTENT_TYPE
    assert "version=0.0.4" in PROMETHEUS_CONTENT_TYPE


def test_two_telemetry_objects_render_only_their_own_metrics() -> None:
    first = setup_telemetry(service_name="gw-a", env={})
    second = setup_telemetry(service_name="gw-b", env={})
    try:
        first.listener.on_route(route(tier="only-in-a"))
        one, two = samples(first.render_prometheus()), samples(second.render_prometheus())
    finally:
        first.shutdown(timeout=2)
        second.shutdown(timeout=2)

    tiers_a = {lbl.get("tier") for name, lbl, _ in one if name == names.PROM_REQUESTS}
    assert tiers_a == {"only-in-a"}
    assert names.PROM_REQUESTS not in {name for name, _, _ in two}
    assert [s[1]["service_name"] for s in one if s[0] == "target_info"] == ["gw-a"]
    assert [s[1]["service_name"] for s in two if s[0] == "target_info"] == ["gw-b"]


def test_global_providers_are_left_alone(telemetry: Telemetry) -> None:
    assert not isinstance(otel_metrics.get_meter_provider(), MeterProvider)
    assert not isinstance(otel_trace.get_tracer_provider(), TracerProvider)


def test_without_a_span_exporter_no_span_is_built(telemetry: Telemetry) -> None:
    """Nothing would keep them: the tracer is the API's no-op one (the router still assigns
    trace ids of its own, which alerts quote; see test_router_telemetry)."""
    assert not telemetry.tracing
    assert isinstance(telemetry.tracer, otel_trace.NoOpTracer)
    with telemetry.tracer.start_as_current_span(names.SPAN_ROUTE) as span:
        assert not span.is_recording()
    assert telemetry.exporting == frozenset()
    assert setup_telemetry(
        env={}, span_processors=[SimpleSpanProcessor(InMemorySpanExporter())]
    ).tracing


def test_prometheus_can_be_turned_off() -> None:
    t = setup_telemetry(env={}, prometheus=False)
    t.listener.on_attempt(BASE)
    assert t.render_prometheus() == b""
    assert t.shutdown(timeout=2)


def test_in_process_readers_can_be_added() -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    t = setup_telemetry(
        env={}, span_processors=[SimpleSpanProcessor(spans)], metric_readers=[reader]
    )
    with t.tracer.start_as_current_span(names.SPAN_ROUTE) as route_span:
        ctx = route_span.get_span_context()
        t.listener.on_attempt(attempt(trace_id=ctx.trace_id, parent_span_id=ctx.span_id))
    assert [s.name for s in spans.get_finished_spans()] == ["chat gpt-4o", names.SPAN_ROUTE]
    data = reader.get_metrics_data()
    assert data is not None
    got = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {names.METRIC_OPERATION_DURATION, names.METRIC_TELEMETRY_DROPPED} <= got
    t.shutdown(timeout=2)
