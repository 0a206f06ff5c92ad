"""The HTTP/1.1 client behind every provider call: a keep-alive pool per provider, on asyncio.

Why not aiohttp's client (the gateway's server is aiohttp's): measured on the development box
with ``tests/bench/upstream_client.py``, one small POST to a local server and its answer cost
314 µs of CPU through ``aiohttp.ClientSession`` and 111 µs through this client, which writes the
request itself and parses the answer with ``httptools`` (llhttp, the parser uvicorn uses). At
concurrency 1 that difference was most of what the gateway added over a bare pass-through.

What it does, and no more (the calls are POSTs of a JSON body to a provider's API):

* one pool per base URL: idle connections reused newest first, at most ``max_connections`` open
  (callers beyond that wait for one; 0: no limit), an idle connection closed after
  ``keepalive`` seconds;
* a request is never sent twice: when a reused connection turns out closed as the request went
  out, that is :class:`Disconnected`, as with aiohttp (RFC 9112 section 9.3.1: a POST is not
  retried automatically; the router's retry and failover policy decides);
* bodies by ``Content-Length``, chunked, or up to the end of the connection; 1xx answers
  skipped; a streaming body read back-pressured (the socket is paused while more than
  ``HIGH_WATER`` bytes wait unread); headers bounded (``_MAX_HEAD`` bytes, ``_MAX_FIELDS``);
* ``Accept-Encoding: identity`` is what callers send (see ``base.py``), and a gzip or deflate
  body sent anyway is decoded, in pieces of at most ``HIGH_WATER`` and ``MAX_INFLATED`` in all,
  all answers together within ``INFLATED_IN_FLIGHT`` (:mod:`controller.providers._http_body`);
* a body read whole stops at the caller's ``max_body``, and all those being read from one
  provider together at ``BODIES_IN_FLIGHT`` (an answer alone may always reach its own limit):
  :class:`TooLarge`, the connection closed (the answer itself: :mod:`._http_answer`);
* addresses cached, happy eyeballs, one TLS context: :mod:`controller.providers._http_connect`;
* an HTTP proxy when given one (``HTTPS_PROXY`` and the rest, resolved by the caller):
  :mod:`controller.providers._http_proxy`, CONNECT tunnels for https;
* no cookies, no redirects.

Errors are :class:`TransportError` subclasses whose messages never hold the address: a base URL
can carry a key (Azure, Gemini), and these messages reach clients and logs.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from controller.providers._http_answer import HttpResponse
from controller.providers._http_body import INFLATING, Budget
from controller.providers._http_connect import (
    BadResponse,
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    PoolExhausted,
    Resolver,
    ResponseCut,
    TooLarge,
    TransportError,
    connect_reason,
    open_connection,
    tls_context,
)
from controller.providers._http_proxy import Proxy, tunnel

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "HttpClient",
    "HttpResponse",
    "PoolExhausted",
    "ResponseCut",
    "TooLarge",
    "TransportError",
    "connect_reason",
]

_MAX_HEAD = 64 * 1024  # bytes of status line and headers an answer may take
_MAX_FIELDS = 128  # header (or trailer) fields an answer may have
KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default too)
BODIES_IN_FLIGHT = 256 * 1024 * 1024  # whole bodies being read from one provider, together
READ_SIZE = 16 * 1024  # bytes one read of a socket takes at most (~15 us of the loop's time)
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # left as they are when the base URL's path is quoted


# ------------------------------------------------------------------------------- connection
class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools.

    Read into its pool's buffer (:data:`READ_SIZE`), parsed from there at once: one read
    costs the loop one bounded turn whatever the sender has queued, and no read allocates."""

    def __init__(self, pool: HttpClient) -> None:
        self.loop = pool.loop
        self._pool = pool
        self._buffer = pool.read_buffer
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[HttpResponse] | None = None
        self._response: HttpResponse | None = None
        self._headers: list[tuple[str, str]] = []
        self._unframed = 0  # bytes received since the last head or body bytes were parsed
        self._header_bytes = 0  # of the current answer's header (and trailer) fields
        self._too_big = ""  # why the answer is refused, found by a parser callback
        self._received = False  # any byte of the current answer
        self._length_known = False  # Content-Length or chunked: the end is not the socket's
        self._keep_alive = False  # the answer lets this connection carry another request
        self._paused = False
        self._max_body: int | None = None  # of the answer to the request in flight
        self.closed = False
        self.idle_since = 0.0

    # --- used by the pool and the answer
    def send(self, data: bytes, max_body: int | None) -> asyncio.Future[HttpResponse]:
        """Write a request; the future resolves with its answer's head."""
        assert self._transport is not None
        assert self._head is None
        self._head = self.loop.create_future()
        self._max_body = max_body
        self._received = False
        self._unframed = 0
        self._transport.write(data)
        return self._head

    def finished(self, *, reusable: bool) -> None:
        self._response = None
        if reusable and self._keep_alive and not self.closed:
            self.resume()  # a body that filled the buffer and then ended left reading paused
            self.idle_since = time.monotonic()
            self._pool._put_back(self)
        else:
            self.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        """Close it from this side: an answer not yet whole ends cut (connection_lost, which
        comes later, must not take the end of the connection for the end of the body)."""
        if not self.closed:
            self.closed = True
            self._cut_short("the connection was closed before the answer came")
            self.abandon()
            self._pool._gone(self)

    def abandon(self) -> None:
        """Close the socket, whatever the bookkeeping says."""
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        # parsed before this returns (httptools copies what it keeps): the pool's other
        # connections read into the same buffer next
        self.data_received(self._buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self._received = True
        if self._head is None and self._response is None:
            self.close()  # bytes nobody asked for: this connection can no longer be trusted
            return
        # Counted before parsing, reset by the callbacks for a head or body bytes: what is left
        # is a head, chunk header or trailer still coming, which httptools buffers whole.
        self._unframed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken(BadResponse("the provider's answer is not valid HTTP"))
            return
        if self._unframed > _MAX_HEAD:
            self._too_big = "the provider's answer has over 64 KiB of headers"
        if self._too_big:
            self._broken(BadResponse(self._too_big))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the rest

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return  # closed from this side: close() has told the answer
        self.closed = True
        response = self._response
        if response is not None and exc is None and not self._length_known:
            response._finish()  # a body delimited by the end of the connection
        self._cut_short("server closed the connection")
        self._pool._gone(self)

    def _cut_short(self, unanswered: str) -> None:
        """Whoever waits for an answer on this connection learns it will not come whole
        (``unanswered``: why, when no byte of it has come)."""
        if self._response is not None:
            self._response._fail(ResponseCut("connection cut mid-response"))
        head, self._head = self._head, None
        if head is not None and not head.done():
            if self._received:
                head.set_exception(ResponseCut("connection cut mid-response"))
            else:
                head.set_exception(Disconnected(unanswered))

    def _broken(self, error: TransportError) -> None:
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        if self._response is not None:
            self._response._fail(error)
        self.close()

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= _MAX_FIELDS:  # trailers count too: they land here as well
            self._too_big = f"the provider's answer has over {_MAX_FIELDS} header fields"
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEAD:  # fields parsed within one read escape _unframed
            self._too_big = "the provider's answer has over 64 KiB of headers"
            return
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # 1xx (103 Early Hints, say): the real answer follows
        if self._too_big:  # refused before anyone sees a head with fields left out
            self._broken(BadResponse(self._too_big))
            return
        head, self._head = self._head, None
        if head is None or head.done():  # an answer nobody asked for (or nobody waits for)
            self._broken(BadResponse("an answer to no request"))
            return
        self._keep_alive = self._parser.should_keep_alive()
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        coding = ",".join(headers.getall("transfer-encoding", ())).lower()
        self._length_known = "content-length" in headers or "chunked" in coding
        pool = self._pool
        budget = pool.bodies if self._max_body is not None else None
        self._response = response = HttpResponse(
            self, status, headers, self._max_body, budget, INFLATING
        )
        self._unframed = 0
        head.set_result(response)

    def on_body(self, body: bytes) -> None:
        self._unframed = 0
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        self._unframed = 0
        if self._response is not None:
            self._response._finish()


# ------------------------------------------------------------------------------- pool
class HttpClient:
    """POSTs to one base URL over a pool of keep-alive connections (made lazily)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 4096,
        keepalive: float = KEEPALIVE,
        ssl_context: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed("the provider's base_url is not an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ConnectFailed("the provider's base_url holds a user name or password")
        self.loop = asyncio.get_running_loop()
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        try:
            port = parts.port
        except ValueError:  # "Port out of range", "Port could not be cast to integer"
            port = 0
        if port == 0:
            raise ConnectFailed("the provider's base_url has an invalid port")
        self._port = port if port is not None else (443 if self._tls else 80)
        default = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if default else f"{host}:{self._port}"
        self._prefix = quote(parts.path.rstrip("/"), safe=_PATH_SAFE)
        self._base_query = parts.query
        self._ssl = (ssl_context or tls_context()) if self._tls else None
        self._resolver = Resolver(self._host, self._port)
        self._tunnel: Callable[[socket.socket], Awaitable[None]] | None = None
        self._origin = ""  # before the path: the scheme and host when an http proxy gets it
        self._proxy_auth: str | None = None  # Proxy-Authorization on each plain-http request
        if proxy is not None:
            self._via(proxy)
        self._max = max_connections if max_connections > 0 else math.inf  # 0: no limit
        self._keepalive = keepalive
        self.bodies = Budget(BODIES_IN_FLIGHT)  # whole bodies being read from this provider
        self.read_buffer = memoryview(bytearray(READ_SIZE))  # every connection's reads, in turn
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._sweep: asyncio.TimerHandle | None = None

    def _via(self, proxy: Proxy) -> None:
        """Connections go to ``proxy``: tunnelled for https, in absolute form for http."""
        self._resolver = Resolver(proxy.host, proxy.port)
        if self._tls:
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._tunnel = functools.partial(tunnel, proxy, f"{host}:{self._port}")
        else:
            self._origin = f"http://{self._authority}"
            self._proxy_auth = proxy.authorization

    def target(self, path: str, query: Iterable[tuple[str, str]] = ()) -> str:
        """The request target for ``path`` under the base URL, with ``query`` added."""
        pairs = urlencode(list(query))
        joined = "&".join(q for q in (self._base_query, pairs) if q)
        where = f"{self._origin}{self._prefix}{path}"
        return f"{where}?{joined}" if joined else where

    async def post(
        self,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        connect_timeout: float,
        max_body: int | None = None,
        pool_timeout: float | None = None,
    ) -> HttpResponse:
        """Send ``body`` to ``target`` (from :meth:`target`); returns once the answer's status
        and headers are in. The caller must :meth:`HttpResponse.release` it. Reading more than
        ``max_body`` bytes of the answer's body raises :class:`TooLarge`; waiting longer than
        ``pool_timeout`` for a free connection (all ``max_connections`` busy) raises
        :class:`PoolExhausted` (None: wait as long as the caller does)."""
        request = self._request_bytes(target, headers, body)
        conn = await self._acquire(connect_timeout, pool_timeout)
        try:
            return await conn.send(request, max_body)
        except BaseException:
            conn.close()
            raise

    async def close(self) -> None:
        """Close every connection; answers being read end with :class:`ResponseCut`."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # --- internals
    def _request_bytes(self, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
        lines = [f"POST {target} HTTP/1.1", f"Host: {self._authority}"]
        if self._proxy_auth is not None:
            lines.append(f"Proxy-Authorization: {self._proxy_auth}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines)
        breaks = len(lines) - 1  # a CR or LF inside a name or value would start a new header
        if head.count("\n") != breaks or head.count("\r") != breaks:
            raise BadResponse("a request header holds a line break (check the API key variable)")
        try:
            return head.encode("latin-1") + b"\r\n\r\n" + body
        except UnicodeEncodeError:
            raise BadResponse("a request header holds characters HTTP cannot carry") from None

    async def _acquire(self, connect_timeout: float, pool_timeout: float | None) -> _Connection:
        until = None
        if pool_timeout is not None and pool_timeout != math.inf:
            until = self.loop.time() + pool_timeout
        while True:
            if self._closed:
                raise Disconnected("the provider's client was closed")
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since > self._keepalive:
                    conn.close()
                    continue
                return conn
            if len(self._open) < self._max:
                return await self._connect(connect_timeout)
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(until):
                    await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken as the bound expired: pass the turn on, not lose it
                busy = f"all {self._max} connections to the provider stayed busy"
                raise PoolExhausted(f"{busy} for {pool_timeout:g}s") from None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled before it ran: pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, connect_timeout: float) -> _Connection:
        conn = _Connection(self)
        self._open.add(conn)  # counted while connecting, so the limit holds
        try:
            async with asyncio.timeout(connect_timeout):
                await open_connection(
                    self._resolver, lambda: conn, self._ssl, self._host, self._tunnel
                )
            if conn.closed:  # the client was closed while this connection was being made
                conn.abandon()
                raise Disconnected("the provider's client was closed")
        except TimeoutError:
            self._gone(conn)
            raise ConnectTimeout("connect timed out") from None
        except (OSError, RuntimeError) as exc:  # ssl.SSLError, socket.gaierror; uvloop's
            self._gone(conn)
            raise ConnectFailed(connect_reason(exc)) from None
        except BaseException:
            self._gone(conn)
            raise
        return conn

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._keepalive, self._close_stale)
        self._wake_one()

    def _close_stale(self) -> None:
        """Close the connections idle for ``keepalive`` (checked again while any stay idle)."""
        self._sweep = None
        cutoff = time.monotonic() - self._keepalive
        for conn in [c for c in self._idle if c.closed or c.idle_since <= cutoff]:
            self._idle.remove(conn)
            conn.close()
        if self._idle and not self._closed:
            self._sweep = self.loop.call_later(self._keepalive, self._close_stale)

    def _gone(self, conn: _Connection) -> None:
        self._open.discard(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
