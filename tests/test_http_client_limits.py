"""The provider HTTP client's bounds and compatibility edges, against raw servers on 127.0.0.1.

What a hostile or broken server cannot do to the gateway (endless headers, a compression bomb, a
body cut inside framing it did not declare cleanly), what older servers still send (raw deflate,
an empty gzip body), and the base URL parts it must encode or refuse.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from controller.providers._http import (
    BadResponse,
    ConnectFailed,
    HttpClient,
    PoolExhausted,
    ResponseCut,
)
from controller.providers._http_body import HIGH_WATER, MAX_INFLATED, MAX_RATIO, RATIO_AFTER
from controller.providers._http_connect import Resolver
from tests.hostile_support import dense_gzip
from tests.http_client_support import (
    CHUNKED,
    HEAD,
    RawServer,
    answering,
    fetch,
    post,
    served,
)


async def endless_headers(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answers with a status line, then header fields without end (bounded: 4 MiB)."""
    await server.request(reader)
    writer.write(HEAD)
    for _ in range(4096):
        writer.write(b"X-Filler: " + b"v" * 1000 + b"\r\n")
        await writer.drain()


async def test_endless_headers_are_refused_before_memory_grows() -> None:
    async with served(endless_headers) as (_, client):
        with pytest.raises(BadResponse, match="over 64 KiB of headers"):
            await post(client)


async def test_too_many_header_fields_are_refused() -> None:
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(200))
    answer = HEAD + fields + b"Content-Length: 2\r\n\r\nok"
    async with served(answering(answer)) as (_, client):
        with pytest.raises(BadResponse, match="over 128 header fields"):
            await post(client)


async def test_chunked_named_on_a_second_transfer_encoding_line_still_frames_the_body() -> None:
    """A cut after 'hel' is a cut, not the end of a body delimited by the connection."""
    answer = HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
    async with served(answering(answer, cut=True)) as (_, client):
        resp = await post(client)
        try:
            with pytest.raises(ResponseCut):
                await resp.read()
        finally:
            resp.release()


def compressed(coding: bytes, body: bytes) -> bytes:
    return (
        HEAD
        + b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        % (
            coding,
            len(body),
        )
        + body
    )


async def test_raw_deflate_and_an_empty_gzip_body_are_read() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = raw.compress(b"hello") + raw.flush()
    async with served(answering(compressed(b"deflate", deflated))) as (_, client):
        assert await fetch(client) == (200, b"hello")
    async with served(answering(compressed(b"gzip", b""))) as (_, client):
        assert await fetch(client) == (200, b"")


async def test_a_compression_bomb_comes_out_in_bounded_pieces_then_stops() -> None:
    small = gzip.compress(bytes(4 * HIGH_WATER))  # a few KiB that inflate to 1 MiB
    async with served(answering(compressed(b"gzip", small))) as (_, client):
        resp = await post(client)
        try:
            sizes = []
            while piece := await resp.readany():
                sizes.append(len(piece))
        finally:
            resp.release()
    assert sum(sizes) == 4 * HIGH_WATER
    assert max(sizes) <= HIGH_WATER
    dense = dense_gzip(MAX_INFLATED + 1024 * 1024)  # ~30x: not a bomb by its ratio
    async with served(answering(compressed(b"gzip", dense))) as (_, client):
        resp = await post(client)
        try:
            with pytest.raises(BadResponse, match="inflates past 64 MiB"):
                await resp.read()
        finally:
            resp.release()


async def test_a_bomb_is_refused_by_its_ratio_after_a_mebibyte() -> None:
    """Zeros inflate ~1000x: refused once past RATIO_AFTER, not after 64 MiB of CPU."""
    bomb = gzip.compress(bytes(MAX_INFLATED), compresslevel=9)
    async with served(answering(compressed(b"gzip", bomb))) as (_, client):
        resp = await post(client)
        got: list[int] = []

        async def drain() -> None:
            while piece := await resp.readany():
                got.append(len(piece))

        try:
            with pytest.raises(BadResponse, match=f"inflates over {MAX_RATIO}x"):
                await drain()
        finally:
            resp.release()
    assert sum(got) <= RATIO_AFTER + HIGH_WATER  # what came out before the refusal


async def test_the_base_path_is_percent_encoded_once() -> None:
    async with (
        asyncio.timeout(5),
        RawServer(answering(HEAD + b"Content-Length: 0\r\n\r\n")) as server,
    ):
        client = HttpClient(server.url + "/proxy/café x/a%20b")
        try:
            resp = await client.post(client.target("/chat"), [], b"{}", connect_timeout=2.0)
            resp.release()
        finally:
            await client.close()
    assert server.requests[0].startswith(b"POST /proxy/caf%C3%A9%20x/a%20b/chat HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("127.0.0.1:11434/v1", "not an http:// or https:// URL"),
        ("http://user:sk-pasted@127.0.0.1:1/v1", "holds a user name or password"),
        ("http://127.0.0.1:0/v1", "has an invalid port"),
    ],
)
async def test_a_base_url_it_cannot_call_is_a_transport_error(base_url: str, words: str) -> None:
    """A transport error (the router fails over), not a ValueError (a 500); the URL unshown."""
    with pytest.raises(ConnectFailed, match=words) as caught:
        HttpClient(base_url)
    assert "sk-pasted" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


