"""The provider seam and the one HTTP transport every wire format shares.

A provider adapter is a :class:`Provider`: ``complete()`` and ``stream()`` over our own types.
:class:`HttpProvider` implements it for any :class:`~controller.wire.ClientCodec` with one pooled
keep-alive connection pool per provider (:mod:`controller.providers._http`), and translates
transport failures into the error tree, once (a stream's reading, and the translation both it
and a whole answer use: :mod:`controller.providers._stream_reader`):

==========================================  ==========================================
transport / asyncio                         our error
==========================================  ==========================================
connect refused / DNS / TLS / reset / cut   ConnectionFailed
connect slower than ``timeouts.connect``    ProviderTimeout(phase="connect")
no first chunk within ``first_token``       ProviderTimeout(phase="first_token")
no answer (or first chunk) within ``total``  ProviderTimeout(phase="total")
no stream data within ``idle``              ProviderTimeout(phase="idle")
stream still running at ``stream_total``    StreamTooLong (our own cap: not a fault)
non-2xx status                              codec.error_from(...)
body, event or line over the size limits    ResponseTooLarge (see ``max_response_bytes``)
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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from multidict import CIMultiDictProxy

from controller import _json
from controller._errors import ProviderError, ProviderTimeout, ResponseTooLarge
from controller._frozen import quick_init
from controller._redact import as_secret, hold, scrub
from controller.model import Request, Response, StreamChunk, Untranslatable
from controller.providers._http import HttpClient, HttpResponse, TransportError
from controller.providers._http_body import give_back_memory
from controller.providers._http_connect import tls_context
from controller.providers._http_proxy import Proxy
from controller.providers._stream_reader import (
    _masked_message,
    _Reader,
    _StreamLimits,
    _transport_error,
)
from controller.wire import ClientCodec, HttpCall, TokenCountCodec
from controller.wire._relay import UNREAD, answer_headers, escape_hints, hinted
from controller.wire._sse import MAX_EVENT_BYTES

_MAX_ERROR_BODY = 64 * 1024
# The most a whole (non-streaming) answer's body may be: the largest real answers (a long
# structured output, base64 images) are a few MiB. A stream is bounded per event instead.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Sent on every call, names in lower case (a codec's own headers win, whatever their case).
# identity: the answers are small JSON or a stream of events; compressing them saves little
# and costs CPU on both ends (a body compressed anyway is still decoded, in bounded pieces).
_STATIC_HEADERS = {
    "content-type": "application/json",
    "accept": "*/*",
    "accept-encoding": "identity",
}
T = TypeVar("T")


@quick_init
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
    pool: float = 1.0
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
            pool=min(self.pool, cap),
            first_token=min(self.first_token, cap),
            idle=self.idle,
            total=min(self.total, cap),
            stream_total=self.stream_total,
            terminator_grace=self.terminator_grace,
        )


class Provider(Protocol):
    """One configured provider endpoint."""

    name: str  # configured name, e.g. "openai-primary"
    kind: str  # gen_ai.provider.name, e.g. "openai"
    wire_format: str  # "openai", "anthropic", "gemini": a client's own format goes on as it came
    server_address: str
    server_port: int

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response: ...

    def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]: ...

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        """What of ``request``, translated, this provider's format cannot express."""
        ...

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
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        proxy: Proxy | None = None,
        takes_prefill: bool = False,
    ) -> None:
        self.name = name
        self.kind = codec.provider_kind
        self.wire_format = codec.wire_format
        # Continues an answer from a trailing assistant turn (a cut stream's continuation).
        self.takes_prefill = takes_prefill
        self._codec = codec
        self._counter = codec if isinstance(codec, TokenCountCodec) else None
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        hold(api_key)  # masked wherever a provider's text may quote it
        # ... and in what it answers (too short a key is no secret)
        self._secret = as_secret(api_key)
        self._secret_bytes = self._secret.encode() if self._secret else b""
        self._max_connections = max_connections
        self.skipped_events = 0  # unparseable stream events skipped, since start
        self._max_body = max_response_bytes
        self._max_event = max_event_bytes
        self._proxy = proxy
        self._http: HttpClient | None = None
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        # Told the model and headers of every answer, error or not (the rate-limit headroom
        # reads them: controller.signals.headroom). Must be quick and must not raise.
        self.on_headers: Callable[[str, CIMultiDictProxy[str]], None] | None = None
        parts = urlsplit(self._base_url)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme == "https":
            tls_context()  # made now, at start-up or reload, not on a request's way

    def __repr__(self) -> str:  # never shows the key
        return f"HttpProvider(name={self.name!r}, kind={self.kind!r}, base_url={self._base_url!r})"

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                self._base_url, max_connections=self._max_connections, proxy=self._proxy
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return self._codec.unsupported(request)

    def parse_response(self, body: bytes, model: str) -> Response:
        """A whole answer's body (in this provider's format) decoded: what the answer cache
        keeps of one relayed without being decoded. Raises MalformedResponse."""
        return self._codec.parse_response(body, model)

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
        call = self._codec.build(request, model, self._api_key)
        body, headers = await self._exchange(call, model, timeouts)
        relay = call.relay
        if relay is not None and relay.read is not None:  # relayed as it came, read lightly
            ident, served, finish, usage = self._parsed(relay.read, body, model)
            return Response(
                id=ident,
                model=served,
                message=UNREAD,
                finish_reason=finish,
                usage=usage,
                provider=self.name,
                raw=relay.whole(body),
                headers=answer_headers(headers),  # those a client may read
            )
        response = self._parsed(self._codec.parse_response, body, model)
        secret = self._secret
        if secret and (self._secret_bytes in body or hinted(body, escape_hints(secret))):
            # the key masked (also written with escapes: decoded), as a relayed body's is
            response = replace(response, message=_masked_message(response.message, secret))
        if relay is None:
            return replace(response, provider=self.name)
        # Read for telemetry; relayed as it came, with the headers a client may read.
        raw, kept = relay.whole(body), answer_headers(headers)
        return replace(response, provider=self.name, raw=raw, headers=kept)

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
        body, _ = await self._exchange(call, model, timeouts)
        return self._parsed(counter.parse_count, body, model)

    async def _exchange(
        self, call: HttpCall, model: str, timeouts: Timeouts
    ) -> tuple[bytes, CIMultiDictProxy[str]]:
        """One non-streaming call: POST, map a non-2xx answer or a transport failure into the
        error tree; the whole body and the answer's headers."""
        try:
            async with asyncio.timeout(timeouts.total):
                resp = await self._post(call, timeouts, max_body=self._max_body)
                if self.on_headers is not None:
                    self.on_headers(model, resp.headers)
                try:
                    if resp.status >= 300:
                        raise await self._error(resp, model)
                    body = await resp.read()
                finally:
                    resp.release()
        except TransportError as exc:
            raise self._tag(_transport_error(exc), model) from None
        except TimeoutError:
            raise self._tag(ProviderTimeout("no answer in time", phase="total"), model) from None
        return body, resp.headers

    def _parsed(self, parse: Callable[[bytes, str], T], body: bytes, model: str) -> T:
        try:
            return parse(body, model)
        except ProviderError as exc:
            raise self._tag(exc, model) from None

    async def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]:
        """The decoded chunks; on the same-format route (the call's ``relay``) each also
        carries the events to forward as they came (:class:`_Relayed`), the first the answer's
        headers a client may read. One generator from the socket to the router: every layer
        more is paid on every chunk."""
        call = self._codec.build(request, model, self._api_key)
        limits = _StreamLimits.starting(time.monotonic(), timeouts)
        try:
            async with asyncio.timeout(limits.first_by - time.monotonic()):
                resp = await self._post(call, timeouts)
        except TransportError as exc:
            raise self._tag(_transport_error(exc), model) from None
        except TimeoutError:
            raise self._tag(ProviderTimeout("no answer", phase=limits.first_phase), model) from None
        if self.on_headers is not None:
            self.on_headers(model, resp.headers)
        reader = _Reader(self, resp, model, limits, call.relay)
        try:
            if resp.status >= 300:
                within = min(timeouts.idle, limits.first_by - time.monotonic())
                raise await self._error(resp, model, within=max(0.0, within))
            while not reader.done:
                data = await reader.read()
                for chunk in reader.chunks(data):
                    yield chunk
        finally:
            reader.close()
            resp.release()

    async def _post(
        self, call: HttpCall, timeouts: Timeouts, *, max_body: int | None = None
    ) -> HttpResponse:
        """Send ``call``; returns with the answer's status and headers (the caller releases
        it). Redirects are not followed: a 3xx is an error (following one would carry the key
        header and the prompt to another host)."""
        client = self._client()
        key = (call.path, tuple(call.query.items()))
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = client.target(call.path, key[1])
        headers = _STATIC_HEADERS | {name.lower(): value for name, value in call.headers.items()}
        content = call.content if call.content is not None else _json.dumps(call.body)
        return await client.post(
            target,
            headers.items(),
            content,
            connect_timeout=timeouts.connect,
            max_body=max_body,
            pool_timeout=timeouts.pool,
        )

    async def _error(
        self, resp: HttpResponse, model: str, *, within: float = 10.0
    ) -> ProviderError:
        """The mapped error for a non-2xx answer; reads its body (bounded in size and time)."""
        body = b""
        with contextlib.suppress(TransportError, TimeoutError):
            async with asyncio.timeout(within):
                while len(body) < _MAX_ERROR_BODY:
                    piece = await resp.readany()
                    if not piece:
                        break
                    body += piece
        body = body[:_MAX_ERROR_BODY]
        err = self._codec.error_from(resp.status, resp.headers, body, model)
        return self._tag(err, model)

    def _tag(self, err: ProviderError, model: str) -> ProviderError:
        """``err`` naming this provider, its message scrubbed of every secret the gateway holds
        and of anything shaped like a credential (a 400 quoting the request's headers): the
        message reaches clients, logs, spans and alerts."""
        err.provider = self.name
        err.model = err.model or model
        if isinstance(err, ResponseTooLarge):
            give_back_memory()
        clean = scrub(err.message)
        if clean != err.message:
            err.message = clean
            err.args = (clean,)
        return err
