"""Loopback servers that write exact bytes, for the provider HTTP client's tests.

A :class:`RawServer` runs a handler per connection over ``asyncio.start_server`` and counts the
connections it accepted and the requests it read: that is how keep-alive reuse, the pool limit
and a request never being resent are seen from the outside.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from controller.providers._http import HttpClient, HttpResponse

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = b"HTTP/1.1 200 OK\r\n"
OK = HEAD + b"Content-Length: 2\r\n\r\nok"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
PARTIAL = HEAD + b"Content-Length: 10\r\n\r\nabc"  # 3 bytes of 10: the rest is never sent
BODY = b'{"model": "m"}'


class RawServer:
    """A loopback server running ``handler`` per connection; counts accepts and requests."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.accepts = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()  # the handlers see the end of their connection and return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.append(writer)
        self.accepts += 1
        try:
            await self._handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what some tests do on purpose
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request's head and body as read off the wire; None at the connection's end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length is not None, head
        self.requests.append(head + await reader.readexactly(int(length[1])))
        return self.requests[-1]


def answering(*pieces: bytes, cut: bool = False) -> Handler:
    """Answers every request on a connection by writing ``pieces`` one by one; with ``cut``,
    closes the connection after the first answer."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.request(reader) is not None:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)  # let the client read this piece on its own
            if cut:
                return

    return handler


@asynccontextmanager
async def served(
    handler: Handler, *, max_connections: int = 100
) -> AsyncIterator[tuple[RawServer, HttpClient]]:
    """A server running ``handler`` and a client of it, both closed at the end; the whole test
    within 5 s."""
    async with asyncio.timeout(5), RawServer(handler) as server:
        client = HttpClient(server.url, max_connections=max_connections)
        try:
            yield server, client
        finally:
            await client.close()


async def post(client: HttpClient, *headers: tuple[str, str]) -> HttpResponse:
    return await client.post("/v1/chat", headers, BODY, connect_timeout=2.0)


async def fetch(client: HttpClient) -> tuple[int, bytes]:
    """One whole exchange: status and body, the answer released."""
    resp = await post(client)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


def self_signed(directory: Path, *, name: str, san: str) -> tuple[Path, Path]:
    """A throwaway certificate and key (openssl) for a TLS server on loopback in a test."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
