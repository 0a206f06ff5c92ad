"""What the PromQL tripwire tests put around a real Prometheus.

* :class:`Exporter`: a ``/metrics`` endpoint whose one gauge the test sets (what the rule reads,
  e.g. an SLO burn rate), scraped by the real Prometheus every second.
* :class:`PromFront`: a stand-in at Prometheus's address that passes queries on to the real one,
  or misbehaves as told: an HTTP error, a body that is not the API's JSON, an error answer, a
  matrix where an instant vector belongs, a dropped connection (``reset``), or no answer at all
  (``hang``), to show that a
  Prometheus in trouble trips and untrips nothing.
* :func:`start_prometheus`: Prometheus 2.42 (Debian) scraping the exporter, with no rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.live_support import LOOPBACK, Prometheus, free_port, prometheus_config, wait_until

GAUGE = "slo_burn_rate"


class _Server:
    """An aiohttp app on an ephemeral loopback port (``async with``)."""

    def __init__(self) -> None:
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def __aenter__(self) -> Any:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Exporter(_Server):
    """``slo_burn_rate{provider="primary"} <value>``; ``value`` None: the series is absent."""

    def __init__(self) -> None:
        super().__init__()
        self.value: float | None = 0.0
        self.app.router.add_get("/metrics", self._metrics)

    async def _metrics(self, request: web.Request) -> web.Response:
        text = "# TYPE slo_burn_rate gauge\n"
        if self.value is not None:
            text += f'{GAUGE}{{provider="primary"}} {self.value}\n'
        return web.Response(text=text, content_type="text/plain")


class PromFront(_Server):
    """Prometheus's query API as the test wants it: ``mode`` is pass, http_error, garbage,
    error, matrix, reset or hang. ``asked`` counts the queries that arrived."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        super().__init__()
        self.upstream = upstream
        self.session = session
        self.mode = "pass"
        self.asked = 0
        self.release = asyncio.Event()
        self.app.router.add_get("/api/v1/query", self._query)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self.asked += 1
        if self.mode == "http_error":
            return web.Response(status=503, text="<html>service unavailable</html>")
        if self.mode == "garbage":
            return web.Response(text="<html>a login page</html>", content_type="text/html")
        if self.mode == "error":
            body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
            return web.json_response(body, status=400)
        if self.mode == "matrix":
            return web.json_response(
                {"status": "success", "data": {"resultType": "matrix", "result": []}}
            )
        if self.mode == "reset" and request.transport is not None:
            request.transport.close()  # the connection drops before any answer
            return web.Response()
        if self.mode == "hang":
            await self.release.wait()
        async with self.session.get(self.upstream + "/api/v1/query", params=request.query) as up:
            return web.Response(
                body=await up.read(), status=up.status, content_type="application/json"
            )


async def start_prometheus(
    stack: contextlib.AsyncExitStack, workdir: Path, session: aiohttp.ClientSession, target: str
) -> Prometheus:
    """Prometheus scraping ``target`` every second, no rules; stopped with ``stack``."""
    rules = workdir / "rules.yml"
    rules.write_text("groups: []\n")
    nowhere = f"{LOOPBACK}:{free_port()}"  # no alert is ever sent: there are no rules
    config = prometheus_config(targets=[target], rules=rules, alertmanager=nowhere)
    prom = await Prometheus.start(workdir=workdir, config=config, session=session)
    stack.push_async_callback(prom.process.stop)
    return prom


async def prometheus_sees(prom: Prometheus, expr: str, *, present: bool = True) -> None:
    """Until ``expr`` returns data in Prometheus (or none, with ``present=False``): the
    exporter's new value has been scraped. Bounded; Prometheus has its own clock."""

    async def seen() -> bool:
        return bool(await prom.query(expr)) == present

    await wait_until(seen, within=20, what=f"{expr} {'present' if present else 'absent'}")
