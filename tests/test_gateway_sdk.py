"""The official ``openai`` and ``anthropic`` SDKs pointed at the gateway by base_url.

What users actually run: their SDK, unchanged, against the gateway. Each test makes the primary
fake fail part-way and checks that the answer still arrives (from the backup, possibly in the
other wire format), that a cut stream raises instead of returning a truncated answer, and that
failures surface as the SDK's own typed exceptions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from controller.gateway import GatewaySettings
from controller.providers.fake import Fault, FaultMode
from tests.gateway_support import GatewayEnv, gateway_env

WEATHER_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_ANTHROPIC: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
USER: Any = [{"role": "user", "content": "Paris"}]


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        yield running


@pytest.fixture
async def oai(env: GatewayEnv) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{env.url}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as client:
        yield client


@pytest.fixture
async def claude(env: GatewayEnv) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        yield client


# ---------------------------------------------------------------- OpenAI SDK


async def test_openai_non_streaming_fails_over(env: GatewayEnv, oai: openai.AsyncOpenAI) -> None:
    first = await oai.chat.completions.create(model="gpt-test", messages=USER)
    assert first.model == "gpt-big"  # what served, as the real API names its snapshot
    assert (first.choices[0].message.content or "").startswith("Hello from primary")
    env.primary.set_fault(FaultMode.ERROR_500)
    raw = await oai.chat.completions.with_raw_response.create(model="gpt-test", messages=USER)
    second = raw.parse()
    assert raw.headers["x-failover-provider"] == "backup-anthropic"
    assert raw.headers["x-failover-model"] == "claude-alt"
    assert second.model == "claude-alt"  # the model that served names the failover
    assert (second.choices[0].message.content or "").startswith("Hello from backup")
    assert second.choices[0].finish_reason == "stop"
    assert env.backup.seen[-1].format == "anthropic"  # an OpenAI client, an Anthropic provider


async def test_openai_streaming_fails_over_before_the_first_chunk(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    env.primary.set_fault(FaultMode.RESET)
    stream = await oai.chat.completions.create(
        model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(text).startswith("Hello from backup")
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0


async def test_an_unparseable_event_mid_stream_is_skipped_and_the_answer_arrives_whole(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    """Same format (relayed as it came): the bad event is not forwarded, the rest is."""
    env.primary.set_fault(Fault(mode=FaultMode.MALFORMED_CHUNK, after_chunks=3))
    stream = await oai.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    text, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(text).startswith("Hello from primary. This answer came")
    assert finish == "stop"
    assert env.backup.requests == 0


async def test_openai_tool_round_trip_survives_a_primary_outage(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    asked = await oai.chat.completions.create(
        model="gpt-test", messages=USER, tools=[WEATHER_TOOL_OPENAI]
    )
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "Paris"}
    env.primary.set_fault(FaultMode.ERROR_503)  # the outage starts mid-conversation
    history: Any = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    answer = await oai.chat.completions.create(
        model="gpt-test", messages=history, tools=[WEATHER_TOOL_OPENAI]
    )
    assert answer.choices[0].message.content == "tool said: sunny, 21 C"
    (seen,) = env.backup.seen
    assert seen.format == "anthropic"
    assert seen.request.messages[1].tool_calls[0].id == call.id  # the call id carried over


async def test_openai_streamed_tool_call(env: GatewayEnv, oai: openai.AsyncOpenAI) -> None:
    env.primary.set_fault(FaultMode.ERROR_500)
    stream = await oai.chat.completions.create(
        model="gpt-test", messages=USER, tools=[WEATHER_TOOL_OPENAI], stream=True
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            name += (part.function.name or "") if part.function else ""
            arguments += (part.function.arguments or "") if part.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"input": "Paris"}
    assert finish == "tool_calls"


async def test_openai_mid_stream_cut_is_continued_by_a_restart_that_repeats_the_text(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    """Cut after "Hello from": the backup (Anthropic, no prefill) starts over with the same two
    words, so what it adds after them goes on, and the client gets one whole answer."""
    env.primary.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=2))
    stream = await oai.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    received: list[str] = []
    await _collect_openai(stream, received)
    assert "".join(received) == "Hello from backup. This answer came through the failover router."
    assert env.backup.seen[-1].request.messages[-1].role == "user"  # a restart: no prefill


async def test_openai_mid_stream_cut_raises_when_the_restart_says_something_else(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
    stream = await oai.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        await _collect_openai(stream, received)
    assert "".join(received) == "Hello from primary."  # the text came, then the SDK raised
    assert env.backup.requests == 1  # the restart began "Hello from backup.": not relayed


async def test_openai_typed_errors(env: GatewayEnv, oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await oai.chat.completions.create(model="gpt-unknown", messages=USER)
    assert not_found.value.code == "model_not_found"
    env.primary.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=30))
    env.backup.set_fault(Fault(mode=FaultMode.RATE_LIMIT, retry_after=12))
    with pytest.raises(openai.RateLimitError) as limited:
        await oai.chat.completions.create(model="gpt-test", messages=USER)
    assert limited.value.response.headers["retry-after"] == "12"
    env.primary.set_fault(FaultMode.CONTEXT_TOO_LONG)
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.chat.completions.create(model="gpt-test", messages=USER)
    assert refused.value.code == "context_length_exceeded"
    env.primary.set_fault(FaultMode.ERROR_500)
    env.backup.set_fault(FaultMode.ERROR_503)
    with pytest.raises(openai.InternalServerError) as failed:
        await oai.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    assert failed.value.status_code == 503


async def test_openai_models_list(oai: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in oai.models.list()]
    assert "gpt-test" in ids
    assert "claude-test" in ids


async def test_openai_bad_key_is_authentication_error() -> None:
    async with gateway_env(settings=GatewaySettings(api_keys=("sk-right",))) as env:
        base = f"{env.url}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="gpt-test", messages=USER)
        async with openai.AsyncOpenAI(base_url=base, api_key="sk-right", max_retries=0) as good:
            answer = await good.chat.completions.create(model="gpt-test", messages=USER)
        assert answer.choices[0].message.content


# ---------------------------------------------------------------- Anthropic SDK


async def test_anthropic_non_streaming_fails_over_to_an_openai_provider(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    first = await claude.messages.create(model="claude-test", max_tokens=64, messages=USER)
    assert first.model == "claude-big"
    assert first.content[0].type == "text"
    assert first.content[0].text.startswith("Hello from primary")
    env.primary.set_fault(FaultMode.ERROR_503)  # an "Anthropic outage"
    raw = await claude.messages.with_raw_response.create(
        model="claude-test", max_tokens=64, messages=USER
    )
    second = await raw.parse()
    assert raw.headers["x-failover-provider"] == "backup-openai"
    assert second.content[0].type == "text"
    assert second.content[0].text.startswith("Hello from backup")
    assert second.stop_reason == "end_turn"
    assert env.backup.seen[-1].format == "openai"  # an Anthropic client, an OpenAI provider


async def test_anthropic_streaming_fails_over(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    env.primary.set_fault(FaultMode.AUTH)
    async with claude.messages.stream(model="claude-test", max_tokens=64, messages=USER) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text.startswith("Hello from backup")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.model == "gpt-alt"


async def test_anthropic_tool_round_trip_survives_a_primary_outage(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    asked = await claude.messages.create(
        model="claude-test", max_tokens=64, messages=USER, tools=[WEATHER_TOOL_ANTHROPIC]
    )
    assert asked.stop_reason == "tool_use"
    (use,) = [block for block in asked.content if block.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.input == {"input": "Paris"}
    env.primary.set_fault(FaultMode.ERROR_500)
    history: Any = [
        *USER,
        {"role": "assistant", "content": [block.model_dump() for block in asked.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}],
        },
    ]
    async with claude.messages.stream(
        model="claude-test", max_tokens=64, messages=history, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == "tool said: rain"
    (seen,) = env.backup.seen
    assert seen.format == "openai"
    assert seen.request.messages[-1].tool_call_id == use.id


async def test_anthropic_streamed_tool_use(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    env.primary.set_fault(FaultMode.RESET)
    async with claude.messages.stream(
        model="claude-test", max_tokens=64, messages=USER, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (use,) = [block for block in final.content if block.type == "tool_use"]
    assert use.input == {"input": "Paris"}


async def test_anthropic_mid_stream_cut_raises_when_the_restart_says_something_else(
    env: GatewayEnv, claude: anthropic.AsyncAnthropic
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
    received: list[str] = []
    with pytest.raises(anthropic.APIError):
        await _collect_anthropic(claude, received)
    assert "".join(received) == "Hello from primary."
    assert env.backup.requests == 1


async def test_anthropic_typed_errors(env: GatewayEnv, claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(model="claude-unknown", max_tokens=64, messages=USER)
    env.primary.set_fault(FaultMode.RATE_LIMIT_BARE)
    env.backup.set_fault(FaultMode.RATE_LIMIT_BARE)
    with pytest.raises(anthropic.RateLimitError):
        await claude.messages.create(model="claude-test", max_tokens=64, messages=USER)
    env.primary.set_fault(FaultMode.CONTENT_FILTER)
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(model="claude-test", max_tokens=64, messages=USER)
    bad: Any = [{"role": "user", "content": [{"type": "image", "source": {}}]}]
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(model="claude-test", max_tokens=64, messages=bad)


async def test_anthropic_bad_key_is_authentication_error() -> None:
    async with gateway_env(settings=GatewaySettings(api_keys=("sk-ant-right",))) as env:
        async with anthropic.AsyncAnthropic(
            base_url=env.url, api_key="sk-ant-wrong", max_retries=0
        ) as bad:
            with pytest.raises(anthropic.AuthenticationError) as denied:
                await bad.messages.create(model="claude-test", max_tokens=8, messages=USER)
        assert "sk-ant-wrong" not in str(denied.value)
        async with anthropic.AsyncAnthropic(
            base_url=env.url, api_key="sk-ant-right", max_retries=0
        ) as good:
            answer = await good.messages.create(model="claude-test", max_tokens=8, messages=USER)
        assert answer.content


async def _collect_openai(stream: Any, into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - keep what came


async def _collect_anthropic(claude: anthropic.AsyncAnthropic, into: list[str]) -> None:
    async with claude.messages.stream(model="claude-test", max_tokens=64, messages=USER) as stream:
        async for piece in stream.text_stream:
            into.append(piece)  # noqa: PERF401 - keep what came before the cut
