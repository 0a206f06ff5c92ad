"""Operational endpoints: liveness, readiness, metrics, status, the model list, and admin.

``/healthz`` answers 200 while the process can serve HTTP at all (a liveness probe restarts a
process that fails it); ``/readyz`` asks the backend whether it can *route* (a readiness probe
takes a replica out of the load balancer without restarting it). Keeping the two apart stops an
outage of every provider from turning into a restart loop of every gateway.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from controller._model_names import is_pattern
from controller.control.state import KillSwitch
from controller.gateway._formats import OPENAI
from controller.gateway._status_page import STATUS_PAGE_HTML
from controller.gateway.backend import GatewayBackend

__all__ = ["AdminEndpoints", "OpsEndpoints"]

_NO_STORE = {"Cache-Control": "no-store"}
MAX_DRILL_SECONDS = 3600.0


class OpsEndpoints:
    """Handlers over the backend seam; each is a bound method for ``app.router``."""

    def __init__(self, backend: GatewayBackend) -> None:
        self._backend = backend

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self._backend.ready()
        body = {"status": "ready" if ready else "not ready", "reason": reason}
        return web.json_response(body, status=200 if ready else 503, headers=_NO_STORE)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._backend.render_metrics()
        return web.Response(body=body, headers={"Content-Type": content_type, **_NO_STORE})

    async def status_json(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.status(), headers=_NO_STORE)

    async def status_page(self, request: web.Request) -> web.Response:
        headers = {
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src data:"
            ),
            **_NO_STORE,
        }
        return web.Response(text=STATUS_PAGE_HTML, content_type="text/html", headers=headers)

    async def models(self, request: web.Request) -> web.Response:
        """The OpenAI list format, so ``client.models.list()`` works against the gateway: the
        names a client may ask for (tiers, exact aliases). An alias pattern is no model id."""
        names = sorted(n for n in self._backend.models() if not is_pattern(n))
        return web.json_response({"object": "list", "data": [_model_card(n) for n in names]})

    async def model(self, request: web.Request) -> web.Response:
        """One model: any name the gateway routes, a pattern's or the default tier's included."""
        name = request.match_info["model"]
        if self._backend.tier_for(name) is None:
            return OPENAI.model_not_found(name, self._backend.models())
        return web.json_response(_model_card(name))


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "failover-gateway"}


class AdminEndpoints:
    """The admin API (behind :func:`~controller.gateway._auth.admin_guard_middleware`)."""

    def __init__(self, backend: GatewayBackend) -> None:
        self._backend = backend

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.status(), headers=_NO_STORE)

    async def drill(self, request: web.Request) -> web.Response:
        """``{"provider": name, "seconds": n}`` starts a simulated outage of that provider."""
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return _admin_error(400, 'body must be JSON: {"provider": ..., "seconds": ...}')
        problem = _drill_problem(body)
        if problem:
            return _admin_error(400, problem)
        provider, seconds = body["provider"], float(body["seconds"])
        try:
            result = await self._backend.drill(provider, seconds)
        except KeyError:
            return _admin_error(404, f"unknown provider {provider[:100]!r}")
        return web.json_response({"ok": True, "provider": provider, "seconds": seconds, **result})

    async def kill_switch(self, request: web.Request) -> web.Response:
        """``{"pin": name}``, ``{"disable": [names]}`` or ``{"clear": true}``: the kill switch,
        written where ``failover kill-switch`` writes it (the fleet's, in fleet mode)."""
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return _admin_error(400, _SWITCH_USAGE)
        switch = _switch_of(body)
        if switch is None:
            return _admin_error(400, _SWITCH_USAGE)
        who = f"admin-api {request.remote or '?'}"
        try:
            result = await self._backend.set_kill_switch(switch, by=who)
        except ValueError as exc:
            return _admin_error(409, str(exc))
        return web.json_response({"ok": True, **result})


_SWITCH_USAGE = (
    'body must be {"pin": "<provider>"}, {"disable": ["<provider>", ...]} or {"clear": true}'
)


def _switch_of(body: Any) -> KillSwitch | None:
    """The kill switch a request body asks for, or None when it asks for none of the three."""
    if not isinstance(body, dict) or len(body) != 1:
        return None
    if body.get("clear") is True:
        return KillSwitch()
    pin = body.get("pin")
    if isinstance(pin, str) and pin:
        return KillSwitch(pin=pin)
    disable = body.get("disable")
    if isinstance(disable, list) and disable and all(isinstance(p, str) and p for p in disable):
        return KillSwitch(disable=tuple(dict.fromkeys(disable)))
    return None


def _drill_problem(body: Any) -> str:
    """What is wrong with a drill request, or "" when nothing is."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    provider, seconds = body.get("provider"), body.get("seconds")
    if not isinstance(provider, str) or not provider:
        return "'provider' must be a non-empty string"
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "'seconds' must be a number"
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DRILL_SECONDS:
        return f"'seconds' must be greater than 0 and at most {MAX_DRILL_SECONDS:g}"
    return ""


def _admin_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
