"""Running an app on a socket, and stopping it gracefully.

Stopping happens in aiohttp's own order, which is the graceful one: the listening socket closes
first (no new connections), idle keep-alive connections close, in-flight requests, including
long streams, get up to ``grace`` seconds to finish, and only then are the stragglers cancelled
(a cancelled stream closes its routed stream, so its attempt is reported as cancelled).

Handlers are cancelled when their client disconnects (``handler_cancellation``): a proxy must
stop paying for tokens nobody will read, and the router reports such attempts as cancelled.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

__all__ = ["GatewayServer", "serve"]

log = logging.getLogger(__name__)


class GatewayServer:
    """One app on one listener. ``port=0`` picks a free port; read :attr:`port` after start."""

    def __init__(self, app: web.Application, *, host: str, port: int, grace: float) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._grace = grace
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> GatewayServer:
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self._grace,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then cancel."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> GatewayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace: float,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set (or this task is cancelled), then stop gracefully.

    The CLI sets ``stop`` from its SIGTERM/SIGINT handlers.
    """
    server = await GatewayServer(app, host=host, port=port, grace=grace).start()
    try:
        if stop is None:
            await asyncio.Event().wait()  # until cancelled
        else:
            await stop.wait()
    finally:
        await server.stop()
