"""The official ``openai`` SDK's ``client.responses`` pointed at the gateway's ``/v1/responses``.

The ``frontier`` tier is ``primary-openai`` (chat completions) then ``backup-anthropic``: a
Responses client is served by translation either way, and keeps being served, tool loop and
all, when the primary fails part-way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from controller.providers.fake import Fault, FaultMode
from tests.gateway_support import GatewayEnv, gateway_env, post, read_stream, sse_events

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


class City(BaseModel):
    name: str
    population: int


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        yield running


@pytest.fixture
async def oai(env: GatewayEnv) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{env.url}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as client:
        yield client


async def test_create_answers_text_and_fails_over(env: GatewayEnv, oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(
        model="gpt-test", instructions="Be brief.", input="Paris?", max_output_tokens=50
    )
    assert first.status == "completed"
    assert first.output_text.startswith("Hello from primary")
    assert first.model == "gpt-big"
    assert first.usage is not None
    assert first.usage.output_tokens > 0
    seen = env.primary.seen[-1]
    assert seen.format == "openai"  # a Responses client, translated to chat completions
    assert seen.request.system == "Be brief."
    assert seen.request.max_tokens == 50
    env.primary.set_fault(FaultMode.ERROR_500)
    raw = await oai.responses.with_raw_response.create(model="gpt-test", input="Paris?")
    second = raw.parse()
    assert raw.headers["x-failover-provider"] == "backup-anthropic"
    assert second.output_text.startswith("Hello from backup")
    assert env.backup.seen[-1].format == "anthropic"


async def test_a_tool_loop_moves_to_the_backup_with_its_ids(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    history: list[Any] = [{"role": "user", "content": "Paris"}]
    called = await oai.responses.create(model="gpt-test", input=history, tools=[WEATHER])
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"input": "Paris"}
    env.primary.set_fault(FaultMode.ERROR_503)  # the primary goes down mid-conversation
    history += [item.model_dump(exclude_none=True) for item in called.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "22C"})
    answered = await oai.responses.create(model="gpt-test", input=history, tools=[WEATHER])
    assert answered.output_text == "tool said: 22C"
    request = env.backup.seen[-1].request  # Anthropic got the call and its result, paired
    assert request.messages[1].tool_calls[0].id == calls[0].call_id
    assert request.messages[2].role == "tool"
    assert request.messages[2].tool_call_id == calls[0].call_id


async def test_stream_events_as_the_sdk_parses_them(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(model="gpt-test", input="Paris?") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text.startswith("Hello from primary")
    assert final.usage is not None
    assert final.usage.total_tokens > 0


async def test_stream_a_tool_call_with_argument_deltas(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.ERROR_500, count=1))  # fails over, then streams
    async with oai.responses.stream(model="gpt-test", input="Rome", tools=[WEATHER]) as stream:
        deltas = [
            e.delta async for e in stream if e.type == "response.function_call_arguments.delta"
        ]
        final = await stream.get_final_response()
    assert len(deltas) >= 2  # the call's arguments came in pieces
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"input": "Rome"}
    assert env.backup.seen[-1].format == "anthropic"


async def test_structured_output_parses(env: GatewayEnv, oai: openai.AsyncOpenAI) -> None:
    parsed = await oai.responses.parse(model="gpt-test", input="A city", text_format=City)
    assert parsed.output_parsed == City(name="text", population=0)
    wanted = env.primary.seen[-1].request.response_format
    assert wanted is not None
    assert wanted.name == "City"
    env.primary.set_fault(FaultMode.ERROR_500)
    again = await oai.responses.parse(model="gpt-test", input="A city", text_format=City)
    assert again.output_parsed == City(name="text", population=0)  # from Anthropic


async def test_a_cut_stream_ends_with_response_failed(
    env: GatewayEnv, oai: openai.AsyncOpenAI
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
    async with oai.responses.stream(model="gpt-test", input="Paris?") as stream:
        kinds = [event.type async for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert kinds[-1] == "response.failed"
    assert "response.completed" not in kinds


async def test_a_hosted_tool_no_provider_has_is_a_400_naming_it(
    oai: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.responses.create(model="gpt-test", input="news?", tools=[{"type": "web_search"}])
    assert "web_search" in refused.value.message
    assert "tools[0].type" in refused.value.message


async def test_previous_response_id_is_refused_without_a_store(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.responses.create(model="gpt-test", input="and?", previous_response_id="resp_1")
    assert "previous_response_id" in refused.value.message


async def test_bad_input_gets_openai_errors(env: GatewayEnv) -> None:
    url = env.url + "/v1/responses"
    async with aiohttp.ClientSession() as http:
        status, body, headers = await post(http, url, {"model": "gpt-test", "input": 3})
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == "input"
        assert headers["x-should-retry"] == "false"
        status, body, _ = await post(http, url, {"model": "nope", "input": "hi"})
        assert (status, body["error"]["code"]) == (404, "model_not_found")
        status, body, _ = await post(http, url, {"model": "gpt-test"})
        assert (status, body["error"]["param"]) == (400, "input")
        status, body, _ = await post(http, url, b"{not json")
        assert status == 400
        assert "not valid JSON" in body["error"]["message"]


async def test_every_stream_event_carries_its_type_and_sequence(env: GatewayEnv) -> None:
    body = {"model": "gpt-test", "input": "Paris?", "stream": True}
    async with aiohttp.ClientSession() as http:
        status, raw = await read_stream(http, env.url + "/v1/responses", body)
    assert status == 200
    events = sse_events(raw)
    datas = [json.loads(data) for _, data in events]
    assert [name for name, _ in events] == [d["type"] for d in datas]
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    done = [d["item"] for d in datas if d["type"] == "response.output_item.done"]
    assert datas[-1]["response"]["output"] == done


CODEX_LIKE: Any = {
    "model": "gpt-test",
    "instructions": "You are a coding agent.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "sandbox: read-only"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ls"}]},
        {
            "type": "message",
            "role": "assistant",
            "phase": "commentary",
            "content": [{"type": "output_text", "text": "Listing.", "annotations": []}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-opaque"},
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "exec_command",
            "arguments": '{"cmd":"ls"}',
        },
        {"type": "function_call_output", "call_id": "call_a", "output": "README.md"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "strict": False,
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        },
        {"type": "namespace", "name": "multi_agent_v1", "tools": []},
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "session-1",
    "client_metadata": {"session_id": "session-1"},
}


async def test_a_codex_request_names_what_only_a_responses_provider_takes(env: GatewayEnv) -> None:
    """What Codex CLI sends (captured from codex 0.171): refused with the first thing no
    provider of the tier can take, until the config lets the gateway drop those."""
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post(http, env.url + "/v1/responses", CODEX_LIKE)
        assert status == 400
        assert body["error"]["param"] == "input[3].encrypted_content"
        assert "namespace" in body["error"]["message"]
        assert "web_search" in body["error"]["message"]
        env.backend.router.droppable = frozenset({"encrypted_reasoning", "namespace", "web_search"})
        status, raw = await read_stream(http, env.url + "/v1/responses", CODEX_LIKE)
    assert status == 200
    done = json.loads(sse_events(raw)[-1][1])
    assert done["type"] == "response.completed"
    assert done["response"]["output"][0]["content"][0]["text"] == "tool said: README.md"
    request = env.primary.seen[-1].request
    assert request.system == "You are a coding agent.\n\nsandbox: read-only"
    assert [t.name for t in request.tools] == ["exec_command"]
    assert request.messages[1].content == "Listing."  # the call joined the assistant's turn
    assert request.messages[1].tool_calls[0].id == "call_a"
