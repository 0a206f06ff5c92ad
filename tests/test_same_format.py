"""The same-format route through the gateway, judged by the official SDKs and a recording
upstream: what a client sends reaches a provider of its own format byte for byte (except the
model value), and what that provider answers reaches the client as it came. A provider of
another format is skipped when it cannot honour the request, or serves it without a feature the
config lets it drop (counted); a 400 names the field when no provider of the tier can.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import pydantic
import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider

from controller.control.state import HealthState, ProviderStatus, RoutingState
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry import names
from tests.conftest import Recorder
from tests.gateway_support import GatewayTestBackend
from tests.telemetry_support import Harness, make_harness

PROVIDER_KEY = "sk-gateway-provider-key"
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
    "rkJggg=="
)
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"

# ---------------------------------------------------------------- canned upstream answers


def _sse(*events: tuple[str, Any]) -> bytes:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


OPENAI_WHOLE = json.dumps(
    {
        "id": "chatcmpl-up1",
        "object": "chat.completion",
        "created": 1760000000,
        "model": "gpt-real-2025-08-07",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": '{"city":"Paris","temp_c":21}',
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": {"content": [{"token": "{", "logprob": -0.01, "bytes": [123]}]},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 9,
            "total_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_up",
        "x_future_answer_field": {"kept": [1, 2]},
    },
    indent=1,  # not how we would write it: the client must get these bytes, not ours
).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    frame = {"id": "chatcmpl-up2", "object": "chat.completion.chunk", "created": 1760000000}
    return frame | {"model": "gpt-real-2025-08-07", "choices": [choice], **extra}


OPENAI_USAGE_EVENT = _sse(
    (
        "",
        {
            "id": "chatcmpl-up2",
            "object": "chat.completion.chunk",
            "created": 1760000000,
            "model": "gpt-real-2025-08-07",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    )
)
OPENAI_STREAM_HEAD = _sse(
    ("", _chunk({"role": "assistant", "content": ""}, obfuscation="ab")),
    ("", _chunk({"content": "Bon"}, obfuscation="cd")),
    ("", _chunk({"content": "jour"})),
    ("", _chunk({}, "stop")),
)
OPENAI_STREAM = OPENAI_STREAM_HEAD + OPENAI_USAGE_EVENT + _sse(("", "[DONE]"))

ANTHROPIC_WHOLE = json.dumps(
    {
        "id": "msg_up1",
        "type": "message",
        "role": "assistant",
        "model": "claude-real-20251001",
        "content": [
            {"type": "thinking", "thinking": "The user wants...", "signature": "EqQBCgIYAhIM"},
            {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {"query": "weather Paris"},
            },
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {
                "type": "text",
                "text": "It is sunny.",
                "citations": [{"type": "web_search_result_location", "url": "u", "title": "t"}],
            },
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 900,
            "cache_read_input_tokens": 3000,
            "output_tokens": 40,
            "server_tool_use": {"web_search_requests": 1},
        },
        "container": None,
    },
    indent=2,
).encode()

_MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_up2",
        "type": "message",
        "role": "assistant",
        "model": "claude-real-20251001",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "cache_read_input_tokens": 3000, "output_tokens": 1},
    },
}
ANTHROPIC_STREAM = _sse(
    ("message_start", _MESSAGE_START),
    ("ping", {"type": "ping"}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Let me think."},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "Sunny."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)
_THINKING_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
}


def _thinking_delta(text: str) -> tuple[str, Any]:
    delta = {"type": "thinking_delta", "thinking": text}
    return ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})


THINKING_EVENTS = [
    _sse(("message_start", _MESSAGE_START)),
    _sse(("content_block_start", _THINKING_START)),
    *(_sse(_thinking_delta(f"step {i}. ")) for i in range(9)),
]
# ANTHROPIC_STREAM from its signature delta on (after the first thinking delta)
ANTHROPIC_STREAM_AFTER_THINKING = ANTHROPIC_STREAM[
    ANTHROPIC_STREAM.rindex(b"event:", 0, ANTHROPIC_STREAM.index(b'"signature_delta"')) :
]
ANTHROPIC_BIG_THINKING = (
    _sse(("message_start", _MESSAGE_START), ("content_block_start", _THINKING_START))
    + b"".join(_sse(_thinking_delta("x" * 100_000)) for _ in range(13))
    + ANTHROPIC_STREAM_AFTER_THINKING
)

# Opens a message, then fails before any content: must fail over with nothing relayed.
ANTHROPIC_BROKEN_STREAM = _sse(
    ("message_start", _MESSAGE_START),
    ("ping", {"type": "ping"}),
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
)

# Headers of every upstream answer: the first three reach the client, the account's name not.
ANSWERED = {
    "request-id": "req_up_123",
    "anthropic-ratelimit-requests-remaining": "99",
    "x-ratelimit-remaining-tokens": "5000",
    "openai-organization": "the-gateway-account",
}

# ---------------------------------------------------------------- the recording upstream


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Upstream:
    """A provider on loopback that keeps every request as it arrived and answers canned bytes
    (in pieces, for streams), whatever the format it was asked in."""

    received: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(Received(request.path, raw, dict(request.headers)))
        body = json.loads(raw)
        anthropic_path = request.path.endswith("/messages")
        if body.get("model") == "claude-quoter":  # a 400 quoting the request's headers
            quoted = f"bad header x-api-key: {request.headers.get('x-api-key')}"
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": quoted}}
            return web.json_response(error, status=400)
        if not body.get("stream"):
            answer = ANTHROPIC_WHOLE if anthropic_path else OPENAI_WHOLE
            if body.get("model") == "claude-echo":  # a provider repeating the key it was sent
                answer = answer.replace(b"It is sunny.", f"key {PROVIDER_KEY} bad".encode())
            return web.Response(body=answer, content_type="application/json", headers=ANSWERED)
        if body.get("model") == "claude-thinker":
            return await self._think_slowly(request)
        if body.get("model") == "claude-broken":
            answer = ANTHROPIC_BROKEN_STREAM
        elif body.get("model") == "claude-bigthink":  # 1.3 MB of thinking, then the answer
            answer = ANTHROPIC_BIG_THINKING
        elif body.get("model") == "claude-pings":  # 1.4 MB of pings before any content
            answer = _sse(("message_start", _MESSAGE_START))
            answer += _sse(("ping", {"type": "ping"})) * 50_000 + ANTHROPIC_STREAM
        else:
            answer = ANTHROPIC_STREAM if anthropic_path else OPENAI_STREAM
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", **ANSWERED})
        await out.prepare(request)
        for start in range(0, len(answer), 97):  # pieces that split events and lines
            await out.write(answer[start : start + 97])
        await out.write_eof()
        return out

    async def count(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(Received(request.path, raw, dict(request.headers)))
        return web.json_response({"input_tokens": 4242})

    async def _think_slowly(self, request: web.Request) -> web.StreamResponse:
        """Thinks for 4.5 s (a delta every 0.5 s) before any text: longer than the provider's
        first_token limit of 4 s, which a stream that is thinking must not be cut by. The first
        delta goes at once, so a loaded machine has the whole 4 s to relay it."""
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for event in THINKING_EVENTS:
            await out.write(event)
            await asyncio.sleep(0.5)
        await out.write(ANTHROPIC_STREAM_AFTER_THINKING)
        await out.write_eof()
        return out


@dataclass
class Env:
    url: str
    upstream: Upstream
    telemetry: Harness
    recorder: Recorder
    router: Router

    def last(self) -> Received:
        return self.upstream.received[-1]


TIERS = {
    "oa": [("up-openai", "gpt-real")],
    "an": [("up-anthropic", "claude-real")],
    "mix": [("up-anthropic", "claude-real"), ("up-openai", "gpt-real")],
    "flaky": [("up-anthropic", "claude-broken"), ("up-anthropic", "claude-real")],
    "pingy": [("up-anthropic", "claude-pings"), ("up-anthropic", "claude-real")],
    "think": [("up-anthropic", "claude-thinker"), ("up-openai", "gpt-real")],
    "bigthink": [("up-anthropic", "claude-bigthink"), ("up-openai", "gpt-real")],
    "echo": [("up-anthropic", "claude-echo")],
    "quoter": [("up-anthropic", "claude-quoter")],
}


@asynccontextmanager
async def same_format_env(*, droppable: frozenset[str] = frozenset()) -> AsyncIterator[Env]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    app.router.add_post("/v1/messages", upstream.handle)
    app.router.add_post("/v1/messages/count_tokens", upstream.count)
    async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as up:
        providers = {
            "up-openai": HttpProvider(
                name="up-openai",
                codec=codec_for("openai"),
                base_url=f"{up.url}/v1",
                api_key=PROVIDER_KEY,
            ),
            "up-anthropic": HttpProvider(
                name="up-anthropic",
                codec=codec_for("anthropic"),
                base_url=up.url,
                api_key=PROVIDER_KEY,
            ),
        }
        tiers = {
            name: TierPlan(name=name, targets=tuple(Target(provider=p, model=m) for p, m in ts))
            for name, ts in TIERS.items()
        }
        telemetry, recorder = make_harness(), Recorder()
        router = Router(
            tiers=tiers,
            providers=providers,
            listeners=[recorder, telemetry.listener],
            retry=never_retry,
            deadline=20.0,
            droppable=droppable,
            # first_token: the 1.4 MB of pings take ~1 s to hold on a loaded box (over 2 s under
            # a CPU hog: then the limit, not the 1 MiB bound, cut them); the thinker outlasts it
            timeouts={"up-anthropic": Timeouts(connect=2.0, first_token=4.0, idle=5.0, total=10.0)},
        )
        tracer = telemetry.tracer_provider.get_tracer("test")
        meter = MeterProvider().get_meter("test")  # the token-count endpoint's; unused here
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        app = create_app(backend, settings=GatewaySettings())
        gateway = GatewayServer(app, host="127.0.0.1", port=0, grace=1.0)
        async with gateway:
            yield Env(gateway.url, upstream, telemetry, recorder, router)
        await router.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with same_format_env() as running:
        yield running


def _capturing(
    sent: list[bytes],
    client: Callable[..., Any] = httpx.AsyncClient,
    headers: list[dict[str, str]] | None = None,
) -> Any:
    """An HTTP client for an SDK (``client``: its own httpx flavour) that keeps each request
    body the SDK sends (and its headers, in ``headers``)."""
    headers = [] if headers is None else headers

    async def keep(request: Any) -> None:
        sent.append(request.content)
        headers.append(dict(request.headers))

    return client(event_hooks={"request": [keep]})


async def _post_stream(url: str, body: Any) -> bytes:
    """The whole raw body of a streamed answer."""
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.read()


def _model_set(body: bytes, old: str, new: str) -> bytes:
    """``body`` with its top-level model value replaced, nothing else touched."""
    pattern = rb'"model"\s*:\s*"' + re.escape(old.encode()) + rb'"'
    changed, count = re.subn(pattern, b'"model":"' + new.encode() + b'"', body)
    assert count == 1
    return changed


# ---------------------------------------------------------------- OpenAI clients, OpenAI provider


class Weather(pydantic.BaseModel):
    city: str
    temp_c: int


async def test_openai_parse_goes_upstream_byte_for_byte_and_answers_as_it_came(env: Env) -> None:
    sent: list[bytes] = []
    async with openai.AsyncOpenAI(
        base_url=env.url + "/v1", api_key="sk-client", max_retries=0, http_client=_capturing(sent)
    ) as client:
        content: Any = [
            {"type": "text", "text": "Weather in the photo's city?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]
        raw = await client.chat.completions.with_raw_response.parse(
            model="oa",
            messages=[{"role": "user", "content": content}],
            response_format=Weather,
            seed=7,
            user="end-user-1",
            reasoning_effort="low",
            parallel_tool_calls=False,
            max_completion_tokens=300,
            logprobs=True,
            extra_body={"x_future_field": {"nested": [1, "two"]}},
        )
    upstream = env.last()
    assert upstream.body == _model_set(sent[0], "oa", "gpt-real")
    assert upstream.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"  # ours, not the client's
    assert raw.http_response.content == OPENAI_WHOLE  # not re-encoded: the provider's bytes
    completion = raw.parse()
    assert completion.choices[0].message.parsed == Weather(city="Paris", temp_c=21)
    assert completion.model == "gpt-real-2025-08-07"  # the snapshot that served
    assert raw.headers["x-failover-provider"] == "up-openai"
    assert env.recorder.attempts[-1].usage is not None  # read on the way for telemetry
    assert env.recorder.attempts[-1].usage.input_tokens == 31


async def test_openai_stream_relays_events_and_hides_the_usage_the_gateway_asked_for(
    env: Env,
) -> None:
    body = {"model": "oa", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    relayed = await _post_stream(env.url + "/v1/chat/completions", body)
    assert json.loads(env.last().body)["stream_options"] == {"include_usage": True}
    assert relayed == OPENAI_STREAM_HEAD + _sse(("", "[DONE]"))
    assert env.recorder.attempts[-1].usage is not None  # the gateway still counted the tokens
    assert env.recorder.attempts[-1].usage.output_tokens == 2


async def test_openai_stream_that_asked_for_usage_gets_every_event(env: Env) -> None:
    sent: list[bytes] = []
    async with openai.AsyncOpenAI(
        base_url=env.url + "/v1", api_key="sk-client", max_retries=0, http_client=_capturing(sent)
    ) as client:
        stream = await client.chat.completions.create(
            model="oa",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert env.last().body == _model_set(sent[0], "oa", "gpt-real")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7


# ---------------------------------------------------------------- Anthropic clients and provider

CLAUDE_CODE_SYSTEM: Any = [
    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Env: linux", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Tools follow.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
]
CLAUDE_CODE_MESSAGES: Any = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            },
        ],
    },
    {"role": "assistant", "content": "Let me look."},
    {"role": "system", "content": "The user enabled plan mode."},
    {"role": "user", "content": "Go on."},
]
BETAS = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27", "x-future-beta"]


async def test_claude_code_shaped_request_reaches_anthropic_as_it_was_sent(env: Env) -> None:
    sent: list[bytes] = []
    sent_headers: list[dict[str, str]] = []
    async with anthropic.AsyncAnthropic(
        base_url=env.url,
        api_key="sk-ant-client",
        max_retries=0,
        http_client=_capturing(sent, anthropic.DefaultAsyncHttpxClient, sent_headers),
    ) as client:
        raw = await client.beta.messages.with_raw_response.create(
            model="an",
            max_tokens=2048,
            system=CLAUDE_CODE_SYSTEM,
            messages=CLAUDE_CODE_MESSAGES,
            tools=[
                {"name": "Bash", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
            ],
            thinking={"type": "enabled", "budget_tokens": 1024},
            metadata={"user_id": "user_abc"},
            betas=BETAS,
            extra_body={
                "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
                "output_config": {"effort": "high"},
                "x_future_field": True,
            },
        )
    upstream = env.last()
    assert upstream.body == _model_set(sent[0], "an", "claude-real")
    assert upstream.headers["anthropic-beta"] == ",".join(BETAS)
    # the client's API version, not the one this code was written against
    assert upstream.headers["anthropic-version"] == sent_headers[0]["anthropic-version"]
    assert upstream.headers["x-api-key"] == PROVIDER_KEY
    assert raw.http_response.content == ANTHROPIC_WHOLE
    message = await raw.parse()
    assert [block.type for block in message.content] == [
        "thinking",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert message.model == "claude-real-20251001"
    assert message.usage.cache_read_input_tokens == 3000
    usage = env.recorder.attempts[-1].usage
    assert usage is not None
    assert usage.input_tokens == 12 + 900 + 3000  # cache reads and writes counted as input


async def test_anthropic_stream_relays_every_event_as_it_came(env: Env) -> None:
    body = {
        "model": "an",
        "max_tokens": 64,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "weather?"}],
    }
    relayed = await _post_stream(env.url + "/v1/messages", body)
    assert relayed == ANTHROPIC_STREAM
    async with (
        anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client,
        client.messages.stream(**body_without_stream(body)) as stream,
    ):
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == "EqQBCgIYAhIM"


def body_without_stream(body: dict[str, Any]) -> Any:
    return {k: v for k, v in body.items() if k != "stream"}


async def test_a_relayed_stream_that_fails_before_its_first_token_fails_over_cleanly(
    env: Env,
) -> None:
    """message_start and a ping came from the first provider, then an error: none of it may
    reach the client, whose stream is the second provider's alone."""
    body = {
        "model": "flaky",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "weather?"}],
    }
    relayed = await _post_stream(env.url + "/v1/messages", body)
    assert relayed == ANTHROPIC_STREAM
    assert [json.loads(r.body)["model"] for r in env.upstream.received] == [
        "claude-broken",
        "claude-real",
    ]


