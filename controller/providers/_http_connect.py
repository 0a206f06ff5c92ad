"""How the provider client (:mod:`controller.providers._http`) reaches a server, and its errors.

* Addresses are looked up at most once per ``ADDRESS_TTL`` seconds per host (callers that
  arrive during a lookup share it), not once per new connection: a burst of new connections
  would otherwise queue lookups on the loop's small thread pool, several DNS queries each in
  Kubernetes. A connection that fails (or times out) drops them, so a moved host is found.
* Connecting races the addresses (happy eyeballs, RFC 8305, with ``aiohappyeyeballs``, the
  library aiohttp uses): a dead first address, such as a broken IPv6 route to a host that has an
  AAAA record, costs ``HAPPY_EYEBALLS_DELAY``, not the whole connect limit.
* TLS uses one default context (the system's trust store, host names checked), made once:
  building one reads the trust store, 30-50 ms with the event loop stalled.

Every error's text is safe to show: no host, address or URL (a base URL can carry a key).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohappyeyeballs

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "Resolver",
    "ResponseCut",
    "TooLarge",
    "TransportError",
    "connect_reason",
    "open_connection",
    "tls_context",
]

ADDRESS_TTL = 10.0  # seconds a host's looked-up addresses are used (aiohttp's default too)
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried alongside (RFC 8305)

# OpenSSL's X509_V_ERR_* codes, in fixed words: its own verify messages name the host or IP
# on a mismatch ("certificate is not valid for '10.0.0.5'"), which must not reach a client.
_CERTIFICATE_PROBLEMS = {
    9: "not valid yet",
    10: "expired",
    18: "self-signed",
    19: "self-signed certificate in the chain",
    20: "issuer not trusted (unknown CA)",
    21: "cannot be verified (incomplete chain?)",
    62: "issued for another host name",
    64: "issued for another IP address",
}


# ------------------------------------------------------------------------------- errors
class TransportError(Exception):
    """The request did not get a whole HTTP answer. The message names no address."""


class ConnectTimeout(TransportError):
    """No connection within the connect limit."""


class ConnectFailed(TransportError):
    """No connection: the name did not resolve, it was refused, TLS failed, ..."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Disconnected(TransportError):
    """The connection closed before any byte of an answer."""


class PoolExhausted(TransportError):
    """Every connection of the pool stayed busy for as long as the caller would wait for one."""


class ResponseCut(TransportError):
    """The connection ended (or broke) in the middle of an answer."""


class BadResponse(TransportError):
    """What came back is not HTTP/1.1 this client can read (or will hold in memory)."""


class TooLarge(BadResponse):
    """The answer is over a size limit (its body, or what compressed bodies inflate to)."""


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in words that hold no address."""
    if isinstance(exc, socket.gaierror):
        return "the host name did not resolve"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        why = _CERTIFICATE_PROBLEMS.get(code, f"not trusted (OpenSSL verify code {code})")
        return f"the server's TLS certificate: {why}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    # Several addresses failed in different ways (their texts name them), or uvloop's
    # RuntimeError: no errno to tell.
    return "no address of the host took the connection"


# ------------------------------------------------------------------------------- connecting
@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context every provider connection uses: made once per process."""
    return ssl.create_default_context()


AddrInfo = tuple[Any, ...]  # what getaddrinfo gives: (family, type, proto, canonname, sockaddr)


class Resolver:
    """The addresses of one host and port, looked up at most once per ``ttl`` seconds."""

    def __init__(self, host: str, port: int, *, ttl: float = ADDRESS_TTL) -> None:
        self._host = host
        self._port = port
        self._ttl = ttl
        self._infos: list[AddrInfo] = []
        self._until = 0.0
        self._lookup: asyncio.Future[list[AddrInfo]] | None = None

    async def addresses(self) -> list[AddrInfo]:
        if self._infos and time.monotonic() < self._until:
            return self._infos
        lookup = self._lookup
        if lookup is None:
            lookup = self._lookup = asyncio.ensure_future(self._resolve())
            lookup.add_done_callback(self._looked_up)
        # shield: one caller's timeout must not cancel the lookup the others are waiting for
        return await asyncio.shield(lookup)

    def forget(self) -> None:
        """Look the addresses up again next time (none of them took a connection)."""
        self._infos = []

    async def _resolve(self) -> list[AddrInfo]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except UnicodeError:  # a name IDNA cannot encode ("api..example.com", a 64-char label)
            raise socket.gaierror(socket.EAI_NONAME, "invalid host name") from None
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return list(infos)

    def _looked_up(self, lookup: asyncio.Future[list[AddrInfo]]) -> None:
        self._lookup = None
        if lookup.cancelled():
            return
        if lookup.exception() is None:  # read even when nobody waits: no "never retrieved" log
            self._infos = lookup.result()
            self._until = time.monotonic() + self._ttl


async def open_connection(
    resolver: Resolver,
    protocol: Callable[[], asyncio.BaseProtocol],
    tls: ssl.SSLContext | None,
    server_hostname: str,
    tunnel: Callable[[socket.socket], Awaitable[None]] | None = None,
) -> None:
    """Connect ``protocol`` to the resolver's host (over TLS with ``tls``, for
    ``server_hostname``); with ``tunnel``, the resolver's host is a proxy and ``tunnel`` opens
    the way through it first. Raises OSError (ssl.SSLError and socket.gaierror included),
    RuntimeError (uvloop) or ConnectFailed (the proxy said no) when it cannot."""
    loop = asyncio.get_running_loop()
    infos = await resolver.addresses()
    try:
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
        )
    except BaseException:  # refused, unreachable, or cut by the connect limit: look up anew
        resolver.forget()
        raise
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tunnel is not None:
            await tunnel(sock)
        await loop.create_connection(
            protocol,
            sock=sock,
            ssl=tls,
            server_hostname=server_hostname if tls is not None else None,
        )
    except BaseException:  # a TLS failure too: a moved host shows as a wrong certificate
        sock.close()
        resolver.forget()
        raise
