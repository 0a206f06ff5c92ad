"""What the gateway tells a client about retrying, in the headers the official SDKs obey.

A final 4xx says ``x-should-retry: false`` (a client such as Claude Code otherwise retries a
wrong key for a minute); the gateway's own 429 and 503 say ``true`` with a ``Retry-After`` in
whole seconds, taken from what the controller knows: when a provider out of rotation in that
tier is looked at again. Real HTTP on loopback throughout; the controller case runs a Runtime on
a FakeClock and ticks it by hand, so cool-offs and probe intervals are exact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.trace import SpanKind

from controller._clock import FakeClock
from controller.config import parse_config
from controller.control.state import HealthState
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.gateway_support import GatewayEnv, gateway_env, hello, hello_anthropic
from tests.gateway_test_support import CHAT, MESSAGES
from tests.telemetry_support import FAILED

USER: Any = [{"role": "user", "content": "hi"}]
KEYED = GatewaySettings(api_keys=("sk-right",), max_body_bytes=4096)


def requests_served(env: GatewayEnv, route: str) -> int:
    """How many requests for ``route`` reached the gateway (its SERVER spans)."""
    spans = env.exporter.get_finished_spans()
    return sum(1 for s in spans if s.kind is SpanKind.SERVER and s.name == route)


# ---------------------------------------------------------------- final 4xx answers


async def test_the_openai_sdk_does_not_retry_a_wrong_gateway_key() -> None:
    async with gateway_env(settings=KEYED) as env:
        base = f"{env.url}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong") as client:
            assert client.max_retries == 2  # the SDK's default: it retries what it may
            with pytest.raises(openai.AuthenticationError) as denied:
                await client.chat.completions.create(model="gpt-test", messages=USER)
        assert denied.value.response.headers["x-should-retry"] == "false"
        assert requests_served(env, "POST /v1/chat/completions") == 1


async def test_the_anthropic_sdk_does_not_retry_a_wrong_gateway_key() -> None:
    async with gateway_env(settings=KEYED) as env:
        async with anthropic.AsyncAnthropic(base_url=env.url, api_key="sk-ant-wrong") as client:
            assert client.max_retries == 2
            with pytest.raises(anthropic.AuthenticationError) as denied:
                await client.messages.create(model="claude-test", max_tokens=8, messages=USER)
        assert denied.value.response.headers["x-should-retry"] == "false"
        assert requests_served(env, "POST /v1/messages") == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", CHAT, b"{not json", 400),
        ("POST", CHAT, hello(messages=[]), 400),
        ("POST", MESSAGES, hello_anthropic(system="x" * 5000), 413),
        ("POST", CHAT, hello(model="gpt-unknown"), 404),
        ("POST", MESSAGES, hello_anthropic(model="claude-unknown"), 404),
        ("GET", "/v1/models/gpt-unknown", None, 404),
        ("POST", "/v1/embeddings", {"input": "hi"}, 404),
        ("GET", CHAT, None, 405),
    ],
)
async def test_every_final_4xx_says_not_to_retry(
    method: str, path: str, body: Any, status: int
) -> None:
    async with gateway_env(settings=KEYED) as env, aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        headers = {"Authorization": "Bearer sk-right", "Content-Type": "application/json"}
        async with http.request(method, env.url + path, data=data, headers=headers) as answer:
            assert answer.status == status
            assert answer.headers["x-should-retry"] == "false"
            assert "Retry-After" not in answer.headers
            assert "error" in await answer.json()  # the body format is unchanged


async def test_a_provider_refusal_is_final_too() -> None:
    async with gateway_env() as env, aiohttp.ClientSession() as http:
        env.primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
        async with http.post(env.url + CHAT, json=hello()) as answer:
            assert answer.status == 400
            assert answer.headers["x-should-retry"] == "false"


async def test_a_503_says_retry_after_the_estimate_the_backend_gives() -> None:
    async with gateway_env() as env, aiohttp.ClientSession() as http:
        env.primary.set_fault(FaultMode.ERROR_503)
        env.backup.set_fault(FaultMode.ERROR_503)
        env.backend.retry_wait = 2.2
        async with http.post(env.url + MESSAGES, json=hello_anthropic()) as answer:
            assert answer.status == 503
            assert (answer.headers["Retry-After"], answer.headers["x-should-retry"]) == (
                "3",
                "true",
            )
            assert (await answer.json())["error"]["type"] == "overloaded_error"
        assert env.backend.retry_asked == [("primary-anthropic", "backup-openai")]


# ---------------------------------------------------------------- the controller's estimate

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: anthropic, base_url: "{backup}"}}
  elsewhere: {{kind: openai, base_url: "{primary}"}}
  spare: {{kind: openai, base_url: "{primary}"}}
tiers:
  both:
    targets:
      - {{provider: primary, model: p-model}}
      - {{provider: backup, model: b-model}}
  other:
    targets: [{{provider: elsewhere, model: e-model}}, {{provider: spare, model: s-model}}]
routing: {{retry: {{max_tries_per_provider: 1}}}}
controller:
  consecutive_failures: 3
  cooloff_seconds: 30
  probe_interval_seconds: 4
state: {{path: "{state}"}}
"""


@asynccontextmanager
async def runtime_gateway(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> AsyncIterator[tuple[Runtime, FakeClock, str]]:
    text = CONFIG.format(
        primary=primary.url("openai"), backup=backup.url("anthropic"), state=tmp_path / "s.json"
    )
    clock = FakeClock()
    runtime = Runtime(parse_config(text), env={}, clock=clock)
    try:
        app = create_app(runtime, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
            yield runtime, clock, server.url
    finally:
        await runtime.stop(grace=0.5)


def trip(runtime: Runtime, provider: str) -> None:
    """Three faults in a row, then a tick: ``provider`` is out of rotation."""
    for _ in range(3):
        runtime.windows.on_attempt(dataclasses.replace(FAILED, provider=provider))
    runtime.controller.tick()
    assert runtime.holder.current.status(provider).state is HealthState.TRIPPED


async def retry_advice(client: openai.AsyncOpenAI) -> tuple[str, str]:
    """(Retry-After, x-should-retry) of the 503 a chat request to tier ``both`` gets."""
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="both", messages=USER)
    assert failed.value.status_code == 503
    headers = failed.value.response.headers
    return headers["Retry-After"], headers["x-should-retry"]


async def test_an_all_down_503_says_when_the_controller_looks_again(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    primary.set_fault(FaultMode.ERROR_503)
    backup.set_fault(FaultMode.ERROR_503)
    async with (
        runtime_gateway(tmp_path, primary, backup) as (runtime, clock, url),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0) as client,
    ):
        assert await retry_advice(client) == ("1", "true")  # all in rotation: nothing known
        trip(runtime, "elsewhere")  # out of rotation in another tier: not this request's
        clock.advance(12)
        trip(runtime, "primary")
        clock.advance(10)
        # The request goes to backup only (primary is out) and fails. Primary's cool-off of
        # 30 s has 20 s left, then it is probed (elsewhere's 8 s are another tier's).
        assert await retry_advice(client) == ("20", "true")
        clock.advance(20)
        runtime.controller.tick()  # the cool-off is over: probing; the first probe starts now
        assert runtime.holder.current.status("primary").state is HealthState.PROBING
        clock.advance(1)
        assert await retry_advice(client) == ("3", "true")  # the next probe in 4 - 1 s
