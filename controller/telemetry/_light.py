"""A light OpenTelemetry tracer: API spans without the SDK's per-span object graph.

The SDK's ``Tracer.start_span`` builds a ``SpanContext``, a sampling result, bounded attribute,
event and link containers, a lock, and calls every span processor at start and end; with the
OTLP exporter on, that was about a tenth of a millisecond per request for the gateway's SERVER
span and the retroactive route and attempt spans (py-spy, ``wrk -c10``). This tracer keeps what
the API promises (``start_span``, ``start_as_current_span``, the span made current so the router
finds its parent, attributes, events, links, status, ``record_exception``) and hands each ended
span to a sink as itself; encoding waits for the drain (:mod:`controller.telemetry._otlp`).

It is used only when spans go to the OTLP exporter and nowhere else (in-process span
processors get the SDK's spans) and none of the SDK's span limit variables is set, since it
applies only the SDK's default limits (128 attributes, events and links per span, values
unlimited). Head sampling uses the same :class:`~opentelemetry.sdk.trace.sampling.Sampler`
object the SDK would.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from random import getrandbits
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value  # the API's own value check
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY as _CURRENT_SPAN
from opentelemetry.trace.span import TraceState
from opentelemetry.util import types

__all__ = ["LightSpan", "LightTracer"]

log = logging.getLogger(__name__)

_LIMIT = 128  # the SDK's default count limit for attributes, events and links
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
_PLAIN = (str, bool, int, float)
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_SPAN_KEY = _CURRENT_SPAN  # where the API keeps the current span in a context


def _put(attributes: dict[str, Any], key: str, value: Any) -> int:
    """Set one attribute as the SDK's BoundedAttributes does (a value cleaned by the API's own
    check; a key set again moves to the end; when full, the oldest goes); 1 if one was lost."""
    if not key or not isinstance(key, str):
        log.warning(
            "invalid key `%s`. must be non-empty string. Dropping key from attributes.", key
        )
        return 1
    if type(value) not in _PLAIN:
        value = _clean_attribute_value(value, None)
    lost = 0
    if key in attributes:
        del attributes[key]
    elif len(attributes) >= _LIMIT:
        del attributes[next(iter(attributes))]
        lost = 1
    attributes[key] = value
    return lost


def _clean(attributes: types.Attributes) -> tuple[dict[str, Any], int]:
    """Attributes as the SDK's BoundedAttributes keeps them, and how many it dropped."""
    if not attributes:
        return {}, 0
    kept = dict(attributes)
    if len(kept) <= _LIMIT:
        for key, value in kept.items():  # the usual case: plain values under string keys
            if type(value) not in _PLAIN or type(key) is not str or not key:
                break
        else:
            return kept, 0
    kept, dropped = {}, 0
    for key, value in attributes.items():
        dropped += _put(kept, key, value)
    return kept, dropped


