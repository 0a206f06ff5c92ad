"""A minimal OTLP/HTTP receiver for the gateway benchmark: accepts and drops everything.

    python -m tests.bench.otlp_sink [--port 0]

Answers ``POST /v1/traces`` and ``POST /v1/metrics`` with 200 and an empty protobuf body (an
empty ``Export*ServiceResponse``: full success), so the gateway's exporters do all their real
work (batching, protobuf encoding, HTTP) without a collector's own cost landing on the proxy's
core. Prints ``listening on <url>`` once it accepts connections; on SIGTERM it prints how many
requests and bytes it received, so a run can show that telemetry really flowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

from tests.bench._serve import serve_until_signalled

__all__ = ["main"]


async def _serve(port: int) -> None:
    received = {"requests": 0, "bytes": 0}

    async def accept(request: web.Request) -> web.Response:
        body = await request.read()
        received["requests"] += 1
        received["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", accept)
    app.router.add_post("/v1/metrics", accept)
    try:
        await serve_until_signalled(app, port)
    finally:
        print(f"received {received['requests']} requests, {received['bytes']} bytes", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OTLP/HTTP sink for the gateway benchmark.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
