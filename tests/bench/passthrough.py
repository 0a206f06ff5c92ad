"""The floor for the gateway benchmark: the least a Python HTTP proxy can do per request.

    python -m tests.bench.passthrough --upstream http://127.0.0.1:PORT [--port 0]
                                      [--loop asyncio|uvloop]

An ``aiohttp.web`` server with one pooled ``aiohttp.ClientSession`` that forwards
``POST /v1/chat/completions`` to ``<upstream>/v1/chat/completions`` and hands the body back. It
parses nothing, routes nothing and records nothing, so whatever our gateway costs on top of it is
the price of decoding, routing, failover and telemetry rather than of the server stack both share
(:mod:`tests.bench.gateway` runs the two side by side). It prints ``listening on <url>`` once
it accepts connections, which is how the benchmark learns the port. It runs on asyncio's own
event loop unless ``--loop uvloop`` is given (the loop ``failover serve`` takes by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tests.bench._serve import serve_until_signalled

__all__ = ["create_passthrough", "main"]

_FORWARDED = ("content-type", "authorization")
_SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_passthrough(*, upstream: str, connections: int = 256) -> web.Application:
    """The proxy app. The session (and its connection pool) lives as long as the app."""
    app = web.Application()
    target = upstream.rstrip("/") + "/v1/chat/completions"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            app[_SESSION] = session
            yield

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        async with app[_SESSION].post(target, data=body, headers=headers) as upstream_reply:
            payload = await upstream_reply.read()
            return web.Response(
                body=payload,
                status=upstream_reply.status,
                content_type=upstream_reply.content_type,
            )

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    return app


async def _serve(upstream: str, port: int) -> None:
    await serve_until_signalled(create_passthrough(upstream=upstream), port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Minimal pass-through proxy (benchmark floor).")
    parser.add_argument("--upstream", required=True, help="root URL, e.g. http://127.0.0.1:9001")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    # uvloop is imported here rather than through controller._loop: importing the controller
    # package would weigh on the floor's memory (37 MB -> 69 MB peak RSS).
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
