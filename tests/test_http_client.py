"""HttpClient (controller/providers/_http.py) against real servers on 127.0.0.1.

The servers (tests/http_client_support.py) write exact bytes, so the framing under test
(Content-Length, chunked, end of connection, 1xx, HTTP/1.0, a cut) is the one the test wrote,
not whatever a server framework chose.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from controller.providers._http import (
    BadResponse,
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    HttpClient,
    ResponseCut,
    TransportError,
)
from tests.fakes_chat import unused_port
from tests.http_client_support import (
    BODY,
    CHUNKED,
    HEAD,
    OK,
    PARTIAL,
    Handler,
    RawServer,
    answering,
    fetch,
    post,
    served,
)


# ----------------------------------------------------------------------------- framing
@pytest.mark.parametrize(
    ("pieces", "body"),
    [
        ((HEAD + b"Content-Length: 11\r\n\r\nhello", b" world"), b"hello world"),
        ((CHUNKED + b"5\r\nhel", b"lo\r\n6\r\n worl", b"d\r\n0\r\n\r\n"), b"hello world"),
    ],
    ids=["content-length", "chunked"],
)
async def test_framed_bodies_arrive_whole(pieces: tuple[bytes, ...], body: bytes) -> None:
    async with served(answering(*pieces)) as (server, client):
        assert await fetch(client) == (200, body)
        assert await fetch(client) == (200, body)
        assert server.accepts == 1


async def test_body_delimited_by_the_end_of_the_connection() -> None:
    pieces = (HEAD + b"\r\nall of ", b"it")
    async with served(answering(*pieces, cut=True)) as (server, client):
        assert await fetch(client) == (200, b"all of it")
        assert await fetch(client) == (200, b"all of it")
        assert server.accepts == 2  # such a connection cannot carry another request


@pytest.mark.parametrize(
    ("answer", "before"),  # an answer the server cuts, and its body's part before the cut
    [(PARTIAL, b"abc"), (CHUNKED + b"3\r\nabc\r\n5\r\nde", b"abcde")],
    ids=["content-length", "chunked"],
)
async def test_body_cut_by_the_server_is_response_cut(answer: bytes, before: bytes) -> None:
    async with served(answering(answer, cut=True)) as (_, client):
        resp = await post(client)
        with pytest.raises(ResponseCut):
            await resp.read()
        resp.release()
        resp = await post(client)
        got = b""
        with pytest.raises(ResponseCut):  # noqa: PT012 - the pieces before the cut come first
            while piece := await resp.readany():
                got += piece
        assert got == before
        resp.release()


# ----------------------------------------------------------------------------- keep-alive
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_answer_that_ends_keep_alive_is_not_reused(answer: bytes) -> None:
    async with served(answering(answer)) as (server, client):  # the server would go on
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert (server.accepts, len(server.requests)) == (2, 2)


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    closed = asyncio.Event()

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await answering(OK, cut=True)(server, reader, writer)
        writer.close()  # keep-alive said yes, then the server timed the idle connection out
        await writer.wait_closed()
        closed.set()

    async with served(handler) as (server, client):
        assert await fetch(client) == (200, b"ok")
        await closed.wait()
        for _ in range(5):  # the client's loop reads the FIN (loopback delivers it at once)
            await asyncio.sleep(0)
        assert await fetch(client) == (200, b"ok")
        assert server.accepts == 2


def closing_after(answered: int) -> Handler:
    """The first connection answers ``answered`` requests, then reads one more and closes without
    a word (timed out as the request arrived); later connections answer every request."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first = server.accepts == 1
        while await server.request(reader) is not None:
            if first and len(server.requests) > answered:
                return
            writer.write(OK)

    return handler


@pytest.mark.parametrize("answered", [0, 1], ids=["new", "reused"])
async def test_no_answer_is_disconnected_and_never_sent_twice(answered: int) -> None:
    async with served(closing_after(answered)) as (server, client):
        for _ in range(answered):
            assert await fetch(client) == (200, b"ok")
        with pytest.raises(Disconnected):
            await fetch(client)
        assert (server.accepts, len(server.requests)) == (1, answered + 1)  # a POST: not resent
        assert await fetch(client) == (200, b"ok")  # the next call gets a new connection
        assert server.accepts == 2


# ----------------------------------------------------------------------------- answers
@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"],
    ids=["103", "100"],
)
async def test_informational_answers_are_skipped(interim: bytes) -> None:
    async with served(answering(interim, OK)) as (server, client):
        resp = await post(client)
        assert resp.status == 200
        assert "link" not in resp.headers
        assert await resp.read() == b"ok"
        resp.release()
        assert await fetch(client) == (200, b"ok")
        assert server.accepts == 1


