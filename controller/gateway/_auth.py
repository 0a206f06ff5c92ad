"""Who may call the gateway: client keys on the front API, a bearer token on the admin API.

Keys are compared in constant time (``hmac.compare_digest`` over SHA-256 digests, so neither
the content nor the length of a configured key leaks through timing), every configured key is
checked (no early exit), and a key is never echoed back or logged.

Clients present their key the way their SDK does: the OpenAI SDK sends
``Authorization: Bearer <key>``, the Anthropic SDK ``x-api-key: <key>`` (and Claude Code with an
auth token sends a bearer header too); either is accepted on either front.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from controller._errors import AuthFailed
from controller._redact import hold
from controller.gateway._formats import front_for_request

__all__ = ["KeyRing", "admin_guard_middleware", "client_auth"]

ADMIN_TOKEN_ENV = "FAILOVER_ADMIN_TOKEN"


class KeyRing:
    """A set of secrets, checked in constant time. Its repr never shows them."""

    __slots__ = ("_digests",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = tuple(_digest(key) for key in keys if key)
        hold(*keys)  # a provider quoting one back has it masked (controller._redact)

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self._digests)} key(s)>)"

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        if presented is None or not presented:
            return False
        candidate = _digest(presented)
        matched = False
        for digest in self._digests:  # check them all: the time does not depend on which matched
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogatepass")).digest()


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def client_auth(keys: KeyRing, *, google: bool = False) -> Callable[[Handler], Handler]:
    """A route wrapper that requires a configured client key; the answer to a bad one is a 401
    in the caller's format (which the SDKs raise as their AuthenticationError). Without keys it
    returns the handler unchanged. ``google``: the key presented the Gemini way is taken too
    (``x-goog-api-key``, ``?key=``), on a route every front's clients call (a deferred job's).

    Applied per route rather than as middleware: aiohttp wraps every middleware in a fresh
    ``functools.partial`` + ``update_wrapper`` on each request, which cost more than the check.
    """

    def wrap(handler: Handler) -> Handler:
        if not keys:
            return handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            if keys.accepts(bearer_token(request)) or keys.accepts(
                request.headers.get("x-api-key")
            ):
                return await handler(request)
            if google and (
                keys.accepts(request.headers.get("x-goog-api-key"))
                or keys.accepts(request.query.get("key"))
            ):
                return await handler(request)
            message = "invalid or missing API key for this gateway"
            return front_for_request(request).error(AuthFailed(message, status=401))

        return guarded

    return wrap


def admin_guard_middleware(token: str | None) -> Middleware:
    """Every admin route needs ``Authorization: Bearer <admin token>``. Without a configured
    token the admin API is off (403) rather than open: it can start outage drills."""
    ring = KeyRing((token,) if token else ())

    @web.middleware
    async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not ring:
            message = f"the admin API is disabled: set {ADMIN_TOKEN_ENV} to enable it"
            return web.json_response({"error": message}, status=403)
        if not ring.accepts(bearer_token(request)):
            headers = {"WWW-Authenticate": 'Bearer realm="failover-admin"'}
            message = "missing or wrong admin token (Authorization: Bearer <token>)"
            return web.json_response({"error": message}, status=401, headers=headers)
        return await handler(request)

    return admin_guard
