"""The official ``google-genai`` SDK pointed at the gateway's Gemini front (``http_options``
base URL): served by a Gemini provider as it came, and by OpenAI and Anthropic providers
translated, with the primary failing mid-test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from controller.gateway import GatewaySettings
from controller.providers.fake import Fault, FaultMode
from tests.fronts_support import fronts_env
from tests.gateway_support import GatewayEnv, get, post

WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}},
)
TOOLS = types.GenerateContentConfig(
    tools=[types.Tool(function_declarations=[WEATHER])],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)
KEY = "sk-client-gemini-0001"
# The SDK's async transport subclasses aiohttp's ClientSession, which aiohttp discourages.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with fronts_env(settings=GatewaySettings(api_keys=(KEY,))) as running:
        yield running


def client_for(env: GatewayEnv, *, key: str = KEY, version: str = "v1beta") -> genai.Client:
    options = types.HttpOptions(
        base_url=env.url,
        api_version=version,
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=key, http_options=options)


@pytest.fixture
def gclient(env: GatewayEnv) -> genai.Client:
    return client_for(env)


async def test_generate_content_same_format_goes_as_it_came(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.5)
    answer = await gclient.aio.models.generate_content(
        model="gemini-test", contents="Paris?", config=config
    )
    assert (answer.text or "").startswith("Hello from primary")
    seen = env.primary.seen[-1]
    assert seen.format == "gemini"
    assert seen.model == "gemini-big"
    sent = json.loads(seen.body)
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert "model" not in sent  # the body went on as it came: Gemini names the model in the path
    assert seen.headers["x-goog-api-key"] == "sk-test-not-a-secret"  # the gateway's, not ours


async def test_generate_content_fails_over_to_openai(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    env.primary.set_fault(FaultMode.ERROR_503)
    answer = await gclient.aio.models.generate_content(model="gemini-test", contents="Paris?")
    assert (answer.text or "").startswith("Hello from backup")
    assert env.backup.seen[-1].format == "openai"
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata.total_token_count or 0) > 0


async def test_streaming_from_each_kind_of_provider(env: GatewayEnv, gclient: genai.Client) -> None:
    for model, fmt in (
        ("gemini-test", "gemini"),
        ("gpt-test", "openai"),
        ("claude-first", "anthropic"),
    ):
        stream = await gclient.aio.models.generate_content_stream(model=model, contents="Paris?")
        texts = [chunk.text or "" async for chunk in stream]
        assert len(texts) > 1  # streamed in pieces
        assert "".join(texts).startswith("Hello from primary")
        assert env.primary.seen[-1].format == fmt


async def test_a_function_calling_loop_survives_a_failover(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    """The call is made by Anthropic (claude-first's primary); the result goes to Gemini."""
    user = types.Content(role="user", parts=[types.Part(text="Rome")])
    called = await gclient.aio.models.generate_content(
        model="claude-first", contents=[user], config=TOOLS
    )
    calls = called.function_calls or []
    assert [c.name for c in calls] == ["get_weather"]
    assert calls[0].args == {"input": "Rome"}
    env.primary.set_fault(FaultMode.ERROR_500)
    history = [
        user,
        types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"output": "22C"})
            ],
        ),
    ]
    answered = await gclient.aio.models.generate_content(
        model="claude-first", contents=history, config=TOOLS
    )
    assert answered.text == "tool said: 22C"
    served = env.backup.seen[-1]
    assert served.format == "gemini"
    request = served.request
    assert request.messages[1].tool_calls[0].name == "get_weather"
    assert request.messages[2].tool_call_id == request.messages[1].tool_calls[0].id


async def test_count_tokens(env: GatewayEnv, gclient: genai.Client) -> None:
    counted = await gclient.aio.models.count_tokens(model="gemini-test", contents="one two three")
    assert (counted.total_tokens or 0) > 0


async def test_structured_output_from_anthropic(env: GatewayEnv, gclient: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=schema
    )
    answer = await gclient.aio.models.generate_content(
        model="claude-first", contents="A city", config=config
    )
    assert json.loads(answer.text or "") == {"name": "text"}
    wanted = env.primary.seen[-1].request.response_format
    assert wanted is not None
    assert wanted.schema == schema


async def test_v1_paths_and_model_listing(env: GatewayEnv) -> None:
    client = client_for(env, version="v1")
    answer = await client.aio.models.generate_content(model="gemini-test", contents="hi")
    assert (answer.text or "").startswith("Hello from primary")
    names = [m.name async for m in await client_for(env).aio.models.list()]
    assert "models/gemini-test" in names


