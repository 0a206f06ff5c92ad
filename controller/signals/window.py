"""Sliding windows of attempt outcomes, per provider and per (provider, model).

The router's :class:`~controller.events.AttemptEvent` stream is the only input, the same one
telemetry consumes, so the tripwire and the dashboard see the same numbers. Each series is a ring
of time buckets (default 30 x 1 s); a bucket is reused, and so forgotten, once the injected clock
has moved a whole window past it. Recording an event is O(1); a snapshot costs O(buckets) per
series and is taken by the controller a few times a second.

What counts:

- ``Outcome.FAULT`` is a provider failure; ``error_rate = faults / (successes + faults)`` and
  ``requests`` is that denominator. Caller errors and cancellations are counted separately and
  never move the error rate (the request or the client was at fault, not the provider).
- ``errors_by_type`` counts the ``error_type`` of faults (what an alert lists as "top errors").
- Latency percentiles are over *successful* attempts: how long a fault took to fail (often a
  timeout) says nothing about how fast the provider serves. Each bucket keeps a fixed histogram
  with log-spaced bins (ratio 2**0.25, ~9% error at the bin middle), so memory stays bounded.
- ``failing_trace_ids`` holds the last five distinct trace ids of faults (hex).
- The consecutive-fault run is reset by a success; caller errors and cancellations neither count
  nor reset it. A run whose last fault left the window is stale and starts over.

Events are bucketed by arrival time on the window's own clock, not by their ``end`` stamp, so a
late listener call can never land in an already-expired bucket.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from controller._clock import Clock
from controller.events import AttemptEvent, AttemptReason, Outcome, RouteEvent
from controller.signals._latency import LAT_BINS, bin_value, latency_bin
from controller.signals.inflight import NO_WAITS, InFlight, WaitSignals

MAX_TRACE_IDS = 5
_K = TypeVar("_K", str, tuple[str, str])


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketCounts:
    """One time bucket of a series, as of a snapshot. ``age``: snapshot time - bucket start."""

    age: float
    requests: int
    faults: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSignals:
    """What the window saw for one provider (or one provider+model), frozen at snapshot time.

    Ages are seconds before the snapshot was taken, so a pure decision can ask "was there a fault
    since X" without sharing a clock with the window. ``recent`` lists the non-empty buckets,
    newest first, for questions about a shorter span than the whole window.
    """

    window_seconds: float
    requests: int = 0
    successes: int = 0
    faults: int = 0
    caller_errors: int = 0
    cancelled: int = 0
    error_rate: float = 0.0
    errors_by_type: tuple[tuple[str, int], ...] = ()
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None
    consecutive_failures: int = 0
    failure_run_age: float | None = None  # age of the first fault of the current run
    last_fault_age: float | None = None
    failing_trace_ids: tuple[str, ...] = ()
    recent: tuple[BucketCounts, ...] = ()

    def counts_since(self, seconds: float, *, bucket_seconds: float) -> tuple[int, int]:
        """``(requests, faults)`` in every bucket overlapping the last ``seconds``."""
        if seconds >= self.window_seconds:
            return self.requests, self.faults
        live = [b for b in self.recent if b.age < seconds + bucket_seconds]
        return sum(b.requests for b in live), sum(b.faults for b in live)

    def top_errors(self, n: int = 3) -> tuple[tuple[str, int], ...]:
        return self.errors_by_type[:n]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalSnapshot:
    """Every series at one instant. ``taken_at`` is on the window's monotonic clock."""

    taken_at: float
    window_seconds: float
    bucket_seconds: float
    providers: Mapping[str, ProviderSignals] = field(default_factory=lambda: MappingProxyType({}))
    models: Mapping[tuple[str, str], ProviderSignals] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # What is waiting on each provider right now (see :mod:`controller.signals.inflight`).
    waits: Mapping[str, WaitSignals] = field(default_factory=lambda: MappingProxyType({}))

    def provider(self, name: str) -> ProviderSignals:
        """A provider with no traffic in the window has empty signals, not a KeyError."""
        found = self.providers.get(name)
        return found if found is not None else ProviderSignals(window_seconds=self.window_seconds)

    def waiting(self, name: str) -> WaitSignals:
        return self.waits.get(name, NO_WAITS)


