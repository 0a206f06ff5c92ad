"""Helpers of the detection benchmark: fake providers as processes, a fault log, statistics.

The fake providers run as separate processes (``python -m controller.providers.fake``) so the
benchmark's event loop only carries what a real gateway carries: the router, the controller, the
dispatcher, the fake Telegram. Every wait here is bounded in time, every loop in count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controller.events import AttemptEvent, AttemptReason, Outcome, RouteEvent
from controller.model import Message, Request

REQUEST = Request(messages=(Message(role="user", content="detection bench"),), max_tokens=16)


@contextlib.asynccontextmanager
async def fake_process(
    name: str, *, latency_ms: float, reply: str | None = None, pace_ms: float = 0.0
) -> AsyncIterator[str]:
    """Run one fake provider in its own process; yields its root URL (``http://127.0.0.1:N``).
    ``reply`` is the text it answers, ``pace_ms`` the wait between its stream chunks."""
    more = ("--reply", reply) if reply is not None else ()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "controller.providers.fake", "--name", name),
        *("--port", "0", "--latency-ms", f"{latency_ms:g}", "--pace-ms", f"{pace_ms:g}"),
        *more,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15.0):  # a fresh interpreter + imports, on a busy machine
            line = (await proc.stdout.readline()).decode()
        if "http://" not in line:
            raise RuntimeError(f"fake provider {name} did not start (said {line!r})")
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(10.0):
            await proc.wait()


async def set_fault(
    session: aiohttp.ClientSession, root: str, mode: str | None, **fault: float
) -> None:
    """Switch the fake's fault over HTTP (``None`` clears it), as another process would;
    ``fault`` sets its other fields (``delay``, ...)."""
    timeout = aiohttp.ClientTimeout(total=5.0)
    if mode is None:
        request = session.delete(f"{root}/_fake/fault", timeout=timeout)
    else:
        body = {"mode": mode, **fault}
        request = session.post(f"{root}/_fake/fault", json=body, timeout=timeout)
    async with request as response:
        response.raise_for_status()


@dataclass(slots=True)
class FaultLog:
    """A router listener keeping the end times of ``provider``'s faulted attempts.

    It tells the detection latency apart into "waiting for enough faults to happen" (traffic
    rate, retries, the consecutive-failure count) and "waiting for the controller to look".
    """

    provider: str
    ends: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # of its attempts other than probes
    limit: int = 100_000

    def on_attempt(self, event: AttemptEvent) -> None:
        if event.provider != self.provider:
            return
        if event.outcome is Outcome.FAULT and len(self.ends) < self.limit:
            self.ends.append(event.end)
        if event.reason is not AttemptReason.PROBE and len(self.starts) < self.limit:
            self.starts.append(event.start)

    def tried_between(self, start: float, end: float) -> int:
        """Attempts (not probes) that started on the provider in ``[start, end)``."""
        return sum(1 for t in self.starts if start <= t < end)

    def on_route(self, event: RouteEvent) -> None:
        return None

    def nth_after(self, start: float, n: int) -> float | None:
        """End time of the ``n``-th fault (1-based) that ended at or after ``start``."""
        later = [t for t in self.ends if t >= start]
        return later[n - 1] if len(later) >= n else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max of seconds, as milliseconds rounded to 0.1 ms."""
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else math.nan,
    }


def run_report(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    parser: argparse.ArgumentParser,
) -> None:
    """A benchmark's command line: parse, run ``main``, print its report (``--json``: as JSON,
    else as ``render`` writes it). Errors only in the log: a benchmark's own output is the
    report."""
    parser.add_argument("--json", action="store_true")
    logging.basicConfig(level=logging.ERROR)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    print(json.dumps(result, indent=2) if arguments.json else render(result))
