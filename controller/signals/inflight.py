"""Attempts still waiting for their provider's answer, and how long answers usually take.

The sliding windows (:mod:`controller.signals.window`) learn about an attempt when it ends. A
provider that accepts requests and never answers ends none of them until a timeout expires,
minutes later: the windows stay blind while every client waits. This registry sees attempts
*while* they wait, so the controller can trip a silent provider (``stalled``) within about a
second of the limit learned from that provider's own answers.

The router calls :meth:`InFlight.begin` when an attempt starts, :meth:`InFlight.answered` when
it has its answer (a whole answer, or a stream's first chunk: after that a stream is bounded by
its idle limit, not by this registry) and :meth:`InFlight.ended` when it ends otherwise. Each
provider's waiting attempts sit in an insertion-ordered dict, so the oldest is the first one and
every call is O(1).

What answers took is kept per provider and kind (stream: time to the first chunk; whole answer:
time to the body) twice over:

* a *baseline*: log-binned histograms in 10 s buckets over the last two minutes, of which the
  quantile is taken over the buckets older than 30 s (all of them while those hold too few
  answers). A slowdown therefore does not raise the limit it is judged by until it has lasted
  that long, and an outage that answers nothing leaves the baseline as it was;
* the last :data:`RECENT` answers with their times, so a decision can ask "did anything answer
  within the limit lately" (a slow provider answers, but late).

A waiter also carries the router's hooks for that attempt: ``on_trip`` (start the request on the
next target: the provider it waits on went out of rotation) and ``lost`` (why it was abandoned,
when another attempt answered first). Not thread-safe: it lives on the router's event loop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from controller._clock import Clock
from controller.signals._latency import LAT_BINS, bin_value, latency_bin

RECENT = 256  # answers kept with their times, per provider and kind
OLDEST = 16  # waiting attempts whose ages a snapshot lists, per provider and kind
BUCKET_SECONDS = 10.0
BUCKETS = 12  # the baseline spans two minutes ...
LAG_BUCKETS = 3  # ... and leaves out the last 30 s while the older ones hold enough answers


class Waiter:
    """One attempt waiting for its answer."""

    __slots__ = ("done", "lost", "model", "on_trip", "provider", "start", "stream")

    def __init__(self, provider: str, stream: bool, start: float, model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.stream = stream
        self.start = start
        self.done = False
        self.on_trip: Callable[[], None] | None = None
        self.lost: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Waits:
    """One kind of attempt on one provider: streams waiting for a first chunk, or whole answers.

    ``ages`` are how long the :data:`OLDEST` oldest have waited, oldest first; ``typical`` the
    baseline's quantile of time to answer (``None`` while it holds no answer), from ``samples``
    answers. ``recent`` holds ``(age, took)`` of the latest answers, newest first."""

    waiting: int = 0
    ages: tuple[float, ...] = ()
    samples: int = 0
    typical: float | None = None
    recent: tuple[tuple[float, float], ...] = ()

    @property
    def oldest(self) -> float | None:
        return self.ages[0] if self.ages else None

    def answered_within(self, limit: float) -> float | None:
        """Age of the newest answer that took at most ``limit`` (None: none lately)."""
        return next((age for age, took in self.recent if took <= limit), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitSignals:
    """What waits on one provider at snapshot time. ``last_error_age``: seconds since it last
    answered with an error status (``None``: not in this process): a provider that answers
    errors is not silent, whatever else is wrong with it (the error rate judges that)."""

    streams: Waits = Waits()
    answers: Waits = Waits()
    last_error_age: float | None = None

    @property
    def waiting(self) -> int:
        return self.streams.waiting + self.answers.waiting

    def kind(self, stream: bool) -> Waits:
        return self.streams if stream else self.answers


NO_WAITS = WaitSignals()


class _Baseline:
    """Time-bucketed histograms of one provider and kind's times to answer."""

    __slots__ = ("counts", "index", "totals")

    def __init__(self) -> None:
        self.index = [-1] * BUCKETS
        self.counts = [[0] * LAT_BINS for _ in range(BUCKETS)]
        self.totals = [0] * BUCKETS

    def add(self, bucket: int, took: float) -> None:
        slot = bucket % BUCKETS
        if self.index[slot] != bucket:
            self.index[slot], self.totals[slot] = bucket, 0
            self.counts[slot] = [0] * LAT_BINS
        self.counts[slot][latency_bin(took)] += 1
        self.totals[slot] += 1

    def quantile(self, current: int, quantile: float, least: int) -> tuple[float | None, int]:
        """The quantile over the lagged buckets (all live ones while those hold fewer than
        ``least`` answers), and how many answers it is over."""
        live = [s for s in range(BUCKETS) if current - BUCKETS < self.index[s] <= current]
        old = [s for s in live if self.index[s] <= current - LAG_BUCKETS]
        chosen = old if sum(self.totals[s] for s in old) >= least else live
        total = sum(self.totals[s] for s in chosen)
        if not total:
            return None, 0
        rank, seen = max(1, math.ceil(quantile * total)), 0
        for i in range(LAT_BINS):
            seen += sum(self.counts[s][i] for s in chosen)
            if seen >= rank:
                return bin_value(i), total
        return bin_value(LAT_BINS - 1), total


