"""Each adapter against the fake provider in each fault mode, streaming and not."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from controller._errors import (
    AuthFailed,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from controller.model import FinishReason, Message, Request, StreamChunk, ToolDefinition, assemble
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers._http import ConnectFailed as TransportConnectFailed
from controller.providers._http import connect_reason
from controller.providers._stream_reader import _transport_error
from controller.providers.fake import FakeProvider, Fault, FaultMode
from tests.conftest import FORMATS, adapter, drain
from tests.fakes_chat import unused_port
from tests.hostile_support import SSE_HEAD, endless, hostile
from tests.http_client_support import RawServer

FAST = Timeouts(connect=1.0, first_token=0.3, idle=0.3, total=0.6, terminator_grace=0.1)
# For a call that must answer: a loaded 2-core machine can take longer than FAST's 0.3 s to
# start a healthy stream (test_streamed_tool_call failed so under a CPU hog).
ROOMY = Timeouts(connect=5.0, first_token=10.0, idle=10.0, total=20.0, terminator_grace=0.1)
HELLO = Request(messages=(Message(role="user", content="hello there"),))
STREAMED = Request(messages=HELLO.messages, stream=True)
ErrorType = type[ProviderError] | None

# mode → (non-streaming outcome, streaming outcome); None means a complete answer.
EXPECTED: dict[FaultMode, tuple[ErrorType, ErrorType]] = {
    FaultMode.NONE: (None, None),
    FaultMode.RATE_LIMIT: (RateLimited, RateLimited),
    FaultMode.RATE_LIMIT_BARE: (RateLimited, RateLimited),
    FaultMode.ERROR_500: (Overloaded, Overloaded),
    FaultMode.ERROR_503: (Overloaded, Overloaded),
    FaultMode.AUTH: (AuthFailed, AuthFailed),
    FaultMode.RESET: (ConnectionFailed, ConnectionFailed),
    FaultMode.HANG: (ProviderTimeout, ProviderTimeout),
    FaultMode.SLOW_FIRST_TOKEN: (ProviderTimeout, ProviderTimeout),
    FaultMode.CUT_STREAM: (None, ConnectionFailed),
    FaultMode.STALL_STREAM: (None, ProviderTimeout),
    FaultMode.END_STREAM: (None, MalformedResponse),
    FaultMode.MALFORMED_CHUNK: (None, None),  # the bad event is skipped (counted)
    FaultMode.MALFORMED_BODY: (MalformedResponse, None),
    FaultMode.NO_TERMINATOR: (None, None),
    FaultMode.CONTEXT_TOO_LONG: (ContextTooLong, ContextTooLong),
    FaultMode.CONTENT_FILTER: (ContentFiltered, ContentFiltered),
    FaultMode.REFUSE_PREFILL: (None, None),  # refused only for a request that ends in a prefill
}


def test_every_fault_mode_has_an_expectation() -> None:
    assert set(EXPECTED) == set(FaultMode)


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("mode", list(FaultMode))
async def test_non_streaming_fault(primary: FakeProvider, kind: str, mode: FaultMode) -> None:
    provider = adapter(primary, kind)
    primary.set_fault(Fault(mode=mode, delay=1.0, retry_after=2.5))
    expected = EXPECTED[mode][0]
    limits = FAST if expected is ProviderTimeout else ROOMY  # FAST only where it must expire
    try:
        if expected is None:
            response = await provider.complete(HELLO, "model-a", limits)
            assert response.message.content.startswith("Hello from primary")
            assert response.finish_reason is FinishReason.STOP
            assert response.model == "model-a"
            assert response.usage.output_tokens > 0
        else:
            with pytest.raises(expected) as caught:
                await provider.complete(HELLO, "model-a", limits)
            _check_error(caught.value, mode, provider.name)
    finally:
        await provider.close()


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("mode", list(FaultMode))
async def test_streaming_fault(primary: FakeProvider, kind: str, mode: FaultMode) -> None:
    provider = adapter(primary, kind)
    primary.set_fault(Fault(mode=mode, delay=1.0, retry_after=2.5, after_chunks=2))
    request = Request(messages=HELLO.messages, stream=True)
    expected = EXPECTED[mode][1]
    limits = FAST if expected is ProviderTimeout else ROOMY  # FAST only where it must expire
    chunks: list[StreamChunk] = []
    try:
        if expected is None:
            chunks = [c async for c in provider.stream(request, "model-a", limits)]
            answer = assemble(chunks, id="x", model="model-a")
            assert answer.message.content == primary.answer(request, "model-a").message.content
            assert answer.finish_reason is FinishReason.STOP
        else:
            with pytest.raises(expected) as caught:
                await drain(provider.stream(request, "model-a", limits), chunks)
            _check_error(caught.value, mode, provider.name)
            # a broken stream never carried a finish reason: it cannot pass for complete
            assert all(c.finish_reason is None for c in chunks)
    finally:
        await provider.close()


def _check_error(err: ProviderError, mode: FaultMode, name: str) -> None:
    assert err.provider == name
    assert "sk-test" not in str(err)
    if mode is FaultMode.RATE_LIMIT:
        assert isinstance(err, RateLimited)
        assert err.retry_after == 3  # the fake's 2.5 s, in whole seconds rounded up
    if mode is FaultMode.RATE_LIMIT_BARE:
        assert isinstance(err, RateLimited)
        assert err.retry_after is None
    if mode is FaultMode.SLOW_FIRST_TOKEN and isinstance(err, ProviderTimeout):
        assert err.phase in ("first_token", "total")
    if mode is FaultMode.STALL_STREAM and isinstance(err, ProviderTimeout):
        assert err.phase == "idle"


@pytest.mark.parametrize("kind", sorted(FORMATS))
async def test_stream_without_terminator_is_finalised_promptly(
    primary: FakeProvider, kind: str
) -> None:
    """The body stays open after the finish chunk; the grace period ends it as complete."""
    provider = adapter(primary, kind)
    primary.set_fault(FaultMode.NO_TERMINATOR)
    slow_close = Timeouts(first_token=2.0, idle=5.0, total=10.0, terminator_grace=0.1)
    request = Request(messages=HELLO.messages, stream=True)
    chunks = [c async for c in provider.stream(request, "m", slow_close)]
    await provider.close()
    assert chunks[-1].finish_reason is FinishReason.STOP or any(c.finish_reason for c in chunks)


@pytest.mark.parametrize("kind", sorted(FORMATS))
async def test_streamed_tool_call(primary: FakeProvider, kind: str) -> None:
    provider = adapter(primary, kind)
    tools = (ToolDefinition(name="lookup", description="find things"),)
    request = Request(messages=HELLO.messages, tools=tools, stream=True)
    chunks = [c async for c in provider.stream(request, "m", ROOMY)]
    await provider.close()
    answer = assemble(chunks, id="x", model="m")
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    (call,) = answer.message.tool_calls
    assert call.name == "lookup"
    assert json.loads(call.arguments) == {"input": "hello there"}
    assert call.id


async def test_fault_count_expires(primary: FakeProvider) -> None:
    provider = adapter(primary, "openai")
    primary.set_fault(Fault(mode=FaultMode.ERROR_503, count=1))
    with pytest.raises(Overloaded):
        await provider.complete(HELLO, "m", ROOMY)
    response = await provider.complete(HELLO, "m", ROOMY)
    await provider.close()
    assert response.finish_reason is FinishReason.STOP


async def test_connection_refused_is_connection_failed() -> None:
    fake = FakeProvider(name="gone")
    await fake.start()
    provider = adapter(fake, "openai")
    await fake.stop()
    with pytest.raises(ConnectionFailed):
        await provider.complete(HELLO, "m", FAST)
    await provider.close()


async def _raw_server(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


async def test_error_body_sent_in_pieces_keeps_its_type() -> None:
    """The whole error body is read, so a slowly sent context-length error stays typed."""
    body = json.dumps(
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
                "param": "messages",
            }
        }
    ).encode()

    async def slow_error(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=400, headers={"content-type": "application/json"})
        await resp.prepare(request)
        await resp.write(body[:20])
        await asyncio.sleep(0.05)
        await resp.write(body[20:])
        await resp.write_eof()
        return resp

    runner, url = await _raw_server(slow_error)
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=url, api_key="k")
    try:
        with pytest.raises(ContextTooLong):
            await provider.complete(HELLO, "m", FAST)
    finally:
        await provider.close()
        await runner.cleanup()


async def test_redirects_are_not_followed() -> None:
    """A redirect would carry the key (x-api-key etc.) and the prompt to another host."""
    followed: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.headers.get("x-api-key", ""))
        return web.json_response({})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(location=f"{other}/chat/completions")

    target, other = await _raw_server(elsewhere)
    runner, url = await _raw_server(redirect)
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=url, api_key="k")
    try:
        with pytest.raises(MalformedResponse, match="redirect"):
            await provider.complete(HELLO, "m", FAST)
    finally:
        await provider.close()
        await runner.cleanup()
        await target.cleanup()
    assert followed == []


async def test_pings_do_not_extend_the_first_token_deadline() -> None:
    """A provider that only sends keep-alive comments is cut at first_token, not at total."""

    async def pinger(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(100):  # bounded: 5 s at most
            await resp.write(b": ping\n\n")
            await asyncio.sleep(0.05)
        return resp

    runner, url = await _raw_server(pinger)
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=url, api_key="k")
    slow_total = Timeouts(first_token=0.3, idle=5.0, total=5.0)
    request = Request(messages=HELLO.messages, stream=True)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(ProviderTimeout) as caught:
            await drain(provider.stream(request, "m", slow_total), [])
    finally:
        await provider.close()
        await runner.cleanup()
    assert caught.value.phase == "first_token"
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_a_cookie_a_provider_sets_is_not_sent_on_later_requests() -> None:
    """One client session serves every caller of the gateway: a cookie set in one caller's
    answer (a CDN's session cookie) must not ride along on the next caller's request."""
    cookies: list[str | None] = []
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }

    async def sets_cookies(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        response = web.json_response(answer)
        response.set_cookie("session", "caller-one", path="/")
        return response

    runner, url = await _raw_server(sets_cookies)
    # By name: aiohttp's default jar ignores cookies from IP addresses, never from host names.
    named = url.replace("127.0.0.1", "localhost")
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=named, api_key="k")
    try:
        for _ in range(2):
            assert (await provider.complete(HELLO, "m", ROOMY)).message.content == "hi"
    finally:
        await provider.close()
        await runner.cleanup()
    assert cookies == [None, None]


async def test_connection_failures_say_why_without_the_address() -> None:
    """Refused, and TLS spoken to a plain-HTTP port: the reason, never the URL (it may carry a
    key, as Gemini's and Azure's do)."""

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({})

    runner, url = await _raw_server(plain)
    port = url.rsplit(":", 1)[1]
    cases = {
        f"http://127.0.0.1:{unused_port()}/v1?key=sk-in-url": "Connection refused",
        f"https://127.0.0.1:{port}/v1?key=sk-in-url": "TLS handshake failed (",
    }
    try:
        for base_url, reason in cases.items():
            provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=base_url)
            try:
                with pytest.raises(ConnectionFailed) as caught:
                    await provider.complete(HELLO, "m", FAST)
            finally:
                await provider.close()
            assert caught.value.message.startswith(f"could not connect: {reason}")
            assert "sk-in-url" not in str(caught.value)
            assert "127.0.0.1" not in str(caught.value)
    finally:
        await runner.cleanup()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key nobody trusts, made by the openssl command line."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_a_self_signed_certificate_is_named_as_the_reason(
    self_signed: tuple[Path, Path],
) -> None:
    """A TLS server the system does not trust: the reason is OpenSSL's verify message."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    provider = HttpProvider(
        name="p", codec=codec_for("openai"), base_url=f"https://127.0.0.1:{port}/v1"
    )
    try:
        with pytest.raises(ConnectionFailed) as caught:
            await provider.complete(HELLO, "m", FAST)
    finally:
        await provider.close()
        await runner.cleanup()
    assert caught.value.message == "could not connect: the server's TLS certificate: self-signed"


