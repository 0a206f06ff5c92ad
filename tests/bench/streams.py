"""Benchmark: how many concurrent streams one core relays, the gateway against a floor.

    python -m tests.bench.streams [--levels 100 200 500 1000 1500 2000] [--chunks 200]
                                  [--gap-ms 20] [--systems floor gateway] [--rounds N] [--json]
                                  [--timeline]

Every stream is an OpenAI chat completion with ``stream: true`` whose answer is ``--chunks``
chunks ``--gap-ms`` apart (issue 17: 200 chunks, 20 ms), then a finish chunk and ``[DONE]``.
At each level, that many client connections are opened first (200 at a time, not measured: a
storm of connects is another benchmark), then each sends its request, the starts spread over
one second, and reads its stream to the end; the levels run one after another, each system on
its own, the system under test pinned to core 1 (``taskset``):

* ``direct``   — the upstream itself, as the baseline of every "added" figure;
* ``floor``    — :func:`create_stream_passthrough`: an ``aiohttp.web`` server relaying each
  request through one pooled ``aiohttp.ClientSession`` and writing the answer's bytes back as
  they come (``iter_any``), parsing nothing: the least a Python streaming proxy does;
* ``gateway``  — ``failover serve`` (uvloop, telemetry as a default deployment runs it, no OTLP
  export), one provider of kind ``openai`` at the upstream: the same-format route, which relays
  the provider's events as they came and reads them for usage, finish and cuts.

``--rounds N`` measures every level N times, the systems interleaved level by level (each
started afresh for its level, their order turned about each round) and sums up each level over
the rounds: one run on this kind of machine varies more than the two proxies differ. A system
``gateway@PATH`` is ``failover serve`` from another source tree (a worktree of another commit),
for an A/B of two gateways in the same interleaved run.

The floor runs on uvloop too (``--floor-loop asyncio`` for asyncio's loop), so the two differ by
what they do per chunk, not by their loop.

The upstream (:func:`serve_upstream`) and the load generator share core 0, in two processes,
and are written to cost little per chunk (raw asyncio protocols on uvloop, httptools for the
client's parsing): each chunk carries the upstream's ``CLOCK_MONOTONIC`` time of writing it, so
the client knows each chunk's transit time through the system. Figures per level:

* ``first p50/p99``: time from sending the request to the first chunk, added over ``direct``;
* ``gap p50/p99``: how much later each chunk arrived after the one before than it was written
  after it (``transit[i] - transit[i-1]``): the jitter the relay adds between chunks;
* ``late p99``: transit time added over ``direct`` (catches a relay falling behind: its gaps
  stay near 20 ms while every chunk comes later than the last);
* ``cpu/chunk``: the system's CPU (``utime+stime`` of its process tree from ``/proc``) over the
  level, divided by the chunks it relayed; ``rss``: its largest resident size sampled during
  the level (``VmRSS``, every 0.25 s);
* errors: streams that failed, ended short, or did not end within the level's bound.

``--timeline`` also prints, for each level, the chunks' transit (largest and 90th percentile)
per 100 ms of the level: whether a relay falls behind at the starts (all within the level's
first second) or all along, and how soon it catches up.

A level is **held** when every stream got every chunk, none failed, and both the added gap p99
and the added late p99 are at most 50 ms. Run it on a quiet machine; the load side's own CPU is
printed so that a saturated core 0 is seen rather than blamed on the system under test.

``--instructions STREAMS`` counts instead, under valgrind's callgrind, the instructions each
system executes per relayed chunk: a figure that other work on the machine moves little, for A/B
comparisons of the relay path; it is also given net of what the system runs in the same time
with no stream at all (its timers), which a few streams cannot amortize as a thousand would.
Keep the rate low (``--instructions 2 --chunks 500 --gap-ms 50``): a proxy runs ~50x slower
under valgrind, and one that falls behind on a busy machine reads several chunks at once and
counts fewer instructions per chunk than it does when it keeps up. With very short streams
(``--instructions 200 --chunks 2``) the count per chunk is mostly the cost of a stream's start
and end (request, route, first and last events): the per-request side of a level's first
second, when all its streams start. ``--keep DIR`` keeps the callgrind dumps
(``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httptools
from aiohttp import web

from tests.bench._serve import serve_until_signalled
from tests.bench.gateway import (
    API_KEY,
    LOAD_CORE,
    MODEL,
    PROXY_CORE,
    System,
    clean_env,
    cpu_ms,
    free_port,
    spawn,
    stop,
    wait_ready,
)

__all__ = ["create_stream_passthrough", "main", "serve_upstream"]

LEVELS = (100, 200, 500, 1000, 1500, 2000)
HELD_MS = 50.0  # added gap and late p99 at most this for a level to be held
_SLOTS = 20  # phases the upstream spreads its streams over (one per ms of a 20 ms gap)
_STAMP = 19  # digits of the upstream's clock in each chunk (fixed width: fixed chunk size)

GATEWAY_YAML = """\
providers:
  up: {{kind: openai, base_url: "{upstream}/v1", api_key_env: BENCH_UPSTREAM_KEY,
       max_connections: 10000, timeouts: {{first_token: 30, idle: 30, total: 600}}}}
