"""Request-level fields across formats: structured output, one tool call at a time, a seed and
the end user's id, each decoded from a client's format and encoded into every provider format
that has a field for it (and reported by ``unsupported`` where a format has none, so the
router skips that provider). Then the official openai SDK's ``parse()`` with a pydantic model,
served by an Anthropic-format and a Gemini-format provider.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import openai
import pydantic
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller._errors import ConfigError
from controller.config import parse_config
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import Request, Untranslatable
from controller.providers import codec_for
from controller.providers.fake import FakeProvider
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.runtime import build_tiers
from controller.wire.anthropic import AnthropicClientCodec, AnthropicServerCodec
from controller.wire.gemini import GeminiClientCodec
from controller.wire.openai import OpenAIClientCodec, OpenAIServerCodec
from tests.conftest import Recorder, adapter
from tests.gateway_support import GatewayTestBackend

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
    "required": ["city", "temp_c"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def from_openai(**fields: Any) -> Request:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return OpenAIServerCodec().parse_request(body)[1]


def from_anthropic(**fields: Any) -> Request:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return AnthropicServerCodec().parse_request(body | fields)[1]


def translated(request: Request) -> Request:
    """As a provider of another format gets it: from the decoded fields alone."""
    return replace(request, source=None)


OPENAI_FIELDS: dict[str, Any] = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    },
    "seed": 7,
    "user": "end-user-1",
    "parallel_tool_calls": False,
    "tools": [TOOL],
}


def test_openai_fields_into_anthropic() -> None:
    request = from_openai(**OPENAI_FIELDS)
    body = AnthropicClientCodec().build(translated(request), "claude", None).body
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert body["metadata"] == {"user_id": "end-user-1"}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "seed" not in body
    assert AnthropicClientCodec().unsupported(request) == (Untranslatable("seed", "seed"),)


def test_openai_fields_into_gemini() -> None:
    request = from_openai(**OPENAI_FIELDS)
    body = GeminiClientCodec().build(translated(request), "gemini-x", None).body
    assert body["generationConfig"] == {
        "seed": 7,
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    }
    assert GeminiClientCodec().unsupported(request) == (
        Untranslatable("user", "user"),
        Untranslatable("parallel_tool_calls", "parallel_tool_calls"),
    )


def test_json_object_mode() -> None:
    request = from_openai(response_format={"type": "json_object"})
    gemini = GeminiClientCodec().build(translated(request), "g", None).body
    assert gemini["generationConfig"] == {"responseMimeType": "application/json"}
    assert AnthropicClientCodec().unsupported(request) == (
        Untranslatable("response_format json_object", "response_format"),
    )
    back = OpenAIClientCodec().build(translated(request), "gpt", None).body
    assert back["response_format"] == {"type": "json_object"}


def test_anthropic_fields_into_openai() -> None:
    request = from_anthropic(
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        metadata={"user_id": "user_abc"},
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    body = OpenAIClientCodec().build(translated(request), "gpt", None).body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA},
    }
    assert body["user"] == "user_abc"
    assert body["parallel_tool_calls"] is False
    assert body["tool_choice"] == "required"
    assert OpenAIClientCodec().unsupported(request) == ()


def test_anthropic_thinking_options_it_cannot_carry_are_noted() -> None:
    request = from_anthropic(thinking={"type": "adaptive", "display": "omitted"})
    assert request.source is not None
    assert request.source.untranslatable == (Untranslatable("display", "thinking.display"),)


def test_openai_names_its_token_limit_as_the_real_api_wants() -> None:
    request = translated(from_openai(max_completion_tokens=99))
    assert codec_for("openai").build(request, "o4", None).body["max_completion_tokens"] == 99
    compatible = codec_for("openai_compatible").build(request, "llama", None).body
    assert compatible["max_tokens"] == 99  # what every compatible server understands


def test_parallel_tool_calls_is_sent_only_with_tools() -> None:
    request = translated(from_openai(parallel_tool_calls=False))
    assert "parallel_tool_calls" not in OpenAIClientCodec().build(request, "gpt", None).body
    assert "tool_choice" not in AnthropicClientCodec().build(request, "claude", None).body


# ---------------------------------------------------------------- the SDK, across formats


class Weather(pydantic.BaseModel):
    city: str
    temp_c: int


@asynccontextmanager
async def gateway(kind: str) -> AsyncIterator[tuple[str, FakeProvider]]:
    """A gateway whose one tier ``t`` is a fake provider in ``kind``'s format."""
    async with FakeProvider(name="up") as fake:
        router = Router(
            tiers={"t": TierPlan(name="t", targets=(Target(provider="up", model="up-model"),))},
            providers={"up": adapter(fake, kind, "up")},
            retry=never_retry,
        )
        tracer = TracerProvider().get_tracer("t")
        meter = MeterProvider().get_meter("t")
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=Recorder())
        app = create_app(backend, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
            yield server.url, fake
        await router.aclose()


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_openai_parse_with_a_pydantic_model_in_every_format(kind: str) -> None:
    async with gateway(kind) as (url, fake):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        async with client:
            completion = await client.chat.completions.parse(
                model="t",
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                response_format=Weather,
            )
    assert completion.choices[0].message.parsed == Weather(city="text", temp_c=0)
    seen = fake.seen[-1]
    assert seen.format == kind
    assert seen.request.response_format is not None
    assert seen.request.response_format.schema is not None
    assert seen.request.response_format.schema["properties"]["temp_c"] == {
        "title": "Temp C",
        "type": "integer",
    }


# ---------------------------------------------------------------- reasoning


def test_openai_effort_becomes_a_thinking_budget() -> None:
    request = translated(from_openai(reasoning_effort="high", max_completion_tokens=20000))
    body = AnthropicClientCodec().build(request, "claude-sonnet-4-5", None).body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    gemini = GeminiClientCodec().build(request, "gemini-2.5-pro", None).body
    assert gemini["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 16384}


def test_a_budget_never_reaches_max_tokens_and_none_turns_thinking_off() -> None:
    request = translated(from_openai(reasoning_effort="high"))  # max_tokens: the 4096 default
    body = AnthropicClientCodec().build(request, "claude-sonnet-4-5", None).body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4095}
    tight = translated(from_openai(reasoning_effort="low", max_completion_tokens=900))
    assert "thinking" not in AnthropicClientCodec().build(tight, "claude-x", None).body
    off = translated(from_openai(reasoning_effort="none"))
    assert "thinking" not in AnthropicClientCodec().build(off, "claude-x", None).body
    gemini = GeminiClientCodec().build(off, "gemini-2.5-flash", None).body
    assert gemini["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_anthropic_thinking_becomes_an_effort() -> None:
    budget = from_anthropic(max_tokens=9000, thinking={"type": "enabled", "budget_tokens": 5000})
    body = OpenAIClientCodec().build(translated(budget), "o4-mini", None).body
    assert body["reasoning_effort"] == "medium"
    adaptive = translated(from_anthropic(thinking={"type": "adaptive"}))
    assert "reasoning_effort" not in OpenAIClientCodec().build(adaptive, "gpt-5", None).body
    gemini = GeminiClientCodec().build(adaptive, "gemini-3-pro", None).body
    assert gemini["generationConfig"]["thinkingConfig"] == {"thinkingBudget": -1}
    effort = translated(from_anthropic(output_config={"effort": "max"}))
    assert OpenAIClientCodec().build(effort, "gpt-5", None).body["reasoning_effort"] == "high"
    assert from_anthropic(thinking={"type": "disabled"}).reasoning is None


@asynccontextmanager
async def routed(
    *targets: Target, droppable: frozenset[str] = frozenset()
) -> AsyncIterator[tuple[str, FakeProvider, Router]]:
    """A gateway with one tier ``t`` of ``targets``, every provider a format of one fake
    (providers named by their format: ``openai``, ``anthropic``, ``gemini``)."""
    async with FakeProvider(name="up") as fake:
        router = Router(
            tiers={"t": TierPlan(name="t", targets=targets)},
            providers={kind: adapter(fake, kind, kind) for kind in ("openai", "anthropic")},
            retry=never_retry,
            droppable=droppable,
        )
        tracer = TracerProvider().get_tracer("t")
        meter = MeterProvider().get_meter("t")
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=Recorder())
        app = create_app(backend, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
            yield server.url, fake, router
        await router.aclose()


async def think(url: str) -> openai.types.chat.ChatCompletion:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        return await client.chat.completions.create(
            model="t",
            messages=[{"role": "user", "content": "Think first."}],
            reasoning_effort="high",
            max_completion_tokens=20000,
        )


async def test_a_model_that_does_not_reason_is_skipped_for_a_reasoning_request() -> None:
    haiku = Target(provider="anthropic", model="claude-3-5-haiku-latest")
    sonnet = Target(provider="anthropic", model="claude-sonnet-4-5")
    async with routed(haiku, sonnet) as (url, fake, _):
        await think(url)
    assert [seen.model for seen in fake.seen] == ["claude-sonnet-4-5"]
    reasoning = fake.seen[0].request.reasoning
    assert reasoning is not None
    assert reasoning.budget_tokens == 16384  # thinking.budget_tokens, as the fake received it


async def test_config_says_which_models_reason() -> None:
    custom = Target(provider="anthropic", model="claude-3-5-custom", reasoning=True)
    async with routed(custom) as (url, fake, _):
        await think(url)
    assert fake.seen[0].request.reasoning is not None


async def test_reasoning_may_be_dropped_for_a_model_that_does_not_take_it() -> None:
    haiku = Target(provider="anthropic", model="claude-3-5-haiku-latest")
    async with routed(haiku, droppable=frozenset({"reasoning"})) as (url, fake, _):
        await think(url)
    assert fake.seen[0].request.reasoning is None  # sent without thinking, counted as dropped


async def test_nothing_can_reason_is_a_400() -> None:
    haiku = Target(provider="anthropic", model="claude-3-5-haiku-latest")
    async with routed(haiku) as (url, fake, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await think(url)
    assert "reasoning" in caught.value.message
    assert list(fake.seen) == []


def test_the_config_key_reaches_the_router() -> None:
    config = parse_config(
        "providers: {a: {kind: anthropic, api_key_env: KEY}}\n"
        "tiers: {t: {targets: [{provider: a, model: claude-3-5-custom, reasoning: true},\n"
        "                      {provider: a, model: claude-sonnet-4-5}]}}\n"
    )
    assert [t.reasoning for t in build_tiers(config)["t"].targets] == [True, None]


def test_thinking_in_history_stays_with_anthropic_and_its_turns_go_elsewhere() -> None:
    """A Claude tool loop with thinking, continued by OpenAI or Gemini: the thinking blocks (and
    their signatures, which only Anthropic can check) are left out of the history, as neither
    API takes them; the tool calls, results and the reasoning asked for carry on."""
    request = from_anthropic(
        max_tokens=20000,
        thinking={"type": "enabled", "budget_tokens": 10000},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call it.", "signature": "EqQB"},
                    {"type": "redacted_thinking", "data": "EmwK"},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
            },
        ],
    )
    assert request.source is not None
    assert request.source.untranslatable == ()  # thinking history is not a feature to refuse
    openai_body = OpenAIClientCodec().build(translated(request), "o4-mini", None).body
    assert openai_body["reasoning_effort"] == "medium"
    assert openai_body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert "thinking" not in json.dumps(openai_body["messages"])
    gemini_body = GeminiClientCodec().build(translated(request), "gemini-2.5-pro", None).body
    model_turn = gemini_body["contents"][1]
    assert model_turn["role"] == "model"
    assert [list(part) for part in model_turn["parts"]] == [["functionCall", "thoughtSignature"]]
    assert gemini_body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 10000}