class _Bucket:
    __slots__ = ("caller_errors", "cancelled", "errors", "faults", "index", "latency", "successes")

    def __init__(self) -> None:
        self.index = -1
        self.successes = 0
        self.faults = 0
        self.caller_errors = 0
        self.cancelled = 0
        self.errors: dict[str, int] = {}
        self.latency: list[int] | None = None  # allocated on the first success

    def reset(self, index: int) -> None:
        self.index = index
        self.successes = self.faults = self.caller_errors = self.cancelled = 0
        self.errors = {}
        if self.latency is not None:
            self.latency = [0] * LAT_BINS

    def add(self, event: AttemptEvent) -> None:
        outcome = event.outcome
        if outcome is Outcome.SUCCESS:
            self.successes += 1
            if self.latency is None:
                self.latency = [0] * LAT_BINS
            self.latency[latency_bin(event.duration)] += 1
        elif outcome is Outcome.FAULT:
            self.faults += 1
            kind = event.error_type or "unknown"
            self.errors[kind] = self.errors.get(kind, 0) + 1
        elif outcome is Outcome.CALLER_ERROR:
            self.caller_errors += 1
        else:
            self.cancelled += 1


# Attempts that only measure a target standing by (not a request it serves as a primary would).
_MEASURING = frozenset({AttemptReason.PROBE, AttemptReason.WARM})


class _Series:
    """The ring of buckets and the running fault state of one provider or provider+model."""

    __slots__ = ("buckets", "last_fault", "run", "run_started", "seen", "served", "traces")

    def __init__(self, size: int) -> None:
        self.buckets = [_Bucket() for _ in range(size)]
        self.seen = 0.0  # when its last attempt ended (the idle probes read it)
        self.served = -math.inf  # when its last attempt other than a probe or warm one ended
        self.run = 0
        self.run_started = 0.0
        self.last_fault: float | None = None
        self.traces: deque[tuple[float, str]] = deque(maxlen=MAX_TRACE_IDS)

    def record(self, event: AttemptEvent, *, index: int, now: float, window: float) -> None:
        slot = self.buckets[index % len(self.buckets)]
        if slot.index != index:
            slot.reset(index)
        slot.add(event)
        self.seen = now
        if event.reason not in _MEASURING:
            self.served = now
        if event.outcome is Outcome.SUCCESS:
            self.run = 0
        elif event.outcome is Outcome.FAULT:
            self._fault(event, now=now, window=window)

    def _fault(self, event: AttemptEvent, *, now: float, window: float) -> None:
        if self.run == 0 or self.last_fault is None or now - self.last_fault > window:
            self.run = 0
            self.run_started = now
        self.run += 1
        self.last_fault = now
        if event.trace_id:
            trace = format(event.trace_id, "032x")
            if all(t != trace for _, t in self.traces):  # retries share their request's trace
                self.traces.append((now, trace))


