"""Hostile and unusual clients of a relayed (same-format) stream, over real loopback sockets.

After its first event, a relayed stream's events go to the client as HTTP/1.1 chunk frames
written straight to the transport (``_ChunkFrames`` in controller/gateway/_chat.py); aiohttp
writes the first, the terminator, and what the gateway encodes itself (a continuation's
events, a cut's error event). Each test reads the answer off the socket with a strict parser of
the chunked framing and checks that the provider's events arrive exactly as it sent them (none
lost, repeated or reordered) and that the connection goes on as HTTP says: reused (keep-alive,
pipelining), closed (HTTP/1.0, unchunked), or cut without the terminator (the shutdown). Most
run on asyncio's loop and on uvloop, which ``failover serve`` runs on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import anthropic
import openai
import pytest

from controller.events import RouteOutcome
from controller.gateway import GatewayServer
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider, Fault, FaultMode
from tests.conftest import FORMATS, Recorder, adapter
from tests.gateway_support import tier_gateway, tier_server, wait_for
from tests.hostile_support import SSE_HEAD, MiB, held_back, hostile, run_on_loop
from tests.http_client_support import RawServer
from tests.test_slow_client import Flood

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]
BODY = json.dumps(
    {
        "model": "t",
        "stream": True,
        "stream_options": {"include_usage": True},  # asked for: no usage event is dropped
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
CUT_ERROR = b'data: {"error":{"message":"the gateway is shutting down; retry the request"'


def _run(loop: str, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``scenario()`` on a fresh event loop of kind ``loop``, within a minute."""
    return run_on_loop(loop, scenario, within=60)


def event(n: int, pad: int = 0, *, crlf: bool = False) -> bytes:
    """An OpenAI chunk event carrying ``<n>`` and ``pad`` more characters of text."""
    choice = {"index": 0, "delta": {"content": f"<{n}>" + "x" * pad}, "finish_reason": None}
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    line = b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
    return line + (b"\r\n\r\n" if crlf else b"\n\n")