tiers:
  bench:
    targets:
      - {{provider: up, model: {model}}}
aliases: {{{model}: bench}}
state: {{path: "{state}"}}
gateway: {{host: 127.0.0.1, port: {port}, admin_host: 127.0.0.1, admin_port: {admin_port}}}
"""


# ------------------------------------------------------------------------------ upstream
def _chunk(stamp: int) -> bytes:
    event = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"'
        + MODEL.encode()
        + b'","choices":[{"index":0,"delta":{"content":"t%019d "},"finish_reason":null}]}\n\n'
        % stamp
    )
    return b"%x\r\n%s\r\n" % (len(event), event)


_END = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"'
    + MODEL.encode()
    + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":8,"completion_tokens":200,"total_tokens":208}}\n\n'
    b"data: [DONE]\n\n"
)
_TAIL = b"%x\r\n%s\r\n0\r\n\r\n" % (len(_END), _END)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_WHOLE = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    }
).encode()
_WHOLE_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_WHOLE), _WHOLE)
)


class _Upstream:
    """Streams due in each of ``_SLOTS`` phases; a tick every ms writes to the phases due."""

    def __init__(self, chunks: int, gap: float) -> None:
        self.chunks = chunks
        self.gap = gap
        self.slots: list[dict[asyncio.Transport, int]] = [{} for _ in range(_SLOTS)]
        self.loop = asyncio.get_running_loop()
        self._slot = int(time.monotonic() / (gap / _SLOTS))

    def add(self, transport: asyncio.Transport) -> None:
        transport.write(_STREAM_HEAD)
        self.slots[(self._slot + 1) % _SLOTS][transport] = 0

    def tick(self) -> None:
        now = int(time.monotonic() / (self.gap / _SLOTS))
        for slot in range(self._slot + 1, now + 1):
            due = self.slots[slot % _SLOTS]
            done = []
            for transport, sent in due.items():
                if transport.is_closing():
                    done.append(transport)
                elif sent < self.chunks:
                    transport.write(_chunk(time.monotonic_ns()))
                    due[transport] = sent + 1
                else:
                    transport.write(_TAIL)
                    done.append(transport)
            for transport in done:
                del due[transport]
        self._slot = now
        self.loop.call_later(self.gap / _SLOTS, self.tick)


class _UpstreamConnection(asyncio.Protocol):
    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            if b'"stream":true' in body.replace(b" ", b""):
                self.upstream.add(self.transport)
            else:
                self.transport.write(_WHOLE_ANSWER)


async def serve_upstream(port: int, chunks: int, gap: float) -> None:
    """The upstream: every POST with ``"stream": true`` gets ``chunks`` chunks ``gap`` apart;
    any other a small whole answer (the readiness checks). Prints ``listening on <url>``."""
    upstream = _Upstream(chunks, gap)
    server = await asyncio.get_running_loop().create_server(
        lambda: _UpstreamConnection(upstream), "127.0.0.1", port, backlog=4096
    )
    upstream.tick()
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------------------- floor
_SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_stream_passthrough(*, upstream: str) -> web.Application:
    """The floor: each request forwarded through one pooled session, the answer's bytes
    written back as they come; nothing parsed, routed or recorded."""
    app = web.Application()
    target = upstream.rstrip("/") + "/v1/chat/completions"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            app[_SESSION] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        async with app[_SESSION].post(target, data=body, headers=headers) as up:
            reply = web.StreamResponse(status=up.status)
            reply.content_type = up.content_type
            await reply.prepare(request)
            async for data in up.content.iter_any():
                await reply.write(data)
            await reply.write_eof()
            return reply

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    return app


# -------------------------------------------------------------------------------- load
@dataclass
class StreamFigures:
    """What one level's streams saw, in ms."""

    first: array.array[float] = field(default_factory=lambda: array.array("d"))
    gaps: array.array[float] = field(default_factory=lambda: array.array("d"))
    transit: array.array[float] = field(default_factory=lambda: array.array("d"))
    at: array.array[int] = field(default_factory=lambda: array.array("q"))  # ns, monotonic
    chunks: int = 0
    errors: int = 0