class SignalWindows:
    """A :class:`~controller.events.Listener` that keeps the tripwire's sliding windows.

    Not thread-safe by design: it lives on the one event loop that also runs the router.
    ``inflight`` is the registry of attempts still waiting (the router writes it); a snapshot
    carries both views.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        window_seconds: float = 30.0,
        bucket_seconds: float = 1.0,
        inflight: InFlight | None = None,
    ) -> None:
        if window_seconds <= 0 or bucket_seconds <= 0 or bucket_seconds > window_seconds:
            raise ValueError("need 0 < bucket_seconds <= window_seconds")
        self._clock = clock
        self.inflight = inflight if inflight is not None else InFlight(clock)
        self._window = window_seconds
        self._bucket = bucket_seconds
        self._size = max(1, math.ceil(window_seconds / bucket_seconds - 1e-9))
        self._providers: dict[str, _Series] = {}
        self._models: dict[tuple[str, str], _Series] = {}

    @property
    def window_seconds(self) -> float:
        return self._window

    def on_attempt(self, event: AttemptEvent) -> None:
        now = self._clock.monotonic()
        index = math.floor(now / self._bucket)
        for series in (
            self._series(self._providers, event.provider),
            self._series(self._models, (event.provider, event.model)),
        ):
            series.record(event, index=index, now=now, window=self._window)

    def on_route(self, event: RouteEvent) -> None:
        """Route outcomes do not feed the tripwire: each attempt was already counted."""

    def idle_for(self, name: str) -> float | None:
        """Seconds since the last attempt of any kind ended on ``name`` (a provider, or one
        model of one as ``provider/model``); None when none was seen since this started."""
        provider, _, model = name.partition("/")
        series = self._models.get((provider, model)) if model else self._providers.get(provider)
        if series is None:
            return None
        return self._clock.monotonic() - series.seen

    def served_for(self, name: str) -> float | None:
        """Seconds since ``name`` last ended an attempt other than a probe or a warm one (it
        served as a primary or in place of one); None when none was seen since this started."""
        provider, _, model = name.partition("/")
        series = self._models.get((provider, model)) if model else self._providers.get(provider)
        if series is None or series.served == -math.inf:
            return None
        return self._clock.monotonic() - series.served

    def _series(self, table: dict[_K, _Series], key: _K) -> _Series:
        series = table.get(key)
        if series is None:
            series = table[key] = _Series(self._size)
        return series

    def snapshot(self) -> SignalSnapshot:
        now = self._clock.monotonic()
        current = math.floor(now / self._bucket)
        return SignalSnapshot(
            taken_at=now,
            window_seconds=self._window,
            bucket_seconds=self._bucket,
            providers=MappingProxyType(
                {k: self._freeze(s, now, current) for k, s in self._providers.items()}
            ),
            models=MappingProxyType(
                {k: self._freeze(s, now, current) for k, s in self._models.items()}
            ),
            waits=self.inflight.snapshot(),
        )

    def _freeze(self, series: _Series, now: float, current: int) -> ProviderSignals:
        live = [b for b in series.buckets if current - self._size < b.index <= current]
        successes = sum(b.successes for b in live)
        faults = sum(b.faults for b in live)
        requests = successes + faults
        p50, p95, p99 = _percentiles(live, (0.50, 0.95, 0.99))
        fresh_fault = series.last_fault is not None and now - series.last_fault <= self._window
        return ProviderSignals(
            window_seconds=self._window,
            requests=requests,
            successes=successes,
            faults=faults,
            caller_errors=sum(b.caller_errors for b in live),
            cancelled=sum(b.cancelled for b in live),
            error_rate=faults / requests if requests else 0.0,
            errors_by_type=_merge_errors(live),
            latency_p50=p50,
            latency_p95=p95,
            latency_p99=p99,
            consecutive_failures=series.run if fresh_fault else 0,
            failure_run_age=now - series.run_started if fresh_fault and series.run else None,
            last_fault_age=now - series.last_fault if series.last_fault is not None else None,
            failing_trace_ids=tuple(t for at, t in series.traces if now - at <= self._window),
            recent=self._recent(live, now),
        )

    def _recent(self, live: list[_Bucket], now: float) -> tuple[BucketCounts, ...]:
        counts = [
            BucketCounts(
                age=max(0.0, now - b.index * self._bucket),
                requests=b.successes + b.faults,
                faults=b.faults,
            )
            for b in live
            if b.successes or b.faults
        ]
        counts.sort(key=lambda c: c.age)
        return tuple(counts)


def _merge_errors(live: list[_Bucket]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for bucket in live:
        for kind, count in bucket.errors.items():
            totals[kind] = totals.get(kind, 0) + count
    return tuple(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def _percentiles(
    live: list[_Bucket], quantiles: tuple[float, float, float]
) -> tuple[float | None, float | None, float | None]:
    merged = [0] * LAT_BINS
    for bucket in live:
        if bucket.latency is not None and bucket.successes:
            for i, count in enumerate(bucket.latency):
                merged[i] += count
    total = sum(merged)
    if not total:
        return None, None, None
    a, b, c = (_rank_value(merged, max(1, math.ceil(q * total))) for q in quantiles)
    return a, b, c


def _rank_value(merged: list[int], rank: int) -> float:
    seen = 0
    for i, count in enumerate(merged):
        seen += count
        if seen >= rank:
            return bin_value(i)
    return bin_value(len(merged) - 1)
