"""Attack benchmark: a hostile provider against the provider client, and what it costs the rest.

    python -m tests.bench.hostile [--limit-mib 256] [--seconds 20] [--json]

Replays the provider-side rows of issue 16 on loopback, one at a time, each while other requests
go one after another to a well-behaved fake provider on the same event loop (the hostile server
runs in a child process, so only the client's side of each attack is in the figures):

* ``body-length`` / ``body-close``: a 200 whose body never ends (twice in a row);
* ``event-lines``: one chunk, then ``data:`` lines without the blank line that ends an event;
* ``probe-bombs``: five calls answered by a gzip bomb, one after another (what the probes get);
* ``bombs-8``: eight gzip bombs at once, sent slowly enough to be read side by side;
* ``endless-line``: one chunk, then one line that never ends, 4 KiB at a time.

Reported per attack: how the attack's calls ended, seconds taken, peak resident memory growth
(``VmHWM`` from /proc, reset before each attack) and what stayed after, and the p50/p99 of the
other requests during the attack next to their p50/p99 with no attack. A hostile server stops
after ``--limit-mib`` MiB per connection and each attack after ``--seconds``: on code without
the bounds this still ends, with the memory the attack took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from controller.model import Message, Request
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider
from tests import hostile_support
from tests.conftest import adapter
from tests.hostile_support import (
    KEY,
    OPENAI_CHUNK,
    SSE_HEAD,
    answering_gzip,
    endless,
    endless_body,
    gzip_bomb,
    measured,
)
from tests.http_client_support import Handler, RawServer

LIMITS = Timeouts(connect=2.0, first_token=30.0, idle=30.0, total=60.0, stream_total=120.0)
HELLO = Request(messages=(Message(role="user", content="hello"),))
STREAM = Request(messages=HELLO.messages, stream=True)
Attack = Callable[[HttpProvider], Awaitable[list[str]]]


async def _ended(call: Awaitable[Any]) -> str:
    try:
        await call
    except Exception as exc:  # the outcome is what is reported
        return type(exc).__name__
    return "ok"


async def _drain(provider: HttpProvider) -> None:
    async for _ in provider.stream(STREAM, "m", LIMITS):
        pass


async def _sequential(provider: HttpProvider, times: int) -> list[str]:
    return [await _ended(provider.complete(HELLO, "m", LIMITS)) for _ in range(times)]


async def _concurrent(provider: HttpProvider, times: int) -> list[str]:
    calls = (_ended(provider.complete(HELLO, "m", LIMITS)) for _ in range(times))
    return list(await asyncio.gather(*calls))


async def _streamed(provider: HttpProvider) -> list[str]:
    return [await _ended(_drain(provider))]


def attacks() -> dict[str, tuple[Callable[[], Handler], Attack]]:
    return {
        "body-length": (lambda: endless_body(declared=True), lambda p: _sequential(p, 2)),
        "body-close": (lambda: endless_body(declared=False), lambda p: _sequential(p, 2)),
        "event-lines": (lambda: endless(SSE_HEAD + OPENAI_CHUNK, b"data: x\n"), _streamed),
        "probe-bombs": (lambda: answering_gzip(gzip_bomb()), lambda p: _sequential(p, 5)),
        "bombs-8": (lambda: answering_gzip(gzip_bomb(), 2048), lambda p: _concurrent(p, 8)),
        "endless-line": (
            lambda: endless(SSE_HEAD + OPENAI_CHUNK + b"data: ", b"z" * 4096),
            _streamed,
        ),
    }


def _percentiles(waits: list[float]) -> dict[str, float]:
    ordered = sorted(waits) or [float("nan")]

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"n": len(waits), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def _others(other: HttpProvider, until: asyncio.Future[Any], cap: int) -> list[float]:
    waits: list[float] = []
    while not until.done() and len(waits) < cap:
        started = time.perf_counter()
        await other.complete(HELLO, "m", LIMITS)
        waits.append(time.perf_counter() - started)
    return waits


async def serve(name: str) -> None:
    """The child process: the hostile server of attack ``name``, its URL on stdout, until
    stdin closes."""
    handler, _ = attacks()[name]
    async with RawServer(handler()) as server:
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.asynccontextmanager
async def hostile_process(name: str, limit_mib: int) -> AsyncIterator[HttpProvider]:
    """An adapter pointed at attack ``name``'s server, run in a child process so that its own
    writing does not count in this process's figures."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.hostile", "--limit-mib", str(limit_mib),
        "--serve", name, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        url = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        provider = HttpProvider(
            name="hostile", codec=codec_for("openai"), base_url=url + "/v1", api_key=KEY
        )
        try:
            yield provider
        finally:
            await provider.close()
    finally:
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 10)


async def run_one(name: str, seconds: float, other: HttpProvider, limit: int) -> dict[str, Any]:
    _, attack = attacks()[name]
    async with hostile_process(name, limit) as provider:
        with measured() as memory:
            started = time.perf_counter()
            task = asyncio.ensure_future(asyncio.wait_for(attack(provider), seconds))
            waits = await _others(other, task, 100_000)
            outcomes = [await _ended(task)] if task.exception() else task.result()
            took = time.perf_counter() - started
    return {
        "attack": name,
        "outcomes": outcomes,
        "seconds": round(took, 2),
        "rss_before_mib": round(memory.before, 1),
        "rss_growth_mib": round(memory.growth, 1),
        "rss_kept_mib": round(memory.after - memory.before, 1),
        "others": _percentiles(waits),
    }


async def main(limit_mib: int, seconds: float, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    async with FakeProvider(name="other") as fake:
        other = adapter(fake, "openai", "other")
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(1.0, idle.set_result, None)
        rows.append({"attack": "none", "others": _percentiles(await _others(other, idle, 2000))})
        rows.extend([await run_one(name, seconds, other, limit_mib) for name in names])
        with contextlib.suppress(Exception):
            await other.close()
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", help="(internal) be the hostile server of this attack")
    parser.add_argument("attacks", nargs="*", default=list(attacks()))
    args = parser.parse_args()
    hostile_support.LIMIT = args.limit_mib * hostile_support.MiB
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    rows = asyncio.run(main(args.limit_mib, args.seconds, args.attacks))
    for row in rows:
        print(json.dumps(row) if args.json else _line(row))


def _line(row: dict[str, Any]) -> str:
    others = row["others"]
    lat = f"others p50 {others['p50_ms']} ms p99 {others['p99_ms']} ms (n={others['n']})"
    if row["attack"] == "none":
        return f"{'no attack':14} {lat}"
    return (
        f"{row['attack']:14} {','.join(sorted(set(row['outcomes']))):24} {row['seconds']:6} s  "
        f"RSS +{row['rss_growth_mib']} MiB peak, +{row['rss_kept_mib']} MiB kept  {lat}"
    )


if __name__ == "__main__":
    cli()
