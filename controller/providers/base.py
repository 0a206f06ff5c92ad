"""The provider seam and the one HTTP transport every wire format shares.

A provider adapter is a :class:`Provider`: ``complete()`` and ``stream()`` over our own types.
:class:`HttpProvider` implements it for any :class:`~controller.wire.ClientCodec` with one pooled
aiohttp session per provider, and translates transport failures into the error tree here, once:

==========================================  ==========================================
aiohttp / asyncio                           our error
==========================================  ==========================================
connect refused / DNS / reset / closed      ConnectionFailed
connect slower than ``timeouts.connect``    ProviderTimeout(phase="connect")
no first chunk within ``first_token``       ProviderTimeout(phase="first_token")
no stream data within ``idle``              ProviderTimeout(phase="idle")
attempt longer than ``total``               ProviderTimeout(phase="total")
non-2xx status                              codec.error_from(...)
bad JSON / event, stream cut before finish  MalformedResponse / ConnectionFailed
==========================================  ==========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from controller import _json
from controller._errors import (
    ConnectionFailed,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
)
from controller.model import Request, Response, StreamChunk
from controller.wire import ClientCodec, HttpCall, TokenCountCodec
from controller.wire._sse import SSEParser

_MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Per-attempt limits, in seconds.

    ``first_token`` bounds the wait for a stream's first chunk (a provider that accepts the
    request but never starts answering); ``idle`` the gap between stream events; ``total`` the
    whole attempt (for non-streaming calls it is the limit on the answer). ``terminator_grace``
    is how long a stream that already carried its finish reason may take to send its terminator
    before it is finalised as complete anyway.
    """

    connect: float = 5.0
    first_token: float = 20.0
    idle: float = 30.0
    total: float = 120.0
    terminator_grace: float = 0.5

    def bounded(self, remaining: float) -> Timeouts:
        """These limits, none longer than ``remaining`` (the request's deadline)."""
        cap = max(0.0, remaining)
        if cap >= max(self.connect, self.first_token, self.idle, self.total):
            return self  # far from the deadline (the usual case): nothing to cut
        return Timeouts(
            connect=min(self.connect, cap),
            first_token=min(self.first_token, cap),
            idle=min(self.idle, cap),
            total=min(self.total, cap),
            terminator_grace=self.terminator_grace,
        )


class Provider(Protocol):
    """One configured provider endpoint."""

    name: str  # configured name, e.g. "openai-primary"
    kind: str  # gen_ai.provider.name, e.g. "openai"
    server_address: str
    server_port: int

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response: ...

    def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]: ...

    async def close(self) -> None: ...


@runtime_checkable
class CountsTokens(Protocol):
    """A provider that may be able to count a request's input tokens the way its model does
    (no data members, so ``isinstance`` asks about this capability and nothing else)."""

    @property
    def counts_tokens(self) -> bool:
        """Whether it can count at all (its wire format has a counting endpoint)."""
        ...

    async def count_tokens(self, request: Request, model: str, timeouts: Timeouts) -> int | None:
        """The input tokens of ``request`` on ``model``; None when this provider's API has no
        way to count (raises ProviderError when it has one and it failed)."""
        ...


