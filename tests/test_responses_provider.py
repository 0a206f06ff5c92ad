"""An OpenAI provider with ``api: responses`` behind the gateway (tier ``responses-test``:
``primary-responses`` then ``backup-anthropic``): a Responses client's request passes through as
it came, hosted tools and all; other clients are translated to the Responses API; a failing
primary hands over to the Anthropic backup."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from controller._errors import ConfigError
from controller.config import parse_config
from controller.providers.fake import Fault, FaultMode
from controller.runtime import build_provider
from tests.fronts_support import fronts_env
from tests.gateway_support import GatewayEnv, read_stream, sse_events

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_CHAT: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with fronts_env() as running:
        yield running


@pytest.fixture
async def oai(env: GatewayEnv) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{env.url}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as client:
        yield client


async def test_a_responses_request_passes_through_as_it_came(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    raw = await oai.responses.with_raw_response.create(
        model="responses-test",
        input="news?",
        tools=[{"type": "web_search"}],  # a hosted tool: only a Responses provider has it
        previous_response_id="resp_earlier",  # kept upstream, not here: it goes on as it came
        store=True,
    )
    answer = raw.parse()
    assert raw.headers["x-failover-provider"] == "primary-responses"
    assert answer.output_text.startswith("Hello from primary")
    seen = env.primary.seen[-1]
    assert seen.format == "responses"
    sent = json.loads(seen.body)
    assert sent["model"] == "gpt-big"
    assert sent["tools"] == [{"type": "web_search"}]
    assert sent["previous_response_id"] == "resp_earlier"


async def test_a_responses_stream_is_relayed_event_by_event(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    async with oai.responses.stream(model="responses-test", input="Rome", tools=[WEATHER]) as s:
        kinds = [event.type async for event in s]
        final = await s.get_final_response()
    assert kinds[0] == "response.created"
    assert "response.function_call_arguments.delta" in kinds
    call = final.output[0]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"input": "Rome"}


async def test_a_chat_client_is_translated_to_the_responses_api(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Oslo"},
    ]
    called = await oai.chat.completions.create(
        model="responses-test", messages=messages, tools=[WEATHER_CHAT], max_tokens=40
    )
    sent = json.loads(env.primary.seen[-1].body)
    assert env.primary.seen[-1].format == "responses"
    assert sent["instructions"] == "Be brief."
    assert sent["max_output_tokens"] == 40
    assert sent["store"] is False
    call = (called.choices[0].message.tool_calls or [])[0]
    assert called.choices[0].finish_reason == "tool_calls"
    messages += [
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "3C"},
    ]
    stream = await oai.chat.completions.create(
        model="responses-test", messages=messages, tools=[WEATHER_CHAT], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "tool said: 3C"
    items = json.loads(env.primary.seen[-1].body)["input"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == call.id


async def test_a_failing_responses_provider_hands_over_to_anthropic(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    env.primary.set_fault(FaultMode.ERROR_503)
    async with oai.responses.stream(model="responses-test", input="Paris?") as stream:
        final = await stream.get_final_response()
    assert final.output_text.startswith("Hello from backup")
    assert env.backup.seen[-1].format == "anthropic"


async def test_an_error_event_from_upstream_fails_over_before_the_first_byte(
    env: GatewayEnv,
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=0.0))
    body = {"model": "responses-test", "input": "Paris?", "stream": True}
    async with aiohttp.ClientSession() as http:
        status, raw = await read_stream(http, env.url + "/v1/responses", body)
    assert status == 200
    events = sse_events(raw)
    assert events[-1][0] == "response.completed"
    assert env.backup.seen[-1].format == "anthropic"


CONFIG = """
providers:
  p:
    kind: {kind}
    api_key_env: X_KEY
    api: responses
tiers:
  t:
    targets: [{{provider: p, model: m}}]
"""


def test_api_responses_is_configured_on_openai_providers_only() -> None:
    config = parse_config(CONFIG.format(kind="openai"))
    provider = build_provider("p", config.providers["p"], {"X_KEY": "k"})
    assert provider.wire_format == "responses"
    with pytest.raises(ConfigError) as refused:
        parse_config(CONFIG.format(kind="anthropic"))
    assert "providers.p.api" in str(refused.value)
    assert "kind openai" in str(refused.value)


async def test_a_tier_of_responses_providers_only_takes_the_body_undecoded(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    """Every target takes the client's format: the body is checked as every provider would
    check it and goes on as it came, stream and not, its answer read for telemetry."""
    whole = await oai.responses.create(model="responses-only", input="hi", tools=[WEATHER])
    assert whole.output[0].type == "function_call"
    async with oai.responses.stream(model="responses-only", input="hi") as stream:
        final = await stream.get_final_response()
    assert final.output_text.startswith("Hello from primary")
    assert json.loads(env.primary.seen[-1].body)["model"] == "gpt-big"
    served = [(a.provider, a.outcome.value) for a in env.recorder.attempts]
    assert served[-2:] == [("primary-responses", "success")] * 2
    assert [r.served_by for r in env.recorder.routes[-2:]] == ["primary-responses"] * 2
