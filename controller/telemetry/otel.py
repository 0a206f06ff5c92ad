"""The router's events as OpenTelemetry spans and metrics.

:class:`TelemetryListener` is one of the router's listeners (``controller.events.Listener``). It
is handed a tracer and a meter rather than reaching for the global providers, so several
gateways (or tests) in one process never see each other's data. Export (OTLP, Prometheus) is
set up separately in :mod:`controller.telemetry.setup`.

The listener sits on the request path, so it only enqueues (about a microsecond). The real
work (the SDK's attribute checks, span creation, histogram updates; tens of microseconds per
event) runs in a drain the event loop schedules with ``call_soon``, i.e. once the request's
coroutine has yielded, typically after the response bytes were written, in an empty context
(not the one of the request that happened to schedule it). Without a running loop
(scripts, sync tests) events are processed at once. The queue is bounded: a loop too busy to
drain it drops the oldest events and counts them (``dropped_events``). ``flush()`` drains now.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Protocol

from opentelemetry.metrics import Meter
from opentelemetry.trace import NoOpTracer, Tracer

from controller.events import AttemptEvent, RouteEvent
from controller.telemetry._hot import HotMetrics
from controller.telemetry._metrics import (
    METRIC_UNITS,
    AttemptAttributes,
    AttributeCache,
    DataPlaneMetrics,
    failure_type,
)
from controller.telemetry._spans import PresetIdGenerator, SdkSpans


class SpanSink(Protocol):
    """Where the drain sends spans: the SDK's tracer (:class:`SdkSpans`) or the light OTLP
    path (:class:`controller.telemetry._pipeline.OtlpSpans`)."""

    def attempt(
        self, event: AttemptEvent, attrs: AttemptAttributes, error_type: str | None
    ) -> None: ...

    def route(self, event: RouteEvent) -> None: ...

    def ended(self, span: object) -> None: ...


__all__ = ["METRIC_UNITS", "PresetIdGenerator", "SpanSink", "TelemetryListener"]

log = logging.getLogger(__name__)
_BATCH = 256  # events per drain step: bounded, so a backlog never holds the loop for long
_QUEUE = 16_384


class TelemetryListener:
    """A :class:`controller.events.Listener` that records spans and metrics for every event.

    ``capture_content`` opts in to recording prompt and completion text on the attempt spans
    (``gen_ai.input.messages`` / ``gen_ai.output.messages``) when the router put it on the
    event; it is off by default because that content is the user's data. ``hot`` aggregates the
    histograms in place (see :mod:`controller.telemetry._hot`). With a
    :class:`~opentelemetry.trace.NoOpTracer` (nothing would keep the spans) no span is built.
    ``spans`` replaces the SDK span path (the light OTLP path of
    :mod:`controller.telemetry.setup`). Spans that end elsewhere (the gateway's SERVER span)
    come in through :meth:`on_span_end` and are handed to the sink in the drain, after the
    events queued before them.
    """

    __slots__ = (
        "_attributes",
        "_drops",
        "_metrics",
        "_pending",
        "_processing",
        "_scheduled",
        "_spans",
    )

    def __init__(
        self,
        *,
        tracer: Tracer,
        meter: Meter,
        capture_content: bool = False,
        ids: PresetIdGenerator | None = None,
        hot: HotMetrics | None = None,
        spans: SpanSink | None = None,
    ) -> None:
        if spans is None and not isinstance(tracer, NoOpTracer):
            spans = SdkSpans(tracer=tracer, ids=ids, capture_content=capture_content)
        self._spans = spans
        self._processing = False
        self._metrics = DataPlaneMetrics(meter=meter, hot=hot)
        self._attributes = AttributeCache()
        self._pending: deque[object] = deque()
        self._scheduled = False
        self._drops = 0

    @property
    def dropped_events(self) -> int:
        return self._drops

    def on_attempt(self, event: AttemptEvent) -> None:
        self._enqueue(event)

    def on_route(self, event: RouteEvent) -> None:
        self._enqueue(event)

    def on_span_end(self, span: object) -> None:
        """A span that ended: to the sink in queue order (at once when the drain made it)."""
        if self._processing:
            if self._spans is not None:
                self._spans.ended(span)
        else:
            self._enqueue(span)

    def flush(self) -> None:
        """Process every queued event now."""
        while self._pending:
            self._process(self._pending.popleft())

    def _enqueue(self, event: object) -> None:
        if len(self._pending) >= _QUEUE:
            self._pending.popleft()
            self._drops += 1
        self._pending.append(event)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self._drain, loop, context=contextvars.Context())

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending
        for _ in range(min(_BATCH, len(pending))):
            self._process(pending.popleft())
        if not pending:
            self._scheduled = False
        elif loop.is_closed():  # nothing will run the next step: finish here
            self._scheduled = False
            self.flush()
        else:
            loop.call_soon(self._drain, loop, context=contextvars.Context())

    def _process(self, event: object) -> None:
        self._processing = True
        try:
            if isinstance(event, AttemptEvent):
                error_type = failure_type(event)
                attrs = self._attributes.of(event, error_type)
                if self._spans is not None:
                    self._spans.attempt(event, attrs, error_type)
                self._metrics.record_attempt(event, attrs)
            elif isinstance(event, RouteEvent):
                if self._spans is not None:
                    self._spans.route(event)
                self._metrics.record_route(event)
            elif self._spans is not None:
                self._spans.ended(event)
        except Exception:  # telemetry must never take the process down
            log.exception("could not record telemetry for %s", type(event).__name__)
        finally:
            self._processing = False