async def test_204_has_no_body_and_keeps_the_connection() -> None:
    async with served(answering(b"HTTP/1.1 204 No Content\r\n\r\n")) as (server, client):
        assert await fetch(client) == (204, b"")
        assert await fetch(client) == (204, b"")
        assert server.accepts == 1


def encoded(coding: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


TEXT = b'{"choices": [{"text": "hello"}]}' * 50


@pytest.mark.parametrize(
    "answer", [encoded("gzip", gzip.compress(TEXT)), encoded("Deflate", zlib.compress(TEXT))]
)
async def test_compressed_bodies_are_decoded(answer: bytes) -> None:
    async with served(answering(answer[:-40], answer[-40:])) as (server, client):
        assert await fetch(client) == (200, TEXT)
        assert await fetch(client) == (200, TEXT)
        assert server.accepts == 1


async def test_corrupt_gzip_body_is_bad_response() -> None:
    async with served(answering(encoded("gzip", b"this is not gzip"))) as (server, client):
        for _ in range(2):
            with pytest.raises(BadResponse, match="compressed body is corrupt"):
                await fetch(client)
        assert server.accepts == 2  # the connection of a bad answer is not trusted again


async def test_truncated_gzip_body_is_bad_response() -> None:
    whole = gzip.compress(TEXT)
    async with served(answering(encoded("gzip", whole[: len(whole) // 2]))) as (_, client):
        with pytest.raises(BadResponse):
            await fetch(client)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 abc OK\r\n\r\n", b"SPDY/3 200 OK\r\n\r\n"])
async def test_malformed_status_line_is_bad_response(answer: bytes) -> None:
    async with served(answering(answer)) as (_, client):
        with pytest.raises(BadResponse, match="not valid HTTP"):
            await post(client)


@pytest.mark.parametrize(
    "header",
    [
        ("x-api-key", "sk-1\r\nX-Injected: yes"),
        ("x-api-key", "sk-1\n"),
        ("x-api-key\r", "sk-1"),
        ("x-api-key", "sk-\u20ac"),
    ],
    ids=["crlf-in-value", "lf-in-value", "cr-in-name", "not-latin-1"],
)
async def test_bad_request_header_is_refused_before_sending(header: tuple[str, str]) -> None:
    async with served(answering(OK)) as (server, client):
        with pytest.raises(BadResponse, match="request header") as caught:
            await post(client, ("content-type", "application/json"), header)
        assert "sk-" not in str(caught.value)
        assert server.accepts == 0


# ----------------------------------------------------------------------------- the pool
async def test_pool_limit_makes_the_second_caller_wait_then_reuse() -> None:
    async with served(answering(OK), max_connections=1) as (server, client):
        first = await post(client)
        second = asyncio.create_task(fetch(client))
        await asyncio.sleep(0)
        assert not second.done()  # it waits on a future only a release or a close sets
        assert await first.read() == b"ok"
        first.release()
        assert await second == (200, b"ok")
        assert server.accepts == 1


async def test_no_pool_limit_with_zero() -> None:
    """``max_connections: 0``: as many connections as answers held at once (long streams
    each hold theirs)."""
    async with served(answering(OK), max_connections=0) as (server, client):
        held = [await post(client) for _ in range(300)]
        for resp in held:
            assert await resp.read() == b"ok"
            resp.release()
        assert server.accepts == 300


async def test_post_cancelled_before_its_answer_gives_up_its_connection() -> None:
    asked = asyncio.Event()

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if server.accepts == 1:
            await server.request(reader)
            asked.set()
            await reader.read()  # until the client hangs up
        await answering(OK)(server, reader, writer)

    async with served(handler, max_connections=1) as (server, client):
        waiting = asyncio.create_task(post(client))
        await asked.wait()
        waiting.cancel()  # the caller's timeout, say
        assert await fetch(client) == (200, b"ok")  # not the answer meant for the first post
        assert server.accepts == 2


async def test_cancelled_waiter_passes_its_turn_on() -> None:
    async with served(answering(OK), max_connections=1) as (_, client):
        first = await post(client)
        woken = asyncio.create_task(fetch(client))
        patient = asyncio.create_task(fetch(client))
        await asyncio.sleep(0)  # both now wait for the one connection
        assert await first.read() == b"ok"
        first.release()  # wakes `woken` ...
        woken.cancel()  # ... which is cancelled before it runs (its caller's timeout)
        async with asyncio.timeout(1):  # the idle connection is there for `patient`
            assert await patient == (200, b"ok")


async def test_large_stream_read_slowly_arrives_whole_and_in_order() -> None:
    body = b"".join(b"%08d" % i for i in range(384 * 1024))  # 3 MiB, every offset distinct
    pieces = [HEAD + b"Content-Length: %d\r\n\r\n" % len(body)]
    pieces += [body[at : at + 65536] for at in range(0, len(body), 65536)]
    async with served(answering(*pieces)) as (server, client):
        resp = await post(client)
        got = bytearray()
        while piece := await resp.readany():
            got += piece
            for _ in range(3):  # a slow reader: the server runs ahead
                await asyncio.sleep(0)
        resp.release()
        assert got == body
        assert await fetch(client) == (200, body)  # and the connection is still sound
        assert server.accepts == 1


async def test_unread_answer_that_paused_the_socket_does_not_stall_the_next() -> None:
    big = encoded("gzip", gzip.compress(bytes(1024 * 1024)))  # 1 KiB on the wire, 1 MiB decoded
    async with served(answering(big)) as (_, client):
        resp = await post(client)  # the whole answer came in one read
        resp.release()  # not read: an error path that gave up, say
        assert await fetch(client) == (200, bytes(1024 * 1024))


async def test_release_is_idempotent() -> None:
    async with served(answering(OK)) as (server, client):
        resp = await post(client)
        assert await resp.read() == b"ok"
        resp.release()
        resp.release()  # a second release must not pool the connection twice
        assert list(await asyncio.gather(fetch(client), fetch(client))) == [(200, b"ok")] * 2
        assert server.accepts == 2


async def test_answer_not_read_to_the_end_closes_its_connection() -> None:
    hung_up = asyncio.Event()

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.request(reader) is not None:
            writer.write(PARTIAL)
        hung_up.set()  # before the rest of the body was written

    async with served(handler) as (server, client):
        for _ in range(2):
            resp = await post(client)
            assert await resp.readany() == b"abc"
            resp.release()
        await hung_up.wait()
        assert server.accepts == 2


# ----------------------------------------------------------------------------- connecting
async def test_refused_port_is_connect_failed_without_the_address() -> None:
    port = unused_port()
    client = HttpClient(f"http://127.0.0.1:{port}/v1?key=sk-secret")
    async with asyncio.timeout(5):
        with pytest.raises(ConnectFailed) as caught:
            await post(client)
    await client.close()
    assert caught.value.reason == "Connection refused"
    for leak in ("127.0.0.1", str(port), "sk-secret"):
        assert leak not in str(caught.value)


async def test_zero_connect_timeout_is_connect_timeout() -> None:
    # Deterministic: the address lookup always yields to the loop (an executor job, with
    # asyncio's loop and uvloop alike), and asyncio.timeout(0) has fired by then.
    async with served(answering(OK), max_connections=1) as (server, client):
        with pytest.raises(ConnectTimeout, match="connect timed out"):
            await client.post("/v1/chat", [], BODY, connect_timeout=0)
        assert await fetch(client) == (200, b"ok")  # the failed attempt left no slot taken
        assert server.accepts == 1


@pytest.mark.parametrize(
    ("base", "path", "query", "target"),
    [
        ("http://h:1", "/v1/chat", [], "/v1/chat"),
        ("http://h:1/openai/", "/v1/chat", [], "/openai/v1/chat"),
        ("http://h:1/api/v1", "/chat", [("q", "a b&c")], "/api/v1/chat?q=a+b%26c"),
        ("http://h:1/v1beta?key=k1", "/models", [("alt", "sse")], "/v1beta/models?key=k1&alt=sse"),
        ("https://h/v1beta?key=k1", "/models", [], "/v1beta/models?key=k1"),
    ],
)
async def test_target(base: str, path: str, query: list[tuple[str, str]], target: str) -> None:
    assert HttpClient(base).target(path, query) == target


# ----------------------------------------------------------------------------- closing
@pytest.mark.parametrize(
    "answer", [PARTIAL, HEAD + b"\r\nabc"], ids=["content-length", "to-the-end"]
)
async def test_close_cuts_an_answer_being_read_and_refuses_new_posts(answer: bytes) -> None:
    async with served(answering(answer)) as (_, client):
        resp = await post(client)
        assert await resp.readany() == b"abc"
        await client.close()
        with pytest.raises(ResponseCut):
            await resp.read()
        resp.release()
        with pytest.raises(Disconnected, match="closed"):
            await post(client)


async def test_close_during_connect_sends_nothing() -> None:
    async with served(answering(OK)) as (server, client):
        pending = asyncio.create_task(post(client))
        await asyncio.sleep(0)  # the post is looking the address up
        await client.close()
        with pytest.raises(TransportError):
            (await pending).release()
        assert server.requests == []
