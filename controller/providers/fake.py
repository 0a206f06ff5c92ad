"""A fault-injecting fake LLM provider over real HTTP on loopback.

One :class:`FakeProvider` is one simulated provider: an aiohttp server on 127.0.0.1 that speaks
every wire format (through the same server codecs the gateway uses), so a test or the demo
can point any adapter at it:

=====================  ===============================================================
format                 base URL for the adapter
=====================  ===============================================================
OpenAI (+compatible)   ``fake.url("openai")``     → ``http://127.0.0.1:PORT/v1``
OpenAI Responses       ``fake.url("openai")``     → ``http://127.0.0.1:PORT/v1`` (``/responses``)
Anthropic              ``fake.url("anthropic")``  → ``http://127.0.0.1:PORT``
Gemini                 ``fake.url("gemini")``     → ``http://127.0.0.1:PORT``
=====================  ===============================================================

It answers deterministically: a text reply, or — when the request offers tools and the last turn
is not a tool result — a call to the first tool with ``{"input": <last user text>}``; after a tool
result it answers ``"tool said: <result>"``. Faults are switched at run time, in process with
:meth:`FakeProvider.set_fault` or over HTTP (``POST /_fake/fault``, ``DELETE /_fake/fault``), so
a separate process (the CLI's drill, the demo) can inject them too.

This module is the server and its faults; what it answers (the answer, its stream chunks, the
rate-limit headers) is built in :mod:`controller.providers._fake_answers`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
)
from controller.model import Request, Response
from controller.providers._fake_answers import (
    RateLimits,
    Window,
    answer_to,
    count_tokens,
    rate_headers,
    stream_chunks,
)
from controller.wire import ServerCodec
from controller.wire.anthropic import AnthropicServerCodec
from controller.wire.gemini import GeminiServerCodec, parse_path
from controller.wire.openai import OpenAIServerCodec
from controller.wire.responses import ResponsesServerCodec

__all__ = ["FakeFleet", "FakeProvider", "Fault", "FaultMode", "RateLimits", "Seen", "main"]


class FaultMode(enum.StrEnum):
    NONE = "none"
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After: retry_after
    RATE_LIMIT_BARE = "rate_limit_bare"  # 429 without Retry-After
    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    AUTH = "auth"  # 401: bad key / suspended account
    RESET = "reset"  # close the connection without answering
    HANG = "hang"  # accept the request, never answer
    SLOW_FIRST_TOKEN = "slow_first_token"  # wait `delay` before the first token
    CUT_STREAM = "cut_stream"  # drop the connection after `after_chunks` chunks
    STALL_STREAM = "stall_stream"  # stop sending after `after_chunks` chunks, keep it open
    END_STREAM = "end_stream"  # end the body cleanly after `after_chunks` chunks (no finish)
    MALFORMED_CHUNK = "malformed_chunk"  # a broken event after `after_chunks` chunks
    MALFORMED_BODY = "malformed_body"  # a 200 whose body is not valid JSON
    NO_TERMINATOR = "no_terminator"  # complete stream without [DONE]/message_stop
    CONTEXT_TOO_LONG = "context_too_long"  # 400 context length exceeded
    CONTENT_FILTER = "content_filter"  # 400 refused by the content filter
    REFUSE_PREFILL = "refuse_prefill"  # 400 for a request ending with an assistant turn


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A fault to inject. ``count`` limits it to the next N requests (None: until cleared);
    ``model`` to the requests for that model (None: every request)."""

    mode: FaultMode = FaultMode.NONE
    retry_after: float = 1.0
    delay: float = 1.0
    after_chunks: int = 2
    count: int | None = None
    model: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("fault must be a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return cls(**{**data, "mode": FaultMode(data.get("mode", "none"))})


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the fake received, decoded into our types."""

    format: str
    model: str
    request: Request
    body: bytes = field(default=b"", repr=False)  # as it arrived, byte for byte
    headers: dict[str, str] = field(default_factory=dict, repr=False)


_PREFLIGHT_ERRORS: dict[FaultMode, ProviderError] = {
    FaultMode.RATE_LIMIT_BARE: RateLimited("rate limit exceeded", status=429),
    FaultMode.ERROR_500: Overloaded("internal server error", status=500),
    FaultMode.ERROR_503: Overloaded("service unavailable", status=503),
    FaultMode.AUTH: AuthFailed("invalid api key", status=401),
    FaultMode.CONTEXT_TOO_LONG: ContextTooLong("prompt is too long", status=400),
    FaultMode.CONTENT_FILTER: ContentFiltered("content filtered", status=400),
}


class FakeProvider:
    """A fake provider server. Use as ``async with FakeProvider(name="primary") as fake:``."""

    def __init__(
        self,
        *,
        name: str = "fake",
        host: str = "127.0.0.1",
        port: int = 0,
        reply: str | None = None,
        latency: float = 0.0,
        pace: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._wall = wall  # the clock of its rate-limit windows (a test's FakeClock.wall)
        self._window: Window | None = None
        self._host = host
        self._port = port
        self._reply = reply or f"Hello from {name}. This answer came through the failover router."
        self._latency = latency
        self._pace = pace  # seconds between stream chunks (0: as fast as it can)
        self._fault = Fault()
        self._remaining: int | None = None
        self.seen: collections.deque[Seen] = collections.deque(maxlen=1000)  # recent ones
        self.requests = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._hold = asyncio.Event()
        self._codecs: dict[str, ServerCodec] = {
            "openai": OpenAIServerCodec(),
            "anthropic": AnthropicServerCodec(),
            "gemini": GeminiServerCodec(),
            "responses": ResponsesServerCodec(),
        }

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> FakeProvider:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic_count)
        app.router.add_post("/v1beta/models/{tail:.+}", self._gemini)
        app.router.add_post("/_fake/fault", self._set_fault_http)
        app.router.add_delete("/_fake/fault", self._clear_fault_http)
        app.router.add_get("/_fake/stats", self._stats_http)
        app.router.add_post("/_fake/ratelimit", self._set_rate_limits_http)
        app.router.add_delete("/_fake/ratelimit", self._clear_rate_limits_http)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._hold.set()  # release hanging handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    def url(self, fmt: str = "openai") -> str:
        root = f"http://{self._host}:{self._port}"
        return root + "/v1" if fmt == "openai" else root

    # ----------------------------------------------------------------------------- faults
    def set_fault(self, fault: Fault | FaultMode) -> None:
        self._fault = fault if isinstance(fault, Fault) else Fault(mode=fault)
        self._remaining = self._fault.count

    def clear_fault(self) -> None:
        self.set_fault(Fault())

    @property
    def fault(self) -> Fault:
        return self._fault

    def set_rate_limits(
        self, limits: RateLimits | None, *, wall: Callable[[], float] | None = None
    ) -> None:
        """Send rate-limit headers from now on (a new, full window), or stop (None); ``wall``
        replaces the clock its windows run on (a test's ``FakeClock.wall``)."""
        if wall is not None:
            self._wall = wall
        self._window = None if limits is None else Window(limits, self._wall())

    def _rate_headers(self, fmt: str, request: Request) -> dict[str, str]:
        """This request's share of the window taken, and the headers that say what is left."""
        window = self._window
        if window is None or fmt == "gemini":
            return {}
        return rate_headers(window, fmt, request, self._wall())

    def _take_fault(self, model: str | None = None) -> Fault:
        fault = self._fault
        if fault.model is not None and model != fault.model:
            return Fault()  # the fault is another model's
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self.clear_fault()
        return fault

    async def _set_fault_http(self, request: web.Request) -> web.Response:
        try:
            self.set_fault(Fault.from_json(await request.json()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "mode": self._fault.mode})

    async def _clear_fault_http(self, request: web.Request) -> web.Response:
        self.clear_fault()
        return web.json_response({"ok": True, "mode": "none"})

    async def _set_rate_limits_http(self, request: web.Request) -> web.Response:
        """``POST /_fake/ratelimit`` with ``{"requests": N, "tokens": N, "window_seconds": S}``
        (each optional): send rate-limit headers from now on."""
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise TypeError("must be a JSON object")
            self.set_rate_limits(RateLimits(**data))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _clear_rate_limits_http(self, request: web.Request) -> web.Response:
        self.set_rate_limits(None)
        return web.json_response({"ok": True})

    async def _stats_http(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "fault": self._fault.mode})

    # ----------------------------------------------------------------------------- handlers
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai", None, None)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "responses", None, None)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "anthropic", None, None)

    async def _anthropic_count(self, http: web.Request) -> web.StreamResponse:
        """Anthropic's token counting: the fake's own count (words), faults applied."""
        codec = AnthropicServerCodec()
        self.requests += 1
        try:
            model, request = codec.parse_count_request(await http.read())
        except BadRequest as exc:
            return self._error(codec, exc)
        self.seen.append(Seen(format="anthropic_count", model=model, request=request))
        fault = self._take_fault()
        early = await self._preflight(http, codec, fault)
        if early is not None:
            return early
        if fault.mode is FaultMode.MALFORMED_BODY:
            return web.Response(text='{"input_tokens": ', content_type="application/json")
        return web.json_response(codec.render_count(count_tokens(request)))

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        parsed = parse_path(request.path)
        if parsed is None:
            return web.json_response({"error": {"code": 404, "message": "not found"}}, status=404)
        model, stream = parsed
        return await self._serve(request, "gemini", model, stream)

    async def _serve(
        self, http: web.Request, fmt: str, path_model: str | None, stream: bool | None
    ) -> web.StreamResponse:
        codec = self._codecs[fmt]
        self.requests += 1
        raw = await http.read()
        try:
            body = json.loads(raw)
            model, request = codec.parse_request(body, path_model)
        except ValueError:
            return self._error(codec, BadRequest("request body is not valid JSON", status=400))
        except BadRequest as exc:
            return self._error(codec, exc)
        if stream is not None:
            request = dataclasses.replace(request, stream=stream)
        headers = dict(http.headers)
        self.seen.append(Seen(format=fmt, model=model, request=request, body=raw, headers=headers))
        fault = self._take_fault(model)
        early = await self._preflight(http, codec, fault)
        if early is not None:
            return early
        refused = _refused_prefill(request, fmt, fault)
        if refused is not None:
            return self._error(codec, BadRequest(refused, status=400))
        if self._latency:
            await asyncio.sleep(self._latency)
        answer = self.answer(request, model)
        limits = self._rate_headers(fmt, request)
        if not request.stream:
            return await self._reply_whole(codec, answer, fault, limits)
        return await self._reply_stream(http, codec, answer, fault, limits)

    async def _preflight(
        self, http: web.Request, codec: ServerCodec, fault: Fault
    ) -> web.StreamResponse | None:
        mode = fault.mode
        if mode is FaultMode.RATE_LIMIT:
            err = RateLimited("rate limit exceeded", retry_after=fault.retry_after, status=429)
            return self._error(codec, err)
        if mode in _PREFLIGHT_ERRORS:
            return self._error(codec, _PREFLIGHT_ERRORS[mode])
        if mode is FaultMode.RESET:
            _abort(http)
            return web.Response(status=500)
        if mode is FaultMode.HANG:
            await self._hold.wait()
            return web.Response(status=503)
        return None

    @staticmethod
    def _error(codec: ServerCodec, err: ProviderError) -> web.Response:
        status, body, headers = codec.render_error(err)
        return web.json_response(body, status=status, headers=headers)

    async def _reply_whole(
        self, codec: ServerCodec, answer: Response, fault: Fault, headers: dict[str, str]
    ) -> web.StreamResponse:
        if fault.mode is FaultMode.SLOW_FIRST_TOKEN:
            await asyncio.sleep(fault.delay)
        if fault.mode is FaultMode.MALFORMED_BODY:
            return web.Response(
                text='{"id": "broken", "choices": [', content_type="application/json"
            )
        return web.json_response(codec.render_response(answer), headers=headers)

    async def _reply_stream(
        self,
        http: web.Request,
        codec: ServerCodec,
        answer: Response,
        fault: Fault,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream", **headers})
        await out.prepare(http)
        # The client may go away (it timed out on us, or failed over): nothing to do then.
        with contextlib.suppress(ConnectionResetError):
            await self._write_stream(http, out, codec, answer, fault)
        return out

    async def _write_stream(
        self,
        http: web.Request,
        out: web.StreamResponse,
        codec: ServerCodec,
        answer: Response,
        fault: Fault,
    ) -> None:
        encoder = codec.stream_encoder(id=answer.id, model=answer.model)
        if fault.mode is FaultMode.SLOW_FIRST_TOKEN:
            await asyncio.sleep(fault.delay)
        await out.write(encoder.start())
        for index, chunk in enumerate(stream_chunks(answer)):
            if index == fault.after_chunks:
                if fault.mode is FaultMode.CUT_STREAM:
                    _abort(http)
                    return
                if fault.mode is FaultMode.STALL_STREAM:
                    await self._hold.wait()
                    return
                if fault.mode is FaultMode.END_STREAM:
                    await out.write_eof()
                    return
                if fault.mode is FaultMode.MALFORMED_CHUNK:
                    await out.write(b'data: {"broken": \n\n')
            if self._pace and index:
                await asyncio.sleep(self._pace)
            await out.write(encoder.encode(chunk))
        if fault.mode is not FaultMode.NO_TERMINATOR:
            await out.write(encoder.end())
        await out.write_eof()

    # ----------------------------------------------------------------------------- answers
    def answer(self, request: Request, model: str) -> Response:
        """The deterministic answer this fake gives to ``request``."""
        rid = f"fake-{self.name}-{next(self._ids)}"
        return answer_to(request, model, rid=rid, provider=self.name, reply=self._reply)


def _refused_prefill(request: Request, fmt: str, fault: Fault) -> str | None:
    """Why a request ending with an assistant turn (a prefill) is refused, if it is: by the
    fault, or as Anthropic's API refuses one that ends in whitespace."""
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != "assistant" or last.tool_calls:
        return None
    if fault.mode is FaultMode.REFUSE_PREFILL:
        return "This model does not support assistant message prefill."
    if fmt == "anthropic" and last.content != last.content.rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    return None


def _abort(http: web.Request) -> None:
    transport = http.transport
    if transport is not None:
        transport.abort()


@dataclass
class FakeFleet:
    """Several named fakes started together (the demo and the end-to-end tests use this)."""

    names: tuple[str, ...]
    fakes: dict[str, FakeProvider] = field(default_factory=dict)

    async def __aenter__(self) -> FakeFleet:
        for name in self.names:
            self.fakes[name] = await FakeProvider(name=name).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(f.stop() for f in self.fakes.values()))

    def __getitem__(self, name: str) -> FakeProvider:
        return self.fakes[name]


async def _serve_forever(
    name: str, port: int, latency: float, reply: str | None = None, pace: float = 0.0
) -> None:
    fake = FakeProvider(name=name, port=port, latency=latency, reply=reply, pace=pace)
    await fake.start()
    print(f"fake provider {name} listening on http://127.0.0.1:{fake.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m controller.providers.fake --name primary --port 9001``: serve until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve a fault-injecting fake LLM provider.")
    parser.add_argument("--name", default="fake")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument("--reply", default=None, help="the text it answers (default: names it)")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="delay between stream chunks")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve_forever(
                args.name, args.port, args.latency_ms / 1000, args.reply, args.pace_ms / 1000
            )
        )


if __name__ == "__main__":
    main()
