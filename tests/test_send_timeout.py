"""A client must take what it is sent: ``gateway.send_timeout_seconds`` (``ConnectionLimits.send``).

A client that asks for an answer and then reads nothing (its TCP window full), or next to
nothing, held a request handler, the provider's stream (held back by the relay's drain) and the
buffers between for as long as its connection lived. Now a connection whose writes stay paused
for the bound (the transport over its high-water mark and not drained back since), or that was
closed with bytes its client never took, is reset; the stream is let go and reported cancelled,
as a client's disconnect is. What counts is progress, not the answer's length: a client that
reads slowly but steadily gets every byte, however long it takes.

Real sockets on loopback against a real gateway (a raw provider behind it, a raw client socket
with a small receive buffer in front), on asyncio's loop and on uvloop (what ``failover serve``
runs on). The bound that must act is short (:data:`SEND`) and every wait for its effect is
bounded by a generous :data:`WAIT`; where it must *not* act it is many times longer than any
stall of the slow reader's (its reads are 5 ms apart, its stalls as the transport fills well
under a second on an idle box), so a busy machine only makes a test slower.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiohttp import web

from controller._cli_serve import connection_limits
from controller._errors import ConfigError
from controller.config import parse_config
from controller.events import RouteOutcome
from controller.gateway import GatewayServer
from controller.gateway._server import ConnectionLimits
from controller.providers import Provider
from tests.conftest import Recorder
from tests.gateway_support import tier_server, wait_for
from tests.hostile_support import MiB, hostile, run_on_loop
from tests.http_client_support import HEAD, RawServer
from tests.test_chunk_frames_attacks import (
    FINISH,
    Client,
    Scripted,
    answer,
    chunked,
    event,
    request,
)
from tests.test_config import MINIMAL
from tests.test_slow_client import Flood

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]
SEND = 0.5  # the bound where it must act
WAIT = 30.0  # the most a test waits for it to have acted
LONG = 60.0  # the other limits, never reached
LOGGER = "controller.gateway._server"
TCP_ESTABLISHED, TCP_CLOSE = 1, 7  # tcpi_state, the first byte of struct tcp_info


def _run(loop: str, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``scenario()`` on a fresh event loop of kind ``loop``, within two minutes."""
    return run_on_loop(loop, scenario, within=120)


@asynccontextmanager
async def gateway(
    provider: Provider, *, send: float, idle: float = LONG
) -> AsyncIterator[tuple[str, Recorder]]:
    """A real gateway whose tier ``t`` is ``provider`` (model m-1, no retries) behind a front
    with these connection limits: its URL and the route recorder."""
    limits = ConnectionLimits(idle=idle, header=LONG, body=LONG, send=send)
    async with tier_server(provider, connection=limits) as (server, recorder):
        yield server.url, recorder


def tcp_state(sock: socket.socket) -> int:
    """The client socket's TCP state as the kernel sees it (no read needed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


async def reset_within(sock: socket.socket, within: float = WAIT) -> float:
    """Seconds until the gateway reset ``sock``'s connection (the client reading nothing
    meanwhile); an AssertionError if it is still open after ``within``."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while (state := tcp_state(sock)) == TCP_ESTABLISHED:
        assert loop.time() - began < within, f"the connection is still open after {within} s"
        await asyncio.sleep(0.05)
    assert state == TCP_CLOSE, f"closed, not reset (tcp state {state})"
    return loop.time() - began


def cut_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "send_timeout_seconds" in r.getMessage()]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno > logging.INFO]
    assert not loud, [r.getMessage() for r in loud]


