"""Callback URLs: which are allowed, and the POST that delivers a finished job's result.

A callback is opt-in twice: the operator lists the hosts results may be POSTed to
(``jobs.callbacks.allow_hosts``; empty, callbacks are off) and the client names its URL with
the request (``x-failover-callback``). A URL whose host is not listed is refused with a 400 when
the request comes, never found out at delivery: the gateway posts nowhere it was not told to.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

import aiohttp

__all__ = ["CallbackRefused", "HttpCallbackSender", "check_callback"]

_MAX_URL = 2048
_READ_LIMIT = 64 * 1024  # what is read of a receiver's answer (then the connection closes)


class CallbackRefused(ValueError):
    """A callback URL the gateway will not POST to; the message says why (shown to the client)."""


def check_callback(url: str, allow_hosts: Collection[str]) -> str:
    """``url`` when results may be POSTed to it, else :class:`CallbackRefused`."""
    if not allow_hosts:
        raise CallbackRefused(
            "x-failover-callback: callbacks are off on this gateway (jobs.callbacks.allow_hosts "
            "is empty); fetch the result with GET /v1/failover/jobs/{id}"
        )
    if len(url) > _MAX_URL:
        raise CallbackRefused(f"x-failover-callback: longer than {_MAX_URL} characters")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("x-failover-callback: must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("x-failover-callback: must not hold a user name or password")
    host = parts.hostname.lower()
    if host not in allow_hosts:
        allowed = ", ".join(sorted(allow_hosts))
        raise CallbackRefused(
            f"x-failover-callback: host {host[:200]!r} is not allowed (jobs.callbacks."
            f"allow_hosts: {allowed})"
        )
    return url.strip()


class HttpCallbackSender:
    """POSTs with aiohttp's client; a 2xx answer is a delivery, anything else a failed try.
    Redirects are not followed (a redirect could lead off the allowlist)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                await answer.content.read(_READ_LIMIT)
                return 200 <= answer.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
