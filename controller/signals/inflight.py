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
every call is O(1). What an answer took is kept per provider and kind (stream: time to the first
chunk; whole answer: time to the body), the last ``history`` of each, so the learned limit
survives an outage that empties the time windows.

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

DEFAULT_HISTORY = 200


class Waiter:
    """One attempt waiting for its answer."""

    __slots__ = ("done", "lost", "on_trip", "provider", "start", "stream")

    def __init__(self, provider: str, stream: bool, start: float) -> None:
        self.provider = provider
        self.stream = stream
        self.start = start
        self.done = False
        self.on_trip: Callable[[], None] | None = None
        self.lost: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Waits:
    """One kind of attempt on one provider: streams waiting for a first chunk, or whole answers.

    ``oldest`` is how long the oldest one has waited; ``typical`` the history's quantile of time
    to answer (``None`` until ``samples`` answers were seen)."""

    waiting: int = 0
    oldest: float | None = None
    samples: int = 0
    typical: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitSignals:
    """What waits on one provider at snapshot time. ``last_answer_age``: seconds since it last
    answered anything (``None``: never, in this process)."""

    streams: Waits = Waits()
    answers: Waits = Waits()
    last_answer_age: float | None = None

    @property
    def waiting(self) -> int:
        return self.streams.waiting + self.answers.waiting

    def kind(self, stream: bool) -> Waits:
        return self.streams if stream else self.answers


NO_WAITS = WaitSignals()


class InFlight:
    """The registry. ``quantile`` is the share of past answers the learned ``typical`` covers."""

    def __init__(
        self, clock: Clock, *, history: int = DEFAULT_HISTORY, quantile: float = 0.99
    ) -> None:
        if history < 1 or not 0.0 < quantile <= 1.0:
            raise ValueError("need history >= 1 and 0 < quantile <= 1")
        self._clock = clock
        self._history = history
        self._quantile = quantile
        self._waiting: dict[str, dict[Waiter, None]] = {}
        self._took: dict[tuple[str, bool], deque[float]] = {}
        self._last_answer: dict[str, float] = {}

    def begin(self, provider: str, *, stream: bool) -> Waiter:
        waiter = Waiter(provider, stream, self._clock.monotonic())
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
        took = self._took.get(key)
        if took is None:
            took = self._took[key] = deque(maxlen=self._history)
        took.append(now - waiter.start)
        self._last_answer[waiter.provider] = now

    def ended(self, waiter: Waiter, *, responded: bool = False) -> None:
        """The attempt ended without an answer. ``responded``: the provider did answer, with an
        error status (it is not silent, whatever else is wrong with it)."""
        if waiter.done:
            return
        self._drop(waiter)
        if responded:
            self._last_answer[waiter.provider] = self._clock.monotonic()

    def providers(self) -> list[str]:
        """The providers attempts are waiting on now."""
        return list(self._waiting)

    def waiting_on(self, provider: str) -> list[Waiter]:
        """The attempts now waiting on ``provider``, oldest first."""
        return list(self._waiting.get(provider, ()))

    def typical(self, provider: str, *, stream: bool, quantile: float, least: int) -> float | None:
        """The ``quantile`` of ``provider``'s recent times to answer, once ``least`` were seen."""
        took = self._took.get((provider, stream))
        if took is None or len(took) < least:
            return None
        return _quantile(sorted(took), quantile)

    def snapshot(self) -> Mapping[str, WaitSignals]:
        now = self._clock.monotonic()
        names = set(self._waiting) | set(self._last_answer)
        return MappingProxyType({name: self._signals(name, now) for name in sorted(names)})

    def _signals(self, provider: str, now: float) -> WaitSignals:
        last = self._last_answer.get(provider)
        table = self._waiting.get(provider, {})
        return WaitSignals(
            streams=self._waits(provider, True, table, now),
            answers=self._waits(provider, False, table, now),
            last_answer_age=None if last is None else now - last,
        )

    def _waits(self, provider: str, stream: bool, table: dict[Waiter, None], now: float) -> Waits:
        starts = [w.start for w in table if w.stream is stream]
        took = self._took.get((provider, stream), ())
        return Waits(
            waiting=len(starts),
            oldest=now - starts[0] if starts else None,
            samples=len(took),
            typical=_quantile(sorted(took), self._quantile) if took else None,
        )

    def _drop(self, waiter: Waiter) -> None:
        waiter.done = True
        waiter.on_trip = None
        table = self._waiting.get(waiter.provider)
        if table is not None:
            table.pop(waiter, None)
            if not table:
                del self._waiting[waiter.provider]


def _quantile(ordered: list[float], quantile: float) -> float:
    """The nearest-rank quantile of a sorted, non-empty list."""
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