async def test_events_held_before_the_first_token_are_bounded(env: Env) -> None:
    """A provider that sends pings instead of a first token is cut at 1 MiB held (a fault that
    fails over), not buffered without end."""
    body = {
        "model": "pingy",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "weather?"}],
    }
    relayed = await _post_stream(env.url + "/v1/messages", body)
    assert relayed == ANTHROPIC_STREAM
    first = env.recorder.attempts[0]
    assert first.model == "claude-pings"
    assert first.error_type == "malformed_response"


async def test_a_stream_that_thinks_longer_than_first_token_is_not_cut(env: Env) -> None:
    """Thinking is the answer starting: the events go to the client as they come, and the
    first_token limit (4 s here) is met by the first thinking delta."""
    body = {
        "model": "think",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "think hard"}],
    }
    relayed = await _post_stream(env.url + "/v1/messages", body)
    assert relayed == b"".join(THINKING_EVENTS) + ANTHROPIC_STREAM_AFTER_THINKING
    assert [a.outcome.value for a in env.recorder.attempts] == ["success"]


async def test_more_than_a_mebibyte_of_thinking_is_relayed_not_refused(env: Env) -> None:
    body = {
        "model": "bigthink",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "think a lot"}],
    }
    relayed = await _post_stream(env.url + "/v1/messages", body)
    assert relayed == ANTHROPIC_BIG_THINKING
    assert env.recorder.attempts[-1].provider == "up-anthropic"


