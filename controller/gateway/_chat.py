"""The chat endpoints: decode in the caller's format, route, answer in the caller's format.

Why the stream path is shaped as it is:

* ``router.stream()`` is awaited *before* the HTTP response starts. It returns only once some
  provider produced a first chunk, so a request that fails everywhere still gets a real error
  status (429, 503, ...) that the SDKs turn into their typed exceptions.
* After the first byte, a failure can no longer change the status. A mid-stream cut is written as
  the format's own in-stream error event and the stream ends *without* its terminator
  (``[DONE]`` / ``message_stop``): the SDKs raise on that event, so nobody mistakes a truncated
  answer for a complete one.
* A provider of the client's own format gets the client's body as it came (``model`` set) and
  its answer goes back as it came: a whole body unchanged, a stream event by event (the
  routed stream says so: ``relayed``). Any other provider's answer is encoded here, in the
  client's format. Either way the answer's ``model`` names the model that served, as the
  providers' own APIs do (``echo_requested_model`` answers with the name the client sent).
* A client that goes away mid-stream (a write fails, or aiohttp cancels the handler) closes the
  routed stream, so the attempt is reported as cancelled and never counts against the provider.
  So does a client that stops taking what it is sent: the server resets its connection once
  writes have waited on it ``gateway.send_timeout_seconds`` without it taking 32 KiB (see
  ``_server``), and the handler, waiting in a drain, is cancelled.
* A request the server cuts at the end of its shutdown grace period (see ``_server``) is closed
  the same way, after saying why in the caller's format: a stream gets the in-stream error event
  (``overloaded_error`` for Anthropic clients), a request still waiting for a provider (a token
  count included, see ``_count``) a 503 (:func:`answer_if_cut`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict, CIMultiDictProxy

from controller import _json
from controller._errors import (
    BadRequest,
    FailoverError,
    Overloaded,
    ProviderError,
    StreamInterrupted,
)
from controller._frozen import quick_init
from controller.gateway._formats import (
    HEADER_MODEL,
    HEADER_PROVIDER,
    Front,
    json_answer,
    providers_tried,
    public_error,
    wants_retry_estimate,
)
from controller.gateway._jobs import TRIAGE_KEY
from controller.gateway._server import InFlight
from controller.gateway.backend import GatewayBackend
from controller.model import Origin, Request, Response, StreamChunk
from controller.routing.router import CannedStream, RoutedStream
from controller.wire._base import Resumable, StreamEncoder

__all__ = ["SHUTTING_DOWN", "ChatEndpoint", "answer_if_cut", "decode_call", "served_headers"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies in front of us not to buffer
}
# 503: the SDKs retry it, and a load balancer has another replica to send the retry to.
HEADER_DEGRADED = "x-failover-degraded"  # tier | cache | static
SHUTTING_DOWN = Overloaded("the gateway is shutting down; retry the request", status=503)


@quick_init
@dataclass(frozen=True, slots=True)
class _Call:
    """One decoded front request."""

    body: Any  # the parsed JSON (the OpenAI front reads stream_options from it)
    model: str  # the model name the client sent: echoed back in every answer
    tier: str
    request: Request


class ChatEndpoint:
    """The handler of one front route (``/v1/chat/completions`` or ``/v1/messages``)."""

    def __init__(
        self,
        backend: GatewayBackend,
        front: Front,
        *,
        max_body_bytes: int,
        in_flight: InFlight,
        echo_model: bool = False,
    ) -> None:
        self._backend = backend
        self._front = front
        self._max_body = max_body_bytes
        self._in_flight = in_flight  # says whether a cancellation is the shutdown's cut
        self._echo = echo_model

    async def handle(self, http: web.Request) -> web.StreamResponse:
        decoded = await self._decode(http)
        if not isinstance(decoded, _Call):  # not web.StreamResponse: an ABC, ten times slower
            return decoded
        triage = http.app.get(TRIAGE_KEY)  # while the tier is degraded: defer, drop (_jobs)
        if triage is not None and triage.wants(http, decoded.tier):
            held = await triage.admit(http, self._front, decoded)
            if held is not None:
                return held
        router = self._backend.router
        # Whose answer it is, for the answer cache: the key the client presented.
        scope = _presented_key(http) if router.cache is not None else ""
        try:
            if not decoded.request.stream:
                response = await router.complete(decoded.request, tier=decoded.tier, scope=scope)
                return self._whole(response, decoded)
            routed = await router.stream(decoded.request, tier=decoded.tier, scope=scope)
        except FailoverError as exc:
            return self._failure(exc)
        except asyncio.CancelledError:
            await answer_if_cut(http, self._front, self._in_flight)
            raise
        return await self._pump(http, routed, decoded)

    def _whole(self, response: Response, call: _Call) -> web.Response:
        headers = served_headers(response.provider, response.model, response.degraded)
        if response.raw is not None:  # the provider speaks the client's format: as it came
            if response.headers:  # the provider's request id, rate limits (ours win)
                headers = dict(response.headers) | headers
            return web.Response(body=response.raw, headers=headers, content_type=_JSON)
        rendered = self._front.render(response)
        if self._echo:
            rendered["model"] = call.model
        return json_answer(rendered, headers=headers)

    # ----------------------------------------------------------------------------- decoding
    async def _decode(self, http: web.Request) -> _Call | web.StreamResponse:
        front = self._front
        echo = self._echo
        return await decode_call(
            http, self._backend, front, front.parse, self._max_body, echo, lazy=True
        )

    def _failure(self, exc: FailoverError) -> web.Response:
        shown = public_error(exc)
        log.info("request failed (%s): %s", type(exc).__name__, exc)
        wait = None
        if wants_retry_estimate(shown):  # a 429/503: when the controller looks again, if known
            wait = self._backend.retry_after(providers_tried(exc))
        response = self._front.error(shown, retry_after=wait)
        provider = getattr(exc, "provider", "")
        if isinstance(provider, str) and provider:  # a caller error names who refused it
            response.headers[HEADER_PROVIDER] = provider
        return response

    # ----------------------------------------------------------------------------- streaming
    async def _pump(
        self, http: web.Request, routed: RoutedStream | CannedStream, call: _Call
    ) -> web.StreamResponse:
        """Relay ``routed`` as SSE; whatever happens, the routed stream is closed at the end."""
        out = web.StreamResponse(
            headers=CIMultiDict(
                [
                    *routed.headers,  # the provider's, on the same-format route
                    *_SSE_HEADERS.items(),
                    *served_headers(routed.provider, routed.model, routed.degraded).items(),
                ]
            )
        )
        ident = f"{self._front.id_prefix}{routed.request_id}"
        model = call.model if self._echo else routed.model
        encoder = self._front.encoder(id=ident, model=model, body=call.body)
        # (not isinstance(encoder, Resumable): a runtime Protocol check, ~3.7 us a request)
        if routed.relayed and getattr(encoder, "resume", None) is None:
            routed.continuable = False  # a continuation could not be encoded after its events
        try:
            writer = await out.prepare(http)
            frames = _ChunkFrames.of(http, out, writer)
            await self._relay(out, routed, encoder, frames)
        except ConnectionResetError:  # the client went away; the finally block reports it
            log.info("client disconnected from stream %s", routed.request_id)
        finally:
            await routed.aclose()  # a no-op once the stream ended; else reported as cancelled
        return out

    async def _relay(
        self,
        out: web.StreamResponse,
        routed: RoutedStream | CannedStream,
        encoder: StreamEncoder,
        frames: _ChunkFrames | None = None,
    ) -> None:
        chunks = aiter(routed)
        try:
            if routed.relayed:  # the provider's own events, as they came (terminator included)
                await self._relay_raw(out, chunks, encoder, frames)
            else:
                await out.write(encoder.start())
                async for chunk in chunks:
                    if self._echo:
                        chunk = replace(chunk, model=None)
                    await out.write(encoder.encode(chunk))
                await out.write(encoder.end())
        except StreamInterrupted as exc:
            log.warning("stream %s interrupted: %s", routed.request_id, exc)
            await _write_quietly(out, encoder.error(exc.cause))
        except ProviderError as exc:  # the encoder cannot express a chunk (a nameless tool call)
            log.warning("stream %s could not be encoded: %s", routed.request_id, exc)
            await _write_quietly(out, encoder.error(exc))
        except asyncio.CancelledError:  # the body stays unfinished: the connection was cut
            if self._in_flight.cut_off:
                log.info("stream %s cut by the shutdown", routed.request_id)
                await _write_quietly(out, encoder.error(SHUTTING_DOWN))
            raise
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()
        await _write_quietly_eof(out)

    async def _relay_raw(
        self,
        out: web.StreamResponse,
        chunks: AsyncIterator[StreamChunk],
        encoder: StreamEncoder,
        frames: _ChunkFrames | None,
    ) -> None:
        """A relayed stream's events as they came; a continuation of it (chunks without
        ``raw``) encoded by ``encoder``, which has followed the events before it.

        A terminator (``[DONE]``, ``message_stop``) that comes before the answer's finish is
        held back: the provider has cut the answer, and its SDK would stop there, the text
        so far taken as whole; the cut's error, or the continuation, goes instead.

        After the first write (through aiohttp, which sends the headers with it if it held
        them), an event goes to the client as one chunk written straight to the transport
        (:class:`_ChunkFrames`), when the response allows it."""
        follow = getattr(encoder, "follow", None)  # the formats whose events carry state
        terminates = getattr(encoder, "terminates", None)  # the formats with a terminator
        resumed = finished = False
        held = b""
        direct = None  # the frames, once aiohttp wrote the first event
        async for chunk in chunks:
            raw = chunk.raw
            if raw is None:
                if not resumed:
                    resumed = True
                    assert isinstance(encoder, Resumable)  # else the stream is not continuable
                    await out.write(encoder.resume())
                if self._echo:
                    chunk = replace(chunk, model=None)
                await out.write(encoder.encode(chunk))
            elif raw:
                if not finished:
                    if chunk.finish_reason is not None:
                        finished = True
                    elif not chunk.text and terminates is not None and terminates(raw):
                        held = raw  # never sent: a cut follows
                        continue
                if follow is not None:
                    follow(raw)
                if direct is not None:  # (_ChunkFrames.write, inline: once per event)
                    transport = direct.transport
                    if transport.is_closing():
                        raise ConnectionResetError("the client's connection is closing")
                    transport.write(b"%x\r\n%b\r\n" % (len(raw), raw))
                    if transport.get_write_buffer_size() > _DRAIN_AT:
                        await direct.writer.drain()
                else:
                    await out.write(raw)
                    direct = frames
        if held and not resumed:  # the stream ended well after all (a provider of ours raises)
            await out.write(held)
        if resumed:
            await out.write(encoder.end())


# Past this many bytes held by the client's transport, a relayed event waits for it to drain
# (aiohttp's own StreamWriter drains past 64 KiB written since its last drain).
_DRAIN_AT = 0x10000


@dataclass(frozen=True, slots=True)
class _ChunkFrames:
    """A relayed event written to the client as one HTTP/1.1 chunk straight to the transport
    (``size CRLF data CRLF``, the frame aiohttp writes), instead of through
    ``StreamResponse.write``: that path costs ~1 us of Python per event (a coroutine, its
    checks, a formatted size, a join), ~4 % of what the gateway spends per relayed event at
    hundreds of streams (README "Streams on one core"). What aiohttp's write keeps is kept:
    the write refused once the connection is closing (``ConnectionResetError``), and the
    relay waits while the client reads slowly (past :data:`_DRAIN_AT` bytes held by the
    transport, ``drain()`` waits as long as aiohttp pauses writing), and no longer than the
    server's bound on a client that takes too little (``ConnectionLimits.send``), which needs
    nothing here: its timer is armed by the pause."""

    transport: asyncio.Transport
    writer: AbstractStreamWriter

    @classmethod
    def of(
        cls, http: web.Request, out: web.StreamResponse, writer: AbstractStreamWriter | None
    ) -> _ChunkFrames | None:
        """The frames of ``out`` (prepared), or None when it must be written through aiohttp:
        not chunked (an HTTP/1.0 client), or compressed."""
        transport = http.transport
        if writer is None or transport is None or out.compression:
            return None
        if out.headers.get(hdrs.TRANSFER_ENCODING) != "chunked":
            return None
        return cls(transport, writer)


async def decode_call(
    http: web.Request,
    backend: GatewayBackend,
    front: Front,
    parse: Callable[[Any, Origin], tuple[str, Request]],
    max_body: int,
    echo_model: bool = False,
    *,
    lazy: bool = False,
) -> _Call | web.StreamResponse:
    """The request (``parse`` reads the JSON body), or the 4xx answer in ``front``'s format
    that explains what is wrong with it. The request's source gets the body's bytes and the
    headers that go upstream with it on the same-format route (``origin``). With ``lazy``, a
    request every provider of whose tier takes the body as it came is checked only as every
    provider would check it, and not decoded (the provider judges the rest)."""
    try:
        raw = await http.read()
    except web.HTTPRequestEntityTooLarge:
        return front.error(BadRequest(f"request body exceeds {max_body} bytes", status=413))
    try:
        body = _json.loads(raw)
    except ValueError as exc:  # bad UTF-8 and nesting too deep included
        return front.error(BadRequest(f"request body is not valid JSON: {exc}"))
    origin = Origin(
        raw=raw,
        headers=_relayed_headers(http.headers, front.relayed_headers),
        echo_model=echo_model,
    )
    named = body.get("model") if lazy and isinstance(body, dict) else None
    tier = backend.tier_for(named) if isinstance(named, str) else None
    try:
        if tier is not None and backend.router.takes_as_is(front.name, tier):
            model, stream = front.peek(body)
            request = _undecoded(front, body, origin, model, stream, parse)
            return _Call(body=body, model=model, tier=tier, request=request)
        model, request = parse(body, origin)
    except BadRequest as exc:
        return front.error(replace_status(exc, 400))
    if model != named:
        tier = backend.tier_for(model)
    if tier is None:
        return front.model_not_found(model, backend.models())
    return _Call(body=body, model=model, tier=tier, request=request)


def _undecoded(
    front: Front,
    body: Any,
    origin: Origin,
    model: str,
    stream: bool,
    parse: Callable[[Any, Origin], tuple[str, Request]],
) -> Request:
    """A request not decoded: every provider that may serve it takes the body as it came, so
    only ``stream`` is needed, and the whole decode waits (made once) for whoever needs it."""

    made: list[Request] = []

    def full() -> Request:  # a list, not functools.cache: that costs ~2 us per request
        if not made:
            made.append(parse(body, origin)[1])
        return made[0]

    return Request(
        messages=(), stream=stream, source=origin.source(front.name, body, model, full=full)
    )


def _relayed_headers(headers: CIMultiDictProxy[str], names: tuple[str, ...]) -> dict[str, str]:
    """The client's headers among ``names`` (repeated ones joined by commas, as HTTP allows)."""
    found: dict[str, str] = {}
    for name in names:
        values = headers.getall(name, ())
        if values:
            found[name] = ",".join(values)
    return found


