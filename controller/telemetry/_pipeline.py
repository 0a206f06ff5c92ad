"""The light span path: events and light spans → OTLP bytes → a bounded queue → one thread.

:class:`OtlpSpans` is what the telemetry drain hands each sampled span to (attempt and route
events, the light tracer's ended spans). It encodes them (:mod:`controller.telemetry._otlp`),
through the tail sampler first when one is configured (then only kept spans are encoded), and
puts the bytes on :class:`SpanBatcher`'s queue. The batcher's thread sends a batch when it is
full or ``OTEL_BSP_SCHEDULE_DELAY`` has passed, through the sender setup gives it: the lean
one of :mod:`controller.telemetry._send` (the SDK client's headers, retries and TLS files), or
the SDK exporter's own client where only that behaves as the SDK does (a proxy, a credential
provider).

A dead or slow collector costs the request path nothing: ``put`` appends to a bounded deque and
wakes the thread at most once per batch; a full queue drops its oldest span and counts it, as
a failed or abandoned export counts its spans (``failover.telemetry.dropped{signal="spans"}``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from opentelemetry.trace import StatusCode

from controller.events import AttemptEvent, RouteEvent
from controller.telemetry._export import DropTally
from controller.telemetry._light import LightSpan
from controller.telemetry._metrics import AttemptAttributes
from controller.telemetry._otlp import (
    BatchFrame,
    encode_attempt,
    encode_attributes,
    encode_plain_span,
    encode_route,
    encode_span,
)
from controller.telemetry._tail import TailSampler, attempt_matters, route_matters

__all__ = ["OtlpSpans", "Sender", "SpanBatcher"]

log = logging.getLogger(__name__)

Sender = Callable[[bytes], bool]  # posts one request body; True when the collector took it


class _Shutdownable(Protocol):
    def shutdown(self) -> None: ...


class SpanBatcher:
    """Encoded spans waiting for the export thread; bounded, and never blocking ``put``."""

    def __init__(
        self,
        *,
        frame: BatchFrame,
        send: Sender,
        tally: DropTally,
        max_queue: int,
        max_batch: int,
        delay: float,
    ) -> None:
        self._frame = frame
        self._send = send
        self._tally = tally
        self._max_queue = max_queue
        self._max_batch = max(1, min(max_batch, max_queue))
        self._delay = delay
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._abandoned = False
        self._flushes = 0  # flush requests made; the thread answers each by emptying the queue
        self._flushed = 0
        self._thread = threading.Thread(target=self._run, name="telemetry-spans", daemon=True)
        self._thread.start()

    def put(self, span: bytes) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            try:
                queue.popleft()
                self._tally.lost(1, "span queue full")
            except IndexError:  # the export thread took them all meanwhile
                pass
        queue.append(span)
        if len(queue) == self._max_batch:
            with self._cond:
                self._cond.notify()

    def force_flush(self, timeout: float) -> bool:
        """Send everything queued now; True when it was sent within ``timeout``."""
        with self._cond:
            self._flushes += 1
            wanted = self._flushes
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._flushed >= wanted or not self._thread.is_alive(), timeout
            )

    def shutdown(self, timeout: float) -> bool:
        """Send what is queued and stop the thread, waiting at most ``timeout`` seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon(self) -> None:
        """Past the shutdown deadline: what is still queued is counted as lost."""
        self._abandoned = True
        lost = len(self._queue)
        self._queue.clear()
        if lost:
            self._tally.lost(lost, "shutdown deadline passed")

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due():
                    self._cond.wait(self._delay)
                flush_upto = self._flushes
                stopping = self._stopping
            self._drain(everything=stopping or flush_upto > self._flushed)
            with self._cond:
                self._flushed = flush_upto
                self._cond.notify_all()
            if stopping:
                return

    def _due(self) -> bool:
        """Called with the lock held."""
        return (
            self._stopping or self._flushes > self._flushed or len(self._queue) >= self._max_batch
        )

    def _drain(self, *, everything: bool) -> None:
        """One batch, or (flushing, stopping) batches until the queue is empty."""
        while self._queue and not self._abandoned:
            batch = self._take()
            self._export(batch)
            if not everything and len(self._queue) < self._max_batch:
                return

    def _take(self) -> list[bytes]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]

    def _export(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            sent = self._send(self._frame.request(batch))
        except Exception as exc:  # an exporter bug costs telemetry, never a request
            self._tally.lost(len(batch), type(exc).__name__)
            return
        if sent:
            self._tally.delivered()
        else:
            self._tally.lost(len(batch), "export failed")


_Item = AttemptEvent | RouteEvent | LightSpan | tuple[AttemptEvent, bytes, str | None]


class OtlpSpans:
    """Spans from the telemetry drain to the batcher, through the tail sampler if any."""

    __slots__ = ("_batcher", "_capture", "_sampler")

    def __init__(
        self, *, batcher: SpanBatcher, capture_content: bool, healthy_share: float | None
    ) -> None:
        self._batcher = batcher
        self._capture = capture_content
        self._sampler: TailSampler[_Item] | None = (
            None
            if healthy_share is None
            else TailSampler(healthy_share=healthy_share, keep=self._put)
        )

    @property
    def sampler(self) -> TailSampler[_Item] | None:
        return self._sampler

    def attempt(
        self, event: AttemptEvent, attrs: AttemptAttributes, error_type: str | None
    ) -> None:
        if not event.sampled:
            return
        common = attrs.encoded
        if common is None:
            common = attrs.encoded = encode_attributes(attrs.common)
        item = (event, common, error_type)
        if self._sampler is None:
            self._put(item)
        else:
            matters = attempt_matters(event)
            self._sampler.offer(event.trace_id, item, matters=matters, root=False)

    def route(self, event: RouteEvent) -> None:
        if not event.sampled or event.trace_id == 0 or event.span_id == 0:
            return
        if self._sampler is None:
            self._put(event)
        else:
            root = event.parent_span_id == 0
            self._sampler.offer(event.trace_id, event, matters=route_matters(event), root=root)

    def ended(self, span: object) -> None:
        if not isinstance(span, LightSpan):
            return
        if self._sampler is None:
            self._put(span)
        else:
            status = span.status
            matters = status is not None and status.status_code is StatusCode.ERROR
            root = span.parent_id == 0 or span.parent_remote
            self._sampler.offer(span.trace_id, span, matters=matters, root=root)

    def _put(self, item: _Item) -> None:
        if isinstance(item, tuple):
            event, common, error_type = item
            encoded = encode_attempt(event, common, error_type, capture_content=self._capture)
        elif isinstance(item, RouteEvent):
            encoded = encode_route(item)
        elif isinstance(item, LightSpan):
            encoded = _encode_light(item)
        else:
            return
        self._batcher.put(encoded)


def _encode_light(span: LightSpan) -> bytes:
    status = span.status
    if span.plain():
        return encode_plain_span(
            span.trace_id,
            span.span_id,
            span.parent_id,
            span.parent_remote,
            span.name,
            span.kind,
            span.start_ns,
            span.end_ns,
            span.attributes,
            0 if status is None else status.status_code.value,
            None if status is None else status.description,
        )
    return encode_span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_id=span.parent_id,
        parent_remote=span.parent_remote,
        trace_state=",".join(f"{k}={v}" for k, v in span.trace_state.items())
        if span.trace_state
        else "",
        name=span.name,
        kind=span.kind,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        status_code=0 if status is None else status.status_code.value,
        status_message=None if status is None else status.description,
        dropped=span.dropped,
    )