class _Client(asyncio.Protocol):
    """One streaming request, its answer parsed with httptools, each chunk's stamp read."""

    def __init__(self, figures: StreamFigures, chunks: int, done: asyncio.Future[None]) -> None:
        self.figures = figures
        self.expected = chunks
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.pending = b""
        self.sent = 0
        self.count = 0
        self.last = -1.0
        self.ended = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        """Send the request (the connection was opened before the level's clock started)."""
        body = json.dumps(
            {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}]}
        ).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sent = time.monotonic_ns()
        if self.transport is None or self.transport.is_closing():
            self._finish(ok=False)  # closed by the other end before its request
            return
        self.transport.write(head + body)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(ok=False)

    def on_status(self, status: bytes) -> None:
        if self.parser.get_status_code() != 200:
            self._finish(ok=False)

    def on_body(self, body: bytes) -> None:
        now = time.monotonic_ns()
        data = self.pending + body
        at = 0
        while (mark := data.find(b'"content":"t', at)) >= 0:
            end = mark + 12 + _STAMP
            if end > len(data):
                break
            transit = (now - int(data[mark + 12 : end])) / 1e6
            if self.count == 0:
                self.figures.first.append((now - self.sent) / 1e6)
            else:
                self.figures.gaps.append(transit - self.last)
            self.figures.transit.append(transit)
            self.figures.at.append(now)
            self.last = transit
            self.count += 1
            at = end
        self.pending = data[at:][-256:]

    def on_message_complete(self) -> None:
        self.ended = True
        self._finish(ok=self.count == self.expected)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ok=self.ended and self.count == self.expected)

    def _finish(self, *, ok: bool) -> None:
        if not self.done.done():
            self.figures.chunks += self.count
            if not ok:
                self.figures.errors += 1
            self.done.set_result(None)


async def _connect(url: str, figures: StreamFigures, chunks: int) -> _Client | None:
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    client = _Client(figures, chunks, loop.create_future())
    try:
        await loop.create_connection(lambda: client, host, int(port))
    except OSError:
        figures.errors += 1
        return None
    return client


async def _one(client: _Client | None, delay: float, bound: float) -> None:
    if client is None:
        return
    await asyncio.sleep(delay)
    client.start()
    try:
        await asyncio.wait_for(asyncio.shield(client.done), bound)
    except TimeoutError:
        client._finish(ok=False)
    finally:
        if client.transport is not None:
            client.transport.close()


async def open_level(url: str, streams: int, chunks: int) -> tuple[StreamFigures, list[Any]]:
    """``streams`` connections opened, 200 at a time, before the level starts: what is
    measured is relaying streams, not accepting a storm of connections."""
    figures = StreamFigures()
    clients: list[_Client | None] = []
    for start in range(0, streams, 200):
        batch = range(start, min(streams, start + 200))
        clients += await asyncio.gather(*(_connect(url, figures, chunks) for _ in batch))
    return figures, clients


async def run_level(
    figures: StreamFigures, clients: list[Any], chunks: int, gap: float
) -> StreamFigures:
    """Every stream's request, their starts spread over a second, each read to its end (or
    counted as an error past its bound: the stream's own length plus 30 s)."""
    bound = chunks * gap + 30.0
    count = len(clients)
    await asyncio.gather(*(_one(c, i / count, bound) for i, c in enumerate(clients)))
    return figures


