"""Egress through an HTTP proxy, for the provider client (:mod:`controller.providers._http`).

Which proxy a provider's calls take (:func:`proxy_for`), first match wins:

1. the provider's own ``proxy:`` setting: a URL, or ``none`` for a direct connection whatever the
   environment says;
2. ``HTTPS_PROXY`` for an ``https://`` provider, ``HTTP_PROXY`` for an ``http://`` one (the lower
   case names win over the upper case ones, as with curl), unless ``NO_PROXY`` names the host:
   ``*``, a host name (``api.example.com`` also matches its subdomains, as does
   ``.example.com``), optionally with ``:port``, or an IP address. Loopback hosts (``localhost``,
   ``127.0.0.0/8``, ``::1``) never take a proxy from the environment, as in Go: a local model
   server next to the gateway stays reachable where a company sets a proxy for everything.

How: an ``https://`` provider is reached through a ``CONNECT host:port`` tunnel, inside which TLS
runs end to end with the provider (the proxy sees the host name, never the traffic or the key);
an ``http://`` one gets its requests sent to the proxy in absolute form. A proxy URL's
``user:password`` goes as ``Proxy-Authorization: Basic`` (from the environment only: the config
file holds no secrets). Only ``http://`` proxies are spoken to (TLS to the proxy itself is not).

Errors name no address: the proxy URL can hold a password, and these messages reach clients.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from controller.providers._http_connect import ConnectFailed

__all__ = ["Proxy", "proxy_for", "tunnel"]

_MAX_HEAD = 64 * 1024  # bytes the proxy's answer to CONNECT may take
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where it is and the ``Proxy-Authorization`` it wants (if any)."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """``http://[user:password@]host[:port]`` (no scheme means http, port 80 by default)."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ConnectFailed("the proxy URL is not http:// (TLS to the proxy is not supported)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ConnectFailed("the proxy URL has an invalid port") from None
        if not parts.hostname:
            raise ConnectFailed("the proxy URL has no host")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(parts.hostname, port, authorization)


def proxy_for(base_url: str, configured: str | None, env: Mapping[str, str]) -> Proxy | None:
    """The proxy the provider at ``base_url`` is reached through (None: directly)."""
    if configured is not None:
        return None if configured.strip().lower() == "none" else Proxy.parse(configured)
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    names = (
        ("https_proxy", "HTTPS_PROXY") if parts.scheme == "https" else ("http_proxy", "HTTP_PROXY")
    )
    url = next((env[n] for n in names if env.get(n, "").strip()), "")
    if not url or _is_loopback(host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # the client refuses the base URL itself, with its own message
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    return None if bypassed(host, port, no_proxy) else Proxy.parse(url.strip())


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (``no_proxy``) names ``host`` (on ``port``)."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, wanted = _split_port(entry)
        if not name or (wanted is not None and wanted != port):
            continue
        name = name.strip("[]").lstrip("*.")
        if host == name or host.endswith("." + name) or _in_network(host, name):
            return True
    return False


def _in_network(host: str, network: str) -> bool:
    """``host`` is an IP address inside ``network`` (``10.0.0.0/8``)."""
    if "/" not in network:
        return False
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _split_port(entry: str) -> tuple[str, int | None]:
    head, sep, tail = entry.rpartition(":")
    if sep and tail.isdigit() and (head.endswith("]") or ":" not in head):
        return head, int(tail)
    return entry, None


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def tunnel(proxy: Proxy, authority: str, sock: socket.socket) -> None:
    """Ask the proxy on ``sock`` for a tunnel to ``authority`` (``host:port``); returns once it
    is open, raises :class:`ConnectFailed` when the proxy says no (or says something else)."""
    loop = asyncio.get_running_loop()
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        piece = await loop.sock_recv(sock, 4096)
        if not piece:
            raise ConnectFailed("the proxy closed the connection instead of opening a tunnel")
        head += piece
        if len(head) > _MAX_HEAD:
            raise ConnectFailed("the proxy's answer to CONNECT has over 64 KiB of headers")
    end = head.index(b"\r\n\r\n") + 4
    if len(head) > end:  # the provider speaks after the client's TLS hello, never before
        raise ConnectFailed("the proxy sent bytes after opening the tunnel")
    fields = head[: head.index(b"\r\n")].split(b" ", 2)
    status = fields[1] if len(fields) > 1 and fields[0].startswith(b"HTTP/1.") else b""
    if not status.isdigit() or len(status) != 3:
        raise ConnectFailed("the proxy's answer to CONNECT is not HTTP")
    if int(status) // 100 != 2:
        raise ConnectFailed(f"the proxy refused the tunnel (HTTP {int(status)})")
