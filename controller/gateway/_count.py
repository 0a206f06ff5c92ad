"""``POST /v1/messages/count_tokens``: Anthropic's token counting, answered through the router.

The body is a ``/v1/messages`` body without ``max_tokens``; the answer is
``{"input_tokens": N}`` with ``x-failover-token-count: provider`` (and the usual
``x-failover-provider`` / ``x-failover-model``) when the serving provider counted, or
``x-failover-token-count: estimate`` when the gateway estimated (see
:mod:`controller.routing.count` for when and how). Bad input gets the same 4xx answers, in
Anthropic's format, as ``/v1/messages``; a count still waiting for its provider when the
shutdown cuts it gets a 503 in that format, as a chat request does.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from controller.gateway._chat import answer_if_cut, decode_call, served_headers
from controller.gateway._formats import ANTHROPIC, json_answer
from controller.gateway._server import InFlight
from controller.gateway.backend import GatewayBackend
from controller.routing.count import TokenCounter

__all__ = ["HEADER_TOKEN_COUNT", "CountTokensEndpoint"]

HEADER_TOKEN_COUNT = "x-failover-token-count"


class CountTokensEndpoint:
    def __init__(
        self, backend: GatewayBackend, *, max_body_bytes: int, in_flight: InFlight
    ) -> None:
        self._backend = backend
        self._max_body = max_body_bytes
        self._in_flight = in_flight  # says whether a cancellation is the shutdown's cut
        self._counter = TokenCounter(backend.router, tracer=backend.tracer, meter=backend.meter)

    async def handle(self, http: web.Request) -> web.StreamResponse:
        parse = ANTHROPIC.codec.parse_count_request
        decoded = await decode_call(http, self._backend, ANTHROPIC, parse, self._max_body)
        if isinstance(decoded, web.StreamResponse):
            return decoded
        try:
            count = await self._counter.count(decoded.request, tier=decoded.tier)
        except asyncio.CancelledError:
            await answer_if_cut(http, ANTHROPIC, self._in_flight)
            raise
        if count.provider is None or count.model is None:
            headers = {HEADER_TOKEN_COUNT: "estimate"}
        else:
            headers = {
                HEADER_TOKEN_COUNT: "provider",
                **served_headers(count.provider, count.model),
            }
        return json_answer(ANTHROPIC.codec.render_count(count.input_tokens), headers=headers)
