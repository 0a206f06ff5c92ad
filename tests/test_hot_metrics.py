"""The in-place histograms (controller.telemetry._hot) export exactly what the SDK's would."""

from __future__ import annotations

import dataclasses
import math
import threading

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from controller.events import AttemptEvent, Outcome
from controller.model import Usage
from controller.telemetry import names
from controller.telemetry._hot import CARDINALITY_LIMIT, HotHistogram, HotMetrics
from controller.telemetry.setup import Telemetry, setup_telemetry
from tests.telemetry_support import attempt

EVENT = attempt(provider="primary", start=0.0, end=0.25)  # the shared event, 0.25 s long
HISTOGRAMS = {
    names.PROM_OPERATION_DURATION,
    names.PROM_TOKEN_USAGE,
    names.PROM_TIME_TO_FIRST_CHUNK,
}


def varied_events() -> list[AttemptEvent]:
    """Durations on and between bucket bounds, faults, streams, other providers and models."""
    events = []
    durations = [0.0, *names.DURATION_BUCKETS[:6], 0.0123, 0.7, 3.3, 1e6]
    for i, duration in enumerate(durations):
        events.append(dataclasses.replace(EVENT, end=duration, request_id=f"r{i}"))
    events.append(
        dataclasses.replace(
            EVENT, outcome=Outcome.FAULT, error_type="overloaded", usage=None, response_model=None
        )
    )
    events.append(dataclasses.replace(EVENT, provider="backup", provider_kind="anthropic"))
    events.append(
        dataclasses.replace(EVENT, stream=True, time_to_first_chunk=0.04, usage=Usage(5, 7))
    )
    events.append(dataclasses.replace(EVENT, usage=Usage(input_tokens=0, output_tokens=4096)))
    return events


def histogram_samples(telemetry: Telemetry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    telemetry.listener.flush()
    text = telemetry.render_prometheus().decode()
    found = [
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        if family.name in HISTOGRAMS
        for sample in family.samples
        if not sample.name.endswith("_created")  # creation times differ between the two
    ]
    return sorted(found)


def test_in_place_histograms_export_what_the_sdk_would() -> None:
    hot = setup_telemetry(env={})  # the gateway's default: histograms aggregated in place
    sdk = setup_telemetry(env={}, metric_readers=[InMemoryMetricReader()])  # the SDK's own
    for event in varied_events():
        hot.listener.on_attempt(event)
        sdk.listener.on_attempt(event)
    expected = histogram_samples(sdk)
    assert {name for name, _, _ in expected} >= {
        f"{names.PROM_OPERATION_DURATION}_bucket",
        f"{names.PROM_TOKEN_USAGE}_count",
        f"{names.PROM_TIME_TO_FIRST_CHUNK}_sum",
    }
    assert histogram_samples(hot) == expected
    hot.shutdown()
    sdk.shutdown()


def test_a_value_on_a_bound_counts_in_the_lower_bucket_and_bad_values_are_ignored() -> None:
    histogram = HotHistogram("h", unit="s", description="", boundaries=(1.0, 2.0))
    attributes = {"a": "x"}
    for value in (1.0, 1.5, 2.0, 2.5, -1.0, math.nan, math.inf):
        histogram.record(value, attributes)
    attributes["a"] = "changed after the fact"  # the series keeps its own copy
    metric = histogram.collect(now_ns=5)
    assert metric is not None
    assert (metric.name, metric.unit) == ("h", "s")
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert point.attributes == {"a": "x"}
    assert list(point.bucket_counts) == [1, 2, 1]
    assert (point.count, point.sum, point.min, point.max) == (4, 7.0, 1.0, 2.5)
    assert point.time_unix_nano == 5


def test_an_unused_instrument_adds_nothing_and_an_empty_collection_gets_a_resource() -> None:
    hot = HotMetrics(resource=Resource.create({"service.name": "t"}), scope="controller")
    histogram = hot.histogram("h", unit="s", description="d", boundaries=(1.0,))
    assert hot.merge_into(None) is None
    histogram.record(0.5, {"k": "v"})
    merged = hot.merge_into(None)
    assert merged is not None
    (resource,) = merged.resource_metrics
    assert resource.resource.attributes["service.name"] == "t"
    (scope,) = resource.scope_metrics
    assert scope.scope.name == "controller"
    assert [m.name for m in scope.metrics] == ["h"]


def test_collecting_on_another_thread_never_sees_a_half_recorded_value() -> None:
    histogram = HotHistogram("h", unit="s", description="", boundaries=(0.1, 0.2, 0.5))
    stop = threading.Event()
    torn: list[tuple[int, int]] = []
    snapshots = 0

    def collect() -> None:
        nonlocal snapshots
        while not stop.is_set():
            metric = histogram.collect(now_ns=1)
            for point in metric.data.data_points if metric is not None else ():
                assert isinstance(point, HistogramDataPoint)
                if sum(point.bucket_counts) != point.count:
                    torn.append((sum(point.bucket_counts), point.count))
            snapshots += 1

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    for i in range(20_000):
        histogram.record((i % 7) / 10, {"k": "v"})
    stop.set()
    collector.join(timeout=10)
    assert not collector.is_alive()
    assert snapshots > 0
    assert torn == []
    final = histogram.collect(now_ns=2)
    assert final is not None
    (point,) = final.data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 20_000


def test_attribute_sets_past_the_limit_fold_into_one_overflow_series() -> None:
    histogram = HotHistogram("h", unit="s", description="", boundaries=(1.0,))
    for i in range(CARDINALITY_LIMIT + 100):
        histogram.record(0.5, {"model": f"m{i}"})
    metric = histogram.collect(now_ns=1)
    assert metric is not None
    points = [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)]
    assert len(points) == CARDINALITY_LIMIT
    (overflow,) = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
    assert overflow.count == 101  # the series that did not fit, all counted
    assert sum(p.count for p in points) == CARDINALITY_LIMIT + 100
