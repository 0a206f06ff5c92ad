"""``POST /v1/messages/count_tokens`` through the gateway, with the official anthropic SDK.

Claude Code (and any Anthropic client) calls it often. The count comes from the provider that
would serve the request when its API can count (the fake's Anthropic endpoint answers with its
own count: the number of words), and is estimated by the gateway otherwise; a provider's fault
never fails a count. The codec halves are pinned against the documented wire shapes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind, StatusCode

from controller._clock import FakeClock
from controller._drill import Drillable
from controller._errors import BadRequest, MalformedResponse, Overloaded
from controller.control.state import HealthState, ProviderStatus, RoutingState
from controller.gateway import GatewaySettings
from controller.model import Message, Request, ToolDefinition
from controller.providers import Timeouts
from controller.providers.fake import FaultMode
from controller.routing.count import TokenCount, TokenCounter, estimate_tokens
from controller.routing.plan import Target, TierPlan
from controller.routing.router import Router
from controller.wire.anthropic import (
    COUNT_TOKENS_PATH,
    AnthropicClientCodec,
    AnthropicServerCodec,
)
from tests.conftest import adapter
from tests.gateway_support import TIMEOUTS, GatewayEnv, gateway_env

SYSTEM = "You are terse."
QUESTION = "How many words are in this question about the weather in Paris"
MESSAGES: Any = [{"role": "user", "content": QUESTION}]
AS_REQUEST = Request(messages=(Message(role="user", content=QUESTION),), system=SYSTEM)
FAKE_COUNT = len(f"{SYSTEM}{QUESTION}".split())  # what the fake's endpoint answers


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        yield running


@pytest.fixture
async def claude(env: GatewayEnv) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        yield client


# ---------------------------------------------------------------- through the gateway
async def test_an_anthropic_provider_counts_for_its_tier(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    raw = await claude.messages.with_raw_response.count_tokens(
        model="claude-test", system=SYSTEM, messages=MESSAGES
    )
    assert (await raw.parse()).input_tokens == FAKE_COUNT
    assert raw.headers["x-failover-token-count"] == "provider"
    assert raw.headers["x-failover-provider"] == "primary-anthropic"
    assert raw.headers["x-failover-model"] == "claude-big"
    seen = env.primary.seen[-1]
    assert (seen.format, seen.model) == ("anthropic_count", "claude-big")
    assert seen.request.messages[0].content == QUESTION
    assert env.recorder.attempts == []  # a count is not an attempt: no event, no window


async def test_a_tier_served_in_another_format_gets_an_estimate(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    # "gpt-test" is served by primary-openai: OpenAI's chat API cannot count tokens
    raw = await claude.messages.with_raw_response.count_tokens(
        model="gpt-test", system=SYSTEM, messages=MESSAGES
    )
    assert (await raw.parse()).input_tokens == estimate_tokens(AS_REQUEST)
    assert raw.headers["x-failover-token-count"] == "estimate"
    assert "x-failover-provider" not in raw.headers
    asked = [s for fake in (env.primary, env.backup) for s in fake.seen]
    assert asked == []  # the tier's Anthropic target (backup-anthropic) is not its server now


async def test_a_provider_failing_to_count_never_fails_the_client(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    env.primary.set_fault(FaultMode.ERROR_503)
    for _ in range(2):  # the second one is not even asked: the provider rests after a failure
        raw = await claude.messages.with_raw_response.count_tokens(
            model="claude-test", system=SYSTEM, messages=MESSAGES
        )
        assert (await raw.parse()).input_tokens == estimate_tokens(AS_REQUEST)
        assert raw.headers["x-failover-token-count"] == "estimate"
    assert [s.format for s in env.primary.seen] == ["anthropic_count"]
    assert env.recorder.attempts == []


async def test_every_kind_of_count_failure_ends_in_an_estimate(env: GatewayEnv) -> None:
    clock = FakeClock()
    counter = TokenCounter(env.backend.router, clock=clock)
    faults = (FaultMode.ERROR_503, FaultMode.RATE_LIMIT_BARE, FaultMode.MALFORMED_BODY)
    for fault in (*faults, FaultMode.AUTH, FaultMode.RESET):
        env.primary.set_fault(fault)
        assert await counter.count(AS_REQUEST, tier="claude") == TokenCount(
            estimate_tokens(AS_REQUEST)
        ), fault
        clock.advance(30.0)  # past the rest, so the next fault is really tried
    assert len([s for s in env.primary.seen if s.format == "anthropic_count"]) == 5
    env.primary.clear_fault()
    assert await counter.count(AS_REQUEST, tier="claude") == TokenCount(
        FAKE_COUNT, "primary-anthropic", "claude-big"
    )


async def test_bad_count_requests_get_anthropic_errors(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.count_tokens(model="no-such-model", messages=MESSAGES)
    assert "no-such-model" in missing.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.count_tokens(model="claude-test", messages="hello")  # type: ignore[arg-type]
    assert bad.value.status_code == 400
    assert bad.value.body["type"] == "error"  # type: ignore[index]


async def test_malformed_json_and_a_missing_key_are_answered_in_anthropic_format() -> None:
    settings = GatewaySettings(api_keys=("sk-gw",))
    async with gateway_env(settings=settings) as env, aiohttp.ClientSession() as http:
        url = env.url + "/v1/messages/count_tokens"
        keyed = {"x-api-key": "sk-gw", "content-type": "application/json"}
        async with http.post(url, data=b'{"model": "claude-test",', headers=keyed) as answer:
            assert answer.status == 400
            body = await answer.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        count_body = {"model": "claude-test", "system": SYSTEM, "messages": MESSAGES}
        async with http.post(url, json=count_body) as answer:
            assert answer.status == 401
            assert (await answer.json())["error"]["type"] == "authentication_error"
        async with http.post(url, json=count_body, headers=keyed) as answer:
            assert answer.status == 200  # and it keeps serving
            assert (await answer.json()) == {"input_tokens": FAKE_COUNT}


# ---------------------------------------------------------------- the codec halves
def test_the_count_call_carries_the_conversation_but_no_generation_settings() -> None:
    request = Request(
        messages=(Message(role="user", content=QUESTION),),
        system=SYSTEM,
        tools=(ToolDefinition(name="get_weather", description="Weather for a city"),),
        max_tokens=100,
        temperature=0.2,
        stop=("END",),
        stream=True,
    )
    call = AnthropicClientCodec().build_count(request, "claude-big", "sk-ant-secret")
    assert call.path == COUNT_TOKENS_PATH == "/v1/messages/count_tokens"
    assert call.headers["x-api-key"] == "sk-ant-secret"
    assert "sk-ant-secret" not in repr(call)
    assert call.body == {
        "model": "claude-big",
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {}},
            }
        ],
    }


def test_the_documented_count_answer_is_read_and_broken_ones_are_refused() -> None:
    codec = AnthropicClientCodec()
    assert codec.parse_count(b'{"input_tokens": 2095}', "claude-big") == 2095
    for broken in (b"[]", b'{"input_tokens": "12"}', b'{"input_tokens": -1}', b"{", b"{}"):
        with pytest.raises(MalformedResponse):
            codec.parse_count(broken, "claude-big")


def test_the_server_side_reads_a_count_body_without_max_tokens() -> None:
    server = AnthropicServerCodec()
    model, request = server.parse_count_request(
        json.dumps({"model": "claude-test", "system": SYSTEM, "messages": MESSAGES})
    )
    assert (model, request.system, request.max_tokens) == ("claude-test", SYSTEM, None)
    with pytest.raises(BadRequest, match="messages"):
        server.parse_count_request({"model": "claude-test"})
    with pytest.raises(BadRequest, match="max_tokens"):
        server.parse_request({"model": "claude-test", "messages": MESSAGES})  # still required
    assert server.render_count(7) == {"input_tokens": 7}


def test_the_estimate_grows_with_everything_the_model_reads() -> None:
    bare = Request(messages=(Message(role="user", content="x" * 300),))
    assert estimate_tokens(bare) == 100 + 3  # three characters a token, a few per turn
    with_system = Request(messages=bare.messages, system="y" * 300)
    tool = ToolDefinition(name="lookup", description="z" * 300)
    with_tools = Request(messages=bare.messages, tools=(tool,))
    answered = Request(messages=(*bare.messages, Message(role="assistant", content="w" * 30)))
    assert estimate_tokens(with_system) == estimate_tokens(bare) + 100
    assert estimate_tokens(with_tools) > estimate_tokens(bare) + 100
    assert estimate_tokens(answered) == estimate_tokens(bare) + 10 + 3
    accented = Request(messages=bare.messages, tools=(ToolDefinition(name="é", description=""),))
    plain = Request(messages=bare.messages, tools=(ToolDefinition(name="e", description=""),))
    assert estimate_tokens(accented) == estimate_tokens(plain)  # no escaped non-ASCII counted


# ---------------------------------------------------------------- the counter's own rules
async def test_a_hanging_count_costs_one_wait_then_the_provider_rests(env: GatewayEnv) -> None:
    clock = FakeClock()
    counter = TokenCounter(env.backend.router, within=0.2, backoff=30.0, clock=clock)
    env.primary.set_fault(FaultMode.HANG)
    first = await counter.count(AS_REQUEST, tier="claude")  # waits `within`, then estimates
    assert first == TokenCount(estimate_tokens(AS_REQUEST))
    asked = len(env.primary.seen)
    env.primary.clear_fault()
    again = await counter.count(AS_REQUEST, tier="claude")
    assert again.provider is None  # resting: not asked at all
    assert len(env.primary.seen) == asked
    clock.advance(30.0)
    back = await counter.count(AS_REQUEST, tier="claude")
    assert back == TokenCount(FAKE_COUNT, "primary-anthropic", "claude-big")


async def test_a_provider_only_partly_back_or_a_tier_in_panic_gets_an_estimate(
    env: GatewayEnv,
) -> None:
    counter = TokenCounter(env.backend.router, clock=FakeClock())
    recovering = ProviderStatus(state=HealthState.RECOVERING, traffic_share=1.0 - 1e-9)
    tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
    for providers in (
        {"primary-anthropic": recovering, "backup-openai": tripped},  # recovering first
        {"primary-anthropic": tripped, "backup-openai": tripped},  # panic: all tripped
    ):
        env.state.publish(RoutingState(providers=providers))
        count = await counter.count(AS_REQUEST, tier="claude")
        assert count.provider is None, providers
    assert [s for s in env.primary.seen if s.format == "anthropic_count"] == []
    env.state.publish(RoutingState())
    assert (await counter.count(AS_REQUEST, tier="claude")).provider == "primary-anthropic"
    assert (await counter.count(AS_REQUEST, tier="no-such-tier")).provider is None


async def test_a_provider_that_raises_anything_still_gets_an_estimate() -> None:
    class Broken:
        name = kind = wire_format = "broken"
        server_address, server_port = "127.0.0.1", 0
        counts_tokens = True

        async def count_tokens(self, request: Request, model: str, timeouts: Timeouts) -> int:
            raise RuntimeError("a bug in a provider, sk-secret-in-message")

    tier = TierPlan(name="t", targets=(Target(provider="broken", model="m"),))
    router = Router(tiers={"t": tier}, providers={"broken": Broken()})  # type: ignore[dict-item]
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    counter = TokenCounter(router, meter=meter, clock=FakeClock())
    assert await counter.count(AS_REQUEST, tier="t") == TokenCount(estimate_tokens(AS_REQUEST))
    data = reader.get_metrics_data()
    assert data is not None
    [point] = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert point.attributes == {
        "tier": "t",
        "source": "estimate",
        "provider": "broken",
        "error.type": "_OTHER",  # bounded: not the exception's class or text
    }


async def test_counts_are_counted_and_provider_counts_traced(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    await claude.messages.count_tokens(model="claude-test", system=SYSTEM, messages=MESSAGES)
    await claude.messages.count_tokens(model="gpt-test", system=SYSTEM, messages=MESSAGES)
    env.primary.set_fault(FaultMode.ERROR_503)
    await claude.messages.count_tokens(model="claude-test", system=SYSTEM, messages=MESSAGES)
    counted: dict[tuple[str, ...], int] = {}
    data = env.metrics.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "failover.token_counts":
                    for point in metric.data.data_points:
                        a = point.attributes or {}
                        key = (a["tier"], a["source"], a["provider"], a.get("error.type", ""))
                        counted[tuple(str(v) for v in key)] = int(point.value)  # type: ignore[union-attr]
    assert counted == {
        ("claude", "provider", "primary-anthropic", ""): 1,
        ("frontier", "estimate", "", ""): 1,  # OpenAI's API cannot count: nobody was asked
        ("claude", "estimate", "primary-anthropic", "overloaded"): 1,
    }
    spans = [s for s in env.exporter.get_finished_spans() if s.name.startswith("count_tokens")]
    assert [(s.name, s.kind) for s in spans] == [("count_tokens claude-big", SpanKind.CLIENT)] * 2
    ok, failed = spans
    assert ok.attributes is not None
    assert failed.attributes is not None
    assert ok.attributes["gen_ai.usage.input_tokens"] == FAKE_COUNT
    assert ok.attributes["failover.provider"] == "primary-anthropic"
    assert ok.attributes["gen_ai.provider.name"] == "anthropic"
    assert ok.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["error.type"] == "overloaded"
    assert failed.status.status_code is StatusCode.ERROR
    assert "sk-" not in str(dict(failed.attributes))  # no key, no provider text


async def test_a_drill_stops_counting_only_where_there_is_counting(env: GatewayEnv) -> None:
    clock = FakeClock()
    anthropic_side = Drillable(adapter(env.primary, "anthropic"), clock=clock)
    openai_side = Drillable(adapter(env.primary, "openai"), clock=clock)
    try:
        assert anthropic_side.counts_tokens
        assert not openai_side.counts_tokens
        assert await anthropic_side.count_tokens(AS_REQUEST, "claude-big", TIMEOUTS) == FAKE_COUNT
        for drilled in (anthropic_side, openai_side):
            drilled.start_drill(60)
        assert await openai_side.count_tokens(AS_REQUEST, "gpt-big", TIMEOUTS) is None
        with pytest.raises(Overloaded, match="drill"):
            await anthropic_side.count_tokens(AS_REQUEST, "claude-big", TIMEOUTS)
    finally:
        await anthropic_side.close()
        await openai_side.close()