async def test_a_provider_echoing_its_key_never_shows_it_to_the_client(env: Env) -> None:
    async with anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client:
        raw = await client.messages.with_raw_response.create(
            model="echo", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert PROVIDER_KEY.encode() not in raw.http_response.content
    assert b"key *** bad" in raw.http_response.content


async def test_a_provider_error_quoting_the_key_is_masked(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    async with anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(
                model="quoter", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
    assert PROVIDER_KEY not in caught.value.message
    assert "x-api-key: ***" in caught.value.message
    assert PROVIDER_KEY not in caplog.text


async def test_when_the_capable_provider_is_tripped_it_is_tried_anyway(env: Env) -> None:
    """cache_control keeps the OpenAI provider out; the Anthropic one is tripped: panic among
    the providers that can honour the request rather than a 503 without trying."""
    tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
    env.router.state.publish(RoutingState(providers={"up-anthropic": tripped}))
    async with anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client:
        raw = await client.messages.with_raw_response.create(
            model="mix",
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "hi"}],
        )
    assert raw.headers["x-failover-provider"] == "up-anthropic"
    span = _route_span(env)
    assert span.attributes[names.FAILOVER_PANIC] is True
    assert span.attributes[names.FAILOVER_SKIPPED] == ("up-openai: cache_control",)


async def test_the_provider_s_request_id_and_rate_limits_reach_the_client(env: Env) -> None:
    body = {"model": "an", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        for streaming in (False, True):
            url = env.url + "/v1/messages"
            async with http.post(url, json=body | {"stream": streaming}) as answer:
                await answer.read()
                assert answer.headers["request-id"] == "req_up_123"
                assert answer.headers["anthropic-ratelimit-requests-remaining"] == "99"
                assert answer.headers["x-ratelimit-remaining-tokens"] == "5000"
                assert "openai-organization" not in answer.headers
                assert answer.headers["x-failover-provider"] == "up-anthropic"


async def test_a_token_count_goes_to_anthropic_as_it_came(env: Env) -> None:
    """Claude Code counts tokens with the same blocks it sends: the Anthropic provider gets the
    count body byte for byte (but the model) with the betas, so it counts what it will be sent."""
    sent: list[bytes] = []
    sent_headers: list[dict[str, str]] = []
    async with anthropic.AsyncAnthropic(
        base_url=env.url,
        api_key="k",
        max_retries=0,
        http_client=_capturing(sent, anthropic.DefaultAsyncHttpxClient, sent_headers),
    ) as client:
        counted = await client.beta.messages.count_tokens(
            model="an",
            system=CLAUDE_CODE_SYSTEM,
            messages=CLAUDE_CODE_MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024},
            betas=BETAS,
        )
    assert counted.input_tokens == 4242
    upstream = env.last()
    assert upstream.path == "/v1/messages/count_tokens"
    assert upstream.body == _model_set(sent[0], "an", "claude-real")
    assert upstream.headers["anthropic-beta"] == sent_headers[0]["anthropic-beta"]
    assert set(BETAS) <= set(upstream.headers["anthropic-beta"].split(","))


async def test_a_tier_that_takes_the_body_as_it_came_leaves_judging_it_to_the_provider(
    env: Env,
) -> None:
    """Every provider of tier oa speaks the client's format: the gateway checks only what every
    provider would (the body, model, messages) and does not decode the rest, which the provider
    judges; with a provider of another format in the tier (mix) it decodes and refuses first."""
    odd = {"model": "oa", "messages": [{"role": "narrator", "content": "Once upon a time"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(env.url + "/v1/chat/completions", json=odd) as answer:
            assert answer.status == 200  # the upstream's canned answer
        assert json.loads(env.last().body)["messages"] == odd["messages"]
        async with http.post(
            env.url + "/v1/chat/completions", json=odd | {"model": "mix"}
        ) as answer:
            error = await answer.json()
            assert answer.status == 400
        assert error["error"]["param"] == "messages[0].role"
        assert len(env.upstream.received) == 1  # the mixed tier's request went nowhere
        async with http.post(env.url + "/v1/chat/completions", json={"model": "oa"}) as answer:
            assert answer.status == 400  # what every provider refuses is refused here
            assert (await answer.json())["error"]["param"] == "messages"


# ---------------------------------------------------------------- across formats: skip, 400, drop


def _route_span(env: Env) -> Any:
    env.telemetry.listener.flush()
    spans = [s for s in env.telemetry.finished() if s.name == names.SPAN_ROUTE]
    return spans[-1]


async def test_audio_skips_the_provider_that_cannot_hear_it(env: Env) -> None:
    """(Images translate now: tests/test_gateway_media.py.)"""
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}},
    ]
    async with openai.AsyncOpenAI(base_url=env.url + "/v1", api_key="k", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="mix", messages=[{"role": "user", "content": content}]
        )
    assert raw.headers["x-failover-provider"] == "up-openai"  # the Anthropic one was skipped
    assert [r.path for r in env.upstream.received] == ["/v1/chat/completions"]
    span = _route_span(env)
    assert span.attributes[names.FAILOVER_SKIPPED] == ("up-anthropic: audio",)
    assert span.attributes[names.FAILOVER_OUTCOME] == "served"


async def test_no_provider_of_the_tier_can_honour_it_is_a_400_naming_the_field(env: Env) -> None:
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}},
    ]
    async with openai.AsyncOpenAI(base_url=env.url + "/v1", api_key="k", max_retries=2) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="an", messages=[{"role": "user", "content": content}]
            )
    error = caught.value
    assert isinstance(error.body, dict)
    assert error.body["param"] == "messages[0].content[1]"
    assert "audio" in error.message
    assert "up-anthropic (anthropic)" in error.message
    assert "translation.droppable" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert env.upstream.received == []  # nothing was sent anywhere


