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
from dataclasses import dataclass, field
from typing import Any

from controller.model import Message, Request
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers._http_body import _TRIM
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


async def _ended(call: Callable[[], Awaitable[Any]]) -> str:
    try:
        await call()
    except Exception as exc:  # the outcome is what is reported
        return type(exc).__name__
    return "ok"


async def _drain(provider: HttpProvider) -> None:
    async for _ in provider.stream(STREAM, "m", LIMITS):
        pass


def _complete(provider: HttpProvider) -> Callable[[], Awaitable[Any]]:
    return lambda: provider.complete(HELLO, "m", LIMITS)


async def _sequential(provider: HttpProvider, times: int) -> list[str]:
    return [await _ended(_complete(provider)) for _ in range(times)]


async def _concurrent(provider: HttpProvider, times: int) -> list[str]:
    return list(await asyncio.gather(*(_ended(_complete(provider)) for _ in range(times))))


async def _streamed(provider: HttpProvider) -> list[str]:
    return [await _ended(lambda: _drain(provider))]


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


@dataclass
class Waits:
    """How long each of the other calls took: on the clock (what its caller saw) and in this
    thread's CPU time (the loop's own work meanwhile: its share of the attack, without the
    time the machine gave other processes)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def extend(self, other: Waits) -> None:
        self.wall.extend(other.wall)
        self.cpu.extend(other.cpu)

    def figures(self) -> dict[str, float]:
        wall, cpu = _percentiles(self.wall), _percentiles(self.cpu)
        return {"n": len(self.wall), "p50_ms": wall[0], "p99_ms": wall[1],
                "cpu_p50_ms": cpu[0], "cpu_p99_ms": cpu[1]}  # fmt: skip


def _percentiles(waits: list[float]) -> tuple[float, float]:
    ordered = sorted(waits) or [float("nan")]

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return pick(0.5), pick(0.99)


async def _others(other: HttpProvider, seconds: float) -> Waits:
    """Calls to the well-behaved provider, one after another, for ``seconds``."""
    waits = Waits()
    clock, cpu = time.perf_counter, time.thread_time
    ends = clock() + seconds
    while (started := clock()) < ends:
        spent = cpu()
        await other.complete(HELLO, "m", LIMITS)
        waits.cpu.append(cpu() - spent)
        waits.wall.append(clock() - started)
    return waits


async def _repeated(attack: Attack, provider: HttpProvider, outcomes: list[str]) -> None:
    """The attack again and again (until cancelled), each one's outcomes kept."""
    while True:
        outcomes.extend(await attack(provider))
        await asyncio.sleep(0)  # an attack that ends at once must not starve the loop


async def _attacked(
    attack: Attack, provider: HttpProvider, other: HttpProvider, seconds: float
) -> tuple[Waits, list[str]]:
    """The other calls for ``seconds`` while the attack repeats; an attack still going when
    the window ends is cancelled (not counted)."""
    outcomes: list[str] = []
    task = asyncio.ensure_future(_repeated(attack, provider, outcomes))
    try:
        waits = await _others(other, seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return waits, outcomes


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


async def run_one(
    name: str, other: HttpProvider, *, window: float, rounds: int, limit: int
) -> dict[str, Any]:
    """``rounds`` pairs of windows, one without the attack and one with it repeating, each
    ``window`` seconds of other calls: the two sides measured the same way, under the same
    load of the machine (interleaved, so that a busy spell falls on both)."""
    _, attack = attacks()[name]
    normal, during = Waits(), Waits()
    outcomes: list[str] = []
    async with hostile_process(name, limit) as provider:
        await _others(other, window / 4)  # warm: connections made, code paths run once
        with measured() as memory:
            for _ in range(rounds):
                normal.extend(await _others(other, window))
                waits, ended = await _attacked(attack, provider, other, window)
                during.extend(waits)
                outcomes.extend(ended)
            await asyncio.sleep(_TRIM.every + 0.1)  # the last refusals' memory given back
    base, hit = normal.figures(), during.figures()
    return {
        "attack": name,
        "calls": len(outcomes),
        "outcomes": sorted(set(outcomes)),
        "rss_before_mib": round(memory.before, 1),
        "rss_growth_mib": round(memory.growth, 1),
        "rss_kept_mib": round(memory.after - memory.before, 1),
        "normal": base,
        "attacked": hit,
        "p50_ratio": round(hit["p50_ms"] / base["p50_ms"], 2),
        "p99_ratio": round(hit["p99_ms"] / base["p99_ms"], 2),
        "cpu_p50_ratio": round(hit["cpu_p50_ms"] / base["cpu_p50_ms"], 2),
        "cpu_p99_ratio": round(hit["cpu_p99_ms"] / base["cpu_p99_ms"], 2),
    }


async def main(
    limit_mib: int, window: float, rounds: int, names: list[str]
) -> list[dict[str, Any]]:
    async with FakeProvider(name="other") as fake:
        other = adapter(fake, "openai", "other")
        rows = [
            await run_one(name, other, window=window, rounds=rounds, limit=limit_mib)
            for name in names
        ]
        with contextlib.suppress(Exception):
            await other.close()
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=8, help="window pairs per attack")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", help="(internal) be the hostile server of this attack")
    parser.add_argument("attacks", nargs="*", default=list(attacks()))
    args = parser.parse_args()
    hostile_support.LIMIT = args.limit_mib * hostile_support.MiB
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    rows = asyncio.run(main(args.limit_mib, args.window, args.rounds, args.attacks))
    for row in rows:
        print(json.dumps(row) if args.json else _line(row))


def _line(row: dict[str, Any]) -> str:
    base, hit = row["normal"], row["attacked"]

    def pair(key: str) -> str:
        return f"{base[key]} -> {hit[key]}"

    verdict = "within 2x" if row["p99_ratio"] <= 2 else "OVER 2x"
    return (
        f"{row['attack']:13} {row['calls']:4} calls ended {','.join(row['outcomes']):17} "
        f"RSS +{row['rss_growth_mib']} MiB peak, +{row['rss_kept_mib']} kept | others (ms, "
        f"n={base['n']}/{hit['n']}) p50 {pair('p50_ms')}, p99 {pair('p99_ms')} "
        f"x{row['p99_ratio']} {verdict}; cpu p50 {pair('cpu_p50_ms')}, "
        f"p99 {pair('cpu_p99_ms')} x{row['cpu_p99_ratio']}"
    )


if __name__ == "__main__":
    cli()
