"""The gateway over raw HTTP, in the caller's format: bad input, provider failures, streams,
graceful shutdown and the public status table.

Everything is real: the gateway listens on 127.0.0.1, routes through a real Router to real fake
providers, and the requests below are plain aiohttp client calls.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest

from controller import _errors as e
from controller.control.state import KillSwitch, RoutingState
from controller.events import Outcome
from controller.gateway import GatewaySettings, create_app, serve
from controller.gateway._formats import ANTHROPIC, OPENAI, public_error
from controller.providers.fake import Fault, FaultMode
from tests.gateway_support import (
    FAST_TIMEOUTS,
    GatewayEnv,
    accepts,
    assert_still_serving,
    gateway_env,
    get,
    hello,
    hello_anthropic,
    post,
    read_stream,
    sse_events,
    wait_for,
)
from tests.gateway_test_support import CHAT, MESSAGES
from tests.gateway_test_support import env as env  # fixtures: the aliases re-export them for pytest
from tests.gateway_test_support import http as http

# ---------------------------------------------------------------- bad input, in the caller's format


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["broken", "empty", "binary", "deep"],
)
async def test_malformed_json_is_a_400_in_openai_format(
    env: GatewayEnv, http: aiohttp.ClientSession, raw: bytes
) -> None:
    status, body, _ = await post(http, env.url + CHAT, raw)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]
    await assert_still_serving(env, http)


async def test_a_deeply_nested_tool_schema_is_forwarded(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(150):  # 300 JSON levels: more than orjson writes, what json always did
        schema = {"type": "object", "properties": {"inner": schema}}
    tool = {"type": "function", "function": {"name": "deep", "parameters": schema}}
    status, body, _ = await post(http, env.url + CHAT, {**hello(), "tools": [tool]})
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] in {"stop", "tool_calls"}


async def test_malformed_json_is_a_400_in_anthropic_format(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, env.url + MESSAGES, b'{"model": ')
    assert status == 400
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    await assert_still_serving(env, http)


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        (CHAT, {"model": "gpt-test"}, "'messages'"),
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "'model'"),
        (CHAT, [1, 2, 3], "body"),
        (CHAT, hello(messages=[{"role": "wizard", "content": "x"}]), "role"),
        (MESSAGES, {"model": "claude-test", "messages": []}, "max_tokens"),
        (MESSAGES, hello_anthropic(messages="hi"), "messages"),
    ],
)
async def test_missing_or_wrong_fields_are_a_400_naming_the_field(
    env: GatewayEnv, http: aiohttp.ClientSession, path: str, body: Any, names: str
) -> None:
    status, answer, _ = await post(http, env.url + path, body)
    assert status == 400
    message = answer["error"]["message"]
    assert names in message
    if path == MESSAGES:
        assert answer["type"] == "error"
    assert env.primary.requests == 0  # nothing bad is forwarded


async def test_unknown_model_is_a_404_in_each_format(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, env.url + CHAT, hello(model="gpt-nope"))
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["type"] == "invalid_request_error"
    assert "gpt-nope" in body["error"]["message"]
    assert "gpt-test" in body["error"]["message"]  # says what exists
    status, body, _ = await post(http, env.url + MESSAGES, hello_anthropic(model="claude-nope"))
    assert status == 404
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert env.primary.requests == 0


async def test_oversized_body_is_a_413_and_the_gateway_keeps_serving(
    http: aiohttp.ClientSession,
) -> None:
    async with gateway_env(settings=GatewaySettings(max_body_bytes=4096)) as env:
        big = hello(messages=[{"role": "user", "content": "x" * 10_000}])
        status, body, _ = await post(http, env.url + CHAT, big)
        assert status == 413
        assert body["error"]["type"] == "invalid_request_error"
        assert "4096" in body["error"]["message"]
        status, body, _ = await post(http, env.url + MESSAGES, hello_anthropic(system="y" * 9000))
        assert status == 413
        assert body["error"]["type"] == "request_too_large"
        await assert_still_serving(env, http)
        assert env.primary.requests == 1


# ---------------------------------------------------------------- provider failures → statuses


@pytest.mark.parametrize(
    ("mode", "status", "kind"),
    [
        (FaultMode.RATE_LIMIT, 429, "requests"),
        (FaultMode.ERROR_500, 503, "server_error"),
        (FaultMode.AUTH, 502, "server_error"),
        (FaultMode.MALFORMED_BODY, 503, "server_error"),
    ],
)
async def test_all_providers_failing_maps_the_last_error_to_a_status(
    env: GatewayEnv, http: aiohttp.ClientSession, mode: FaultMode, status: int, kind: str
) -> None:
    for fake in (env.primary, env.backup):
        fake.set_fault(Fault(mode=mode, retry_after=7))
    got, body, headers = await post(http, env.url + CHAT, hello())
    assert got == status
    assert body["error"]["type"] == kind
    message = body["error"]["message"]
    assert "primary-openai" in message
    assert "backup-anthropic" in message  # names what was tried
    if mode is FaultMode.AUTH:  # named, but the upstream's text about its key is not relayed
        assert "rejected the gateway's credentials (HTTP 401)" in message
        assert "invalid api key" not in message
    # 429: the provider's Retry-After; 503: the gateway's (nothing known here: 1 s); 502: none.
    assert headers.get("Retry-After") == {429: "7", 503: "1"}.get(status)
    assert headers.get("x-should-retry") == ("true" if status in (429, 503) else None)


async def test_timeouts_everywhere_are_a_504(http: aiohttp.ClientSession) -> None:
    async with gateway_env(timeouts=FAST_TIMEOUTS) as env:
        env.primary.set_fault(FaultMode.HANG)
        env.backup.set_fault(FaultMode.HANG)
        status, body, _ = await post(http, env.url + MESSAGES, hello_anthropic())
        assert status == 504
        assert body["error"]["type"] == "timeout_error"


async def test_provider_refusal_is_a_400_with_its_reason_and_no_failover(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    env.primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
    status, body, headers = await post(http, env.url + CHAT, hello())
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert "prompt is too long" in body["error"]["message"]
    assert headers["x-failover-provider"] == "primary-openai"
    assert env.backup.requests == 0
    env.primary.set_fault(FaultMode.CONTENT_FILTER)
    status, body, _ = await post(http, env.url + MESSAGES, hello_anthropic())
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "content filter" in body["error"]["message"]


async def test_kill_switch_leaving_no_candidate_is_a_503(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    disable = KillSwitch(disable=("primary-openai", "backup-anthropic"))
    env.state.publish(RoutingState().evolve(changed_by="test", now=0.0, kill_switch=disable))
    status, body, _ = await post(http, env.url + CHAT, hello())
    assert status == 503
    assert "kill switch" in body["error"]["message"]


# ---------------------------------------------------------------- streams


async def test_stream_is_sse_in_the_callers_format(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    async with http.post(env.url + CHAT, json=hello(stream=True)) as answer:
        assert answer.headers["Content-Type"] == "text/event-stream"
        assert answer.headers["x-failover-provider"] == "primary-openai"
        assert answer.headers["x-failover-model"] == "gpt-big"
        raw = await answer.read()
    events = sse_events(raw)
    assert events[-1] == ("", "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["model"] for c in chunks} == {"gpt-big"}  # the model that served
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("Hello from primary")


async def test_stream_failing_before_first_chunk_gets_a_status(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    env.primary.set_fault(FaultMode.RATE_LIMIT_BARE)
    env.backup.set_fault(FaultMode.RATE_LIMIT_BARE)
    status, raw = await read_stream(http, env.url + MESSAGES, hello_anthropic(stream=True))
    assert status == 429
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"


async def test_mid_stream_cut_ends_with_an_error_event_and_no_terminator(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    """Cut after "Hello from primary.", the backup's restart begins "Hello from backup.": it
    cannot continue what was delivered, so the stream ends with the format's error event."""
    env.primary.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
    status, raw = await read_stream(http, env.url + CHAT, hello(stream=True))
    assert status == 200
    events = sse_events(raw)
    assert ("", "[DONE]") not in events
    assert "error" in json.loads(events[-1][1])
    status, raw = await read_stream(http, env.url + MESSAGES, hello_anthropic(stream=True))
    events = sse_events(raw)
    assert events[-1][0] == "error"
    assert "message_stop" not in [name for name, _ in events]
    assert env.backup.requests == 2  # one restart per stream, each said something else