def _pct(values: array.array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------ driving
@dataclass(frozen=True, kw_only=True)
class Level:
    system: str
    streams: int
    chunks: int
    errors: int
    first_p50: float
    first_p99: float
    gap_p50: float
    gap_p99: float
    transit_p50: float
    transit_p99: float
    cpu_us_per_chunk: float | None
    rss_mb: float | None
    load_cpu_share: float
    added_first_p50: float | None = None
    added_first_p99: float | None = None
    added_late_p99: float | None = None
    held: bool | None = None
    round: int = 0


def _rss_mb(root: int) -> float:
    from tests.bench.gateway import process_tree

    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


async def _sample_rss(pid: int, peak: list[float]) -> None:
    while True:
        peak[0] = max(peak[0], await asyncio.to_thread(_rss_mb, pid))
        await asyncio.sleep(0.25)


async def measure(
    system: System, streams: int, chunks: int, gap: float, timeline: bool = False
) -> Level:
    pid = system.proc.pid if system.proc is not None else None
    figures, clients = await open_level(system.url, streams, chunks)
    await asyncio.sleep(0.5)  # the accepting done with
    before = cpu_ms(pid) if pid else 0.0
    load_before = time.process_time()
    started = time.monotonic()
    peak = [0.0]
    sampler = asyncio.ensure_future(_sample_rss(pid, peak)) if pid else None
    try:
        figures = await run_level(figures, clients, chunks, gap)
    finally:
        if sampler is not None:
            sampler.cancel()
    used = cpu_ms(pid) - before if pid else 0.0
    if timeline:
        print(_timeline(system.name, streams, started, figures), file=sys.stderr, flush=True)
    load_share = (time.process_time() - load_before) / (time.monotonic() - started)
    return Level(
        system=system.name,
        streams=streams,
        chunks=figures.chunks,
        errors=figures.errors,
        first_p50=_pct(figures.first, 0.5),
        first_p99=_pct(figures.first, 0.99),
        gap_p50=_pct(figures.gaps, 0.5),
        gap_p99=_pct(figures.gaps, 0.99),
        transit_p50=_pct(figures.transit, 0.5),
        transit_p99=_pct(figures.transit, 0.99),
        cpu_us_per_chunk=(used * 1000 / figures.chunks) if pid and figures.chunks else None,
        rss_mb=peak[0] if pid else None,
        load_cpu_share=load_share,
    )


def _timeline(name: str, streams: int, started: float, figures: StreamFigures) -> str:
    """``--timeline``: the chunks' transit, largest and 90th percentile (ms), per 100 ms of
    the level by when each arrived: where in the level a relay falls behind (the starts, all
    within its first second, or all along) and how soon it catches up."""
    slots: dict[int, list[float]] = {}
    origin = started * 1e9
    for at, transit in zip(figures.at, figures.transit, strict=True):
        slots.setdefault(int((at - origin) / 1e8), []).append(transit)
    tops, p90s = [], []
    for slot in range(max(slots, default=-1) + 1):
        values = sorted(slots.get(slot, [0.0]))
        tops.append(f"{values[-1]:.0f}")
        p90s.append(f"{values[int(0.9 * (len(values) - 1))]:.0f}")
    return (
        f"  {name} {streams}: transit per 100 ms, max: {' '.join(tops)}\n"
        f"  {name} {streams}: transit per 100 ms, p90: {' '.join(p90s)}"
    )


def with_added(levels: list[Level]) -> list[Level]:
    base = {(lv.round, lv.streams): lv for lv in levels if lv.system == "direct"}
    out = []
    for lv in levels:
        b = base.get((lv.round, lv.streams))
        if lv.system == "direct" or b is None:
            out.append(lv)
            continue
        late = lv.transit_p99 - b.transit_p99
        gap = lv.gap_p99 - b.gap_p99
        held = lv.errors == 0 and gap <= HELD_MS and late <= HELD_MS
        added = {
            "added_first_p50": lv.first_p50 - b.first_p50,
            "added_first_p99": lv.first_p99 - b.first_p99,
            "added_late_p99": late,
            "held": held,
        }
        out.append(Level(**{**asdict(lv), **added}))
    return out


def start_upstream(tmp: Path, chunks: int, gap: float) -> System:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.streams", "--serve-upstream", str(port)]
    cmd += ["--chunks", str(chunks), "--gap-ms", str(gap * 1000)]
    system = System(name="direct", url=f"http://127.0.0.1:{port}", command=" ".join(cmd))
    system.proc = spawn(cmd, core=LOAD_CORE, log=tmp / "upstream.log", env=clean_env())
    wait_ready(system, within=30, log=tmp / "upstream.log")
    return system


def start_floor(tmp: Path, upstream: str, loop: str) -> System:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.streams", "--serve-floor", str(port)]
    cmd += ["--upstream", upstream, "--floor-loop", loop]
    system = System(name="floor", url=f"http://127.0.0.1:{port}", command=" ".join(cmd))
    system.proc = spawn(cmd, core=PROXY_CORE, log=tmp / "floor.log", env=clean_env())
    wait_ready(system, within=30, log=tmp / "floor.log")
    return system


def start_gateway(tmp: Path, upstream: str, tree: Path | None = None) -> System:
    """``failover serve`` of this checkout, or of the source tree ``tree`` (another commit's
    worktree, for an A/B in one run: ``--systems gateway gateway@/path/to/tree``)."""
    port = free_port()
    config = tmp / "gateway.yaml"
    config.write_text(
        GATEWAY_YAML.format(
            upstream=upstream,
            model=MODEL,
            state=tmp / "state.json",
            port=port,
            admin_port=free_port(),
        )
    )
    cmd = [sys.executable, "-m", "controller.cli", "serve", "--config", str(config)]
    name = "gateway" if tree is None else f"gateway@{tree.name}"
    system = System(name=name, url=f"http://127.0.0.1:{port}", command=" ".join(cmd))
    env = clean_env(BENCH_UPSTREAM_KEY=API_KEY)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    system.proc = spawn(cmd, core=PROXY_CORE, log=tmp / "gateway.log", env=env, cwd=tree)
    wait_ready(system, within=60, log=tmp / "gateway.log")
    return system


async def _levels(
    system: System, levels: list[int], chunks: int, gap: float, timeline: bool = False
) -> list[Level]:
    out = []
    for streams in levels:
        out.append(await measure(system, streams, chunks, gap, timeline))
        print(_row(out[-1]), file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)  # connections closing, the upstream's slots emptied
    return out


def main(args: argparse.Namespace) -> list[Level]:
    gap = args.gap_ms / 1000
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as where:
        tmp = Path(where)
        upstream = start_upstream(tmp, args.chunks, gap)
        os.sched_setaffinity(0, {int(LOAD_CORE)})
        levels: list[Level] = []
        try:
            if args.rounds > 1:
                levels += _rounds(tmp, upstream, args)
            else:
                levels += _run(upstream, args)
                for name in args.systems:
                    system = _start(name, tmp, upstream.url, args.floor_loop)
                    try:
                        levels += _run(system, args)
                    finally:
                        stop(system)
        finally:
            stop(upstream)
    return with_added(levels)


def _start(name: str, tmp: Path, upstream: str, floor_loop: str) -> System:
    if name == "floor":
        return start_floor(tmp, upstream, floor_loop)
    _, at, tree = name.partition("@")
    return start_gateway(tmp, upstream, Path(tree).resolve() if at else None)


def _rounds(tmp: Path, upstream: System, args: argparse.Namespace) -> list[Level]:
    """``--rounds`` interleaved: in each round, each level is measured on the upstream, then on
    each system, each started afresh for it and stopped after; the systems' order turns about
    from round to round. A slow minute of the machine then weighs on both, not on whichever
    system's levels happened to run in it."""
    out: list[Level] = []
    for number in range(args.rounds):
        order = args.systems if number % 2 == 0 else args.systems[::-1]
        for streams in args.levels:
            out += [replace(lv, round=number) for lv in _run(upstream, args, [streams])]
            for name in order:
                system = _start(name, tmp, upstream.url, args.floor_loop)
                try:
                    out += [replace(lv, round=number) for lv in _run(system, args, [streams])]
                finally:
                    stop(system)
    return out


def instructions(args: argparse.Namespace) -> dict[str, float]:
    """Instructions per relayed chunk of each system (valgrind's callgrind counts them, whatever
    else the machine is doing): ``--instructions`` streams (few: under valgrind a proxy runs
    ~50x slower and must keep up), after a warm-up of the same, counters zeroed between; and
    net of what the system runs in the same time with no stream (``<name>_net``): with four
    streams the gateway's periodic work (~4 M instructions a second) weighs ~20 k per chunk,
    which a thousand streams would share."""
    from tests.bench.instructions import start_under_callgrind

    gap = args.gap_ms / 1000
    per_chunk: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streams-instr-") as where:
        tmp = Path(where)
        upstream = start_upstream(tmp, args.chunks, gap)
        env = clean_env(BENCH_UPSTREAM_KEY=API_KEY)
        try:
            for name in args.systems:
                if name == "floor":
                    cmd = [sys.executable, "-m", "tests.bench.streams", "--upstream"]
                    cmd += [upstream.url, "--floor-loop", args.floor_loop, "--serve-floor"]
                else:
                    config = tmp / "gateway.yaml"
                    config.write_text(
                        GATEWAY_YAML.format(
                            upstream=upstream.url, model=MODEL, state=tmp / "state.json",
                            port=free_port(), admin_port=free_port(),
                        )
                    )  # fmt: skip
                    cmd = [sys.executable, "-m", "controller.cli", "serve", "--config"]
                    cmd += [str(config), "--port"]
                system = start_under_callgrind(name, cmd, tmp, env)
                try:
                    assert system.proc is not None
                    pid = str(system.proc.pid)
                    _run(system, args, [args.instructions])  # warm-up
                    subprocess.run(["callgrind_control", "-z", pid], check=True)
                    started = time.monotonic()
                    level = _run(system, args, [args.instructions])[0]
                    took = time.monotonic() - started
                    total = _dump(tmp, name, pid)
                    # The same time with no stream: what the system does anyway (the gateway's
                    # controller tick, telemetry, signal windows), spread over few chunks here.
                    subprocess.run(["callgrind_control", "-z", pid], check=True)
                    time.sleep(took)
                    idle = _dump(tmp, name, pid)
                    per_chunk[name] = total / max(1, level.chunks)
                    per_chunk[f"{name}_net"] = (total - idle) / max(1, level.chunks)
                    print(
                        f"{name}: {per_chunk[name] / 1000:.1f} k instructions per chunk, "
                        f"{per_chunk[f'{name}_net'] / 1000:.1f} k net of the "
                        f"{idle / took / 1e6:.2f} M/s it runs with no stream "
                        f"({level.chunks} chunks in {took:.1f} s, {level.errors} errors)",
                        file=sys.stderr,
                        flush=True,
                    )
                finally:
                    stop(system)
        finally:
            stop(upstream)
            if args.keep is not None:  # the measured dumps, for callgrind_annotate
                args.keep.mkdir(parents=True, exist_ok=True)
                for dump in tmp.glob("callgrind.*.out*"):
                    shutil.copy2(dump, args.keep / dump.name)
    return per_chunk


def _dump(tmp: Path, name: str, pid: str) -> int:
    """The instructions ``pid`` ran since its counters were last zeroed."""
    from tests.bench.instructions import _dumped_total

    before = set(tmp.glob(f"callgrind.{name}.out*"))
    subprocess.run(["callgrind_control", "-d", pid], check=True)
    return _dumped_total(tmp, name, before)


def _run(system: System, args: argparse.Namespace, levels: list[int] | None = None) -> list[Level]:
    factory = None
    import uvloop

    factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        chosen = args.levels if levels is None else levels
        gap = args.gap_ms / 1000
        return runner.run(_levels(system, chosen, args.chunks, gap, args.timeline))


def _f(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _row(lv: Level) -> str:
    return (
        f"{lv.system:8} {lv.streams:>5} {lv.errors:>4} "
        f"{_f(lv.added_first_p50)}/{_f(lv.added_first_p99)} "
        f"gap {lv.gap_p50:.1f}/{lv.gap_p99:.1f} transit {lv.transit_p50:.1f}/"
        f"{lv.transit_p99:.1f} late+ {_f(lv.added_late_p99)} "
        f"cpu/chunk {_f(lv.cpu_us_per_chunk)} us rss {_f(lv.rss_mb, '.0f')} MB "
        f"load {lv.load_cpu_share:.0%}"
    )


def render(levels: list[Level]) -> str:
    head = (
        f"{'system':8} {'streams':>7} {'errors':>6} {'+first p50/p99 ms':>18} "
        f"{'+gap p50/p99 ms':>16} {'+late p99 ms':>12} {'cpu us/chunk':>12} {'rss MB':>7} "
        f"{'load core':>9}  held"
    )
    base = {lv.streams: lv for lv in levels if lv.system == "direct"}
    lines = [head, "-" * len(head)]
    for lv in sorted(levels, key=lambda lv: (lv.streams, lv.system != "direct", lv.system)):
        b = base.get(lv.streams)
        gap50 = lv.gap_p50 - b.gap_p50 if b and lv is not b else lv.gap_p50
        gap99 = lv.gap_p99 - b.gap_p99 if b and lv is not b else lv.gap_p99
        first = (
            f"{_f(lv.added_first_p50)}/{_f(lv.added_first_p99)}"
            if lv.held is not None
            else f"({lv.first_p50:.1f}/{lv.first_p99:.1f})"
        )
        held = "" if lv.held is None else ("yes" if lv.held else "NO")
        lines.append(
            f"{lv.system:8} {lv.streams:>7} {lv.errors:>6} {first:>18} "
            f"{gap50:>7.1f}/{gap99:<8.1f} {_f(lv.added_late_p99):>12} "
            f"{_f(lv.cpu_us_per_chunk):>12} {_f(lv.rss_mb, '.0f'):>7} "
            f"{lv.load_cpu_share:>9.0%}  {held}"
        )
    rounds = max((lv.round for lv in levels), default=0) + 1
    if rounds > 1:
        lines += ["", *_over_rounds(levels, rounds)]
    for name in sorted({lv.system for lv in levels} - {"direct"}):
        held_levels = [lv.streams for lv in levels if lv.system == name and lv.held]
        cpu = [lv.cpu_us_per_chunk for lv in levels if lv.system == name and lv.cpu_us_per_chunk]
        lines.append(
            f"{name}: largest level held {max(held_levels) if held_levels else 'none'}; "
            f"cpu per chunk median {statistics.median(cpu):.1f} us"
            if cpu
            else f"{name}: -"
        )
    return "\n".join(lines)


def _over_rounds(levels: list[Level], rounds: int) -> list[str]:
    """Per system and level, over the rounds: how many held it, and the median of the added
    late p99 and of the CPU per chunk; then the largest level each held in every round and in
    most of them."""
    lines = [
        f"over {rounds} rounds: system, streams, rounds held, median +late p99 ms, cpu us/chunk"
    ]
    systems = sorted({lv.system for lv in levels} - {"direct"})
    for name in systems:
        every: list[int] = []  # levels held in every round
        most: list[int] = []  # in more than half of them
        for streams in sorted({lv.streams for lv in levels if lv.system == name}):
            these = [lv for lv in levels if lv.system == name and lv.streams == streams]
            held = sum(1 for lv in these if lv.held)
            late = [lv.added_late_p99 for lv in these if lv.added_late_p99 is not None]
            cpu = [lv.cpu_us_per_chunk for lv in these if lv.cpu_us_per_chunk is not None]
            lines.append(
                f"  {name:8} {streams:>5}  {held}/{len(these)}  "
                f"{_f(statistics.median(late) if late else None):>7}  "
                f"{_f(statistics.median(cpu) if cpu else None):>6}"
            )
            if held == len(these):
                every.append(streams)
            if 2 * held > len(these):
                most.append(streams)
        lines.append(
            f"  {name}: largest level held in every round {max(every, default='none')}, "
            f"in most rounds {max(most, default='none')}"
        )
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--systems", nargs="+", default=["floor", "gateway"])
    parser.add_argument("--floor-loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat each level this many times, the systems interleaved level by level",
    )
    parser.add_argument(
        "--instructions", type=int, metavar="STREAMS", help="count instructions per chunk instead"
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print each level's transit per 100 ms (largest, p90), to see when a relay lags",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="with --instructions: keep the callgrind dumps"
    )
    parser.add_argument("--serve-upstream", type=int, help="(internal) be the upstream")
    parser.add_argument("--serve-floor", type=int, help="(internal) be the floor")
    parser.add_argument("--upstream", help="(internal) the floor's upstream")
    args = parser.parse_args()
    if args.serve_upstream is not None or args.serve_floor is not None:
        import uvloop

        loop = uvloop.new_event_loop if args.serve_upstream is not None else None
        if args.serve_floor is not None and args.floor_loop == "uvloop":
            loop = uvloop.new_event_loop
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop) as run:
            if args.serve_upstream is not None:
                run.run(serve_upstream(args.serve_upstream, args.chunks, args.gap_ms / 1000))
            else:
                app = create_stream_passthrough(upstream=args.upstream)
                run.run(serve_until_signalled(app, args.serve_floor))
        return
    if args.instructions:
        counts = instructions(args)
        if "floor" in counts and "gateway" in counts:
            print(
                f"gateway / floor: {counts['gateway'] / counts['floor']:.2f}x per chunk, "
                f"{counts['gateway_net'] / counts['floor_net']:.2f}x net of idle work"
            )
        print(json.dumps(counts) if args.json else "")
        return
    levels = main(args)
    if args.json:
        print(json.dumps([asdict(lv) for lv in levels]))
    else:
        print(render(levels))


if __name__ == "__main__":
    cli()