async def test_a_wrong_key_is_googles_401(env: GatewayEnv) -> None:
    with pytest.raises(errors.ClientError) as refused:
        await client_for(env, key="wrong").aio.models.generate_content(
            model="gemini-test", contents="hi"
        )
    assert refused.value.code == 401
    assert refused.value.status == "UNAUTHENTICATED"


HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_bad_input_gets_googles_error_shape(env: GatewayEnv) -> None:
    base = env.url + "/v1beta/models/"
    headers = {"x-goog-api-key": KEY}
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post(
            http, base + "gemini-test:generateContent", {"contents": "x"}, headers=headers
        )
        assert status == 400
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        status, body, _ = await post(http, base + "nope:generateContent", HELLO, headers=headers)
        assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
        status, body, _ = await post(
            http, base + "gemini-test:embedContent", {"contents": []}, headers=headers
        )
        assert status == 404
        assert "embedContent" in body["error"]["message"]
        status, body, _ = await post(
            http, f"{base}gemini-test:generateContent?key={KEY}", b"{oops", headers={}
        )
        assert status == 400  # a key in the query is accepted; the body is not JSON
        status, _ = await get(http, env.url + "/v1beta/models", params={"key": "wrong"})
        assert status == 401


async def test_a_cut_stream_ends_with_an_error_the_sdk_raises(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    env.backup.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=2))
    env.primary.set_fault(FaultMode.ERROR_503)  # served by backup-openai, which is cut
    texts: list[str] = []
    stream = await gclient.aio.models.generate_content_stream(
        model="gemini-test", contents="Paris?"
    )
    with pytest.raises(errors.APIError):
        await _drain(stream, texts)
    assert texts  # part of the answer came before the cut


async def _drain(stream: AsyncIterator[types.GenerateContentResponse], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.text or "")  # noqa: PERF401 - a comprehension would lose them on failure


async def test_the_new_fronts_feed_the_same_events_and_spans(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    """A failover seen from the Gemini front: one attempt event per provider tried (what the
    tripwire counts), a CLIENT span per attempt, the route span, the SERVER span on the path."""
    env.primary.set_fault(FaultMode.ERROR_503)
    await gclient.aio.models.generate_content(model="gemini-test", contents="Paris?")
    attempts = [(a.provider, a.outcome.value) for a in env.recorder.attempts]
    assert attempts[-2:] == [("primary-gemini", "fault"), ("backup-openai", "success")]
    assert env.recorder.routes[-1].served_by == "backup-openai"
    names = [span.name for span in env.exporter.get_finished_spans()]
    assert "chat gemini-big" in names
    assert "chat gpt-alt" in names
    assert "failover.route" in names
    assert "POST /v1beta/models/{model}" in names


async def test_calls_another_provider_made_pass_gemini_3s_signature_check(
    env: GatewayEnv, gclient: genai.Client
) -> None:
    """OpenAI makes the call during a Gemini outage; the history then goes back to Gemini 3
    as it came (the fake checks signatures as Gemini 3 does): the placeholder signature the
    front put on the call lets it through."""
    user = types.Content(role="user", parts=[types.Part(text="Rome")])
    env.primary.set_fault(Fault(mode=FaultMode.ERROR_503, count=1))
    called = await gclient.aio.models.generate_content(
        model="gemini3-test", contents=[user], config=TOOLS
    )
    assert env.backup.seen[-1].format == "openai"
    candidate = (called.candidates or [])[0]
    assert candidate.content is not None
    result = types.Part.from_function_response(name="get_weather", response={"output": "9C"})
    history = [user, candidate.content, types.Content(role="user", parts=[result])]
    answered = await gclient.aio.models.generate_content(
        model="gemini3-test", contents=history, config=TOOLS
    )
    assert answered.text == "tool said: 9C"
    assert env.primary.seen[-1].format == "gemini"  # Gemini 3 took the history as it came


async def test_upper_case_schema_types_reach_other_vendors_as_json_schema(env: GatewayEnv) -> None:
    """Gemini CLI's classifier asks for JSON with ``"type": "OBJECT"`` in responseJsonSchema,
    which Gemini takes and no other vendor does."""
    schema = {
        "type": "OBJECT",
        "properties": {"score": {"type": "INTEGER"}, "why": {"type": "STRING", "nullable": True}},
        "required": ["score"],
    }
    body = HELLO | {
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}
    }
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(
            http,
            env.url + "/v1beta/models/claude-first:generateContent",
            body,
            headers={"x-goog-api-key": KEY},
        )
    assert status == 200
    assert json.loads(answer["candidates"][0]["content"]["parts"][0]["text"]) == {"score": 0}
    wanted = env.primary.seen[-1].request.response_format
    assert wanted is not None
    assert wanted.schema == {
        "type": "object",
        "properties": {"score": {"type": "integer"}, "why": {"type": ["string", "null"]}},
        "required": ["score"],
    }