# ------------------------------------------------------------------- clients that never read
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("version", [b"1.1", b"1.0"], ids=["frames", "aiohttp-http10"])
def test_a_client_that_never_reads_is_cut_and_the_provider_let_go(
    loop: str, version: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider would send 256 MiB; the client reads the answer's head, then nothing. Over
    HTTP/1.1 the relay writes chunk frames straight to the transport; over HTTP/1.0 aiohttp
    writes the events. Either way, once the writes have waited ``SEND`` the connection is
    reset, the provider's connection closed, the route reported cancelled, one INFO line."""

    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        flood = Flood()
        async with (
            RawServer(flood) as server,
            gateway(hostile(server), send=SEND) as (url, recorder),
        ):
            client = await Client.to(url, rcvbuf=65536)
            try:
                await client.send(request(version))
                head = await client.head()
                assert chunked(head) == (version == b"1.1"), head
                waited = await reset_within(client.sock)
            finally:
                client.close()
            await asyncio.wait_for(flood.ended.wait(), WAIT)
            await wait_for(lambda: bool(recorder.routes), within=WAIT)
            assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED
        assert waited >= SEND * 0.9  # (loop timers may fire a clock tick early)
        assert flood.sent < 64 * MiB
        lines = cut_lines(caplog)
        assert len(lines) == 1, lines
        assert "gateway.send_timeout_seconds" in lines[0]
        assert "127.0.0.1:" in lines[0]
        assert_quiet(caplog)

    _run(loop, scenario)


def whole_answer(text: int) -> bytes:
    """An OpenAI chat completion whose message has ``text`` characters."""
    message = {"role": "assistant", "content": "a" * text}
    body = {
        "id": "c",
        "object": "chat.completion",
        "model": "m-1",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return json.dumps(body).encode()


def answering(body: bytes) -> Callable[..., Coroutine[Any, Any, None]]:
    """A provider answering every request on its connection with ``body`` (JSON)."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.request(reader) is not None:
            head = HEAD + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            writer.write(head % len(body) + body)
            await writer.drain()

    return handler


WHOLE = b'{"model":"t","messages":[{"role":"user","content":"hi"}]}'


def whole_request(version: bytes = b"1.1") -> bytes:
    head = b"POST /v1/chat/completions HTTP/%b\r\nHost: gw\r\n" % version
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(WHOLE)
    return head + WHOLE


@pytest.mark.parametrize("loop", LOOPS)
def test_a_whole_answer_to_a_client_that_never_reads_is_cut(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 24 MiB answer (not streamed) written by aiohttp to a client that reads its head and
    nothing more: reset after ``SEND``, one INFO line; the gateway then serves others."""

    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        body = whole_answer(24 * MiB)
        async with (
            RawServer(answering(body)) as server,
            gateway(hostile(server), send=SEND) as (url, _),
        ):
            client = await Client.to(url, rcvbuf=65536)
            try:
                await client.send(whole_request())
                await client.head()
                await reset_within(client.sock)
            finally:
                client.close()
            reader = await Client.to(url)  # and someone who reads gets it whole
            try:
                await reader.send(whole_request(b"1.0"))
                await reader.head()
                assert await reader.until_closed() == body
            finally:
                reader.close()
        assert len(cut_lines(caplog)) == 1, cut_lines(caplog)
        assert_quiet(caplog)

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("close", ["keep-alive-idle", "http10"])
def test_a_closed_connection_whose_client_never_takes_its_last_bytes_is_reset(
    loop: str, close: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer written until the kernel's buffers are full and the transport holds a few
    bytes, without pausing: the handler is done, and aiohttp closes the connection (after its
    idle keep-alive, or at once for HTTP/1.0). A close waits for the client to take what the
    transport holds, which a client that never reads never does: reset after ``SEND``."""

    async def fill(http: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        await out.prepare(http)
        transport = http.transport
        assert transport is not None
        while transport.get_write_buffer_size() == 0:  # the kernel took it all
            await out.write(b"x" * 4096)
        return out

    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        app = web.Application()
        app.router.add_get("/fill", fill)
        limits = ConnectionLimits(idle=SEND, header=LONG, body=LONG, send=SEND)
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0, limits=limits) as gw:
            client = await Client.to(gw.url, rcvbuf=65536)
            try:
                version = b"1.0" if close == "http10" else b"1.1"
                await client.send(b"GET /fill HTTP/%b\r\nHost: gw\r\n\r\n" % version)
                await client.head()
                await reset_within(client.sock)
            finally:
                client.close()
        assert len(cut_lines(caplog)) == 1, cut_lines(caplog)
        assert_quiet(caplog)

    _run(loop, scenario)


# ------------------------------------------------------------------- clients that do read
SLOW_SEND = 1.5  # the slow reader takes 32 KiB in ~0.06 s: it would have to stall ~1.4 s


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_that_keeps_taking_is_never_cut_and_gets_every_byte(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """4 MiB of events to a client with a 16 KiB receive buffer that takes 3 KiB every 5 ms
    (~0.57 MB/s at most): the stream takes several times the bound, and writes stay paused
    longer than the bound (~1.8 s measured on an idle box: the kernel wakes a paused writer
    only once a third of the socket's send buffer, over a megabyte on loopback, has gone), yet
    the client takes far more than 32 KiB in every ``SLOW_SEND``: never cut, every byte in
    order, and its connection, left idle past the bound, then serves another stream."""

    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        first = [event(n, 10_000) for n in range(400)] + [FINISH]
        second = answer(20)
        provider = Scripted([*first, None, *second, None])
        async with (
            RawServer(provider) as server,
            gateway(hostile(server), send=SLOW_SEND) as (url, recorder),
        ):
            client = await Client.to(url, rcvbuf=16384)
            loop = asyncio.get_running_loop()
            try:
                await client.send(request())
                assert chunked(await client.head())
                began = loop.time()
                raw = bytearray(client.buffer)
                while not raw.endswith(b"\r\n0\r\n\r\n"):
                    piece = await loop.sock_recv(client.sock, 3072)
                    assert piece, f"closed after {len(raw)} bytes"
                    raw += piece
                    await asyncio.sleep(0.005)
                took = loop.time() - began
                client.buffer = bytes(raw)
                assert await client.body() == b"".join(first)
                await asyncio.sleep(SLOW_SEND + 0.5)  # a timer left armed would have fired
                await client.send(request())
                assert chunked(await client.head())
                assert await client.body() == b"".join(second)
            finally:
                client.close()
            outcomes = [route.outcome for route in recorder.routes]
            assert outcomes == [RouteOutcome.SERVED] * 2
        assert took > 2 * SLOW_SEND, took  # the length of the answer is not what counts
        assert cut_lines(caplog) == []
        assert_quiet(caplog)

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_keep_alive_reuse_after_a_stream_read_at_once(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that reads a stream (300 events, one of 200 kB) as it comes, leaves the
    connection idle for several times the bound, then sends its next request: answered whole
    on the same connection, and nobody was cut."""

    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        first, second = answer(300, big=200_000), answer(20)
        provider = Scripted([*first, None, *second, None])
        async with (
            RawServer(provider) as server,
            gateway(hostile(server), send=SEND) as (url, recorder),
        ):
            client = await Client.to(url)
            try:
                await client.send(request())
                assert chunked(await client.head())
                assert await client.body() == b"".join(first)
                await asyncio.sleep(4 * SEND)
                await client.send(request())
                assert chunked(await client.head())
                assert await client.body() == b"".join(second)
                assert client.buffer == b""
            finally:
                client.close()
            outcomes = [route.outcome for route in recorder.routes]
            assert outcomes == [RouteOutcome.SERVED] * 2
        assert cut_lines(caplog) == []
        assert_quiet(caplog)

    _run(loop, scenario)


# ------------------------------------------------------------------- the config key
def test_the_send_timeout_is_read_from_gateway_and_defaults_to_a_minute() -> None:
    assert parse_config(MINIMAL).gateway.send_timeout_seconds == 60.0
    assert ConnectionLimits().send == 60.0
    config = parse_config(MINIMAL + "gateway:\n  send_timeout_seconds: 2.5\n")
    assert config.gateway.send_timeout_seconds == 2.5
    assert connection_limits(config.gateway).send == 2.5  # what failover serve listens with


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", "greater than 0"),
        ("-5", "greater than 0"),
        ("soon", "valid number"),
        (".inf", "finite number"),
        (".nan", "finite number"),
        ("[60]", "valid number"),
    ],
)
def test_a_bad_send_timeout_names_the_key_and_the_line(value: str, words: str) -> None:
    text = MINIMAL + f"gateway:\n  port: 8080\n  send_timeout_seconds: {value}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="failover.yaml")
    err = caught.value
    assert (err.key, err.line) == ("gateway.send_timeout_seconds", 14)
    assert str(err).startswith("failover.yaml:14: gateway.send_timeout_seconds: ")
    assert words in str(err)
