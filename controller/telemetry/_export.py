"""What is lost on the way to the OTLP collector is counted, never raised.

The OTLP exporters are wrapped: a failed or abandoned export is tallied per signal (the
``failover.telemetry.dropped{signal}`` counter and the "telemetry is being dropped" alert watch
it), spans pushed out of a full batch queue are counted too, and a failure is logged once per
burst rather than once per batch. The in-place histograms of :mod:`controller.telemetry._hot`
join each metric export here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from controller.telemetry import names
from controller.telemetry._hot import HotMetrics

__all__ = [
    "Backlog",
    "CountingBatchSpanProcessor",
    "CountingMetricExporter",
    "CountingSpanExporter",
    "DropTally",
    "Gate",
    "count_points",
]

log = logging.getLogger(__name__)


class DropTally:
    """Items of one signal lost on the way to the collector; logs once per failure burst."""

    __slots__ = ("_failing", "_lock", "_lost_in_burst", "signal", "total")

    def __init__(self, *, signal: str) -> None:
        self.signal = signal
        self.total = 0
        self._failing = False
        self._lost_in_burst = 0
        self._lock = threading.Lock()

    def lost(self, count: int, cause: str) -> None:
        with self._lock:
            self.total += count
            self._lost_in_burst += count
            first = not self._failing
            self._failing = True
        if first:
            log.warning(
                "telemetry: %s are being dropped (%s; %d so far). Further losses are counted in"
                " %s and not logged until export recovers.",
                self.signal,
                cause,
                count,
                names.METRIC_TELEMETRY_DROPPED,
            )

    def delivered(self) -> None:
        with self._lock:
            if not self._failing:
                return
            lost, self._failing, self._lost_in_burst = self._lost_in_burst, False, 0
        log.warning("telemetry: %s export recovered after dropping %d", self.signal, lost)


class Backlog:
    """How many spans wait in the batch queue, to notice the ones the full queue pushes out."""

    __slots__ = ("_capacity", "_lock", "_pending")

    def __init__(self, *, capacity: int) -> None:
        self._capacity = capacity
        self._pending = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Count one span in; False when the queue is full and the oldest span will be lost."""
        with self._lock:
            if self._pending >= self._capacity:
                return False
            self._pending += 1
            return True

    def taken(self, count: int) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)


class Gate:
    """Closes a wrapped exporter at most once; once abandoned, exports fail fast."""

    __slots__ = ("_close", "_closed", "_lock", "abandoned")

    def __init__(self, close: Callable[[], object]) -> None:
        self._close = close
        self._closed = False
        self._lock = threading.Lock()
        self.abandoned = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close()  # interrupts the OTLP client's retry back-off and closes its session

    def abandon(self) -> None:
        self.abandoned = True
        self.close()


class CountingSpanExporter(SpanExporter):
    """Passes spans to the OTLP exporter; what fails to arrive is counted, never raised."""

    def __init__(self, inner: SpanExporter, *, tally: DropTally, backlog: Backlog) -> None:
        self._inner = inner
        self._tally = tally
        self._backlog = backlog
        self.gate = Gate(inner.shutdown)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._backlog.taken(len(spans))
        if self.gate.abandoned:
            self._tally.lost(len(spans), "shutdown deadline passed")
            return SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # an exporter bug costs telemetry, never a request
            self._tally.lost(len(spans), type(exc).__name__)
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._tally.delivered()
        else:
            self._tally.lost(len(spans), "export failed")
        return result

    def shutdown(self) -> None:
        self.gate.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that also counts the spans its full queue pushes out."""

    def __init__(
        self, exporter: CountingSpanExporter, *, tally: DropTally, backlog: Backlog, **kw: Any
    ) -> None:
        super().__init__(exporter, **kw)
        self._tally = tally
        self._backlog = backlog

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled and not self._backlog.admit():
            self._tally.lost(1, "span queue full")
        super().on_end(span)


class CountingMetricExporter(MetricExporter):
    """Passes metric batches to the OTLP exporter; lost data points are counted, never raised."""

    def __init__(self, inner: MetricExporter, *, tally: DropTally, hot: HotMetrics | None) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._tally = tally
        self._hot = hot
        self.gate = Gate(inner.shutdown)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            if self._hot is not None:
                metrics_data = self._hot.merge_into(metrics_data) or metrics_data
        except Exception:  # a bug there must cost the hot points only, never the export
            log.exception("telemetry: could not add the in-place histograms to an export")
        points = count_points(metrics_data)
        if self.gate.abandoned:
            self._tally.lost(points, "shutdown deadline passed")
            return MetricExportResult.FAILURE
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:  # an exporter bug costs telemetry, never a request
            self._tally.lost(points, type(exc).__name__)
            return MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self._tally.delivered()
        else:
            self._tally.lost(points, "export failed")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.gate.close()


def count_points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )
