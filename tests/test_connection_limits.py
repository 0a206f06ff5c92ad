"""Client connections are bounded: idle ones, slow heads and slow bodies are closed, and over the
cap a new connection gets a fast 503 while the requests already in flight go on.

Real sockets on loopback against a real :class:`GatewayServer`. The limits under test are short
(0.3 s) and every wait for their effect is bounded by a generous 10 s; limits that must *not*
act are set to 60 s or more, so a busy machine cannot make a test race a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from controller.gateway import GatewayServer
from controller.gateway._server import ConnectionLimits

SHORT = 0.3
LONG = 60.0
WAIT = 10.0


def _app(release: asyncio.Event, entered: asyncio.Event) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def held(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/held", held)
    app.router.add_post("/echo", echo)
    return app


class Front:
    def __init__(self, server: GatewayServer, release: asyncio.Event, entered: asyncio.Event):
        self.server, self.release, self.entered = server, release, entered

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.server.port)


async def _front(limits: ConnectionLimits) -> AsyncIterator[Front]:
    release, entered = asyncio.Event(), asyncio.Event()
    async with GatewayServer(
        _app(release, entered), host="127.0.0.1", port=0, grace=1.0, limits=limits
    ) as server:
        yield Front(server, release, entered)
        release.set()


@pytest.fixture
async def idle_front() -> AsyncIterator[Front]:
    async for front in _front(ConnectionLimits(idle=SHORT, header=LONG, body=LONG)):
        yield front


@pytest.fixture
async def slow_front() -> AsyncIterator[Front]:
    async for front in _front(ConnectionLimits(idle=LONG, header=SHORT, body=SHORT)):
        yield front


@pytest.fixture
async def small_front() -> AsyncIterator[Front]:
    async for front in _front(ConnectionLimits(max_connections=2, idle=LONG)):
        yield front


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT):
        return await reader.read()


async def test_a_connection_that_never_sends_a_request_is_closed(idle_front: Front) -> None:
    reader, writer = await idle_front.connect()
    assert await _until_closed(reader) == b""
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_answer(idle_front: Front) -> None:
    reader, writer = await idle_front.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _until_closed(reader)  # the answer, then the close of the idle connection
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nhi")


async def test_a_head_that_never_ends_gets_a_408_and_is_closed(slow_front: Front) -> None:
    """The slowloris: a request line and a header, then nothing more (the idle limit is 60 s)."""
    reader, writer = await slow_front.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    answer = await _until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def test_bytes_of_a_next_request_during_an_answer_do_not_cut_the_answer(
    slow_front: Front,
) -> None:
    """While an answer is still being written (a stream), the client sends an empty line and
    the start of its next request: the answer is not cut by a 408 written into its body (the
    head limit is 0.3 s, the answer takes five times that); the next head, never finished,
    gets its 408 after the answer."""
    reader, writer = await slow_front.connect()
    writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await slow_front.entered.wait()
    writer.write(b"\r\n")
    await asyncio.sleep(SHORT)
    writer.write(b"GET / HTTP/1.1\r\nHo")
    await asyncio.sleep(5 * SHORT)  # the head's limit passes while the answer is held
    slow_front.release.set()
    answer = await _until_closed(reader)
    writer.close()
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.startswith(b"done")
    assert rest.removeprefix(b"done").startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def test_a_slow_body_pipelined_behind_an_answer_does_not_cut_the_answer(
    slow_front: Front,
) -> None:
    """The body limit (0.3 s) of a request sent behind one still being answered counts after
    that answer: the answer comes whole, then the unfinished body closes the connection."""
    reader, writer = await slow_front.connect()
    writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await slow_front.entered.wait()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
    await asyncio.sleep(5 * SHORT)  # the body's limit passes while the answer is held
    slow_front.release.set()
    answer = await _until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\ndone")


async def test_an_empty_line_before_a_request_is_ignored(slow_front: Front) -> None:
    reader, writer = await slow_front.connect()
    writer.write(b"\r\n")
    await asyncio.sleep(5 * SHORT)  # past the head's limit: nothing started
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_a_body_that_never_ends_is_closed(slow_front: Front) -> None:
    reader, writer = await slow_front.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert await _until_closed(reader) == b""
    writer.close()


async def test_whole_requests_on_one_connection_are_served(slow_front: Front) -> None:
    """The short head and body limits count per request: two requests on one connection, with
    a body, each sent whole, are both answered."""
    reader, writer = await slow_front.connect()
    for body in (b"one", b"two"):
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        async with asyncio.timeout(WAIT):
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(len(body)) == body
    writer.close()


async def test_over_the_cap_a_new_connection_gets_a_fast_503_and_in_flight_requests_go_on(
    small_front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    busy_reader, busy = await small_front.connect()
    busy.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await small_front.entered.wait()
    _, idle = await small_front.connect()

    reader, refused = await small_front.connect()
    answer = await _until_closed(reader)
    refused.close()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1\r\n" in answer
    assert any("gateway.max_connections" in r.getMessage() for r in caplog.records)

    small_front.release.set()  # the request in flight all along is answered
    async with asyncio.timeout(WAIT):
        assert (await busy_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
    idle.close()
    busy.close()
    await idle.wait_closed()
    await busy.wait_closed()

    async with asyncio.timeout(WAIT):  # room again once connections close
        while True:
            reader, writer = await small_front.connect()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            if answer.startswith(b"HTTP/1.1 200 OK\r\n"):
                break
            await asyncio.sleep(0.05)  # the server sees the two closes a moment later


def test_the_cap_answers_503_on_uvloop() -> None:
    """``failover serve`` runs on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> bytes:
        async for front in _front(ConnectionLimits(max_connections=1, idle=LONG)):
            reader, writer = await front.connect()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # counted once answered
            async with asyncio.timeout(WAIT):
                await reader.readuntil(b"hi")
            refused_reader, refused = await front.connect()
            answer = await _until_closed(refused_reader)
            refused.close()
            writer.close()
            return answer
        raise AssertionError("no front")

    assert uvloop.run(scenario()).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
