"""Connection benchmark: idle connections and slowloris heads against the front (issue 16 row 7).

    python -m tests.bench.connections [--idle 10000] [--slowloris 3000] [--seconds 100] [--before]
                                      [--uvloop]

The front (a :class:`GatewayServer` with a one-route app, on the default :class:`ConnectionLimits`
or, with ``--before``, with none: aiohttp's own hour-long keep-alive and no read limits) runs in
a child process on loopback. This process opens the connections 500 at a time; the idle ones
send nothing, the slowloris ones send a request line and then one header line every 5 s, never
the blank line that ends the head. Reported per attack: how many connections were refused at
once (a 503, or closed before the attack was open), how many were open after opening, the
seconds until the last one was closed (or how many are still open after ``--seconds``), and a
well-behaved client's requests during the attack (one a second, each on a new connection):
answered, refused, and the slowest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import resource
import time
from typing import Any

from aiohttp import web

from controller.gateway import GatewayServer
from controller.gateway._server import ConnectionLimits

_NONE = ConnectionLimits(max_connections=1 << 30, idle=3630.0, header=1e9, body=1e9)
_BATCH = 500


def _serve(port: Any, before: bool, uvloop: bool) -> None:  # the child process
    async def main() -> None:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hi")

        app = web.Application()
        app.router.add_get("/", hello)
        limits = _NONE if before else ConnectionLimits()
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0, limits=limits) as s:
            port.value = s.port
            await asyncio.Event().wait()

    _raise_fd_limit()
    if uvloop:  # what `failover serve` runs on
        import uvloop as _uvloop

        _uvloop.run(main())
    else:
        asyncio.run(main())


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed_at: float | None = None
        self.refused = False


async def _open(port: int, slow: bool) -> _Conn | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    if slow:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return _Conn(reader, writer)


async def _watch(conn: _Conn, slow: bool) -> None:
    """Wait for the server to close ``conn``; a slowloris keeps adding header lines."""
    while True:
        try:
            data = await asyncio.wait_for(conn.reader.read(65536), 5.0 if slow else None)
        except TimeoutError:
            with contextlib.suppress(OSError):
                conn.writer.write(b"X-Slow: 1\r\n")
            continue
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 503"):
            conn.refused = True
        if not data:
            conn.closed_at = time.monotonic()
            return


async def _client(port: int, stop: asyncio.Event, results: dict[str, Any]) -> None:
    while not stop.is_set():
        start = time.monotonic()
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await reader.read()
                writer.close()
            key = "answered" if answer.startswith(b"HTTP/1.1 200") else "refused"
        except (OSError, TimeoutError):
            key = "refused"
        results[key] += 1
        results["slowest"] = max(results["slowest"], time.monotonic() - start)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _attack(port: int, count: int, slow: bool, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    client = {"answered": 0, "refused": 0, "slowest": 0.0}
    client_task = asyncio.create_task(_client(port, stop, client))
    start = time.monotonic()
    conns: list[_Conn] = []
    failed = 0
    for first in range(0, count, _BATCH):
        opened = await asyncio.gather(
            *(_open(port, slow) for _ in range(min(_BATCH, count - first)))
        )
        conns += [c for c in opened if c is not None]
        failed += sum(c is None for c in opened)
    opened_in = time.monotonic() - start
    watchers = [asyncio.create_task(_watch(c, slow)) for c in conns]
    await asyncio.wait(watchers, timeout=max(0.0, seconds - opened_in))
    for task in watchers:
        task.cancel()
    stop.set()
    await client_task
    for c in conns:
        c.writer.close()
    refused = sum(c.refused for c in conns) + failed
    closed = [c.closed_at - start for c in conns if c.closed_at is not None and not c.refused]
    still_open = sum(c.closed_at is None for c in conns)
    return {
        "connections": count,
        "opened_in_s": round(opened_in, 1),
        "refused": refused,
        "held_then_closed": len(closed),
        "last_closed_at_s": round(max(closed), 1) if closed else None,
        "still_open": still_open,
        "client": {**client, "slowest": round(client["slowest"], 3)},
    }


async def _main(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    for name, count, slow in (("idle", args.idle, False), ("slowloris", args.slowloris, True)):
        port = ctx.Value("i", 0)
        child = ctx.Process(target=_serve, args=(port, args.before, args.uvloop), daemon=True)
        child.start()
        try:
            while not port.value:  # noqa: ASYNC110 (another process sets it)
                await asyncio.sleep(0.05)
            result = await _attack(port.value, count, slow, args.seconds)
            print(name, result, flush=True)
        finally:
            child.terminate()
            child.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--slowloris", type=int, default=3_000)
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--before", action="store_true", help="no connection limits")
    parser.add_argument("--uvloop", action="store_true", help="the front on uvloop")
    args = parser.parse_args()
    _raise_fd_limit()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
