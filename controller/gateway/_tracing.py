"""One SERVER span per HTTP request, following the OTel HTTP semantic conventions.

The span is made *current* while the handler runs, so the router's ``failover.route`` span (and
the provider CLIENT spans under it) become its children: one trace shows the client's request,
the routing decision and every attempt. A streamed answer is relayed inside the handler, so the
span's duration covers the whole stream, not just its first byte.

The front's routes start it in a route wrapper (:func:`server_span_route`, the template known
when the route is added) rather than a middleware: aiohttp looks every middleware chain up per
request and calls it through a ``functools.partial``, and the middleware had to find the
matched route's template each time. The admin app, with little traffic, keeps the middleware.

Per the conventions a SERVER span is an error only for 5xx answers (a 4xx is the client's
problem, not the server's); ``error.type`` is then the status code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

from controller.telemetry import names

__all__ = ["server_span_middleware", "server_span_route", "tracing_middlewares"]

HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def tracing_middlewares(tracer: Tracer) -> list[Middleware]:
    """The server-span middleware, or none when ``tracer`` is the API's no-op tracer (no span
    would be kept, so the per-request span, attributes and context switch are skipped)."""
    return [] if isinstance(tracer, NoOpTracer) else [server_span_middleware(tracer)]


def server_span_middleware(tracer: Tracer) -> Middleware:
    """An aiohttp middleware that wraps every request in a SERVER span from ``tracer``."""

    @web.middleware
    async def server_span(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await server_span_route(tracer, _route_template(request))(handler)(request)

    return server_span


def server_span_route(tracer: Tracer, route: str) -> Callable[[Handler], Handler]:
    """A route wrapper that runs the handler in a SERVER span from ``tracer``; ``route`` is
    the route's template (``/v1/models/{model}``). With the API's no-op tracer the handler is
    returned as it is (no span would be kept)."""
    if isinstance(tracer, NoOpTracer):
        return lambda handler: handler

    def wrap(handler: Handler) -> Handler:
        async def server_span(request: web.Request) -> web.StreamResponse:
            method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
            with tracer.start_as_current_span(
                f"{method} {route}" if route else method,
                kind=SpanKind.SERVER,
                attributes=_request_attributes(request, method, route),
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                status: int | None = 500  # what aiohttp answers when a handler raises
                try:
                    response = await handler(request)
                    status = response.status
                    return response
                except web.HTTPException as exc:
                    status = exc.status
                    raise
                except asyncio.CancelledError:  # the client went away: no status was sent
                    status = None
                    span.set_attribute(names.ERROR_TYPE, "cancelled")
                    raise
                finally:
                    _finish(span, status)

        return server_span

    return wrap


def _route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/models/{model}``), or "" when nothing matched."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


_Key = tuple[str, str, str, str, str, object]
_ATTRIBUTE_SETS: dict[_Key, dict[str, str | int]] = {}
_MAX_ATTRIBUTE_SETS = 1024


def _request_attributes(request: web.Request, method: str, route: str) -> dict[str, str | int]:
    """The request's attributes, built once per (method, route, path, scheme, host, version):
    building ``request.url`` (yarl) for the server address cost every traced request. Tracers
    copy the dict they are given; it is never changed."""
    path, host = request.path, request.host
    if len(path) + len(host) > 512:  # a client's long path or host is not worth keeping
        return _build_attributes(request, method, route)
    key = (method, route, path, request.scheme, host, request.version)
    found = _ATTRIBUTE_SETS.get(key)
    if found is None:
        if len(_ATTRIBUTE_SETS) >= _MAX_ATTRIBUTE_SETS:
            _ATTRIBUTE_SETS.clear()
        found = _ATTRIBUTE_SETS[key] = _build_attributes(request, method, route)
    return found


def _build_attributes(request: web.Request, method: str, route: str) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        HTTP_REQUEST_METHOD: method,
        URL_PATH: request.path,
        URL_SCHEME: request.scheme,
        NETWORK_PROTOCOL_VERSION: f"{request.version.major}.{request.version.minor}",
    }
    if route:
        attributes[HTTP_ROUTE] = route
    host, port = _server_address(request)
    if host:
        attributes[names.SERVER_ADDRESS] = host
    if port:
        attributes[names.SERVER_PORT] = port
    return attributes


def _server_address(request: web.Request) -> tuple[str, int]:
    """From the Host header (what the client addressed), else the listening socket."""
    url = request.url
    if url.host:
        return url.host, url.port or 0
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return "", 0


def _finish(span: Span, status: int | None) -> None:
    if status is None:
        return
    span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
    if status >= 500:
        span.set_attribute(names.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