async def test_a_droppable_feature_is_dropped_counted_and_served_across_formats() -> None:
    async with same_format_env(droppable=frozenset({"cache_control", "metadata"})) as env:
        async with anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client:
            message = await client.messages.create(
                model="oa",
                max_tokens=64,
                system=[
                    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
                ],
                metadata={"user_id": "u-1"},
                messages=[{"role": "user", "content": "hi"}],
            )
        assert message.content[0].type == "text"  # an OpenAI provider served it, translated
        upstream = env.last().json()
        assert upstream["messages"][0] == {"role": "system", "content": "Be brief."}
        assert upstream["user"] == "u-1"  # metadata.user_id translates to the end user's id
        assert _route_span(env).attributes[names.FAILOVER_DROPPED] == ("cache_control",)
        counts = env.telemetry.counter(names.METRIC_FEATURES_DROPPED)
        assert counts == {
            frozenset({("tier", "oa"), ("feature", "cache_control"), ("provider", "up-openai")}): 1,
        }


async def test_without_droppable_the_same_request_is_refused_not_stripped(env: Env) -> None:
    async with anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(
                model="oa",
                max_tokens=64,
                system=[
                    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
                ],
                messages=[{"role": "user", "content": "hi"}],
            )
    assert "system.0.cache_control" in caught.value.message
    assert env.upstream.received == []


async def test_a_claude_tool_loop_continued_after_a_failover_drops_thinking_for_anthropic(
    env: Env,
) -> None:
    """The turn that called the tool was served by another format during an outage, so it has
    no thinking block; with thinking enabled Anthropic refuses such a tool loop. The gateway
    sends that one request without thinking rather than have it refused; other requests keep
    their bytes."""
    body: dict[str, Any] = {
        "model": "an",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
            },
        ],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(env.url + "/v1/messages", json=body) as answer:
            assert answer.status == 200
        sent = json.loads(env.last().body)
        assert "thinking" not in sent
        assert sent["messages"] == body["messages"]
        thought = [{"type": "thinking", "thinking": "hm", "signature": "s"}]
        body["messages"][1]["content"] = thought + body["messages"][1]["content"]
        async with http.post(env.url + "/v1/messages", json=body) as answer:
            assert answer.status == 200
        assert json.loads(env.last().body)["thinking"] == body["thinking"]  # as it came