# ---------------------------------------------------------------- what a model lacks


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"


async def look(url: str) -> str:
    content: Any = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="t", messages=[{"role": "user", "content": content}]
        )
    return raw.headers["x-failover-model"]


async def test_an_image_skips_a_text_only_model_even_of_the_client_s_format() -> None:
    text_only = Target(provider="openai", model="llama-text", lacks=frozenset({"image"}))
    vision = Target(provider="anthropic", model="claude-sonnet-4-5")
    async with routed(text_only, vision, droppable=frozenset({"image"})) as (url, fake, _):
        assert await look(url) == "claude-sonnet-4-5"  # droppable does not drop what a model lacks
    assert [seen.model for seen in fake.seen] == ["claude-sonnet-4-5"]


async def test_no_model_of_the_tier_can_see_it_is_a_400_naming_the_image() -> None:
    text_only = Target(provider="openai", model="llama-text", lacks=frozenset({"image", "tools"}))
    async with routed(text_only) as (url, fake, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await look(url)
    assert "image" in caught.value.message
    assert list(fake.seen) == []


def test_lacks_is_read_from_the_config() -> None:
    config = parse_config(
        "providers: {a: {kind: openai_compatible, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "tiers: {t: {targets: [{provider: a, model: llama, lacks: [image, tools]}]}}\n"
    )
    assert build_tiers(config)["t"].targets[0].lacks == {"image", "tools"}


def test_the_configured_openai_organization_and_project_go_on_every_call() -> None:
    codec = codec_for("openai", organization="org-abc", project="proj_1")
    for request in (translated(from_openai()), from_openai()):  # translated, and as it came
        headers = codec.build(request, "gpt", "sk-key").headers
        assert headers["OpenAI-Organization"] == "org-abc"
        assert headers["OpenAI-Project"] == "proj_1"
        assert headers["Authorization"] == "Bearer sk-key"
    assert "OpenAI-Organization" not in codec_for("openai").build(from_openai(), "g", "k").headers


def test_thinking_is_not_asked_for_where_anthropic_refuses_it() -> None:
    """A tool loop under way, a forced tool call, a non-default temperature: Anthropic refuses
    thinking there (the client's own API did not), so the request goes without it."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    loop = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    cases: dict[str, dict[str, Any]] = {
        "tool loop": {"messages": loop, "tools": [tool]},
        "forced tool": {"tools": [tool], "tool_choice": "required"},
        "temperature": {"temperature": 0.2},
    }
    for name, fields in cases.items():
        request = translated(from_openai(reasoning_effort="high", **fields))
        body = AnthropicClientCodec().build(request, "claude-sonnet-4-5", None).body
        assert "thinking" not in body, name
    plain = translated(from_openai(reasoning_effort="high", temperature=1))
    assert "thinking" in AnthropicClientCodec().build(plain, "claude-sonnet-4-5", None).body


def test_gemini_budgets_stay_within_what_the_model_takes() -> None:
    ultrathink = translated(
        from_anthropic(max_tokens=64000, thinking={"type": "enabled", "budget_tokens": 31999})
    )
    flash = GeminiClientCodec().build(ultrathink, "gemini-2.5-flash", None).body
    assert flash["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
    off = translated(from_openai(reasoning_effort="none"))
    pro = GeminiClientCodec().build(off, "gemini-2.5-pro", None).body
    assert pro["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 128}  # never 0


def test_a_budget_below_one_never_breaks_the_effort_mapping() -> None:
    odd = translated(from_anthropic(thinking={"type": "enabled", "budget_tokens": -5}))
    assert OpenAIClientCodec().build(odd, "o4-mini", None).body["reasoning_effort"] == "none"


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("{kind: anthropic, organization: org-1}", "organization: is sent only to kind openai"),
        ('{kind: openai, project: "p\\nx"}', "project: must be one line"),
    ],
)
def test_an_openai_account_setting_where_it_cannot_go_names_key_and_line(
    provider: str, message: str
) -> None:
    text = f"providers:\n  a: {provider}\ntiers: {{t: {{targets: [{{provider: a, model: m}}]}}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.yaml")
    assert f"f.yaml:2: providers.a.{message}" in str(caught.value)
