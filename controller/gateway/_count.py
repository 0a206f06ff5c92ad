"""``POST /v1/messages/count_tokens``: Anthropic's token counting, answered through the router.

The body is a ``/v1/messages`` body without ``max_tokens``; the answer is
``{"input_tokens": N}`` with ``x-failover-token-count: provider`` (and the usual
``x-failover-provider`` / ``x-failover-model``) when the serving provider counted, or
``x-failover-token-count: estimate`` when the gateway estimated (see
:mod:`controller.routing.count` for when and how). Bad input gets the same 4xx answers, in
Anthropic's format, as ``/v1/messages``.
"""

from __future__ import annotations

from aiohttp import web

from controller.gateway._chat import decode_call, served_headers
from controller.gateway._formats import ANTHROPIC, json_answer
from controller.gateway.backend import GatewayBackend
from controller.routing.count import TokenCounter

__all__ = ["HEADER_TOKEN_COUNT", "CountTokensEndpoint"]

HEADER_TOKEN_COUNT = "x-failover-token-count"


class CountTokensEndpoint:
    def __init__(self, backend: GatewayBackend, *, max_body_bytes: int) -> None:
        self._backend = backend
        self._max_body = max_body_bytes
        self._counter = TokenCounter(backend.router, tracer=backend.tracer, meter=backend.meter)

    async def handle(self, http: web.Request) -> web.StreamResponse:
        parse = ANTHROPIC.codec.parse_count_request
        decoded = await decode_call(http, self._backend, ANTHROPIC, parse, self._max_body)
        if isinstance(decoded, web.StreamResponse):
            return decoded
        count = await self._counter.count(decoded.request, tier=decoded.tier)
        if count.provider is None or count.model is None:
            headers = {HEADER_TOKEN_COUNT: "estimate"}
        else:
            headers = {
                HEADER_TOKEN_COUNT: "provider",
                **served_headers(count.provider, count.model),
            }
        return json_answer(ANTHROPIC.codec.render_count(count.input_tokens), headers=headers)
