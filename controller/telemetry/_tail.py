"""Tail sampling: keep every trace that saw trouble, and a share of the healthy rest.

A head sampler decides when a trace starts, before anyone knows whether it will be
interesting; the traces worth keeping on a busy gateway are exactly the ones that end badly.
:class:`TailSampler` holds the ended spans of each trace until its *local root* ends (the
gateway's SERVER span, or the ``failover.route`` span when the router started the trace),
which is after the route ended, then keeps or drops the trace whole:

* kept, always: a trace in which an attempt failed (any ``error.type``, a cancellation
  included), an attempt was not the plan's first choice (``failover.reason`` other than
  ``primary`` and ``probe``: retry, failover, context fallback, rescue, hedge, continuation),
  the route did not simply serve (``degraded``, ``failed``, ``cancelled``, panic mode, more
  than one attempt), or any span is an ERROR;
* kept, otherwise: ``healthy_share`` of the rest, by trace id (the rule of the SDK's
  ``TraceIdRatioBased``, so every replica and every span of a trace agree).

The spans' order reaches the sampler intact because the listener's drain carries events and
ended spans in one queue: a request's attempts, then its route, then its SERVER span.

Bounded: at most :data:`MAX_PENDING` traces wait (the oldest is dropped whole and counted when
a new one would pass that), and the decisions of the last :data:`MAX_DECIDED` traces are kept
for spans that end after their root (a hedge's loser reported late); a span of a trace whose
decision was forgotten is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from controller.events import AttemptEvent, AttemptReason, Outcome, RouteEvent, RouteOutcome
from controller.telemetry import names

__all__ = [
    "MAX_DECIDED",
    "MAX_PENDING",
    "TailSampler",
    "TailSamplingProcessor",
    "attempt_matters",
    "route_matters",
    "span_matters",
]

T = TypeVar("T")
MAX_PENDING = 8192
MAX_DECIDED = 8192
_ROUTINE_REASONS = frozenset({AttemptReason.PRIMARY.value, AttemptReason.PROBE.value})
_BOUND = 1 << 64


def attempt_matters(event: AttemptEvent) -> bool:
    return event.outcome is not Outcome.SUCCESS or event.reason.value not in _ROUTINE_REASONS


def route_matters(event: RouteEvent) -> bool:
    return event.outcome is not RouteOutcome.SERVED or event.panic or event.attempts > 1


def span_matters(span: ReadableSpan) -> bool:
    """The same facts read from an SDK span's attributes (the in-process span path)."""
    if span.status.status_code is StatusCode.ERROR:
        return True
    attributes = span.attributes or {}
    if names.ERROR_TYPE in attributes:
        return True
    reason = attributes.get(names.FAILOVER_REASON)
    if reason is not None and reason not in _ROUTINE_REASONS:
        return True
    if span.name != names.SPAN_ROUTE:
        return False
    attempts = attributes.get(names.FAILOVER_ATTEMPTS, 1)
    served = attributes.get(names.FAILOVER_OUTCOME) == RouteOutcome.SERVED.value
    return not served or bool(attributes.get(names.FAILOVER_PANIC)) or attempts != 1


class _Pending(Generic[T]):
    __slots__ = ("items", "matters")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.matters = False


class TailSampler(Generic[T]):
    """Holds each trace's spans until its local root ends, then passes them to ``keep`` or
    drops them. Not thread-safe: fed from the event loop's telemetry drain only."""

    __slots__ = ("_bound", "_decided", "_keep", "_pending", "dropped", "kept_traces", "sampled_out")

    def __init__(self, *, healthy_share: float, keep: Callable[[T], None]) -> None:
        if not 0.0 <= healthy_share <= 1.0:
            raise ValueError(f"healthy_share must be within 0..1, not {healthy_share}")
        self._bound = round(healthy_share * _BOUND)
        self._keep = keep
        self._pending: dict[int, _Pending[T]] = {}
        self._decided: dict[int, bool] = {}
        self.sampled_out = 0  # spans left out by the decision (not a loss)
        self.dropped = 0  # spans lost because too many traces were waiting
        self.kept_traces = 0

    def healthy_kept(self, trace_id: int) -> bool:
        return (trace_id & (_BOUND - 1)) < self._bound

    def offer(self, trace_id: int, item: T, *, matters: bool, root: bool) -> None:
        """One ended span of ``trace_id``; ``root`` when it is the trace's local root."""
        decided = self._decided.get(trace_id)
        if decided is not None:
            self._emit_one(item, decided)
            return
        pending = self._pending.get(trace_id)
        if pending is None:
            if not root and len(self._pending) >= MAX_PENDING:
                oldest = next(iter(self._pending))
                self.dropped += len(self._pending.pop(oldest).items)
            pending = self._pending[trace_id] = _Pending()
        pending.items.append(item)
        if matters:
            pending.matters = True
        if root:
            del self._pending[trace_id]
            self._decide(trace_id, pending)

    def _decide(self, trace_id: int, pending: _Pending[T]) -> None:
        keep = pending.matters or self.healthy_kept(trace_id)
        if len(self._decided) >= MAX_DECIDED:
            del self._decided[next(iter(self._decided))]
        self._decided[trace_id] = keep
        if keep:
            self.kept_traces += 1
        for item in pending.items:
            self._emit_one(item, keep)

    def _emit_one(self, item: T, keep: bool) -> None:
        if keep:
            self._keep(item)
        else:
            self.sampled_out += 1


class TailSamplingProcessor(SpanProcessor):
    """The tail sampler in front of SDK span processors (the in-process span path).

    An ended span is handed to ``defer`` (the telemetry listener, so that it is decided in the
    drain's order: attempts, route, then the SERVER span) and comes back through
    :meth:`decide`; kept spans reach the inner processors' ``on_end``."""

    def __init__(self, inner: Sequence[SpanProcessor], *, healthy_share: float) -> None:
        self._inner = tuple(inner)
        self.sampler: TailSampler[ReadableSpan] = TailSampler(
            healthy_share=healthy_share, keep=self._keep
        )
        self.defer: Callable[[object], None] = self.decide  # the listener replaces it

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._inner:
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.defer(span)

    def decide(self, span: object) -> None:
        if not isinstance(span, ReadableSpan) or span.context is None:
            return
        parent = span.parent
        root = parent is None or parent.is_remote
        self.sampler.offer(span.context.trace_id, span, matters=span_matters(span), root=root)

    def _keep(self, span: ReadableSpan) -> None:
        for processor in self._inner:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._inner:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._inner)
