"""Running an app on a socket, and stopping it gracefully.

Stopping happens in aiohttp's own order, which is the graceful one: the listening socket closes
first (no new connections), idle keep-alive connections close, and in-flight requests, including
long streams, get up to ``grace`` seconds to finish.

The cut at the end of the grace period is ours, not aiohttp's. Its ``shutdown_timeout`` is spent
twice (once waiting for handlers, once more after "cancelling" them by failing their *request
body*, which a handler that is streaming an answer never reads), so a stream could outlive the
grace by as much again. An app that keeps an :class:`InFlight` under :data:`IN_FLIGHT_KEY`
instead has its tracked handlers cancelled when the grace is over. A handler can tell that
cancellation from a client disconnect by :attr:`InFlight.cut_off`, and say why it stops in the
caller's format (a streamed answer ends with the format's error event, so the SDKs raise rather
than return a truncated answer) before the cancellation proceeds; the cancelled handler still
closes its routed stream, so the attempt is reported as cancelled. A handler still busy
:data:`CUT_MARGIN` later is cancelled once more, so a stop takes at most ``grace`` plus that.

A request aiohttp's parser refuses (a control character in a header, a broken request line) gets
a short 400 that does not repeat what it refused, and one WARNING line without a traceback:
aiohttp's own answer quoted the offending line, a client's key in it, in the body and in an
ERROR traceback per request. aiohttp has no hook for that answer, so the runner here makes its
server with a request handler that overrides ``handle_error`` for parser errors only.

Handlers are cancelled when their client disconnects (``handler_cancellation``): a proxy must
stop paying for tokens nobody will read, and the router reports such attempts as cancelled.

Connections are bounded (:class:`ConnectionLimits`), because aiohttp bounds none of them (its
keep-alive default is an hour, and a request's head and body may take forever): a connection
idle with no request (fresh or after an answer) is closed after ``idle``; a request's head that
started must be complete ``header`` seconds after its first byte, and its body ``body`` seconds
after its head, else the connection is closed (a head cut short first gets a 408). Over
``max_connections`` open at once, a new connection gets a 503 and is closed at once, before
anything of it is read; the connections already open, in-flight requests among them, go on.

A client must also take what it is sent. While the gateway waits on a client (the connection's
writes are paused: its transport holds more than its high-water mark, 64 KiB, and has not
drained back to its low-water mark; or aiohttp closed it with bytes still unsent), the client
must take at least :data:`_PROGRESS` (32 KiB) in every ``send`` seconds, else the connection
is reset (looked at every quarter of ``send``, over the last ``send`` seconds: the reset comes
``send`` to ``1.25 * send`` after the client stopped taking). Progress is what counts, not the
answer's length or how long writes stay paused: the kernel wakes a paused writer only once a
third of the socket's send buffer has drained (over a megabyte on loopback), so a steady reader
of 200 KB/s left writes paused 5 s at a time on loopback, and such a reader must not be cut.
What the client took is the bytes its TCP acknowledged (Linux's ``tcpi_bytes_acked``), which
move in steps of up to a segment (64 KiB on loopback, ~1.4 KiB on a network: a receiver opens
its window a segment at a time), hence a threshold under a loopback segment; where the kernel
does not say, writes paused for ``send`` seconds are the cut. Whoever waits on the connection
(a relay's drain, aiohttp's write of a whole answer) is woken by the loss, the handler
cancelled (``handler_cancellation``), so a stream is closed and reported as cancelled. The
timer is armed only when writes pause, so the writes that do not wait cost nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "CUT_MARGIN",
    "IN_FLIGHT_KEY",
    "ConnectionLimits",
    "GatewayServer",
    "InFlight",
    "serve",
]

log = logging.getLogger(__name__)

CUT_MARGIN = 0.25  # seconds a cut handler gets for its last words (an error event, a 503)
# aiohttp's own deadline comes strictly after both our cuts: falling on a cut, it abandoned the
# future a cut handler then completed, and aiohttp logged an InvalidStateError traceback for it.
_AIOHTTP_LAST = CUT_MARGIN + 0.25


class InFlight:
    """The request handlers an app is running, so that a stopping server can cut them."""

    __slots__ = ("_cut_off", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut_off = False

    @property
    def cut_off(self) -> bool:
        """Whether the server stopped waiting: a handler cancelled now is cut by the shutdown."""
        return self._cut_off

    def __len__(self) -> int:
        return len(self._tasks)

    def track(self, handler: Handler) -> Handler:
        """A route wrapper that registers the handler's task while it runs (a route wrapper
        rather than a middleware for the reason given in ``_auth.client_auth``)."""
        tasks = self._tasks

        async def tracked(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            if task is None:  # not under aiohttp, which runs every handler in a task
                return await handler(request)
            tasks.add(task)
            try:
                return await handler(request)
            finally:
                tasks.discard(task)

        return tracked

    def cut(self) -> int:
        """Cancel every tracked handler; how many there were."""
        self._cut_off = True
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)


def _cut(in_flight: InFlight) -> None:
    if in_flight:
        log.info("shutdown: cutting %d request(s) still in flight", in_flight.cut())


IN_FLIGHT_KEY: web.AppKey[InFlight] = web.AppKey("failover_in_flight", InFlight)
_MALFORMED = "400 Bad Request: malformed HTTP request\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """What one client connection may hold (``gateway.*`` in the config): see the module doc."""

    max_connections: int = 4096
    idle: float = 30.0  # seconds with no request on a connection (fresh, or after an answer)
    header: float = 10.0  # seconds from a request's first byte to the end of its head
    body: float = 60.0  # seconds from the end of a request's head to the end of its body
    send: float = 60.0  # seconds in which a client waited on must take 32 KiB of its answer


_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 41\r\n\r\n"
    b"503 Service Unavailable: too many clients"
)
_LINGER_NONE = struct.pack("ii", 1, 0)  # struct linger {l_onoff, l_linger}
# What a client must take of what it is sent every `send` seconds while the gateway waits on it.
_PROGRESS = 0x8000
_SEND_TICKS = 4  # looked at every `send` / 4 seconds: a reset comes at most a tick late
# Linux's struct tcp_info: tcpi_bytes_acked, a __u64 in native order, ends at byte 128.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED_END = 128
_REFUSAL_LOG_EVERY = 10.0  # seconds between the warnings that connections are being refused


class _Handler(RequestHandler):
    """aiohttp's connection handler, answering its parser's refusals without echo, and
    holding the connection to :class:`ConnectionLimits`."""

    __slots__ = (
        "_counted",
        "_head_started",
        "_payload",
        "_read_timer",
        "_send_limit",
        "_send_tick",
        "_send_timer",
        "_sending",
        "_taken",
    )

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._counted = False
        self._head_started = False  # bytes of a request's head arrived, the head is not whole
        self._payload: Any = None  # the body being read of the last request whose head came
        self._read_timer: asyncio.TimerHandle | None = None
        self._send_limit = manager.limits.send
        self._send_tick = self._send_limit / _SEND_TICKS
        self._send_timer: asyncio.TimerHandle | None = None
        # The transport until it is lost (aiohttp forgets it once it has closed it, while what
        # it still holds waits for the client).
        self._sending: asyncio.Transport | None = None
        # What the client had taken, a tick apart, while it is being waited for (None: unknown)
        self._taken: list[int | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server is not None and server.open >= server.limits.max_connections:
            server.refused(transport)
            self._manager = None  # never counted by aiohttp: its connection_lost does nothing
            return
        super().connection_made(transport)
        self._sending = self.transport
        if server is not None:
            server.open += 1
            self._counted = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._sending = None
        self._disarm_send()
        if self._counted and self._server is not None:
            self._server.open -= 1
            self._counted = False
        super().connection_lost(exc)

    @property
    def _server(self) -> _Server | None:
        manager = self._manager
        return manager if isinstance(manager, _Server) else None

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        new_head = not self._head_started and self._body_done()
        super().data_received(data)
        server = self._server
        if server is None or self._force_close or self._close:
            return
        if self._request_count != before:  # a head completed: its body's clock starts
            self._head_started = False
            self._disarm()
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._payload = payload
                self._arm(server.limits.body, self._body_timed_out)
        elif new_head and data.strip(b"\r\n"):  # empty lines before a request: ignored
            self._head_started = True  # (RFC 9112 section 2.2)
            self._arm(server.limits.header, self._head_timed_out)

    def _body_done(self) -> bool:
        payload = self._payload
        if payload is None or payload.is_eof():
            self._payload = None
            return True
        return False

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._read_timer = self._loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _head_timed_out(self) -> None:
        self._read_timer = None
        server = self._server
        if self._current_request is not None and server is not None:
            # An answer is being written (a stream, say) and the next request's head came in
            # part: aiohttp reads that request only after the answer, and a 408 now would
            # land in the middle of the answer's body. Looked at again a head's time later.
            self._arm(server.limits.header, self._head_timed_out)
            return
        if self._head_started and self.transport is not None:
            log.debug("closing a connection whose request head took too long")
            self.transport.write(_TIMED_OUT)
            self.force_close()

    def _body_timed_out(self) -> None:
        self._read_timer = None
        current, server = self._current_request, self._server
        if current is not None and current.content is not self._payload and server is not None:
            # the body of a request pipelined behind the one being answered: as for a head
            self._arm(server.limits.body, self._body_timed_out)
            return
        if not self._body_done():
            log.debug("closing a connection whose request body took too long")
            self.force_close()

    # ------------------------------------------------------------------ the client's reading
    async def start(self) -> None:
        try:
            await super().start()
        finally:  # the connection is closing: what the transport still holds must go too
            self._watch_sending()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_sending()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_send()  # the client took something: a closing transport starts afresh
        self._watch_sending()

    def _watch_sending(self) -> None:
        """Start looking at what the client takes while it is being waited for (writes paused,
        or the connection closed with bytes unsent); stop otherwise."""
        transport = self._sending
        if transport is None or not (
            self._paused or (transport.is_closing() and transport.get_write_buffer_size() > 0)
        ):
            self._disarm_send()
        elif self._send_timer is None:
            self._taken = [_acked(transport)]
            self._send_timer = self._loop.call_later(self._send_tick, self._look_at_sending)

    def _disarm_send(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _look_at_sending(self) -> None:
        """What the client took in the last ``send`` seconds (a window sliding by a tick, so
        that what went as writes paused, filling the kernel's buffers, stops counting a tick
        after the first window), and the reset when it is under :data:`_PROGRESS`."""
        self._send_timer = None
        transport = self._sending
        if transport is None:
            return
        taken = self._taken
        taken.append(_acked(transport))
        if len(taken) > _SEND_TICKS:
            first, last = taken.pop(0), taken[-1]
            if first is None or last is None or last - first < _PROGRESS:
                self._send_timed_out(transport)
                return
        self._send_timer = self._loop.call_later(self._send_tick, self._look_at_sending)

    def _send_timed_out(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        log.info(
            "closing the connection of %s: it took less than %d KiB of what it was sent in "
            "%g s (gateway.send_timeout_seconds)",
            where,
            _PROGRESS // 1024,
            self._send_limit,
        )
        _reset(transport)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # Not HTTP at all (TLS or a scanner on a plain port): as aiohttp does, not worth a warning
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(
            level, "refused a malformed request from %s (%s)", request.remote, type(exc).__name__
        )
        response = web.Response(status=400, text=_MALFORMED)
        response.force_close()
        return response


def _acked(transport: asyncio.Transport) -> int | None:
    """The bytes of the connection its client's TCP has acknowledged, or None where the kernel
    does not say (not Linux, a kernel before 4.1, no socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _BYTES_ACKED_END)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_END:
        return None
    return int.from_bytes(info[_BYTES_ACKED_END - 8 : _BYTES_ACKED_END], sys.byteorder)


