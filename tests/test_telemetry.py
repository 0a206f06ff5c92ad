"""Telemetry: attempt spans, data-plane metrics, Prometheus names, OTLP export that never blocks.

Everything is read back from real backends: OTel's in-memory span exporter and metric reader,
the Prometheus text the gateway would serve, and real sockets on 127.0.0.1 (a closed port, a
black hole that accepts but never answers, and a tiny OTLP sink).
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from controller.events import (
    AttemptEvent,
    AttemptReason,
    Listener,
    Listeners,
    Outcome,
    RouteEvent,
    RouteOutcome,
)
from controller.model import Usage
from controller.telemetry import names
from controller.telemetry.otel import METRIC_UNITS, TelemetryListener
from controller.telemetry.setup import (
    PROMETHEUS_CONTENT_TYPE,
    Telemetry,
    otlp_endpoint,
    setup_telemetry,
)

WALL = 1_800_000_000.0
BASE = AttemptEvent(
    request_id="req-1",
    tier="frontier",
    provider="openai-primary",
    provider_kind="openai",
    model="gpt-4o",
    attempt=1,
    reason=AttemptReason.PRIMARY,
    stream=False,
    start=100.0,
    end=100.75,
    start_wall=WALL,
    outcome=Outcome.SUCCESS,
    response_model="gpt-4o-2024-08-06",
    usage=Usage(input_tokens=120, output_tokens=30),
    server_address="127.0.0.1",
    server_port=8443,
)
FAILED = dataclasses.replace(
    BASE,
    outcome=Outcome.FAULT,
    error_type="rate_limited",
    error_status=429,
    error_message="quota exceeded for key sk-live-SECRET123",
    response_model=None,
    usage=None,
)


def attempt(**changes: Any) -> AttemptEvent:
    return dataclasses.replace(BASE, **changes)


def route(**changes: Any) -> RouteEvent:
    event = RouteEvent(
        request_id="req-1",
        tier="frontier",
        outcome=RouteOutcome.SERVED,
        served_by="openai-primary",
        attempts=1,
        start=100.0,
        end=101.0,
        stream=False,
    )
    return dataclasses.replace(event, **changes)


# --- in-memory harness --------------------------------------------------------------------------
@dataclasses.dataclass
class Harness:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    listener: TelemetryListener

    def finished(self) -> Sequence[ReadableSpan]:
        return self.spans.get_finished_spans()

    def metric(self, name: str) -> Metric:
        data = self.reader.get_metrics_data()
        assert data is not None
        found = [
            m
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
        ]
        assert len(found) == 1, f"{name}: {found}"
        return found[0]

    def histogram(self, name: str) -> list[HistogramDataPoint]:
        points = list(self.metric(name).data.data_points)
        assert all(isinstance(p, HistogramDataPoint) for p in points)
        return [p for p in points if isinstance(p, HistogramDataPoint)]

    def counter(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        points = self.metric(name).data.data_points
        return {
            frozenset(p.attributes.items()): p.value
            for p in points
            if isinstance(p, NumberDataPoint) and p.attributes is not None
        }


def make_harness(*, capture_content: bool = False) -> Harness:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    listener = TelemetryListener(
        tracer=tracer_provider.get_tracer("test"), meter=meter, capture_content=capture_content
    )
    return Harness(spans, reader, tracer_provider, listener)


@pytest.fixture
def otel() -> Harness:
    return make_harness()


def only_span(h: Harness) -> ReadableSpan:
    spans = h.finished()
    assert len(spans) == 1
    return spans[0]


# --- spans --------------------------------------------------------------------------------------
def test_successful_attempt_is_one_client_span_with_genai_attributes(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)

    span = only_span(otel)
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        names.GEN_AI_REQUEST_STREAM: False,
        names.GEN_AI_USAGE_INPUT_TOKENS: 120,
        names.GEN_AI_USAGE_OUTPUT_TOKENS: 30,
        names.SERVER_ADDRESS: "127.0.0.1",
        names.SERVER_PORT: 8443,
        names.FAILOVER_PROVIDER: "openai-primary",
        names.FAILOVER_ATTEMPT: 1,
        names.FAILOVER_REASON: "primary",
        names.FAILOVER_TIER: "frontier",
    }


def test_span_times_come_from_the_event(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)

    span = only_span(otel)
    assert span.start_time == int(WALL * 1e9)
    assert span.end_time == int(WALL * 1e9) + 750_000_000


def test_streaming_attempt_records_time_to_first_chunk(otel: Harness) -> None:
    otel.listener.on_attempt(attempt(stream=True, time_to_first_chunk=0.25))

    attrs = only_span(otel).attributes or {}
    assert attrs[names.GEN_AI_REQUEST_STREAM] is True
    assert attrs[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.25


def test_failed_attempt_has_error_status_and_type_but_no_secret(otel: Harness) -> None:
    otel.listener.on_attempt(FAILED)

    span = only_span(otel)
    attrs = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "rate_limited (HTTP 429)"
    assert attrs[names.ERROR_TYPE] == "rate_limited"
    assert names.GEN_AI_RESPONSE_MODEL not in attrs
    assert names.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert "SECRET" not in repr(attrs) + str(span.status.description) + span.to_json()


def test_failure_without_error_type_falls_back_to_other(otel: Harness) -> None:
    otel.listener.on_attempt(attempt(outcome=Outcome.CANCELLED, usage=None))

    span = only_span(otel)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[names.ERROR_TYPE] == "_OTHER"


def test_failover_chain_is_children_of_the_route_span(otel: Harness) -> None:
    tracer = otel.tracer_provider.get_tracer("router")
    listeners = Listeners([otel.listener])
    with tracer.start_as_current_span(names.SPAN_ROUTE) as route_span:
        ctx = route_span.get_span_context()
        ids: dict[str, Any] = {"trace_id": ctx.trace_id, "parent_span_id": ctx.span_id}
        listeners.attempt(dataclasses.replace(FAILED, **ids))
        listeners.attempt(
            attempt(
                attempt=2,
                provider="anthropic-backup",
                provider_kind="anthropic",
                model="claude-sonnet",
                reason=AttemptReason.FAILOVER,
                failover_from="openai-primary",
                failover_cause="rate_limited",
                **ids,
            )
        )

    first, second, parent = otel.finished()
    assert parent.name == names.SPAN_ROUTE
    assert [first.name, second.name] == ["chat gpt-4o", "chat claude-sonnet"]
    for child in (first, second):
        assert child.parent is not None
        assert child.parent.span_id == ctx.span_id
        assert child.context is not None
        assert child.context.trace_id == ctx.trace_id
    assert (second.attributes or {})[names.FAILOVER_REASON] == "failover"
    assert (second.attributes or {})[names.FAILOVER_ATTEMPT] == 2
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


def test_no_parent_when_tracing_was_off_even_inside_another_span(otel: Harness) -> None:
    with otel.tracer_provider.get_tracer("x").start_as_current_span("unrelated") as outer:
        otel.listener.on_attempt(BASE)
    attempt_span = otel.finished()[0]
    assert attempt_span.parent is None
    assert attempt_span.context is not None
    assert attempt_span.context.trace_id != outer.get_span_context().trace_id


def test_content_is_not_recorded_unless_opted_in() -> None:
    event = attempt(input_messages='[{"role":"user"}]', output_messages='[{"role":"assistant"}]')
    default, opted_in = make_harness(), make_harness(capture_content=True)

    default.listener.on_attempt(event)
    opted_in.listener.on_attempt(event)
    opted_in.listener.on_attempt(BASE)  # opted in, but the event carries no content

    assert names.GEN_AI_INPUT_MESSAGES not in (only_span(default).attributes or {})
    assert names.GEN_AI_OUTPUT_MESSAGES not in (only_span(default).attributes or {})
    with_content, without = opted_in.finished()
    assert (with_content.attributes or {})[names.GEN_AI_INPUT_MESSAGES] == '[{"role":"user"}]'
    assert (with_content.attributes or {})[names.GEN_AI_OUTPUT_MESSAGES] == (
        '[{"role":"assistant"}]'
    )
    assert names.GEN_AI_INPUT_MESSAGES not in (without.attributes or {})


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
    otel.listener.on_route(route())
    otel.listener.on_route(route(outcome=RouteOutcome.FAILED, served_by=None, tier="fast"))

    assert otel.counter(names.METRIC_REQUESTS) == {
        frozenset(
            {("tier", "frontier"), ("outcome", "served"), ("served_by", "openai-primary")}
        ): 2,
        frozenset({("tier", "fast"), ("outcome", "failed"), ("served_by", "none")}): 1,
    }


def test_listener_satisfies_the_listener_protocol(otel: Harness) -> None:
    listener: Listener = otel.listener
    listener.on_route(route(outcome=RouteOutcome.DEGRADED))
    assert sum(otel.counter(names.METRIC_REQUESTS).values()) == 1


def test_every_metric_name_has_a_unit() -> None:
    metric_names = {v for k, v in vars(names).items() if k.startswith("METRIC_")}
    assert set(METRIC_UNITS) == metric_names


# --- Prometheus ---------------------------------------------------------------------------------
def samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    ]


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
    assert labels_of(rendered, names.PROM_REQUESTS) == {"tier", "outcome", "served_by"}
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
        names.METRIC_TRIPWIRE_THRESHOLD: names.PROM_TRIPWIRE_THRESHOLD,
        names.METRIC_KILL_SWITCH_ACTIVE: names.PROM_KILL_SWITCH_ACTIVE,
        names.METRIC_STATE_VERSION: names.PROM_STATE_VERSION,
        names.METRIC_CONTROLLER_LAST_TICK: names.PROM_CONTROLLER_LAST_TICK,
    }
    for metric in gauges:
        meter.create_gauge(metric, unit=METRIC_UNITS[metric]).set(1, {"provider": "p"})
    alerts = meter.create_counter(names.METRIC_ALERTS, unit=METRIC_UNITS[names.METRIC_ALERTS])
    alerts.add(1, {"channel": "telegram", "event": "tripped", "result": "sent"})

    exposed = {name for name, _, _ in samples(telemetry.render_prometheus())}
    assert set(gauges.values()) <= exposed
    assert names.PROM_ALERTS in exposed


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


# --- OTLP configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, None, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"},
            "http://127.0.0.1:4318/v1/traces",
            "http://127.0.0.1:4318/v1/metrics",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/t"},
            "http://127.0.0.1:9/t",
            None,
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/m",
                "OTEL_TRACES_EXPORTER": "none",
            },
            None,
            "http://127.0.0.1:9/m",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"},
            None,
            None,
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None, None),
    ],
)
def test_otlp_endpoints_follow_the_standard_variables(
    env: dict[str, str], traces: str | None, metrics: str | None
) -> None:
    assert otlp_endpoint(env, signal="traces") == traces
    assert otlp_endpoint(env, signal="metrics") == metrics


# --- OTLP against real sockets ------------------------------------------------------------------
N_EVENTS = 200
TIMEOUT = 1.0  # export timeout used in these tests (the default is 2 s)


def per_event_seconds(listener: TelemetryListener, n: int = N_EVENTS) -> float:
    """Median wall time of one on_attempt call (medians shrug off a scheduler hiccup)."""
    times = []
    for i in range(n):
        event = attempt(attempt=i + 1, trace_id=i + 1, parent_span_id=i + 1)
        t0 = time.perf_counter()
        listener.on_attempt(event)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A socket that listens (connections complete in the kernel) but never accepts or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server
    server.close()


def otlp_env(port: int, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **extra}


def dropped_in_prometheus(t: Telemetry) -> dict[str, float]:
    return {
        labels["signal"]: value
        for name, labels, value in samples(t.render_prometheus())
        if name == names.PROM_TELEMETRY_DROPPED
    }


def test_closed_collector_port_costs_nothing_per_call_and_counts_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    baseline = setup_telemetry(env={})
    dead = setup_telemetry(env=otlp_env(closed_port()), export_timeout=TIMEOUT)
    try:
        base_cost = per_event_seconds(baseline.listener)
        dead_cost = per_event_seconds(dead.listener)
        assert dead.exporting == {"traces", "metrics"}
        assert dead_cost < 5e-3, (dead_cost, base_cost)

        assert dead.force_flush(timeout=10)
        assert dead.dropped["spans"] == N_EVENTS
        assert dead.dropped["metrics"] > 0
        dead.listener.on_attempt(BASE)
        assert dead.force_flush(timeout=10)  # a second failure in the same burst
        assert dead.dropped["spans"] == N_EVENTS + 1
        exposed = dropped_in_prometheus(dead)
        assert exposed["spans"] == N_EVENTS + 1
        assert exposed["metrics"] == dead.dropped["metrics"]
    finally:
        baseline.shutdown(timeout=2)
        t0 = time.monotonic()
        dead.shutdown(timeout=3)
        assert time.monotonic() - t0 < 4.5

    ours = [r for r in caplog.records if r.name.startswith("controller.")]
    burst_starts = [r for r in ours if "spans are being dropped" in r.getMessage()]
    assert len(burst_starts) == 1


def test_black_hole_collector_never_blocks_calls_and_shutdown_is_bounded(
    black_hole: socket.socket,
) -> None:
    port = black_hole.getsockname()[1]
    baseline = setup_telemetry(env={})
    dead = setup_telemetry(env=otlp_env(port), export_timeout=TIMEOUT)
    base_cost = per_event_seconds(baseline.listener)
    baseline.shutdown(timeout=2)
    per_event_seconds(dead.listener)

    flusher = threading.Thread(target=dead.force_flush, kwargs={"timeout": 10})
    flusher.start()
    readable, _, _ = select.select([black_hole], [], [], 5.0)
    assert readable, "the exporter never connected to the black hole"
    busy_cost = per_event_seconds(dead.listener)  # an export hangs in the black hole meanwhile
    assert busy_cost < 5e-3, (busy_cost, base_cost)
    flusher.join(timeout=10)
    assert not flusher.is_alive()
    assert dead.dropped["spans"] >= N_EVENTS
    assert dropped_in_prometheus(dead)["spans"] >= N_EVENTS

    per_event_seconds(dead.listener)  # leave work queued for shutdown
    t0 = time.monotonic()
    dead.shutdown(timeout=2)
    assert time.monotonic() - t0 < 3.5


def test_full_span_queue_drops_are_counted_without_waiting(black_hole: socket.socket) -> None:
    env = otlp_env(black_hole.getsockname()[1], OTEL_BSP_MAX_QUEUE_SIZE="10")
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    try:
        cost = per_event_seconds(t.listener)
        # at most one batch of 10 is in flight and 10 wait in the queue: the rest are lost now
        assert t.dropped["spans"] >= N_EVENTS - 20
        assert cost < 5e-3
    finally:
        t.shutdown(timeout=2)


def test_secrets_in_endpoint_and_headers_never_reach_logs_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:tok3n@127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t",
    }
    caplog.set_level(logging.DEBUG)
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    t.listener.on_attempt(BASE)
    t.force_flush(timeout=10)
    t.shutdown(timeout=2)

    assert t.dropped["spans"] == 1
    text = caplog.text + repr(t)
    assert "tok3n" not in text
    assert "s3cr3t" not in text


# --- OTLP against a working sink ----------------------------------------------------------------
class _Sink(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.span_names: list[str] = []
        self.metric_posts = 0
        self.headers_seen: list[str] = []


class _SinkHandler(BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.headers_seen.append(self.headers.get("x-team", ""))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            self.server.span_names += [
                s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]
        elif self.path == "/v1/metrics":
            self.server.metric_posts += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def sink() -> Iterator[_Sink]:
    server = _Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_spans_and_metrics_reach_a_working_collector(sink: _Sink) -> None:
    port = sink.server_address[1]
    env = otlp_env(port, OTEL_EXPORTER_OTLP_HEADERS="x-team=payments")
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    t.listener.on_attempt(BASE)
    t.listener.on_attempt(attempt(model="claude-sonnet"))

    assert t.force_flush(timeout=10)
    assert sorted(sink.span_names) == ["chat claude-sonnet", "chat gpt-4o"]
    assert sink.metric_posts >= 1
    assert set(sink.headers_seen) == {"payments"}
    assert t.dropped == {"spans": 0, "metrics": 0}
    assert t.shutdown(timeout=3)