FINISH = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":'
    b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def answer(count: int, *, big: int = 0) -> list[bytes]:
    """``count`` events of assorted sizes (some with CRLF line ends), one of ``big`` characters
    of text (past the relay's drain mark) when asked, then the finish and ``[DONE]``."""
    events = [event(n, (n * 997) % 3000, crlf=n % 7 == 3) for n in range(count)]
    if big:
        events.insert(count // 2, event(-1, big))
    return [*events, FINISH]


def request(version: bytes = b"1.1") -> bytes:
    head = b"POST /v1/chat/completions HTTP/%b\r\nHost: gw\r\n" % version
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    return head + BODY


class Scripted:
    """A provider (OpenAI format) that answers each connection's request with a 200 delimited
    by the close, then writes the next of ``events`` one write each, until a None (or until the
    gateway closes the connection); counts the bytes it wrote in ``sent``."""

    def __init__(self, events: Iterable[bytes | None]) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for piece in events:
            self.queue.put_nowait(piece)
        self.sent = 0

    async def __call__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if await server.request(reader) is None:
            return
        writer.write(SSE_HEAD)
        gone = asyncio.ensure_future(reader.read())  # b"" once the gateway closes its end
        try:
            while True:
                piece = asyncio.ensure_future(self.queue.get())
                await asyncio.wait((piece, gone), return_when=asyncio.FIRST_COMPLETED)
                data = piece.result() if piece.done() else None
                if data is None:
                    piece.cancel()
                    return
                writer.write(data)
                self.sent += len(data)
                await writer.drain()
        finally:
            gone.cancel()


class Client:
    """A raw client socket that reads answers strictly: the head, then chunk frames (a hex
    size, CRLF, exactly that many bytes, CRLF) up to the terminator ``0 CRLF CRLF``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def to(cls, url: str, *, rcvbuf: int = 0) -> Client:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # fixed before connect
        sock.setblocking(False)
        host, port = url.removeprefix("http://").split(":")
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _more(self) -> None:
        piece = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not piece:
            raise EOFError(f"closed with {len(self.buffer)} bytes unread")
        self.buffer += piece

    async def take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    async def _line(self) -> bytes:
        await self._line_ahead()
        return await self.take(self.buffer.index(b"\r\n") + 2)

    async def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head = await self.take(self.buffer.index(b"\r\n\r\n") + 4)
        assert head.startswith(b"HTTP/1."), head[:100]
        return head

    async def frame(self) -> bytes | None:
        """The next chunk's data; None at the terminator."""
        line = await self._line()
        assert re.fullmatch(rb"[0-9a-fA-F]{1,8}\r\n", line), line[:100]
        size = int(line, 16)
        data = await self.take(size)
        assert await self.take(2) == b"\r\n", "no CRLF after a chunk's data"
        return data if size else None

    async def frame_or_close(self) -> bytes | None:
        """The next chunk's data; None when the connection closes before it (no terminator
        may come first)."""
        try:
            await self._line_ahead()
        except EOFError:
            assert self.buffer == b"", self.buffer
            return None
        data = await self.frame()
        assert data is not None, "a terminator"
        return data

    async def _line_ahead(self) -> None:
        while b"\r\n" not in self.buffer:
            await self._more()

    async def body(self) -> bytes:
        """A chunked body's data up to its terminator."""
        frames = []
        while (data := await self.frame()) is not None:
            frames.append(data)
        return b"".join(frames)

    async def until_closed(self) -> bytes:
        """Whatever comes until the gateway closes the connection."""
        try:
            while True:
                await self._more()
        except EOFError:
            return await self.take(len(self.buffer))

    def close(self, *, reset: bool = False) -> None:
        if reset:  # SO_LINGER 0: the close sends a RST, not a FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def chunked(head: bytes) -> bool:
    return b"\r\ntransfer-encoding: chunked\r\n" in head.lower()


# ------------------------------------------------------------------- framing and reuse
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("pipelined", [False, True], ids=["keep-alive", "pipelined"])
def test_events_arrive_as_sent_in_valid_frames_and_the_connection_serves_the_next(
    loop: str, pipelined: bool
) -> None:
    """Two answers on one connection, the second request sent after the first answer (or with
    it, before any of it came): every frame well formed, each body the provider's bytes."""

    async def scenario() -> None:
        first, second = answer(300, big=200_000), answer(20)
        provider = Scripted([*first, None, *second, None])
        async with (
            RawServer(provider) as server,
            tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
        ):
            client = await Client.to(url)
            try:
                await client.send(request() * 2 if pipelined else request())
                assert chunked(await client.head())
                assert await client.body() == b"".join(first)
                if not pipelined:
                    assert client.buffer == b""  # nothing after the terminator
                    await client.send(request())
                assert chunked(await client.head())
                assert await client.body() == b"".join(second)
                assert client.buffer == b""
            finally:
                client.close()
            outcomes = [route.outcome for route in recorder.routes]
            assert outcomes == [RouteOutcome.SERVED] * 2

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_http10_client_gets_the_events_unframed_then_the_close(loop: str) -> None:
    """No chunked coding in HTTP/1.0: the body is the events as they came, ended by the close."""

    async def scenario() -> None:
        events = answer(100, big=300_000)
        async with (
            RawServer(Scripted([*events, None])) as server,
            tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
        ):
            client = await Client.to(url)
            try:
                await client.send(request(b"1.0"))
                head = await client.head()
                assert head.startswith(b"HTTP/1.0 200"), head
                assert not chunked(head), head
                assert await client.until_closed() == b"".join(events)
            finally:
                client.close()
            await wait_for(lambda: bool(recorder.routes))
            assert recorder.routes[-1].outcome is RouteOutcome.SERVED

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_pauses_and_resumes_gets_every_event_in_order(loop: str) -> None:
    """A client with a small receive buffer that stops reading every 2 MiB until the provider
    is held back (the relay waits on the transport), then reads on: ~15 MiB, byte for byte."""

    async def scenario() -> None:
        events = [event(n, (n * 7919) % 20000) for n in range(1500)] + [FINISH]
        provider = Scripted([*events, None])
        async with (
            RawServer(provider) as server,
            tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
        ):
            client = await Client.to(url, rcvbuf=16384)
            try:
                await client.send(request())
                await client.head()
                got: list[bytes] = []
                size = pauses = 0
                while (data := await client.frame()) is not None:
                    got.append(data)
                    size += len(data)
                    if size > (pauses + 1) * 2 * MiB:
                        pauses += 1
                        await held_back(lambda: provider.sent, still_for=0.3)
                assert pauses >= 5
                assert b"".join(got) == b"".join(events)
            finally:
                client.close()
            await wait_for(lambda: bool(recorder.routes))
            assert recorder.routes[-1].outcome is RouteOutcome.SERVED

    _run(loop, scenario)


# ------------------------------------------------------------------- clients that leave
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("after", [1, 4 * MiB], ids=["first-event", "4MiB"])
def test_a_client_that_leaves_mid_stream_is_reported_cancelled_without_noise(
    loop: str, reset: bool, after: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider floods; the client reads ``after`` bytes of frames and closes (FIN) or
    resets (RST). The provider's connection is let go, the route reported cancelled, and
    nothing is logged above INFO (no traceback, no "socket.send() raised exception")."""

    async def scenario() -> None:
        flood = Flood()
        async with (
            RawServer(flood) as server,
            tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
        ):
            client = await Client.to(url)
            try:
                await client.send(request())
                await client.head()
                read = 0
                while read < after:
                    data = await client.frame()
                    assert data is not None
                    read += len(data)
            finally:
                client.close(reset=reset)
            await asyncio.wait_for(flood.ended.wait(), 30)
            await wait_for(lambda: bool(recorder.routes), within=30)
            assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED

    caplog.set_level(logging.INFO)
    _run(loop, scenario)
    noisy = [r for r in caplog.records if r.levelno > logging.INFO]
    assert not noisy, [(r.name, r.getMessage()) for r in noisy]


# ------------------------------------------------------------------- the gateway's own cuts
def stoppable(
    provider: HttpProvider,
) -> AbstractAsyncContextManager[tuple[GatewayServer, Recorder]]:
    """A gateway whose tier ``t`` is ``provider`` alone, with a short shutdown grace; the test
    may stop it (stopping twice is fine)."""
    return tier_server(provider, grace=0.2)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("reading", [True, False], ids=["reading", "not-reading"])
def test_the_shutdown_cut_ends_the_frames_with_one_framed_error_and_no_terminator(
    loop: str, reading: bool
) -> None:
    """The gateway stops while a relayed stream is open (its client reading everything, or
    reading nothing, the relay waiting on the transport): the client then gets the events the
    provider sent, in order, then the error event in a frame of its own, then the close."""

    async def scenario() -> None:
        events = [event(n, (n * 7919) % 20000) for n in range(40 if reading else 3000)]
        provider = Scripted(events)  # and no end: the stream is open when the cut comes
        async with (
            RawServer(provider) as server,
            stoppable(hostile(server)) as (gateway, recorder),
        ):
            client = await Client.to(gateway.url, rcvbuf=0 if reading else 16384)
            try:
                await client.send(request())
                assert chunked(await client.head())
                got = b""
                if reading:
                    while len(got) < provider.sent or not provider.queue.empty():
                        data = await client.frame()
                        assert data is not None
                        got += data
                else:
                    await held_back(lambda: provider.sent, still_for=0.3)
                await gateway.stop()
                frames = [got]
                while (data := await client.frame_or_close()) is not None:
                    frames.append(data)  # the close comes with no terminator before it
                *relayed, error = frames
            finally:
                client.close()
            assert error.startswith(CUT_ERROR), error
            assert error.endswith(b"}\n\n"), error
            assert b"".join(events).startswith(b"".join(relayed))
            assert relayed
            if not reading:  # ~30 MB: more than the sockets' buffers on the way hold
                assert provider.sent < len(b"".join(events)), "the relay was not held back"
            assert client.buffer == b""
            await wait_for(lambda: bool(recorder.routes))
            assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_provider_cut_after_frames_ends_with_a_framed_error_then_the_terminator(
    loop: str,
) -> None:
    """The provider closes mid-answer and the try to continue it fails too: the error event
    follows the relayed frames, the body ends with its terminator, and the connection then
    serves another request."""

    async def scenario() -> None:
        events = answer(50)[:-1]  # no finish, no [DONE]
        provider = Scripted([*events, None, None])  # the continuation's try gets nothing
        async with (
            RawServer(provider) as server,
            tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
        ):
            client = await Client.to(url)
            try:
                await client.send(request())
                await client.head()
                body = await client.body()
                await client.send(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
                head = await client.head()
                length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
                assert head.startswith(b"HTTP/1.1 200"), head
                assert length is not None, head
                assert json.loads(await client.take(int(length[1])))["data"]
            finally:
                client.close()
            relayed = b"".join(events)
            assert body.startswith(relayed), body[:200]
            (name, error), *more = [_sse(e) for e in body[len(relayed) :].split(b"\n\n")[:-1]]
            assert not more, body[len(relayed) :]
            assert name == ""
            assert "error" in json.loads(error)
            assert recorder.routes[0].outcome is RouteOutcome.FAILED

    _run(loop, scenario)


def _sse(block: bytes) -> tuple[str, str]:
    """(event name, data) of one SSE event's bytes."""
    name, data = "", []
    for line in block.decode().splitlines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
    return name, "\n".join(data)


# ------------------------------------------------------------------- continuation, SDKs
REPLY = " ".join(f"w{n}" for n in range(60))


@asynccontextmanager
async def two_fakes(kind: str, *, pace: float) -> AsyncIterator[tuple[str, FakeProvider, Recorder]]:
    """Tier ``t``: fakes ``first`` then ``second`` (both ``kind``, taking a prefill), giving
    the same answer word by word, ``pace`` seconds apart: the gateway's URL, ``first``, and
    the recorder."""
    async with (
        FakeProvider(name="first", reply=REPLY, pace=pace) as first,
        FakeProvider(name="second", reply=REPLY, pace=pace) as second,
    ):
        providers = [
            HttpProvider(
                name=fake.name,
                codec=codec_for(kind),
                base_url=fake.url(FORMATS.get(kind, "openai")),
                api_key="sk-test-not-a-secret",
                takes_prefill=True,
            )
            for fake in (first, second)
        ]
        limits = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)
        async with tier_gateway(*providers, limits=limits) as (url, recorder):
            yield url, first, recorder


ASK = {"model": "t", "stream": True, "messages": [{"role": "user", "content": "count"}]}


def _texts(kind: str, body: bytes) -> tuple[list[str], list[str]]:
    """The text pieces of an OpenAI or Anthropic SSE body, and its event names (``[DONE]``
    for OpenAI's terminator)."""
    pieces, names = [], []
    for block in body.split(b"\n\n")[:-1]:
        name, data = _sse(block)
        names.append(name or ("[DONE]" if data == "[DONE]" else "chunk"))
        if data == "[DONE]":
            continue
        parsed = json.loads(data)
        if kind != "anthropic":
            pieces += [c["delta"].get("content") or "" for c in parsed.get("choices", [])]
        elif parsed["type"] == "content_block_delta":
            pieces.append(parsed["delta"]["text"])
    return pieces, names


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic"])
@pytest.mark.parametrize("mode", [FaultMode.CUT_STREAM, FaultMode.END_STREAM])
async def test_a_continuation_after_frames_follows_them_in_order_in_valid_frames(
    kind: str, mode: FaultMode
) -> None:
    """The first provider's stream is cut (or ends early: its terminator is held back) after
    20 words that went out as frames; the second continues it, encoded through aiohttp: every
    word once and in order, one terminator, the body's framing valid, the connection reusable."""
    path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"
    body = json.dumps(ASK | {"max_tokens": 64} if kind == "anthropic" else ASK).encode()
    head = b"POST %b HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" % path.encode()
    ask = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    async with two_fakes(kind, pace=0.002) as (url, first, recorder):
        first.set_fault(Fault(mode=mode, after_chunks=20))
        client = await Client.to(url)
        try:
            await client.send(ask)
            assert chunked(await client.head())
            pieces, names = _texts(kind, await client.body())
            await client.send(ask)  # the connection is still good: a whole answer from first
            await client.head()
            again, _ = _texts(kind, await client.body())
        finally:
            client.close()
    assert "".join(pieces) == REPLY
    assert "".join(again) == REPLY
    last = "message_stop" if kind == "anthropic" else "[DONE]"
    assert names.count(last) == 1, names
    assert names[-1] == last, names
    assert recorder.routes[0].outcome is RouteOutcome.DEGRADED


async def test_the_official_sdks_read_a_long_relayed_stream_whole() -> None:
    """The OpenAI and Anthropic SDKs (their HTTP clients parse the chunked framing) read a
    1,500-word answer relayed event by event."""
    words = " ".join(f"w{n}" for n in range(1500))
    async with FakeProvider(name="long", reply=words) as fake:
        providers = [adapter(fake, "openai", "long-openai"), adapter(fake, "anthropic", "long-ant")]
        for provider in providers:
            async with tier_gateway(provider, limits=Timeouts()) as (url, recorder):
                if provider.name == "long-openai":
                    assert await _openai_text(url) == words
                else:
                    assert await _anthropic_text(url) == words
                assert recorder.routes[-1].outcome is RouteOutcome.SERVED


async def _openai_text(url: str) -> str:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="t", messages=[{"role": "user", "content": "count"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    return "".join(pieces)


async def _anthropic_text(url: str) -> str:
    async with (
        anthropic.AsyncAnthropic(base_url=url, api_key="sk-c", max_retries=0) as client,
        client.messages.stream(
            model="t", max_tokens=64, messages=[{"role": "user", "content": "count"}]
        ) as stream,
    ):
        message = await stream.get_final_message()
    assert message.stop_reason == "end_turn"
    return "".join(block.text for block in message.content if block.type == "text")
