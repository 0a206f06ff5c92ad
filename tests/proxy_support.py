"""A small forward proxy on 127.0.0.1 for the egress proxy tests: CONNECT tunnels and
absolute-form requests, as a company's egress proxy takes them.

It connects only to 127.0.0.1, whatever host it is asked for (``names`` maps the made-up host
names the tests use, such as ``provider.test``, to local ports' host), so nothing leaves the
machine. It records each request line and the ``Proxy-Authorization`` it got, and with
``password`` set it answers 407 to a request without the right one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field


@dataclass
class Seen:
    line: str
    authorization: str | None


@dataclass
class ForwardProxy:
    """``async with ForwardProxy() as proxy:`` then ``proxy.url``."""

    names: frozenset[str] = frozenset({"provider.test", "127.0.0.1", "localhost"})
    password: str | None = None  # user "gw"
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _upstream: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._upstream:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")
        auth = next((f.split(":", 1)[1].strip() for f in fields if _named(f, "proxy-auth")), None)
        self.seen.append(Seen(line, auth))
        if self.password is not None and auth != _basic("gw", self.password):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._open(host, int(port))
            if upstream is None:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _pipe_both(reader, writer, *upstream)
            return
        # absolute form: http://host:port/path, sent on as origin form with the rest as it came
        authority, _, path = target.removeprefix("http://").partition("/")
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        upstream = await self._open(host, int(port))
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        kept = [f for f in fields if f and not _named(f, "proxy-auth")]
        first = f"{method} /{path} HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in kept) + "\r\n"
        upstream[1].write(first.encode("latin-1"))
        await _pipe_both(reader, writer, *upstream)

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if host.strip("[]") not in self.names:
            return None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._upstream.append(writer)
        return reader, writer


def _named(field_line: str, prefix: str) -> bool:
    return field_line.lower().startswith(prefix)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