class HttpProvider:
    """A provider reached over HTTP in one wire format. One pooled session, made lazily."""

    def __init__(
        self,
        *,
        name: str,
        codec: ClientCodec,
        base_url: str,
        api_key: str | None = None,
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.kind = codec.provider_kind
        self._codec = codec
        self._counter = codec if isinstance(codec, TokenCountCodec) else None
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # parsed once per path (a path per model, at most)
        self._connect_timeout = aiohttp.ClientTimeout(total=None, sock_connect=Timeouts().connect)
        parts = urlsplit(self._base_url)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)

    def __repr__(self) -> str:  # never shows the key
        return f"HttpProvider(name={self.name!r}, kind={self.kind!r}, base_url={self._base_url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
        call = self._codec.build(request, model, self._api_key)
        return await self._exchange(call, model, timeouts, self._codec.parse_response)

    @property
    def counts_tokens(self) -> bool:
        return self._counter is not None

    async def count_tokens(self, request: Request, model: str, timeouts: Timeouts) -> int | None:
        """Asks the provider's token-counting endpoint (Anthropic's ``count_tokens``); None
        when its wire format has none (OpenAI chat completions and Gemini here)."""
        counter = self._counter
        if counter is None:
            return None
        call = counter.build_count(request, model, self._api_key)
        return await self._exchange(call, model, timeouts, counter.parse_count)

    async def _exchange(
        self, call: HttpCall, model: str, timeouts: Timeouts, parse: Callable[[bytes, str], T]
    ) -> T:
        """One non-streaming call: POST, map a non-2xx answer or a transport failure into the
        error tree, parse the whole body."""
        try:
            async with asyncio.timeout(timeouts.total):
                async with self._post(call, timeouts) as resp:
                    if resp.status >= 300:
                        raise await self._error(resp, model)
                    body = await resp.read()
        except aiohttp.ClientError as exc:  # first: ConnectionTimeoutError is a TimeoutError
            raise self._tag(_transport_error(exc), model) from None
        except TimeoutError:
            raise self._tag(ProviderTimeout("no answer in time", phase="total"), model) from None
        try:
            return parse(body, model)
        except ProviderError as exc:
            raise self._tag(exc, model) from None

    async def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]:
        call = self._codec.build(request, model, self._api_key)
        start = time.monotonic()
        deadline = start + timeouts.total
        first_by = start + timeouts.first_token  # one deadline: pings do not restart it
        try:
            async with asyncio.timeout(min(timeouts.first_token, timeouts.total)):
                resp = await self._post(call, timeouts)
        except aiohttp.ClientError as exc:  # first: ConnectionTimeoutError is a TimeoutError
            raise self._tag(_transport_error(exc), model) from None
        except TimeoutError:
            raise self._tag(ProviderTimeout("no answer", phase="first_token"), model) from None
        try:
            if resp.status >= 300:
                raise await self._error(resp, model, within=timeouts.idle)
            async for chunk in self._events(resp, model, timeouts, deadline, first_by):
                yield chunk
        finally:
            resp.release()

    async def _events(
        self,
        resp: aiohttp.ClientResponse,
        model: str,
        timeouts: Timeouts,
        deadline: float,
        first_by: float,
    ) -> AsyncIterator[StreamChunk]:
        parser = SSEParser()
        decoder = self._codec.stream_decoder(model)
        started = finished = False
        while True:
            first = None if started else first_by
            data = await self._read(resp, model, timeouts, deadline, first, finished)
            if data is None:  # the terminator grace ran out after the finish reason
                return
            if not data:  # end of body
                if finished:
                    return
                raise self._tag(
                    MalformedResponse("stream ended before the answer was complete"), model
                )
            try:
                events = parser.feed(data)
                for event in events:
                    for chunk in decoder.feed(event):
                        started = True
                        finished = finished or chunk.finish_reason is not None
                        yield chunk
                    if decoder.done:
                        if not finished:
                            raise MalformedResponse("stream terminated without a finish reason")
                        return
            except ProviderError as exc:
                raise self._tag(exc, model) from None

    async def _read(
        self,
        resp: aiohttp.ClientResponse,
        model: str,
        timeouts: Timeouts,
        deadline: float,
        first_by: float | None,
        finished: bool,
    ) -> bytes | None:
        """The next bytes of the body; b"" at its end; None when a finished stream went quiet.

        ``first_by`` is the first chunk's deadline (None once one arrived)."""
        if finished:
            wait, phase = timeouts.terminator_grace, "grace"
        elif first_by is None:
            wait, phase = timeouts.idle, "idle"
        else:
            wait, phase = first_by - time.monotonic(), "first_token"
        left = deadline - time.monotonic()
        if left < wait:
            wait, phase = left, "total"
        try:
            async with asyncio.timeout(max(0.0, wait)):
                return await resp.content.readany()
        except TimeoutError:
            if finished:
                return None
            raise self._tag(
                ProviderTimeout(f"no stream data ({phase})", phase=phase), model
            ) from None
        except aiohttp.ClientError as exc:
            if finished:
                return None
            raise self._tag(_transport_error(exc), model) from None

    def _post(self, call: HttpCall, timeouts: Timeouts) -> aiohttp.client._RequestContextManager:
        headers = {"content-type": "application/json", **call.headers}
        return self._client().post(
            self._url(call.path),
            data=_json.dumps(call.body),
            headers=headers,
            params=dict(call.query) or None,
            timeout=self._timeout(timeouts.connect),
            # A redirect would carry x-api-key / x-goog-api-key / api-key (aiohttp strips only
            # Authorization) and the prompt to another host: a 3xx is an error instead.
            allow_redirects=False,
        )

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base_url + path)
        return url

    def _timeout(self, connect: float) -> aiohttp.ClientTimeout:
        """The per-request timeout (connect only: the rest is bounded by asyncio.timeout);
        reused while the connect limit stays the same, which it does but near a deadline."""
        if self._connect_timeout.sock_connect != connect:
            self._connect_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)
        return self._connect_timeout

    async def _error(
        self, resp: aiohttp.ClientResponse, model: str, *, within: float = 10.0
    ) -> ProviderError:
        """The mapped error for a non-2xx answer; reads its body (bounded in size and time)."""
        body = b""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(within):
                while len(body) < _MAX_ERROR_BODY:
                    piece = await resp.content.read(_MAX_ERROR_BODY - len(body))
                    if not piece:
                        break
                    body += piece
        err = self._codec.error_from(resp.status, resp.headers, body, model)
        return self._tag(err, model)

    def _tag(self, err: ProviderError, model: str) -> ProviderError:
        err.provider = self.name
        err.model = err.model or model
        return err


def _transport_error(exc: aiohttp.ClientError) -> ProviderError:
    """Translate an aiohttp failure. Messages are generic: URLs may carry keys (Azure, Gemini)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderTimeout("connect timed out", phase="connect")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailed("could not connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailed("server closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionFailed("connection cut mid-response")
    if isinstance(exc, aiohttp.ClientOSError):
        return ConnectionFailed("connection reset")
    return ConnectionFailed(f"HTTP transport error ({type(exc).__name__})")