def _reset(transport: asyncio.Transport) -> None:
    """Close ``transport`` now, with a reset: ``close()`` would wait for the client to take
    what the transport holds, and a closed socket's FIN would wait in the kernel behind what
    it holds (megabytes), for a client that takes nothing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on, 0 s: the close drops what is unsent and sends a RST (an OSError: the
        # socket is already gone, and the abort is all there is to do)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
    transport.abort()


class _Server(web.Server):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.open = 0  # connections counted against limits.max_connections
        self._refused = 0  # since the last warning
        self._warned_at: float | None = None

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)

    def refused(self, transport: asyncio.BaseTransport) -> None:
        """Answer a connection over the cap with a 503 and close it, warning now and then."""
        # aiohttp's cast: uvloop's transports are not asyncio.Transport subclasses
        writable = cast(asyncio.Transport, transport)
        writable.write(_FULL)
        writable.close()
        self._refused += 1
        now = self._loop.time()
        if self._warned_at is None or now - self._warned_at >= _REFUSAL_LOG_EVERY:
            log.warning(
                "refused %d connection(s): %d open, the most gateway.max_connections allows",
                self._refused,
                self.open,
            )
            self._refused, self._warned_at = 0, now


class _Runner(web.AppRunner):
    """An AppRunner whose connections are handled by :class:`_Handler`."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's startup runs here
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            limits=self._limits,
            **self._kwargs,
        )