@pytest.mark.parametrize(
    ("code", "words"), [(62, "issued for another host name"), (64, "issued for another IP address")]
)
def test_a_certificate_mismatch_is_told_without_the_address(code: int, words: str) -> None:
    """OpenSSL's own verify message names the host or IP ("not valid for '10.0.0.5'"): the
    reason is given in fixed words instead. The error is built here as the ssl module raises it
    (a trusted certificate for another name needs a CA the system trusts)."""
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_code = code
    cause.verify_message = "IP address mismatch, certificate is not valid for '10.0.0.5'."
    err = _transport_error(TransportConnectFailed(connect_reason(cause)))
    assert err.message == f"could not connect: the server's TLS certificate: {words}"
    assert "10.0.0.5" not in str(err)


@pytest.mark.parametrize("kind", sorted(FORMATS))
async def test_an_unparseable_stream_event_is_skipped_counted_and_logged_once(
    primary: FakeProvider, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = adapter(primary, kind)
    primary.set_fault(Fault(mode=FaultMode.MALFORMED_CHUNK, after_chunks=2))
    chunks: list[StreamChunk] = []
    try:
        with caplog.at_level(logging.WARNING, logger="controller.providers.base"):
            await drain(provider.stream(STREAMED, "model-a", ROOMY), chunks)
    finally:
        await provider.close()
    assert "".join(c.text for c in chunks) == primary.answer(HELLO, "model-a").message.content
    assert any(c.finish_reason for c in chunks)
    assert provider.skipped_events == 1
    (record,) = [r for r in caplog.records if "unparseable stream event" in r.getMessage()]
    assert "sk-test" not in record.getMessage()


async def test_a_stream_of_nothing_but_bad_events_fails_as_malformed() -> None:
    async with RawServer(endless(SSE_HEAD, b'data: {"broken": \n\n')) as server:
        provider = hostile(server)
        try:
            with pytest.raises(MalformedResponse, match="unparseable: 17 of 17"):
                await drain(provider.stream(STREAMED, "model-a", FAST), [])
        finally:
            await provider.close()
    assert provider.skipped_events == 17


@pytest.mark.parametrize("kind", sorted(FORMATS))
async def test_a_stream_flowing_longer_than_idle_is_not_cut(kind: str) -> None:
    """Each read is bounded by ``idle`` from its own start, kept by one timer per stream that
    moves on with the reads: a stream whose chunks come well within ``idle`` of each other
    runs past ``idle`` in all (here 60 chunks 30 ms apart, ~1.8 s, against idle 1 s)."""
    reply = " ".join(f"w{i}" for i in range(60))
    timeouts = Timeouts(connect=5.0, first_token=10.0, idle=1.0, total=20.0)
    async with FakeProvider(name="paced", reply=reply, pace=0.03) as fake:
        provider = adapter(fake, kind)
        request = Request(messages=HELLO.messages, stream=True)
        chunks = [c async for c in provider.stream(request, "m", timeouts)]
        await provider.close()
    answer = assemble(chunks, id="x", model="m")
    assert answer.message.content == reply
    assert answer.finish_reason is FinishReason.STOP
