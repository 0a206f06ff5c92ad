"""The Gemini API as a gateway front: what the google-genai SDK and Gemini CLI call.

============================================================  =================================
route (under ``/v1beta`` and ``/v1``)                         answer
============================================================  =================================
``POST models/{model}:generateContent``                       a ``GenerateContentResponse``
``POST models/{model}:streamGenerateContent?alt=sse``         its chunks as SSE ``data:`` events
``POST models/{model}:countTokens``                           ``{"totalTokens": N}``
``GET models`` (``/v1beta`` only), ``GET models/{model}``     the names the gateway routes
============================================================  =================================

Gemini names the model in the URL and says whether to stream by the method, so the chat
endpoint's decoding is given both from the path; the rest (routing, failover, the stream pump)
is the chat endpoint's. A request served by a Gemini provider goes on as it came (byte for byte:
the body has no model to replace) and its answer comes back as it came; any other provider's
answer is encoded in Gemini's shapes. Errors are Google's ``{"error": {code, message, status}}``.

Clients authenticate as the Gemini SDKs do, with ``x-goog-api-key`` or ``?key=`` (and a bearer
token or ``x-api-key`` as on the other fronts), against the gateway's client keys. The key in
a query is never logged or put on a span (spans carry the path only).

Only ``alt=sse`` streams are served: the JSON-array stream without it is not what the SDKs use.
``GET /v1/models`` stays OpenAI's list (the OpenAI SDKs call it); the Gemini list is at
``/v1beta/models``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from controller._errors import AuthFailed, BadRequest
from controller._model_names import is_pattern
from controller.gateway._auth import KeyRing, bearer_token
from controller.gateway._chat import ChatEndpoint, answer_if_cut, decode_call, served_headers
from controller.gateway._count import HEADER_TOKEN_COUNT
from controller.gateway._formats import GEMINI, json_answer
from controller.gateway._server import InFlight
from controller.gateway.backend import GatewayBackend
from controller.model import Origin, Request
from controller.routing.count import TokenCounter

__all__ = ["GeminiCountEndpoint", "GeminiEndpoint", "GeminiModels", "gemini_auth", "split_call"]

_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def split_call(call: str) -> tuple[str, str] | None:
    """``("gemini-2.5-pro", "generateContent")`` for ``gemini-2.5-pro:generateContent``."""
    model, colon, method = urllib.parse.unquote(call).rpartition(":")
    if not colon or not model or method not in _METHODS:
        return None
    return model.removeprefix("models/"), method


def _unknown_method(http: web.Request) -> web.Response:
    call = http.match_info.get("model", "")[:200]
    message = (
        f"Unknown Gemini method in {call!r}: this gateway serves "
        "generateContent, streamGenerateContent (alt=sse) and countTokens."
    )
    return GEMINI.error(BadRequest(message, status=404))


class GeminiEndpoint(ChatEndpoint):
    """``POST .../models/{model}:generateContent`` and ``:streamGenerateContent``; a
    ``:countTokens`` call on the same route goes to ``count``."""

    def __init__(
        self,
        backend: GatewayBackend,
        *,
        max_body_bytes: int,
        in_flight: InFlight,
        count: GeminiCountEndpoint,
        echo_model: bool = False,
    ) -> None:
        super().__init__(
            backend,
            GEMINI,
            max_body_bytes=max_body_bytes,
            in_flight=in_flight,
            echo_model=echo_model,
        )
        self._gemini_backend = backend
        self._limit = max_body_bytes
        self._echo_requested = echo_model
        self._count = count

    async def handle(self, http: web.Request) -> web.StreamResponse:
        found = split_call(http.match_info["model"])
        if found is not None and found[1] == "countTokens":
            return await self._count.handle(http, found[0])
        return await super().handle(http)

    async def _decode(self, http: web.Request) -> Any:
        found = split_call(http.match_info["model"])
        if found is None or found[1] == "countTokens":
            return _unknown_method(http)
        model, method = found
        stream = method == "streamGenerateContent"
        if stream and http.query.get("alt") != "sse":
            message = "streamGenerateContent is served with alt=sse only (as the SDKs call it)"
            return GEMINI.error(BadRequest(message))
        return await decode_call(
            http,
            self._gemini_backend,
            GEMINI,
            _parser(model, stream),
            self._limit,
            self._echo_requested,
        )


def _parser(model: str, stream: bool) -> Callable[[Any, Origin], tuple[str, Request]]:
    def parse(body: Any, origin: Origin) -> tuple[str, Request]:
        named, request = GEMINI.codec.parse_request(body, model, origin)
        return named, replace(request, stream=stream)

    return parse


class GeminiCountEndpoint:
    """``:countTokens``: counted by the provider serving the tier when it can (Anthropic's
    API), else estimated, as ``/v1/messages/count_tokens`` is (:mod:`controller.routing.count`).
    A body is the request itself (``contents``...) or wraps it (``generateContentRequest``)."""

    def __init__(
        self, backend: GatewayBackend, *, max_body_bytes: int, in_flight: InFlight
    ) -> None:
        self._backend = backend
        self._max_body = max_body_bytes
        self._in_flight = in_flight
        self._counter = TokenCounter(backend.router, tracer=backend.tracer, meter=backend.meter)

    async def handle(self, http: web.Request, model: str) -> web.StreamResponse:
        def parse(body: Any, origin: Origin) -> tuple[str, Request]:
            inner = body.get("generateContentRequest") if isinstance(body, dict) else None
            wrapped = inner if isinstance(inner, dict) else body
            return GEMINI.codec.parse_request(wrapped, model, origin)

        decoded = await decode_call(http, self._backend, GEMINI, parse, self._max_body)
        if isinstance(decoded, web.StreamResponse):
            return decoded
        try:
            count = await self._counter.count(decoded.request, tier=decoded.tier)
        except asyncio.CancelledError:
            await answer_if_cut(http, GEMINI, self._in_flight)
            raise
        headers = {HEADER_TOKEN_COUNT: "estimate"}
        if count.provider is not None and count.model is not None:
            headers = {
                HEADER_TOKEN_COUNT: "provider",
                **served_headers(count.provider, count.model),
            }
        return json_answer({"totalTokens": count.input_tokens}, headers=headers)


class GeminiModels:
    """``GET .../models`` and ``GET .../models/{model}`` in Gemini's shape."""

    def __init__(self, backend: GatewayBackend) -> None:
        self._backend = backend

    async def list(self, http: web.Request) -> web.Response:
        names = sorted(n for n in self._backend.models() if not is_pattern(n))
        return json_answer({"models": [_card(name) for name in names]})

    async def one(self, http: web.Request) -> web.Response:
        name = urllib.parse.unquote(http.match_info["model"]).removeprefix("models/")
        if ":" in name or self._backend.tier_for(name) is None:
            return GEMINI.model_not_found(name, self._backend.models())
        return json_answer(_card(name))


def _card(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "displayName": name,
        "description": "routed by the failover gateway",
        "supportedGenerationMethods": list(_METHODS),
    }


def gemini_auth(keys: KeyRing) -> Callable[[Handler], Handler]:
    """A route wrapper requiring a client key the Gemini way (``x-goog-api-key``, ``?key=``)
    or the other fronts' (bearer, ``x-api-key``); a bad one gets Google's 401."""

    def wrap(handler: Handler) -> Handler:
        if not keys:
            return handler

        async def guarded(http: web.Request) -> web.StreamResponse:
            headers = http.headers
            presented = (
                headers.get("x-goog-api-key"),
                http.query.get("key"),
                bearer_token(http),
                headers.get("x-api-key"),
            )
            if any(keys.accepts(key) for key in presented if key):
                return await handler(http)
            message = "API key not valid for this gateway. Please pass a valid API key."
            return GEMINI.error(AuthFailed(message, status=401))

        return guarded

    return wrap
