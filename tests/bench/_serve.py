"""Serving a helper app for the benchmarks: on loopback, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

__all__ = ["serve_until_signalled"]


async def serve_until_signalled(app: web.Application, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` (0: a free one) until SIGTERM or SIGINT.

    Prints ``listening on <url>`` once it accepts connections: that is how the benchmark that
    started the process learns the port.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on http://127.0.0.1:{int(runner.addresses[0][1])}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
