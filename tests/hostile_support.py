"""Hostile providers for the bounds tests: raw loopback servers that send what no real provider
should (endless bodies, endless events, compression bombs, echoed keys), and the process's
memory read from /proc.

Every handler is bounded: it stops after ``LIMIT`` bytes or when the client goes away, so a
regression shows as a failed assertion, not as a machine out of memory.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from controller.providers import HttpProvider, codec_for
from tests.http_client_support import HEAD, Handler, RawServer

MiB = 1024 * 1024
LIMIT = 256 * MiB  # the most any hostile handler writes on one connection
KEY = "sk-hostile-test-key-0123456789abcdef"  # what the provider adapters send as their key
OPENAI_CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
)
SSE_HEAD = HEAD + b"Content-Type: text/event-stream\r\n\r\n"  # delimited by the connection


async def _endless(writer: asyncio.StreamWriter, head: bytes, piece: bytes) -> None:
    writer.write(head)
    piece *= max(1, 65536 // len(piece))  # written 64 KiB at a time, whatever the unit
    sent = 0
    while sent < LIMIT:
        writer.write(piece)
        await writer.drain()  # raises once the client has closed its end
        sent += len(piece)


def endless(head: bytes, piece: bytes) -> Handler:
    """Answers the first request with ``head``, then ``piece`` again and again."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if await server.request(reader) is not None:
            await _endless(writer, head, piece)

    return handler


def endless_body(*, declared: bool) -> Handler:
    """A 200 whose JSON body never ends: a huge Content-Length, or delimited by the close."""
    length = b"Content-Length: %d\r\n" % (1 << 40) if declared else b""
    head = HEAD + b"Content-Type: application/json\r\n" + length + b"\r\n"
    return endless(head + b'{"choices":[{"message":{"content":"', b"a" * (64 * 1024))


def dense_gzip(inflated: int) -> bytes:
    """A gzip body that inflates only ~40x (a little noise in every KiB, as text has): not a
    bomb by its ratio, so it meets the size limits and the shared budget instead."""
    noise = random.Random(7).randbytes
    block = b"".join(noise(24) + bytes(1000) for _ in range(64))  # 64 KiB
    return gzip.compress(block * (inflated // len(block)), compresslevel=1)


def gzip_bomb(inflated: int = LIMIT) -> bytes:
    """A small gzip body that inflates to ``inflated`` bytes: 1 MiB members, concatenated."""
    member = gzip.compress(bytes(MiB), compresslevel=9)
    return member * (inflated // MiB)


def answering_gzip(body: bytes, piece: int = 1 << 20) -> Handler:
    """Answers every request on a connection with ``body``, marked gzip, ``piece`` bytes at a
    time (a small piece lets several answers be read at once)."""
    head = HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.request(reader) is not None:
            writer.write(head)
            for start in range(0, len(body), piece):
                writer.write(body[start : start + piece])
                await writer.drain()
                await asyncio.sleep(0)  # let the other connections' answers be read too

    return handler


async def held_back(sent: Callable[[], int], *, still_for: float, within: float = 60.0) -> int:
    """What a provider has sent (``sent()``) once it has sent nothing more for ``still_for``
    seconds: it is held back. Polled; a busy machine only makes this take longer, up to
    ``within`` seconds (then an AssertionError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last, since = -1, loop.time()
    while loop.time() < deadline:
        if sent() != last:
            last, since = sent(), loop.time()
        elif loop.time() - since >= still_for:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"the provider never stopped sending ({sent()} bytes sent)")


def hostile(server: RawServer, kind: str = "openai") -> HttpProvider:
    """An adapter of ``kind`` pointed at ``server``, with the key :data:`KEY`."""
    base = server.url + ("/v1" if kind == "openai" else "")
    return HttpProvider(name=f"hostile-{kind}", codec=codec_for(kind), base_url=base, api_key=KEY)


# ------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        found = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert found is not None, field
    return int(found[1])


@dataclass
class Memory:
    """This process's resident memory around a block, in MiB: ``before``, ``peak`` (the
    high-water mark, reset on entry) and ``after``."""

    before: float = 0.0
    peak: float = 0.0
    after: float = 0.0

    @property
    def growth(self) -> float:
        return self.peak - self.before


@contextmanager
def measured() -> Iterator[Memory]:
    """Measure resident memory across the block (``VmHWM`` reset through ``clear_refs``)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # resets the peak resident size to the current one
    memory = Memory(before=_status_kib("VmRSS") / 1024)
    yield memory
    memory.peak = _status_kib("VmHWM") / 1024
    memory.after = _status_kib("VmRSS") / 1024


def echoing_error(kind: str, extra: str = "") -> Handler:
    """Answers every request with a 400 whose message repeats the request's head (the
    gateway's key in it) and ``extra``, in the error format of ``kind``."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (request := await server.request(reader)) is not None:
            head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            message = f"could not read your request: {head} {extra}"
            inner = {"type": "invalid_request_error", "message": message}
            body = {"type": "error", "error": inner} if kind == "anthropic" else {"error": inner}
            data = json.dumps(body).encode()
            head_out = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            writer.write(head_out + b"Content-Length: %d\r\n\r\n" % len(data) + data)
            await writer.drain()

    return handler


T = TypeVar("T")


def run_on_loop(loop: str, scenario: Callable[[], Coroutine[Any, Any, T]], *, within: float) -> T:
    """``scenario()`` on a fresh event loop of kind ``loop`` (``asyncio`` or ``uvloop``), bounded
    by ``within`` seconds: the tests that must hold on both loops ``failover serve`` runs."""
    factory = None
    if loop == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    async def bounded() -> T:
        async with asyncio.timeout(within):
            return await scenario()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())
