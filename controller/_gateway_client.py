"""The command line's calls to a running gateway (``failover status``, ``failover drill``).

They go through aiohttp's client, the HTTP stack the package already has, one request on its own
session per command. Each failure is one :class:`~controller._errors.FailoverError` line: an
HTTP status outside 2xx with the start of the answer's body, or no answer at all with why
(refused, name not found, timed out, cut off). Each connect and each read may take 10 s (not the
whole answer), and the environment's proxies are used as urllib used them, which made these calls
before: ``$http_proxy`` / ``$https_proxy`` by the URL's scheme, none for a host ``$no_proxy``
lists (credentials in the proxy's URL go in ``Proxy-Authorization``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from controller._errors import FailoverError

#: Seconds each connect and each read may take.
TIMEOUT = 10.0
#: How much of an error answer's body the message shows.
_DETAIL_CHARS = 300


def call_json(url: str, *, data: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """GET ``url`` (POST ``data`` as JSON when given) and decode the JSON answer; ``token`` goes
    as ``Authorization: Bearer``. Raises FailoverError for an error status or no answer."""
    return asyncio.run(_call(url, data, token))


async def _call(url: str, data: dict[str, Any] | None, token: str | None) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT)
    try:
        proxy, proxy_auth = _env_proxy(url)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                "POST" if body else "GET",
                url,
                data=body,
                headers=headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as resp,
        ):
            status, raw = resp.status, await resp.read()
    except (aiohttp.ClientError, OSError) as exc:
        raise FailoverError(
            f"{url}: cannot connect ({_reason(exc)}). Is the gateway running?"
        ) from None
    if not 200 <= status < 300:
        detail = raw.decode(errors="replace")[:_DETAIL_CHARS]
        raise FailoverError(f"{url}: HTTP {status}: {detail}")
    return json.loads(raw)


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (as urllib's ProxyHandler picks it), without
    its credentials, and those."""
    target = urlsplit(url)
    host = target.netloc.rpartition("@")[2]  # with its port, as urllib matches $no_proxy
    if not host or urllib.request.proxy_bypass(host):
        return None, None
    proxy = urllib.request.getproxies().get(target.scheme)
    if not proxy:
        return None, None
    if "://" not in proxy:  # "host:port", which urllib takes for http://host:port
        proxy = f"http://{proxy}"
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    auth = aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or ""), "utf-8")
    return bare, auth


def _reason(exc: BaseException) -> str:
    """Why there was no answer, in a few words: "Connection refused", "timed out", ..."""
    if isinstance(exc, aiohttp.InvalidURL):
        return "not an http:// or https:// URL"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and not isinstance(exc, socket.gaierror) and (exc.errno or 0) > 0:
        return os.strerror(exc.errno or 0)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
