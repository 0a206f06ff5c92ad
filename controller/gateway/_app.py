"""Assembling the gateway: the front app (chat APIs, probes, metrics, status) and the admin app.

They are two applications on purpose: the CLI serves the admin app on its own listener, bound to
127.0.0.1 by default, so opening the front API to a network never exposes outage drills.
"""

from __future__ import annotations

from aiohttp import web

from controller.gateway._auth import KeyRing, admin_guard_middleware, client_auth
from controller.gateway._chat import ChatEndpoint
from controller.gateway._count import CountTokensEndpoint
from controller.gateway._formats import ANTHROPIC, OPENAI
from controller.gateway._ops import AdminEndpoints, OpsEndpoints
from controller.gateway._settings import GatewaySettings
from controller.gateway._tracing import tracing_middlewares
from controller.gateway.backend import GatewayBackend

__all__ = ["create_admin_app", "create_app"]

BACKEND_KEY: web.AppKey[GatewayBackend] = web.AppKey("failover_backend")
SETTINGS_KEY: web.AppKey[GatewaySettings] = web.AppKey("failover_settings")
_ADMIN_MAX_BODY = 64 * 1024


def create_app(backend: GatewayBackend, *, settings: GatewaySettings) -> web.Application:
    """The front application: OpenAI and Anthropic endpoints plus the operational ones."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=tracing_middlewares(backend.tracer),  # rejected requests get spans too
    )
    app[BACKEND_KEY] = backend
    app[SETTINGS_KEY] = settings
    limit = settings.max_body_bytes
    ops = OpsEndpoints(backend)
    openai = ChatEndpoint(backend, OPENAI, max_body_bytes=limit)
    anthropic = ChatEndpoint(backend, ANTHROPIC, max_body_bytes=limit)
    count = CountTokensEndpoint(backend, max_body_bytes=limit)
    keyed = client_auth(KeyRing(settings.api_keys))  # every /v1/ route needs a client key
    app.router.add_post("/v1/chat/completions", keyed(openai.handle))
    app.router.add_post("/v1/messages", keyed(anthropic.handle))
    app.router.add_post("/v1/messages/count_tokens", keyed(count.handle))
    app.router.add_get("/v1/models", keyed(ops.models))
    app.router.add_get("/v1/models/{model}", keyed(ops.model))
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/status", ops.status_page)
    app.router.add_get("/status.json", ops.status_json)
    return app


def create_admin_app(backend: GatewayBackend, *, admin_token: str | None) -> web.Application:
    """The admin application; every route needs ``Authorization: Bearer <admin_token>``.
    Without a token every route answers 403, naming the variable that enables it."""
    app = web.Application(
        client_max_size=_ADMIN_MAX_BODY,
        middlewares=[*tracing_middlewares(backend.tracer), admin_guard_middleware(admin_token)],
    )
    app[BACKEND_KEY] = backend
    admin = AdminEndpoints(backend)
    app.router.add_get("/admin/state", admin.state)
    app.router.add_post("/admin/drill", admin.drill)
    return app
