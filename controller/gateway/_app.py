"""Assembling the gateway: the front app (chat APIs, probes, metrics, status) and the admin app.

They are two applications on purpose: the CLI serves the admin app on its own listener, bound to
127.0.0.1 by default, so opening the front API to a network never exposes outage drills.

The front app answers every request in a format its caller can read: an unknown URL or a wrong
method under ``/v1/`` gets a JSON error in the OpenAI or Anthropic format (an SDK shows its
message; aiohttp's plain-text "404: Not Found" reaches the user as an unreadable error). The
operational paths keep aiohttp's plain answers. Both are routes added once the real ones are in
place, so a request that does match costs nothing extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.gateway._auth import KeyRing, admin_guard_middleware, client_auth
from controller.gateway._chat import ChatEndpoint
from controller.gateway._count import CountTokensEndpoint
from controller.gateway._formats import (
    ANTHROPIC,
    OPENAI,
    RESPONSES,
    method_not_allowed,
    unknown_url,
)
from controller.gateway._gemini import (
    GeminiCountEndpoint,
    GeminiEndpoint,
    GeminiModels,
    gemini_auth,
)
from controller.gateway._jobs import JOBS_PATH, TRIAGE_KEY, JobQueue, JobsEndpoint, Triage
from controller.gateway._ops import AdminEndpoints, OpsEndpoints
from controller.gateway._server import IN_FLIGHT_KEY, InFlight
from controller.gateway._settings import GatewaySettings
from controller.gateway._tracing import server_span_route, tracing_middlewares
from controller.gateway.backend import GatewayBackend
from controller.routing.plan import Priority

__all__ = ["create_admin_app", "create_app"]

BACKEND_KEY: web.AppKey[GatewayBackend] = web.AppKey("failover_backend")
SETTINGS_KEY: web.AppKey[GatewaySettings] = web.AppKey("failover_settings")
_ADMIN_MAX_BODY = 64 * 1024
_API_PREFIXES = ("/v1/", "/v1beta/")


def create_app(
    backend: GatewayBackend,
    *,
    settings: GatewaySettings,
    jobs: JobQueue | None = None,
    priorities: Mapping[str, Priority] | None = None,
) -> web.Application:
    """The front application: OpenAI (chat completions, Responses), Anthropic and Gemini
    endpoints plus the operational ones. With ``jobs``, requests marked ``defer`` are kept
    while their tier is degraded and fetched at ``GET /v1/failover/jobs/{id}``;
    ``priorities`` maps client-key digests to their default priority (``_jobs``)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[BACKEND_KEY] = backend
    app[SETTINGS_KEY] = settings
    in_flight = app[IN_FLIGHT_KEY] = InFlight()  # what a stopping server cuts after its grace
    app[TRIAGE_KEY] = Triage(backend, queue=jobs, by_owner=priorities)
    limit = settings.max_body_bytes
    ops = OpsEndpoints(backend)
    echo = settings.echo_requested_model
    openai = ChatEndpoint(
        backend, OPENAI, max_body_bytes=limit, in_flight=in_flight, echo_model=echo
    )
    anthropic = ChatEndpoint(
        backend, ANTHROPIC, max_body_bytes=limit, in_flight=in_flight, echo_model=echo
    )
    responses = ChatEndpoint(
        backend, RESPONSES, max_body_bytes=limit, in_flight=in_flight, echo_model=echo
    )
    count = CountTokensEndpoint(backend, max_body_bytes=limit, in_flight=in_flight)
    ring = KeyRing(settings.api_keys)
    keyed = client_auth(ring)  # every /v1/ route needs a client key
    google_keyed = gemini_auth(ring)  # ... presented the Gemini way too on Gemini's routes
    gemini = GeminiEndpoint(
        backend,
        max_body_bytes=limit,
        in_flight=in_flight,
        count=GeminiCountEndpoint(backend, max_body_bytes=limit, in_flight=in_flight),
        echo_model=echo,
    )
    gemini_models = GeminiModels(backend)

    def routed(handler: Handler) -> Handler:  # the routes that wait on providers
        return in_flight.track(keyed(handler))

    traced = functools.partial(server_span_route, backend.tracer)  # outermost: 401s get spans

    def post(path: str, handler: Handler) -> None:
        app.router.add_post(path, traced(path)(handler))

    def get(path: str, handler: Handler) -> None:
        app.router.add_get(path, traced(path)(handler))

    post("/v1/chat/completions", routed(openai.handle))
    post("/v1/responses", routed(responses.handle))
    post("/v1/messages", routed(anthropic.handle))
    post("/v1/messages/count_tokens", routed(count.handle))
    generate = in_flight.track(google_keyed(gemini.handle))
    post("/v1beta/models/{model}", generate)
    get("/v1beta/models/{model}", google_keyed(gemini_models.one))
    get("/v1beta/models", google_keyed(gemini_models.list))
    get("/v1/models", keyed(ops.models))
    get("/v1/models/{model}", keyed(ops.model))
    post("/v1/models/{model}", generate)  # Gemini's v1: {model}:{method}
    if jobs is not None:
        get(JOBS_PATH + "/{id}", client_auth(ring, google=True)(JobsEndpoint(jobs).get))
    get("/healthz", ops.healthz)
    get("/readyz", ops.readyz)
    get("/metrics", ops.metrics)
    get("/status", ops.status_page)
    get("/status.json", ops.status_json)
    _answer_the_unrouted(app.router, traced)
    return app


def _answer_the_unrouted(
    router: web.UrlDispatcher, traced: Callable[[str], Callable[[Handler], Handler]]
) -> None:
    """A catch-all method on every route's path (405) and a catch-all path (404), added last,
    each in a SERVER span (``traced``, as the routes are): rejected requests get spans too.

    Without the per-path 405s the catch-all path would turn a wrong method into a 404."""
    for resource in list(router.resources()):
        if isinstance(resource, web.Resource):
            allowed = frozenset(route.method for route in resource)
            path = resource.canonical
            wrong = _wrong_method(allowed, formatted=path.startswith(_API_PREFIXES))
            resource.add_route("*", traced(path)(wrong))
    unknown = router.add_resource("/{unknown:.*}")
    unknown.add_route("*", traced(unknown.canonical)(_unknown))


def _wrong_method(allowed: Collection[str], *, formatted: bool) -> Handler:
    async def wrong_method(request: web.Request) -> web.StreamResponse:
        if formatted:
            return method_not_allowed(request, allowed)
        raise web.HTTPMethodNotAllowed(request.method, allowed)  # aiohttp's own answer

    return wrong_method


async def _unknown(request: web.Request) -> web.StreamResponse:
    return unknown_url(request)


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
    app.router.add_post("/admin/kill-switch", admin.kill_switch)
    return app