async def test_addresses_are_looked_up_once_and_shared_while_looking() -> None:
    resolver = Resolver("localhost", 443)
    async with asyncio.timeout(5):
        first, second = await asyncio.gather(resolver.addresses(), resolver.addresses())
        assert first is second  # one lookup for both callers
        assert await resolver.addresses() is first  # and kept
        resolver.forget()
        again = await resolver.addresses()
    assert again is not first
    assert again == first


async def test_a_host_name_idna_cannot_encode_is_a_connect_failure() -> None:
    client = HttpClient("http://api..example.com/v1")
    try:
        async with asyncio.timeout(5):
            with pytest.raises(ConnectFailed, match="the host name did not resolve"):
                await post(client)
    finally:
        await client.close()


async def test_an_endless_trailer_is_refused() -> None:
    """Trailers come after the body, where no head is being waited for: bounded all the same."""
    answer = CHUNKED + b"2\r\nok\r\n0\r\nX-Trailer: " + b"t" * (200 * 1024)
    async with served(answering(answer)) as (_, client):
        resp = await post(client)
        try:
            with pytest.raises(BadResponse, match="over 64 KiB of headers"):
                await resp.read()
        finally:
            resp.release()


async def test_deflate_is_told_apart_even_when_it_arrives_a_byte_at_a_time() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = raw.compress(b"hello there") + raw.flush()
    head = HEAD + b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(body)
    async with served(answering(head, *(body[i : i + 1] for i in range(len(body))))) as (_, c):
        assert await fetch(c) == (200, b"hello there")


async def test_every_gzip_member_is_read_and_bytes_after_deflate_are_refused() -> None:
    members = gzip.compress(b"first ") + gzip.compress(b"second")
    async with served(answering(compressed(b"gzip", members))) as (_, client):
        assert await fetch(client) == (200, b"first second")
    deflated = zlib.compress(b"hello") + b"junk"
    async with served(answering(compressed(b"deflate", deflated))) as (_, client):
        with pytest.raises(BadResponse, match="bytes after its compressed body"):
            await fetch(client)


async def test_an_idle_connection_is_closed_after_keepalive() -> None:
    closed = asyncio.Event()

    async def one_answer_then_watch(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.request(reader)
        writer.write(HEAD + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        if await reader.read(1) == b"":  # the client closed its end
            closed.set()

    async with asyncio.timeout(5), RawServer(one_answer_then_watch) as server:
        client = HttpClient(server.url, keepalive=0.05)
        try:
            assert await fetch(client) == (200, b"ok")
            await closed.wait()  # no further request: only the idle sweep closes it
        finally:
            await client.close()


async def test_headers_over_the_bound_are_refused_when_they_arrive_in_one_read() -> None:
    answer = HEAD + b"X-Pad: " + b"p" * 120_000 + b"\r\nContent-Length: 2\r\n\r\nok"
    async with served(answering(answer)) as (_, client):
        with pytest.raises(BadResponse, match="over 64 KiB of headers"):
            await post(client)


async def test_zero_padding_after_a_gzip_body_is_ignored() -> None:
    async with served(answering(compressed(b"gzip", gzip.compress(b"hi") + bytes(8)))) as (_, c):
        assert await fetch(c) == (200, b"hi")


async def test_a_gzip_stream_of_tiny_chunks_is_read_in_gathered_pieces() -> None:
    text = bytes(range(256)) * 1024  # 256 KiB that compress poorly enough to need many chunks
    packed = gzip.compress(text)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 3]), packed[i : i + 3])
        for i in range(0, len(packed), 3)
    )
    answer = CHUNKED.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
    async with served(answering(answer + chunks + b"0\r\n\r\n")) as (_, client):
        resp = await post(client)
        try:
            pieces = []
            while piece := await resp.readany(64 * 1024):
                pieces.append(piece)
        finally:
            resp.release()
    assert b"".join(pieces) == text
    assert len(pieces) <= 20, [len(p) for p in pieces]  # 16 KiB each, not one per 3-byte chunk


async def test_a_connection_freed_as_a_pool_wait_expires_goes_to_the_next_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B's pool bound expires in the very turn A gives the only connection back: B fails
    (pool_full, as its bound says), and the wake it received passes on to C instead of being
    lost with a connection left idle. The loop's clock is held still so both land together."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}", max_connections=1)
    loop = asyncio.get_running_loop()
    held = await client._acquire(5.0, None)  # A holds the only connection
    now = [loop.time()]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    at = now[0] + 0.2
    loop.call_at(at, lambda: client._put_back(held))  # given back exactly at B's bound
    b = asyncio.ensure_future(client._acquire(5.0, 0.2))
    c = asyncio.ensure_future(client._acquire(5.0, None))
    for _ in range(5):
        await asyncio.sleep(0)
    now[0] = at
    for _ in range(10):
        await asyncio.sleep(0)
    try:
        assert b.done()
        assert isinstance(b.exception(), PoolExhausted)
        assert c.done()  # C has the connection; before, it waited with one idle
        assert client._idle == []
    finally:
        c.cancel()
        monkeypatch.undo()
        await client.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