class GatewayServer:
    """One app on one listener. ``port=0`` picks a free port; read :attr:`port` after start."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str,
        port: int,
        grace: float,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._app = app
        self._limits = limits or ConnectionLimits()
        self._host = host
        self._port = port
        self._grace = grace
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> GatewayServer:
        runner = _Runner(
            self._app,
            limits=self._limits,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self._grace + _AIOHTTP_LAST,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then cut."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        in_flight = self._app.get(IN_FLIGHT_KEY)
        cuts = [] if in_flight is None else self._schedule_cuts(in_flight)
        try:
            await runner.cleanup()  # inline: it closes the listener before anything else runs
        finally:
            for cut in cuts:
                cut.cancel()

    def _schedule_cuts(self, in_flight: InFlight) -> list[asyncio.TimerHandle]:
        """The cut at the end of the grace, then the cut of what is still busy with its last
        words :data:`CUT_MARGIN` later."""
        loop = asyncio.get_running_loop()
        delays = (self._grace, self._grace + CUT_MARGIN)
        return [loop.call_later(delay, _cut, in_flight) for delay in delays]

    async def __aenter__(self) -> GatewayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace: float,
    stop: asyncio.Event | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set (or this task is cancelled), then stop gracefully.

    The CLI sets ``stop`` from its SIGTERM/SIGINT handlers.
    """
    server = await GatewayServer(app, host=host, port=port, grace=grace, limits=limits).start()
    try:
        if stop is None:
            await asyncio.Event().wait()  # until cancelled
        else:
            await stop.wait()
    finally:
        await server.stop()
