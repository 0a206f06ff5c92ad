"""Spans built after the fact from the router's events: one INTERNAL ``failover.route`` span per
routed request and one CLIENT span per provider attempt under it.

The router holds no live span: it assigns the route span's ids up front (so attempts and alerts
can name the trace at once) and reports frozen events; the spans are created retroactively with
the events' own times, off the request path. That keeps tracing out of the adapters and lets the
signal windows and the spans consume the same records. :class:`PresetIdGenerator` lets the route
span be created with exactly the ids the router chose.

A request or attempt cut because its client went away (or the shutdown cut it) keeps
``error.type=cancelled`` but no ERROR status: span-metrics error rates (a collector's spanmetrics
connector, a tracing backend's RED view) count ERROR spans, and client impatience is not an error
of the gateway's or the provider's. A route span is ERROR only when the route ``failed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from controller.events import AttemptEvent, RouteEvent, RouteOutcome
from controller.telemetry import names
from controller.telemetry._metrics import AttemptAttributes, Attributes

_ROOT = Context()  # an explicit empty context: "no parent", whatever span is current
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NS = 1_000_000_000
_CANCELLED = RouteOutcome.CANCELLED.value  # also the error.type of a cut request or attempt


class PresetIdGenerator(IdGenerator):
    """Random ids, except for the next span when its ids were chosen in advance."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._preset = threading.local()

    def preset(self, *, trace_id: int | None, span_id: int | None) -> None:
        self._preset.trace_id, self._preset.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        value: int | None = getattr(self._preset, "trace_id", None)
        self._preset.trace_id = None
        return value or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        value: int | None = getattr(self._preset, "span_id", None)
        self._preset.span_id = None
        return value or self._random.generate_span_id()


class RouteSpans:
    """Turns route events into INTERNAL ``failover.route`` spans with the router's ids."""

    __slots__ = ("_ids", "_tracer")

    def __init__(self, *, tracer: Tracer, ids: PresetIdGenerator | None) -> None:
        self._tracer = tracer
        self._ids = ids

    def emit(self, event: RouteEvent) -> None:
        parent = _context(event.trace_id, event.parent_span_id, event.sampled)
        if self._ids is not None:
            root = event.parent_span_id == 0
            self._ids.preset(trace_id=event.trace_id if root else None, span_id=event.span_id)
        attrs: Attributes = {
            names.FAILOVER_TIER: event.tier,
            names.FAILOVER_OUTCOME: event.outcome.value,
            names.FAILOVER_ATTEMPTS: event.attempts,
            names.FAILOVER_PANIC: event.panic,
            names.GEN_AI_REQUEST_STREAM: event.stream,
        }
        if event.served_by is not None:
            attrs[names.FAILOVER_SERVED_BY] = event.served_by
        if event.error_type is not None:
            attrs[names.ERROR_TYPE] = event.error_type
        if event.degraded:
            attrs[names.FAILOVER_DEGRADED] = event.degraded
        if event.front:
            attrs[names.FAILOVER_FRONT] = event.front
        if event.skipped:
            attrs[names.FAILOVER_SKIPPED] = event.skipped
        if event.dropped:
            attrs[names.FAILOVER_DROPPED] = event.dropped
        start_ns = int(event.start_wall * _NS)
        try:
            span = self._tracer.start_span(
                names.SPAN_ROUTE,
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attrs,
                start_time=start_ns,
                record_exception=False,
                set_status_on_exception=False,
            )
        finally:
            if self._ids is not None:
                self._ids.preset(trace_id=None, span_id=None)
        if event.outcome is RouteOutcome.FAILED:
            span.set_status(Status(StatusCode.ERROR, event.error_type))
        span.end(end_time=start_ns + int(max(event.end - event.start, 0.0) * _NS))


class AttemptSpans:
    """Turns attempt events into CLIENT spans on the given tracer."""

    __slots__ = ("_capture_content", "_tracer")

    def __init__(self, *, tracer: Tracer, capture_content: bool) -> None:
        self._tracer = tracer
        self._capture_content = capture_content

    def emit(self, event: AttemptEvent, common: Attributes, error_type: str | None) -> None:
        """Create and end the span for ``event``. ``common`` is copied, never mutated."""
        start_ns = int(event.start_wall * _NS)
        span = self._tracer.start_span(
            f"{names.OPERATION_CHAT} {event.model}",
            context=_parent(event),
            kind=SpanKind.CLIENT,
            attributes=self._attributes(event, common),
            start_time=start_ns,
            record_exception=False,
            set_status_on_exception=False,
        )
        if error_type is not None and error_type != _CANCELLED:
            span.set_status(Status(StatusCode.ERROR, _describe(error_type, event.error_status)))
        span.end(end_time=start_ns + int(max(event.duration, 0.0) * _NS))

    def _attributes(self, event: AttemptEvent, common: Attributes) -> Attributes:
        attrs: Attributes = {
            **common,
            names.GEN_AI_REQUEST_STREAM: event.stream,
            names.FAILOVER_ATTEMPT: event.attempt,
            names.FAILOVER_REASON: event.reason.value,
        }
        usage = event.usage
        if usage is not None:
            attrs[names.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            attrs[names.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if event.stream and event.time_to_first_chunk is not None:
            attrs[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = event.time_to_first_chunk
        if self._capture_content:
            if event.input_messages is not None:
                attrs[names.GEN_AI_INPUT_MESSAGES] = event.input_messages
            if event.output_messages is not None:
                attrs[names.GEN_AI_OUTPUT_MESSAGES] = event.output_messages
        return attrs


def _parent(event: AttemptEvent) -> Context:
    """The route span as parent, rebuilt from its ids."""
    return _context(event.trace_id, event.parent_span_id, event.sampled)


def _context(trace_id: int, span_id: int, sampled: bool) -> Context:
    """A context whose current span is (trace_id, span_id); empty when either is unknown."""
    if trace_id == 0 or span_id == 0:
        return _ROOT
    flags = _SAMPLED if sampled else _UNSAMPLED
    parent = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent), _ROOT)


def _describe(error_type: str, status: int | None) -> str:
    """A short status description built only from low-cardinality, secret-free fields.

    The provider's error message is deliberately left out: it can echo request content or key
    fragments, and ``error_message`` is free text we do not control.
    """
    return error_type if status is None else f"{error_type} (HTTP {status})"


class SdkSpans:
    """The SDK path for the telemetry drain: events become SDK spans; with a tail sampler, the
    SDK spans that end come back through :meth:`ended` to be decided on."""

    __slots__ = ("_attempts", "_ended", "_routes")

    def __init__(
        self,
        *,
        tracer: Tracer,
        ids: PresetIdGenerator | None,
        capture_content: bool,
        ended: Callable[[object], None] | None = None,
    ) -> None:
        self._attempts = AttemptSpans(tracer=tracer, capture_content=capture_content)
        self._routes = RouteSpans(tracer=tracer, ids=ids)
        self._ended = ended

    def attempt(
        self, event: AttemptEvent, attrs: AttemptAttributes, error_type: str | None
    ) -> None:
        self._attempts.emit(event, attrs.common, error_type)

    def route(self, event: RouteEvent) -> None:
        self._routes.emit(event)

    def ended(self, span: object) -> None:
        if self._ended is not None:
            self._ended(span)