def _presented_key(http: web.Request) -> str:
    """The key a client presented (as its SDK sends one), or ""."""
    headers = http.headers
    return (
        headers.get("Authorization")
        or headers.get("x-api-key")
        or headers.get("x-goog-api-key")
        or http.query.get("key", "")
    )


def replace_status(err: BadRequest, status: int) -> BadRequest:
    """``err`` with another status, keeping its class and message."""
    return type(err)(err.message, provider=err.provider, model=err.model, status=status)


def served_headers(provider: str, model: str, degraded: str = "") -> dict[str, str]:
    """The headers naming what served (or counted for) a request, and the rung of its tier's
    ladder when none of the tier's own providers could (``x-failover-degraded``)."""
    if degraded:
        return {HEADER_PROVIDER: provider, HEADER_MODEL: model, HEADER_DEGRADED: degraded}
    return {HEADER_PROVIDER: provider, HEADER_MODEL: model}


async def _write_quietly(out: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionResetError):
        await out.write(data)


async def answer_if_cut(http: web.Request, front: Front, in_flight: InFlight) -> None:
    """Called from a handler's ``except asyncio.CancelledError`` around its wait for a provider,
    before its response starts: if the shutdown cut the wait, answer :data:`SHUTTING_DOWN` in
    ``front``'s format (the handler then re-raises; a client that left gets nothing, there is
    nobody to tell). An except clause rather than a context manager: it costs nothing on the
    request path unless it runs."""
    if in_flight.cut_off:
        await _answer_quietly(http, front.error(SHUTTING_DOWN))


async def _answer_quietly(http: web.Request, response: web.Response) -> None:
    """Send ``response`` from a handler that will not return it (it is being cancelled)."""
    with contextlib.suppress(ConnectionResetError):
        await response.prepare(http)
        await response.write_eof()


async def _write_quietly_eof(out: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionResetError):
        await out.write_eof()
