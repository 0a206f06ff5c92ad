"""Steady client traffic for the end-to-end tests and the benchmarks: one paced, bounded loop.

What one request *is* differs (a router call, HTTP through the openai SDK or aiohttp, ...): the
caller passes it in as a :data:`Send`. It gets the request's index, returns the name of the
provider that served it (``None`` where the answer does not say or does not count) and raises
when the client saw an error. :class:`Traffic` paces the sends, never waits for an answer before
the next send, and records what each request got.

Every run is bounded in count (``max_requests``) and in time (``max_seconds`` of sending, then at
most ``drain_seconds`` for the answers still in flight); ``stop`` ends it early.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controller.model import Request
from controller.routing.router import Router

#: Sends request number ``i``; returns who served it (or None), raises on a client-visible error.
Send = Callable[[int], Awaitable[str | None]]

LATE = 0.05  # seconds behind its due time: the loop was too busy to keep the rate


class BadAnswer(Exception):
    """An answer the client counts as an error although nothing raised (a bad status, say)."""


def through_router(router: Router, request: Request, *, tier: str) -> Send:
    """A :data:`Send` that asks ``router`` for one non-streaming answer to ``request``."""

    async def send(_: int) -> str:
        return (await router.complete(request, tier=tier)).provider

    return send


@dataclass(slots=True)
class Traffic:
    """Requests at a steady rate, each in its own task; records what each one got.

    Pacing: with ``catch_up`` (open loop), request ``i`` is due at ``start + i / rate`` whatever
    happens, so a loop that fell behind sends the missed requests at once and a slow failover
    shows up as latency and errors rather than as fewer calls. Without it, each request is due
    ``1 / rate`` after the previous one went out, so a stalled event loop shows up as fewer
    requests. Either way a request more than :data:`LATE` behind its due time counts in
    ``late_starts``.
    """

    send: Send
    catch_up: bool = False
    drain_seconds: float = 30.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    late_starts: int = 0
    served: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, provider)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, what)
    took: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds) if served
    _pending: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def served_by(self) -> dict[str, int]:
        """How many requests each provider served."""
        return dict(Counter(provider for _, provider in self.served))

    async def run(
        self, *, rate: float, max_seconds: float, max_requests: int | None = None
    ) -> None:
        """Send at ``rate`` per second until ``max_requests`` (default: as many as ``rate``
        fills ``max_seconds`` with) went out, ``max_seconds`` passed or ``stop`` is set; then
        wait for the answers in flight."""
        start = due = time.monotonic()
        count = math.ceil(max_seconds * rate) if max_requests is None else max_requests
        for i in range(count):  # bounded in count, and by the clock below in time
            await self._until(due)
            now = time.monotonic()
            if self.stop.is_set() or now - start >= max_seconds:
                break
            if now - due > LATE:
                self.late_starts += 1
            self._start(i)
            due = start + (i + 1) / rate if self.catch_up else now + 1.0 / rate
        await self._drain()

    async def _until(self, due: float) -> None:
        """Wait until ``due`` (monotonic) or until ``stop`` is set, whichever comes first."""
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop.wait()

    def _start(self, i: int) -> None:
        task = asyncio.create_task(self._one(i))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self.sent += 1

    async def _one(self, i: int) -> None:
        sent = time.monotonic()
        try:
            provider = await self.send(i)
        except Exception as exc:  # a client-visible error is exactly what is recorded here
            self.errors.append((time.monotonic(), repr(exc)))
        else:
            done = time.monotonic()
            self.took.append((sent, done - sent))
            if provider is not None:
                self.served.append((done, provider))

    def latencies(self, start: float, end: float) -> list[float]:
        """How long the requests sent in ``[start, end)`` took (those that were served)."""
        return [took for sent, took in self.took if start <= sent < end]

    async def _drain(self) -> None:
        """Wait for the requests in flight; one still running after ``drain_seconds`` is
        cancelled and counts as an error."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=self.drain_seconds)
        for task in late:
            task.cancel()
            self.errors.append((time.monotonic(), "no answer within the drain"))
        if late:
            await asyncio.wait(late, timeout=5.0)
