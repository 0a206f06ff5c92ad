"""Benchmark: what one upstream call costs through aiohttp's client and through ours.

    python -m tests.bench.upstream_client [--calls 3000] [--rounds 3] [--json]

The gateway's calls to providers go through :mod:`controller.providers._http` (a keep-alive
pool on asyncio protocols, responses parsed by httptools) instead of ``aiohttp.ClientSession``.
This is the measurement behind that choice: the same small POST (the gateway benchmark's chat
request, 16 tokens) to the fake provider in its own process, one call at a time, through

* ``aiohttp``     — one ``ClientSession`` as the gateway configured it before (pooled
  connector, no cookie jar, the same headers), the body read whole;
* ``HttpClient``  — ours, the body read whole.

Both run in this process on uvloop when it is installed (as ``failover serve`` does), pinned to
core 1 with the fake on core 0 when the machine has two. Reported per client: wall µs per call
(p50 over the calls, the median over ``--rounds`` interleaved rounds) and CPU µs per call of this
process (``time.process_time``), the figure that bounds throughput and, at concurrency 1, most of
the latency a proxy adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from controller import _json
from controller._loop import loop_factory
from controller.providers._http import HttpClient
from tests.bench.gateway import API_KEY, BODY, start_fake, stop

HEADERS = {
    "content-type": "application/json",
    "authorization": f"Bearer {API_KEY}",
}
WARMUP = 300

Call = Callable[[], Awaitable[bytes]]


def aiohttp_call(session: aiohttp.ClientSession, url: str, body: bytes) -> Call:
    async def call() -> bytes:
        async with session.post(url, data=body, headers=HEADERS, allow_redirects=False) as resp:
            return await resp.read()

    return call


def our_call(client: HttpClient, target: str, body: bytes) -> Call:
    async def call() -> bytes:
        resp = await client.post(target, HEADERS.items(), body, connect_timeout=5.0)
        try:
            return await resp.read()
        finally:
            resp.release()

    return call


async def measure(call: Call, calls: int) -> tuple[float, float]:
    """(p50 wall µs, CPU µs) per call over ``calls`` sequential calls."""
    for _ in range(WARMUP):
        await call()
    walls = []
    cpu = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return statistics.median(walls) * 1e6, cpu / calls * 1e6


async def run(upstream: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    body = _json.dumps(BODY)
    url = f"{upstream}/v1/chat/completions"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    client = HttpClient(upstream)
    systems = {
        "aiohttp": aiohttp_call(session, url, body),
        "HttpClient": our_call(client, client.target("/v1/chat/completions"), body),
    }
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    try:
        for number in range(rounds):
            for name, call in systems.items():
                seen[name].append(await measure(call, calls))
                wall, cpu = seen[name][-1]
                print(f"[round {number + 1}] {name:<10} {wall:6.0f} µs wall  {cpu:6.0f} µs CPU")
    finally:
        await session.close()
        await client.close()
    return {
        name: {
            "wall_us_p50": statistics.median(w for w, _ in rows),
            "cpu_us": statistics.median(c for _, c in rows),
        }
        for name, rows in seen.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="per round and client (bounded)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    calls = max(1, min(args.calls, 100_000))
    with tempfile.TemporaryDirectory() as tmp:
        fake = start_fake(Path(tmp))
        try:
            if (os.cpu_count() or 1) >= 2:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, {1})
            _, factory = loop_factory("auto")
            with asyncio.Runner(loop_factory=factory) as runner:
                result = runner.run(run(fake.url, calls, max(1, args.rounds)))
        finally:
            stop(fake)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, row in result.items():
            print(f"{name:<10} p50 {row['wall_us_p50']:6.0f} µs wall  {row['cpu_us']:6.0f} µs CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
