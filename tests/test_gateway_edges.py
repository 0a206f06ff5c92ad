"""The gateway's HTTP edges: requests no route serves, and requests a shutdown cuts.

An SDK user who calls an endpoint the gateway does not serve (``client.completions.create``,
``client.embeddings.create``) must get a typed error with a readable message, not aiohttp's
plain-text "404: Not Found". And a request still running when the shutdown grace period ends
must be cut within that grace (aiohttp alone would spend it twice), telling the client why in
its own format, so that a streaming SDK raises instead of returning a truncated answer.

Everything is real: a gateway on 127.0.0.1 over the fake providers, the official SDKs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from controller.events import Outcome
from controller.gateway import GatewaySettings
from controller.gateway._chat import SHUTTING_DOWN
from controller.providers import Timeouts
from controller.providers.fake import Fault, FaultMode
from tests.gateway_support import GatewayEnv, accepts, gateway_env, get, hello, wait_for
from tests.gateway_test_support import CHAT, MESSAGES
from tests.gateway_test_support import env as env  # fixtures: the aliases re-export them for pytest
from tests.gateway_test_support import http as http

USER: Any = [{"role": "user", "content": "hello"}]
# Nothing times the stream out for 10 s: only the shutdown can end it sooner.
SLOW = Timeouts(connect=2.0, first_token=10.0, idle=10.0, total=10.0, terminator_grace=0.1)
STALL = Fault(mode=FaultMode.STALL_STREAM, after_chunks=2)  # two words, then silence
HANG = Fault(mode=FaultMode.HANG)
GRACE = 0.5
STOP_BOUND = 2.0  # generous: the stop takes GRACE plus a little; this is not a benchmark
WAIT = 5.0  # bound on anything else that waits
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}  # what the Anthropic SDKs send


@asynccontextmanager
async def openai_client(env: GatewayEnv) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{env.url}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as client:
        yield client


@asynccontextmanager
async def anthropic_client(env: GatewayEnv) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        yield client


# ---------------------------------------------------------------- unknown URLs, wrong methods


async def test_openai_sdk_on_an_unserved_endpoint_gets_a_readable_not_found(
    env: GatewayEnv,
) -> None:
    async with openai_client(env) as oai:
        with pytest.raises(openai.NotFoundError) as completions:
            await oai.completions.create(model="gpt-test", prompt="hello")
        with pytest.raises(openai.NotFoundError) as embeddings:
            await oai.embeddings.create(model="gpt-test", input="hello")
    assert "Unknown request URL: POST /v1/completions." in completions.value.message
    assert "/v1/chat/completions" in completions.value.message  # says what is served instead
    assert completions.value.type == "invalid_request_error"
    assert "Unknown request URL: POST /v1/embeddings." in embeddings.value.message


async def test_anthropic_sdk_on_an_unserved_endpoint_gets_a_readable_not_found(
    env: GatewayEnv,
) -> None:
    async with anthropic_client(env) as claude:
        with pytest.raises(anthropic.NotFoundError) as batches:
            await claude.messages.batches.list()
    body: Any = batches.value.body
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["message"].startswith("Unknown request URL: GET /v1/messages/batches.")


@pytest.mark.parametrize(
    ("method", "path", "headers", "fmt"),
    [
        ("POST", "/v1/foo", {}, "openai"),
        ("GET", "/", {}, "openai"),
        ("POST", "/v1/foo", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("POST", "/v1/messages/batches", {}, "anthropic"),
    ],
)
async def test_an_unknown_url_is_a_404_in_the_callers_format(
    env: GatewayEnv,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    headers: dict[str, str],
    fmt: str,
) -> None:
    async with http.request(method, env.url + path, headers=headers, json={}) as answer:
        assert answer.status == 404
        body = await answer.json()
    message = f"Unknown request URL: {method} {path}."
    if fmt == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(message)
    else:
        assert body["type"] == "error"
        assert body["error"]["type"] == "not_found_error"
        assert body["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    ("path", "allow", "fmt"),
    [
        (CHAT, "POST", "openai"),
        (MESSAGES, "POST", "anthropic"),
        ("/v1/models", "GET,HEAD", "openai"),
    ],
)
async def test_a_wrong_method_is_a_405_in_the_callers_format(
    env: GatewayEnv, http: aiohttp.ClientSession, path: str, allow: str, fmt: str
) -> None:
    async with http.put(env.url + path, json={}) as answer:
        assert answer.status == 405
        assert answer.headers["Allow"] == allow
        body = await answer.json()
    error = body["error"]
    assert f"Invalid method for URL (PUT {path})" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert (body.get("type") == "error") is (fmt == "anthropic")


def _format_of(body: Any) -> str:
    if body.get("type") == "error":
        assert set(body["error"]) == {"type", "message"}
        return "anthropic"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return "openai"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "fmt"),
    [
        # The endpoint's own format, whatever the headers say (its other errors are in it too).
        ("POST", CHAT, ANTHROPIC_VERSION, 401, "openai"),
        ("PUT", CHAT, ANTHROPIC_VERSION, 405, "openai"),
        ("POST", MESSAGES, {}, 401, "anthropic"),
        ("POST", MESSAGES + "/count_tokens", {}, 401, "anthropic"),
        ("PUT", MESSAGES + "/count_tokens", {}, 405, "anthropic"),
        # Paths either SDK calls: the header decides.
        ("GET", "/v1/models", ANTHROPIC_VERSION, 401, "anthropic"),
        ("GET", "/v1/models", {}, 401, "openai"),
        ("GET", "/v1/models/claude-test", ANTHROPIC_VERSION, 401, "anthropic"),
        ("GET", "/v1/models/gpt-test", {}, 401, "openai"),
        ("PUT", "/v1/models", ANTHROPIC_VERSION, 405, "anthropic"),
    ],
)
async def test_the_path_decides_the_format_where_it_can_and_the_header_elsewhere(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    fmt: str,
) -> None:
    wrong_key = {"x-api-key": "sk-wrong", **headers}
    keyed = GatewaySettings(api_keys=("sk-right",))
    async with (
        gateway_env(settings=keyed) as env,
        http.request(method, env.url + path, headers=wrong_key, json={}) as answer,
    ):
        assert answer.status == status
        body = await answer.json()
    assert _format_of(body) == fmt


async def test_the_operational_paths_are_unchanged(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    async with http.post(env.url + "/healthz") as answer:
        assert (answer.status, answer.headers["Allow"]) == (405, "GET,HEAD")
        assert await answer.text() == "405: Method Not Allowed"  # aiohttp's own, as before
    assert await get(http, env.url + "/healthz") == (200, {"status": "ok"})
    assert (await get(http, env.url + "/readyz"))[0] == 200
    assert (await get(http, env.url + "/metrics"))[0] == 200
    status, page = await get(http, env.url + "/status")
    assert status == 200
    assert "<html" in page.lower()


# ---------------------------------------------------------------- requests cut by the shutdown


async def _stop_timed(env: GatewayEnv, caplog: pytest.LogCaptureFixture) -> float:
    """Stop the gateway; how long it took (real seconds: the grace period is real time).

    Nothing may log an error meanwhile: aiohttp logged an "Unhandled exception" traceback
    (InvalidStateError) for each cut request when its own deadline fell on the cut."""
    loop = asyncio.get_running_loop()
    seen = len(caplog.records)
    began = loop.time()
    async with asyncio.timeout(WAIT):
        await env.server.stop()
    took = loop.time() - began
    assert not accepts(env.url)
    errors = [r for r in caplog.records[seen:] if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage()) for r in errors]
    return took


async def _cut_while(
    env: GatewayEnv,
    call: asyncio.Future[Any],
    ready: Callable[[], bool],
    caplog: pytest.LogCaptureFixture,
) -> float:
    """Once ``ready()`` holds while ``call`` (a client's request) runs, stop the gateway; how
    long the stop took."""
    await wait_for(lambda: ready() or call.done(), within=WAIT)
    assert not call.done(), call.result()
    return await _stop_timed(env, caplog)


async def _outcome(call: asyncio.Future[Any]) -> Any:
    async with asyncio.timeout(WAIT):
        return await call


async def test_an_openai_stream_cut_by_the_shutdown_raises_in_the_sdk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with gateway_env(grace=GRACE, timeouts=SLOW) as env, openai_client(env) as oai:
        env.primary.set_fault(STALL)
        texts: list[str] = []

        async def read() -> None:
            stream = await oai.chat.completions.create(model="gpt-test", messages=USER, stream=True)
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - seen live

        call = asyncio.ensure_future(read())
        took = await _cut_while(env, call, lambda: len(texts) >= 3, caplog)  # role chunk, two words
        with pytest.raises(openai.APIError) as cut:
            await _outcome(call)
        assert env.recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert took < STOP_BOUND
    assert cut.value.message == SHUTTING_DOWN.message
    assert "".join(texts) == "Hello from"


async def test_an_anthropic_stream_cut_by_the_shutdown_raises_overloaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with gateway_env(grace=GRACE, timeouts=SLOW) as env, anthropic_client(env) as claude:
        env.primary.set_fault(STALL)
        kinds: list[str] = []

        async def read() -> None:
            stream = await claude.messages.create(
                model="claude-test", max_tokens=64, messages=USER, stream=True
            )
            async for event in stream:
                kinds.append(event.type)  # noqa: PERF401 - seen while streaming

        call = asyncio.ensure_future(read())
        took = await _cut_while(env, call, lambda: kinds.count("content_block_delta") >= 2, caplog)
        with pytest.raises(anthropic.APIStatusError) as cut:
            await _outcome(call)
        assert env.recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert took < STOP_BOUND
    body: Any = cut.value.body
    assert body["error"] == {"type": "overloaded_error", "message": SHUTTING_DOWN.message}
    assert "message_stop" not in kinds


async def test_a_stream_outliving_the_grace_is_cut_within_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's shutdown_timeout alone let a stream run for twice the grace (2.4 s here)."""
    grace = 1.2
    async with gateway_env(grace=grace, timeouts=SLOW) as env, aiohttp.ClientSession() as http:
        env.primary.set_fault(STALL)
        async with http.post(env.url + CHAT, json=hello(stream=True)) as answer:
            await answer.content.readuntil(b"\n\n")  # the stream has started
            took = await _stop_timed(env, caplog)
            with pytest.raises(aiohttp.ClientPayloadError):  # the connection was cut
                await answer.read()
    assert grace - 0.05 <= took < STOP_BOUND  # the grace was given, and given once


async def test_a_request_still_waiting_for_a_provider_gets_a_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with gateway_env(grace=GRACE, timeouts=SLOW) as env, openai_client(env) as oai:
        env.primary.set_fault(HANG)
        call = asyncio.ensure_future(oai.chat.completions.create(model="gpt-test", messages=USER))
        took = await _cut_while(env, call, lambda: env.primary.requests == 1, caplog)
        with pytest.raises(openai.InternalServerError) as cut:
            await _outcome(call)
        assert took < STOP_BOUND
        await wait_for(lambda: bool(env.recorder.attempts))
        assert env.recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert cut.value.status_code == 503
    assert SHUTTING_DOWN.message in cut.value.message
    # Retry (another replica takes it), soon: nothing better than the default is known.
    assert cut.value.response.headers["x-should-retry"] == "true"
    assert cut.value.response.headers["Retry-After"] == "1"


async def test_a_count_still_waiting_for_a_provider_gets_a_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A count is cut like a chat request, and answered like one (it was a dropped connection)."""
    async with gateway_env(grace=GRACE, timeouts=SLOW) as env, anthropic_client(env) as claude:
        env.primary.set_fault(HANG)  # serves tier claude in Anthropic's format: it is asked
        call = asyncio.ensure_future(
            claude.messages.count_tokens(model="claude-test", messages=USER)
        )
        took = await _cut_while(env, call, lambda: env.primary.requests == 1, caplog)
        with pytest.raises(anthropic.APIStatusError) as cut:
            await _outcome(call)
    assert took < STOP_BOUND
    assert cut.value.status_code == 503
    body: Any = cut.value.body
    assert body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": SHUTTING_DOWN.message},
    }