async def test_client_disconnect_mid_stream_cancels_the_attempt(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    async with http.post(env.url + CHAT, json=hello(model="gated-test", stream=True)) as answer:
        await answer.content.readuntil(b"\n\n")  # the role chunk
        await env.gated.started.wait()
    # leaving the block closed the connection mid-stream
    await wait_for(lambda: bool(env.recorder.attempts))
    (attempt,) = env.recorder.attempts
    assert attempt.provider == "gated"
    assert attempt.outcome is Outcome.CANCELLED


async def test_graceful_shutdown_lets_an_in_flight_stream_finish(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    async with http.post(env.url + CHAT, json=hello(model="gated-test", stream=True)) as answer:
        await env.gated.started.wait()
        stopping = asyncio.create_task(env.server.stop())
        await wait_for(lambda: not accepts(env.url))
        env.gated.release()
        raw = await answer.read()
    await stopping
    events = sse_events(raw)
    assert events[-1] == ("", "[DONE]")
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or "" for _, d in events[:-1]
    )
    assert text == "first second"
    assert env.recorder.attempts[-1].outcome is Outcome.SUCCESS


async def test_shutdown_cancels_a_stream_that_outlives_the_grace(
    http: aiohttp.ClientSession,
) -> None:
    async with gateway_env(grace=0.2) as env:
        async with http.post(env.url + CHAT, json=hello(model="gated-test", stream=True)) as ans:
            await env.gated.started.wait()
            await env.server.stop()  # the gate is never released
            with pytest.raises(aiohttp.ClientPayloadError):
                await ans.read()
        await wait_for(lambda: bool(env.recorder.attempts))
        assert env.recorder.attempts[-1].outcome is Outcome.CANCELLED


# ---------------------------------------------------------------- the status table, directly


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (e.AllProvidersFailed("x", attempts=(e.RateLimited("slow down", retry_after=3),)), 429),
        (e.AllProvidersFailed("x", attempts=(e.Overloaded("busy", status=529),)), 503),
        (e.AllProvidersFailed("x", attempts=(e.ConnectionFailed("reset"),)), 503),
        (e.AllProvidersFailed("x", attempts=(e.MalformedResponse("garbage"),)), 503),
        (e.AllProvidersFailed("x", attempts=(e.AuthFailed("bad key", status=403),)), 502),
        (
            e.AllProvidersFailed("x", attempts=(e.ProviderTimeout("slow", phase="idle"),)),
            504,
        ),
        (e.AllProvidersFailed("kill switch disables every provider"), 503),
        (e.DeadlineExceeded("late", attempts=(e.Overloaded("busy", status=500),)), 503),
        (e.DeadlineExceeded("late"), 504),
        (e.BadRequest("no such model upstream", status=404), 400),
        (e.ContextTooLong("too long", status=400), 400),
    ],
)
def test_public_error_status_table(exc: e.FailoverError, status: int) -> None:
    for front in (OPENAI, ANTHROPIC):
        assert front.error(public_error(exc)).status == status


def test_public_error_keeps_retry_after() -> None:
    exc = e.AllProvidersFailed("x", attempts=(e.RateLimited("slow down", retry_after=3),))
    assert OPENAI.error(public_error(exc)).headers["Retry-After"] == "3"


def test_settings_validate_once() -> None:
    with pytest.raises(ValueError, match="tuple"):
        GatewaySettings(api_keys="sk-one")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        GatewaySettings(api_keys=("",))
    with pytest.raises(ValueError, match="max_body_bytes"):
        GatewaySettings(max_body_bytes=10)
    assert GatewaySettings().max_body_bytes == 4 * 1024 * 1024


async def test_serve_runs_until_stopped(http: aiohttp.ClientSession) -> None:
    async with gateway_env() as env:
        app = create_app(env.backend, settings=GatewaySettings())
        with socket.socket() as probe:  # a free port for serve(), which takes a fixed one
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        stop = asyncio.Event()
        task = asyncio.create_task(serve(app, "127.0.0.1", port, grace=1.0, stop=stop))
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: accepts(url))
        assert (await get(http, url + "/healthz"))[0] == 200
        stop.set()
        await task
        assert not accepts(url)
