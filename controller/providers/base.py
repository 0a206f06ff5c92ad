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
no answer (or first chunk) within ``total``  ProviderTimeout(phase="total")
no stream data within ``idle``              ProviderTimeout(phase="idle")
stream still running at ``stream_total``    StreamTooLong (our own cap: not a fault)
non-2xx status                              codec.error_from(...)
bad JSON / event, stream cut before finish  MalformedResponse / ConnectionFailed
==========================================  ==========================================

Why a flowing stream is not bound by ``total``: a long answer that keeps streaming (a coding
agent's long reply, a reasoning model) is a healthy provider doing its job. Cutting it at the
limit meant for *waiting* turned it into a timeout fault that pushed the provider toward a trip.
Once the first chunk is in, a stream is bounded by ``idle`` (a stall is a fault) and by the much
longer ``stream_total``, a safety cap on cost and on a runaway generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
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
    StreamTooLong,
)
from controller.model import Request, Response, StreamChunk
from controller.wire import ClientCodec, HttpCall, TokenCountCodec
from controller.wire._sse import SSEParser

_MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Per-attempt limits, in seconds.

    ``total`` bounds the wait for an answer: a whole non-streaming answer, and a stream's first
    chunk (together with ``first_token``, a provider that accepts the request but never starts
    answering). After its first chunk a stream is bounded by ``idle`` (the gap between events)
    and by ``stream_total`` (its whole length, from the attempt's start; a safety cap, not a health
    signal). ``terminator_grace`` is how long a stream that already carried its finish reason
    may take to send its terminator before it is finalised as complete anyway.
    """

    connect: float = 5.0
    first_token: float = 20.0
    idle: float = 30.0
    total: float = 120.0
    stream_total: float = 600.0
    terminator_grace: float = 0.5

    def bounded(self, remaining: float) -> Timeouts:
        """These limits, none of the waits for an answer longer than ``remaining`` (the
        request's deadline). ``idle`` and ``stream_total`` stay: they bound a stream already
        flowing, which the deadline does not (it bounds the time to a first chunk)."""
        cap = max(0.0, remaining)
        if cap >= max(self.connect, self.first_token, self.total):
            return self  # far from the deadline (the usual case): nothing to cut
        # Built directly, not with dataclasses.replace (3x the cost): with the default limits
        # (total and the request deadline both 120 s) this runs on every attempt.
        return Timeouts(
            connect=min(self.connect, cap),
            first_token=min(self.first_token, cap),
            idle=self.idle,
            total=min(self.total, cap),
            stream_total=self.stream_total,
            terminator_grace=self.terminator_grace,
        )


@dataclass(frozen=True, slots=True)
class _StreamLimits:
    """When a stream's waits end, on the monotonic clock: its first chunk by ``first_by``
    (``first_token`` or ``total``, the sooner, named by ``first_phase``: pings do not restart
    it); after that no gap longer than ``idle`` and nothing past ``until`` (``stream_total``)."""

    timeouts: Timeouts
    first_by: float
    first_phase: str
    until: float

    @classmethod
    def starting(cls, start: float, timeouts: Timeouts) -> _StreamLimits:
        first, phase = timeouts.first_token, "first_token"
        if timeouts.total < first:
            first, phase = timeouts.total, "total"
        return cls(timeouts, start + first, phase, start + timeouts.stream_total)

    def wait(self, now: float, *, started: bool, finished: bool) -> tuple[float, str]:
        """How long the next read may wait, and the phase that limit belongs to."""
        if finished:
            return min(self.timeouts.terminator_grace, self.until - now), "grace"
        if not started:
            return self.first_by - now, self.first_phase
        left = self.until - now
        if left < self.timeouts.idle:
            return left, "stream_total"
        return self.timeouts.idle, "idle"


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
                # One session serves every caller: a cookie one provider answer sets must not
                # ride along on the next caller's request (and the jar cost work per request).
                cookie_jar=aiohttp.DummyCookieJar(),
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
        limits = _StreamLimits.starting(time.monotonic(), timeouts)
        try:
            async with asyncio.timeout(limits.first_by - time.monotonic()):
                resp = await self._post(call, timeouts)
        except aiohttp.ClientError as exc:  # first: ConnectionTimeoutError is a TimeoutError
            raise self._tag(_transport_error(exc), model) from None
        except TimeoutError:
            raise self._tag(ProviderTimeout("no answer", phase=limits.first_phase), model) from None
        try:
            if resp.status >= 300:
                within = min(timeouts.idle, limits.first_by - time.monotonic())
                raise await self._error(resp, model, within=max(0.0, within))
            async for chunk in self._events(resp, model, limits):
                yield chunk
        finally:
            resp.release()

    async def _events(
        self, resp: aiohttp.ClientResponse, model: str, limits: _StreamLimits
    ) -> AsyncIterator[StreamChunk]:
        parser = SSEParser()
        decoder = self._codec.stream_decoder(model)
        started = finished = False
        while True:
            data = await self._read(resp, model, limits, started=started, finished=finished)
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
        limits: _StreamLimits,
        *,
        started: bool,
        finished: bool,
    ) -> bytes | None:
        """The next bytes of the body; b"" at its end; None when a finished stream went quiet
        (or reached ``stream_total`` while waiting for its terminator)."""
        wait, phase = limits.wait(time.monotonic(), started=started, finished=finished)
        try:
            async with asyncio.timeout(max(0.0, wait)):
                return await resp.content.readany()
        except TimeoutError:
            if finished:
                return None
            raise self._tag(_read_timeout(phase, limits.timeouts), model) from None
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


def _read_timeout(phase: str, timeouts: Timeouts) -> ProviderError:
    """The error for a stream read that ran out of time in ``phase``."""
    if phase == "stream_total":
        return StreamTooLong(
            f"the answer was still streaming after {timeouts.stream_total:g} s, the gateway's "
            "limit (timeouts.stream_total): it is incomplete"
        )
    return ProviderTimeout(f"no stream data ({phase})", phase=phase)


# OpenSSL's X509_V_ERR_* codes, in fixed words: its own verify messages name the host or IP
# on a mismatch ("certificate is not valid for '10.0.0.5'"), which must not reach a client.
_CERTIFICATE_PROBLEMS = {
    9: "not valid yet",
    10: "expired",
    18: "self-signed",
    19: "self-signed certificate in the chain",
    20: "issuer not trusted (unknown CA)",
    21: "cannot be verified (incomplete chain?)",
    62: "issued for another host name",
    64: "issued for another IP address",
}


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, without the address (a URL may carry a key): the name did not
    resolve, the TLS handshake failed (and OpenSSL's reason), or the system's error text."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name did not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # it has no os_error
        code: int = getattr(exc.certificate_error, "verify_code", 0)
        why = _CERTIFICATE_PROBLEMS.get(code, f"not trusted (OpenSSL verify code {code})")
        return f"the server's TLS certificate: {why}"
    cause = exc.os_error
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause.reason or type(cause).__name__})"
    if cause.errno and cause.errno > 0:
        return os.strerror(cause.errno)
    return type(cause).__name__


def _transport_error(exc: aiohttp.ClientError) -> ProviderError:
    """Translate an aiohttp failure. Messages are generic: URLs may carry keys (Azure, Gemini)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderTimeout("connect timed out", phase="connect")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailed(f"could not connect: {_connect_reason(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailed("server closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionFailed("connection cut mid-response")
    if isinstance(exc, aiohttp.ClientOSError):
        return ConnectionFailed("connection reset")
    return ConnectionFailed(f"HTTP transport error ({type(exc).__name__})")
