"""Shared pieces of the telemetry tests: golden events, the in-memory OTel harness, /metrics.

The golden attempt and route events, the in-memory harness (OTel's span exporter and metric
reader behind a real TelemetryListener, with its ``otel`` fixture) and the parser for the
Prometheus text the gateway would serve. Not collected by pytest; the test_telemetry_* files
import from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
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
from prometheus_client.parser import text_string_to_metric_families

from controller.events import (
    AttemptEvent,
    AttemptReason,
    Outcome,
    RouteEvent,
    RouteOutcome,
)
from controller.model import Usage
from controller.telemetry.otel import TelemetryListener

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


# --- Prometheus text ----------------------------------------------------------------------------
def samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    ]


def gauge_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), float(p.value))  # type: ignore[union-attr]
                    for p in metric.data.data_points
                ]
    return points