class InFlight:
    """The registry. ``quantile`` is the share of past answers the learned ``typical`` covers;
    ``least`` the answers the lagged baseline needs before the recent ones are left out."""

    def __init__(self, clock: Clock, *, quantile: float = 0.99, least: int = 20) -> None:
        if not 0.0 < quantile <= 1.0 or least < 1:
            raise ValueError("need 0 < quantile <= 1 and least >= 1")
        self._clock = clock
        self._quantile = quantile
        self._least = least
        self._waiting: dict[str, dict[Waiter, None]] = {}
        self._baseline: dict[tuple[str, bool], _Baseline] = {}
        self._recent: dict[tuple[str, bool], deque[tuple[float, float]]] = {}
        self._last_error: dict[str, float] = {}

    def begin(self, provider: str, *, stream: bool, model: str = "") -> Waiter:
        waiter = Waiter(provider, stream, self._clock.monotonic(), model)
        table = self._waiting.get(provider)
        if table is None:
            table = self._waiting[provider] = {}
        table[waiter] = None
        return waiter

    def answered(self, waiter: Waiter) -> None:
        """The attempt has its answer: how long it took joins the provider's history."""
        if waiter.done:
            return
        now = self._clock.monotonic()
        self._drop(waiter)
        key = (waiter.provider, waiter.stream)
        took = now - waiter.start
        baseline = self._baseline.get(key)
        if baseline is None:
            baseline = self._baseline[key] = _Baseline()
            self._recent[key] = deque(maxlen=RECENT)
        baseline.add(math.floor(now / BUCKET_SECONDS), took)
        self._recent[key].append((now, took))

    def ended(self, waiter: Waiter, *, responded: bool = False) -> None:
        """The attempt ended without an answer. ``responded``: the provider did answer, with an
        error status (it is not silent, whatever else is wrong with it)."""
        if waiter.done:
            return
        self._drop(waiter)
        if responded:
            self._last_error[waiter.provider] = self._clock.monotonic()

    def providers(self) -> list[str]:
        """The providers attempts are waiting on now."""
        return list(self._waiting)

    def waiting_on(self, provider: str) -> list[Waiter]:
        """The attempts now waiting on ``provider``, oldest first."""
        return list(self._waiting.get(provider, ()))

    def typical(self, provider: str, *, stream: bool, quantile: float, least: int) -> float | None:
        """The baseline's ``quantile`` of ``provider``'s times to answer, once it holds
        ``least`` answers."""
        baseline = self._baseline.get((provider, stream))
        if baseline is None:
            return None
        current = math.floor(self._clock.monotonic() / BUCKET_SECONDS)
        value, samples = baseline.quantile(current, quantile, least)
        return value if samples >= least else None

    def snapshot(self) -> Mapping[str, WaitSignals]:
        now = self._clock.monotonic()
        names = set(self._waiting) | {p for p, _ in self._recent} | set(self._last_error)
        return MappingProxyType({name: self._signals(name, now) for name in sorted(names)})

    def _signals(self, provider: str, now: float) -> WaitSignals:
        last = self._last_error.get(provider)
        table = self._waiting.get(provider, {})
        return WaitSignals(
            streams=self._waits(provider, True, table, now),
            answers=self._waits(provider, False, table, now),
            last_error_age=None if last is None else now - last,
        )

    def _waits(self, provider: str, stream: bool, table: dict[Waiter, None], now: float) -> Waits:
        starts = [w.start for w in table if w.stream is stream]  # oldest first (insertion order)
        key = (provider, stream)
        baseline = self._baseline.get(key)
        typical, samples = None, 0
        if baseline is not None:
            current = math.floor(now / BUCKET_SECONDS)
            typical, samples = baseline.quantile(current, self._quantile, self._least)
        recent = self._recent.get(key, ())
        return Waits(
            waiting=len(starts),
            ages=tuple(now - start for start in starts[:OLDEST]),
            samples=samples,
            typical=typical,
            recent=tuple((now - at, took) for at, took in reversed(recent)),
        )

    def _drop(self, waiter: Waiter) -> None:
        waiter.done = True
        waiter.on_trip = None
        table = self._waiting.get(waiter.provider)
        if table is not None:
            table.pop(waiter, None)
            if not table:
                del self._waiting[waiter.provider]