class LightSpan(trace_api.Span):
    """A recording span whose ended state is plain fields (see :func:`_otlp.encode_span`)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_dropped",
        "_ended",
        "_events",
        "_links",
        "_on_end",
        "_status",
        "end_ns",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "span_id",
        "start_ns",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        *,
        name: str,
        kind: int,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        attributes: types.Attributes,
        links: Sequence[Link],
        start_ns: int,
        on_end: Callable[[LightSpan], None],
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent.span_id if parent is not None else 0
        self.parent_remote = parent is not None and parent.is_remote
        self.trace_state = parent.trace_state if parent is not None else _EMPTY_STATE
        self._attributes, dropped_attributes = _clean(attributes)
        self._events: list[tuple[str, int, dict[str, Any]]] = []
        self._links: list[tuple[int, int, str, bool, dict[str, Any]]] = []
        self._dropped = [dropped_attributes, 0, 0]
        self._ended = False
        for link in links:
            self.add_link(link.context, link.attributes)
        self._status: Status | None = None
        self._context: SpanContext | None = None
        self.start_ns = start_ns
        self.end_ns = 0
        self._on_end = on_end

    # --- what the encoder reads
    def plain(self) -> bool:
        """No trace state, events, links or dropped items: the usual span."""
        dropped = self._dropped
        return (
            not self._events
            and not self._links
            and not (dropped[0] or dropped[1] or dropped[2])
            and (self.trace_state is _EMPTY_STATE or not self.trace_state)
        )

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    @property
    def events(self) -> Sequence[tuple[str, int, Mapping[str, Any]]]:
        return self._events

    @property
    def links(self) -> Sequence[tuple[int, int, str, bool, Mapping[str, Any]]]:
        return self._links

    @property
    def dropped(self) -> tuple[int, int, int]:
        return self._dropped[0], self._dropped[1], self._dropped[2]

    @property
    def status(self) -> Status | None:
        return self._status

    # --- the API
    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                trace_id=self.trace_id,
                span_id=self.span_id,
                is_remote=False,
                trace_flags=_SAMPLED,
                trace_state=self.trace_state,
            )
        return context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._ended:
            log.warning("Setting attribute on ended span.")
            return
        self._dropped[0] += _put(self._attributes, key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._ended:
            return
        if len(self._events) >= _LIMIT:
            self._dropped[1] += 1
            return
        kept, _ = _clean(attributes)
        self._events.append((name, time.time_ns() if timestamp is None else timestamp, kept))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._ended or context is None or not context.is_valid:
            return
        if len(self._links) >= _LIMIT:
            self._dropped[2] += 1
            return
        kept, _ = _clean(attributes)
        state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        self._links.append((context.trace_id, context.span_id, state, context.is_remote, kept))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK does: OK is final, UNSET is ignored."""
        if self._ended:
            return
        if self._status is not None and self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
        merged: dict[str, Any] = {
            "exception.type": exception_type,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            merged.update(attributes)
        self.add_event("exception", merged, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            log.warning("Calling end() on an ended span.")
            return
        self._ended = True
        self.end_ns = time.time_ns() if end_time is None else end_time
        self._on_end(self)


class LightTracer(trace_api.Tracer):
    """Starts :class:`LightSpan`s (or non-recording spans the sampler drops)."""

    def __init__(self, *, sampler: Sampler, on_end: Callable[[LightSpan], None]) -> None:
        self._sampler = sampler
        # the default samplers keep every root and follow a parent's decision: no call needed
        self._follow_parent = _always_on(sampler)
        self._on_end = on_end

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = getrandbits(128) or 1
        else:
            trace_id = parent.trace_id
        span_id = getrandbits(64) or 1
        if self._follow_parent:
            sampled = parent is None or parent.trace_flags.sampled
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            if sampled and result.attributes:
                attributes = {**result.attributes}
        if not sampled:
            state = parent.trace_state if parent is not None else _EMPTY_STATE
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, _UNSAMPLED, state))
        return LightSpan(
            name=name,
            kind=_KINDS[kind],
            trace_id=trace_id,
            span_id=span_id,
            parent=parent,
            attributes=attributes,
            links=links or (),
            start_ns=time.time_ns() if start_time is None else start_time,
            on_end=self._on_end,
        )

    def start_as_current_span(  # type: ignore[override]  # a context manager, as the SDK's
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _Current:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        return _Current(span, end_on_exit, record_exception, set_status_on_exception)


class _Current:
    """``trace.use_span`` as a class (a generator-based context manager costs more): the span
    is current inside, an ``Exception`` is recorded as the API records it, the span ends."""

    __slots__ = ("_end", "_record", "_set_status", "_span", "_token")

    def __init__(self, span: trace_api.Span, end: bool, record: bool, set_status: bool) -> None:
        self._span = span
        self._end = end
        self._record = record
        self._set_status = set_status
        self._token: object = None

    def __enter__(self) -> trace_api.Span:
        self._token = context_api.attach(context_api.set_value(_SPAN_KEY, self._span))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        span = self._span
        try:
            context_api.detach(self._token)  # type: ignore[arg-type]
            if isinstance(exc, Exception) and span.is_recording():
                if self._record:
                    span.record_exception(exc)
                if self._set_status:
                    description = f"{type(exc).__name__}: {exc}"
                    span.set_status(Status(StatusCode.ERROR, description))
        finally:
            if self._end:
                span.end()


def _always_on(sampler: Sampler) -> bool:
    if sampler is ALWAYS_ON:
        return True
    return (
        isinstance(sampler, ParentBased)
        and sampler._root is ALWAYS_ON
        and _default_children(sampler)
    )


def _default_children(sampler: ParentBased) -> bool:
    """The parent-based sampler's delegates for parents are the defaults (follow the parent)."""
    return (
        sampler._remote_parent_sampled is ALWAYS_ON
        and sampler._remote_parent_not_sampled is ALWAYS_OFF
        and sampler._local_parent_sampled is ALWAYS_ON
        and sampler._local_parent_not_sampled is ALWAYS_OFF
    )
