"""A secret never leaves the gateway in a provider's words (issue 16, row 6 and must-have 2).

The scrubber on its own (what it masks, what it leaves), then a hostile provider whose 400 quotes
the request it got (the gateway's key in its headers) and every other secret the gateway holds,
through the real front in both formats: the client's answer, the log, the attempt event (what the
span and the alerts read) and the span itself hold none of them.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp
import aiohttp.web
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller._redact import hold, scrub
from controller.gateway import GatewayServer, GatewaySettings, create_admin_app, create_app
from controller.notify import Secret
from controller.notify._secret import protect
from controller.providers import Timeouts
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry.otel import PresetIdGenerator, TelemetryListener
from tests.conftest import Recorder
from tests.gateway_support import GatewayTestBackend
from tests.hostile_support import KEY, echoing_error, hostile
from tests.http_client_support import RawServer

CLIENT_KEY = "client-key-for-redaction-0001"
ADMIN_TOKEN = "admin-token-for-redaction-0002"
WEBHOOK = "https://hooks.slack.test/services/T000/B000/redactionsecret0003"
BOT_TOKEN = "123456789:bot-token-for-redaction-0004"
SECRETS = (KEY, CLIENT_KEY, ADMIN_TOKEN, WEBHOOK, BOT_TOKEN, "other-provider-key-0005")
FORMATS = {"openai": ("/v1/chat/completions", "gpt"), "anthropic": ("/v1/messages", "claude")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123456", "Authorization: Bearer ***"),
        ('{"x-api-key": "k-123456789", "n": 1}', '{"x-api-key": "***", "n": 1}'),
        ("proxy-authorization: Basic dXNlcjpwYXNz", "proxy-authorization: Basic ***"),
        ("x-goog-api-key=AIza-ish&x=1", "x-goog-api-key=***&x=1"),
        ("token bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "token bearer ***"),
        ("bad key sk-proj-abcdefghijklmnop1234", "bad key ***"),
        ("https://h/v1beta/m:gen?key=AIzaSyXX&alt=sse", "https://h/v1beta/m:gen?key=***&alt=sse"),
        ("The API key is missing; max_tokens: 5", "The API key is missing; max_tokens: 5"),
    ],
)
def test_credential_shaped_values_are_masked(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_held_secrets_are_masked_and_short_ones_left() -> None:
    hold("held-secret-value-for-test", "ollama", None)
    assert scrub("x held-secret-value-for-test y ollama") == "x *** y ollama"


def _router(provider_kind: str, server: RawServer, recorder: Recorder, listener: object) -> Router:
    provider = hostile(server, provider_kind)
    tier = TierPlan(name="t", targets=(Target(provider=provider.name, model="m"),))
    return Router(
        tiers={FORMATS[provider_kind][1]: tier},
        providers={provider.name: provider},
        listeners=[recorder, listener],  # type: ignore[list-item]
        retry=never_retry,
        default_timeouts=Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0),
        rng=random.Random(1),
    )


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_provider_quoting_every_secret_reaches_nobody(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    protect(Secret(WEBHOOK))
    protect(Secret(BOT_TOKEN))
    spans = InMemorySpanExporter()
    tracing = TracerProvider(id_generator=(ids := PresetIdGenerator()))
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    tracer, meter = tracing.get_tracer("t"), MeterProvider().get_meter("t")
    recorder = Recorder()
    extra = f"{CLIENT_KEY} {ADMIN_TOKEN} {WEBHOOK} {BOT_TOKEN} x-api-key: {SECRETS[-1]}"
    async with asyncio.timeout(20), RawServer(echoing_error(kind, extra)) as server:
        telemetry = TelemetryListener(tracer=tracer, meter=meter, ids=ids)
        router = _router(kind, server, recorder, telemetry)
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        app = create_app(backend, settings=GatewaySettings(api_keys=(CLIENT_KEY,)))
        create_admin_app(backend, admin_token=ADMIN_TOKEN)  # holds the admin token
        async with (
            GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as front,
            aiohttp.ClientSession() as http,
        ):
            path, model = FORMATS[kind]
            body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
            headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
            async with http.post(front.url + path, json=body, headers=headers) as resp:
                status, answer = resp.status, await resp.text()
        await router.aclose()
    assert status == 400
    assert "could not read your request" in answer  # the provider's reason still reaches it
    assert KEY in server.requests[0].decode()  # the provider did get the key it quoted
    said = [answer, caplog.text, recorder.attempts[0].error_message or ""]
    said += [str(span.status.description) + str(span.events) for span in spans.get_finished_spans()]
    for text in said:
        assert not [s for s in SECRETS if s in text], text


async def test_a_malformed_client_header_gets_a_short_400_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Row 8 of the issue: aiohttp's own 400 quoted the header, the client's key in it, in
    the body and in an ERROR traceback."""
    caplog.set_level(logging.DEBUG)
    app = aiohttp.web.Application()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\x01\r\nContent-Length: 2\r\n\r\n{}"
    )
    async with (
        asyncio.timeout(10),
        GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as front,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(request)
        answer = await reader.read()  # the connection is closed after the 400
        writer.close()
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert answer.endswith(b"\r\n\r\n400 Bad Request: malformed HTTP request\n")
    assert CLIENT_KEY not in caplog.text
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.exc_info) for r in loud] == [("WARNING", None)]


async def test_a_tls_hello_on_the_plain_port_is_refused_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not HTTP at all (a TLS client, a scanner): refused, logged at DEBUG only, as aiohttp
    does, so the internet's noise does not fill the log."""
    caplog.set_level(logging.DEBUG)
    async with (
        asyncio.timeout(10),
        GatewayServer(aiohttp.web.Application(), host="127.0.0.1", port=0, grace=1.0) as front,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n")
        answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("refused a malformed request" in r.getMessage() for r in caplog.records)
