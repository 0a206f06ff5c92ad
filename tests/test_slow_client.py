"""A client that stops reading a relayed stream: the gateway stops reading the provider (the
relay waits for the client's connection to drain) instead of holding what the provider sends,
and lets the provider go when the client leaves. Over real sockets on loopback: a provider that
would send 256 MiB as fast as it can, a client that reads the answer's head and then nothing.
"""

from __future__ import annotations

import asyncio
import socket

from controller.events import RouteOutcome
from controller.providers import Timeouts
from tests.gateway_support import tier_gateway, wait_for
from tests.hostile_support import LIMIT, OPENAI_CHUNK, SSE_HEAD, MiB, held_back, hostile
from tests.http_client_support import RawServer

REQUEST = b'{"model":"t","stream":true,"messages":[{"role":"user","content":"hi"}]}'  # tier t


class Flood:
    """A provider answering with text events without end (up to ``LIMIT`` bytes), 64 KiB at a
    time as fast as its client takes them; counts what it sent and whether it still sends."""

    def __init__(self) -> None:
        self.sent = 0
        self.ended = asyncio.Event()

    async def __call__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if await server.request(reader) is None:
            return
        piece = OPENAI_CHUNK * (65536 // len(OPENAI_CHUNK))
        writer.write(SSE_HEAD)
        try:
            while self.sent < LIMIT:
                writer.write(piece)
                await writer.drain()  # raises once the gateway has closed its end
                self.sent += len(piece)
        finally:
            self.ended.set()


async def test_a_client_that_stops_reading_holds_the_provider_back() -> None:
    flood = Flood()
    async with (
        RawServer(flood) as server,
        tier_gateway(hostile(server), limits=Timeouts()) as (url, recorder),
    ):
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: fixed
        client.setblocking(False)
        try:
            host, port = url.removeprefix("http://").split(":")
            await loop.sock_connect(client, (host, int(port)))
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REQUEST)
            )
            await loop.sock_sendall(client, head + REQUEST)
            answer = b""
            while b"\r\n\r\n" not in answer:
                piece = await loop.sock_recv(client, 4096)
                assert piece, answer
                answer += piece
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert b"transfer-encoding: chunked" in answer.lower()
            # From here the client reads nothing. Kernel buffers on the way hold some MiB; the
            # gateway itself holds at most its drain mark and the provider client's high water.
            sent = await held_back(lambda: flood.sent, still_for=1.0)
            assert sent < 64 * MiB, f"the gateway kept reading: {sent / MiB:.0f} MiB"
            assert not flood.ended.is_set()
        finally:
            client.close()
        # The client left: the gateway lets the provider go and reports the stream cancelled.
        await asyncio.wait_for(flood.ended.wait(), 30)
        await wait_for(lambda: bool(recorder.routes), within=30)
        assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED
