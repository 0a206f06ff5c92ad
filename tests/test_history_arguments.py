"""A replayed tool call whose arguments hold no JSON object must not stop a failover.

An OpenAI model stopped by max_tokens in the middle of a call's arguments leaves text such as
``{"city": "Par``; an OpenAI-format client replays it in later turns, and OpenAI takes it. The
Anthropic and Gemini wires want an object there, so their client codecs send ``{}`` (the tool
result after the call still tells what happened) and log which call it was, never its arguments:
refusing would have been a caller error, a 400 with no failover, for a request OpenAI accepts.
The Gemini server side (the fake provider) gives such a call in an answer as ``args: {}``, as the
Anthropic server side gives ``input: {}``.

Codec level first, then one failover through a real gateway with the official ``openai`` SDK.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    text_message,
)
from controller.providers.fake import FaultMode
from tests import wire_anthropic_support as anthropic_wire
from tests import wire_gemini_support as gemini_wire
from tests.gateway_support import gateway_env

CUT = '{"city": "Par'  # what a model stopped by max_tokens mid-arguments leaves
UNREADABLE = [CUT, "[1, 2]", "null", "not json"]
IDS = ["cut", "list", "null", "junk"]
GOOD = ToolCall(id="call_ok", name="get_time", arguments='{"zone": "CET"}')


def _history(arguments: str) -> Request:
    """A conversation whose first assistant turn holds a cut call beside a sound one."""
    cut = ToolCall(id="call_cut", name="get_weather", arguments=arguments)
    return Request(
        messages=(
            text_message("user", "weather and time in Paris?"),
            Message(role="assistant", tool_calls=(cut, GOOD)),
            Message(role="tool", tool_call_id="call_cut", content="error: arguments were cut"),
            Message(role="tool", tool_call_id="call_ok", content="10:00"),
            text_message("user", "try the weather again"),
        ),
    )


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def _assert_one_warning(caplog: pytest.LogCaptureFixture, logger: str, arguments: str) -> None:
    """One warning naming the call and its tool; the caller's arguments stay out of it."""
    [warning] = _warnings(caplog, logger)
    assert "'call_cut'" in warning
    assert "'get_weather'" in warning
    assert arguments not in warning


# ---------------------------------------------------------------- client codecs: the history


@pytest.mark.parametrize("arguments", UNREADABLE, ids=IDS)
def test_anthropic_request_sends_a_cut_history_call_with_empty_input(
    caplog: pytest.LogCaptureFixture, arguments: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.wire"):
        body = anthropic_wire.CLIENT.build(_history(arguments), anthropic_wire.MODEL, None).body
    blocks = body["messages"][1]["content"]
    assert [(b["id"], b["name"], b["input"]) for b in blocks] == [
        ("call_cut", "get_weather", {}),
        ("call_ok", "get_time", {"zone": "CET"}),
    ]
    _assert_one_warning(caplog, "controller.wire._anthropic_client", arguments)
    # What went out is a request the Anthropic side accepts (the fake parses it as the API does).
    replayed = anthropic_wire.SERVER.parse_request(json.loads(json.dumps(body)))[1]
    assert replayed.messages[1].tool_calls[0].arguments == "{}"


@pytest.mark.parametrize("arguments", UNREADABLE, ids=IDS)
def test_gemini_request_sends_a_cut_history_call_with_empty_args(
    caplog: pytest.LogCaptureFixture, arguments: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.wire"):
        body = gemini_wire.CLIENT.build(_history(arguments), gemini_wire.MODEL, None).body
    parts = body["contents"][1]["parts"]
    assert [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts] == [
        ("get_weather", {}),
        ("get_time", {"zone": "CET"}),
    ]
    _assert_one_warning(caplog, "controller.wire._gemini_client", arguments)
    replayed = gemini_wire.SERVER.parse_request(json.dumps(body), gemini_wire.MODEL)[1]
    assert replayed.messages[1].tool_calls[0].arguments == "{}"


def test_sound_history_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.wire"):
        anthropic_wire.CLIENT.build(_history('{"city": "Paris"}'), anthropic_wire.MODEL, None)
        gemini_wire.CLIENT.build(_history('{"city": "Paris"}'), gemini_wire.MODEL, None)
    assert [r for r in caplog.records if r.name.startswith("controller.wire")] == []


# ---------------------------------------------------------------- Gemini server side: answers


def test_gemini_answer_with_a_cut_call_is_rendered_with_empty_args(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cut = ToolCall(id="call_cut", name="get_weather", arguments=CUT)
    response = Response(
        id="r-cut",
        model=gemini_wire.MODEL,
        message=Message(role="assistant", tool_calls=(cut,)),
        finish_reason=FinishReason.LENGTH,
    )
    with caplog.at_level(logging.WARNING, logger="controller.wire"):
        body = gemini_wire.SERVER.render_response(response)
    [candidate] = body["candidates"]
    assert candidate["finishReason"] == "MAX_TOKENS"
    function = {"name": "get_weather", "args": {}, "id": "call_cut"}
    assert candidate["content"]["parts"] == [{"functionCall": function}]
    _assert_one_warning(caplog, "controller.wire._gemini_server", CUT)
    assert "r-cut" in _warnings(caplog, "controller.wire._gemini_server")[0]


def test_gemini_stream_with_a_cut_call_ends_with_empty_args(
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = gemini_wire.SERVER.stream_encoder(id="r-cut", model=gemini_wire.MODEL)
    chunks = [
        StreamChunk(tool_call=ToolCallDelta(index=0, id="call_cut", name="get_weather")),
        StreamChunk(tool_call=ToolCallDelta(index=0, arguments=CUT)),
        StreamChunk(finish_reason=FinishReason.LENGTH),
    ]
    with caplog.at_level(logging.WARNING, logger="controller.wire"):
        raw = b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.end()
    decoded = gemini_wire.decode_stream(raw)
    assert decoded[-1].finish_reason is FinishReason.LENGTH
    [call] = [chunk.tool_call for chunk in decoded if chunk.tool_call is not None]
    assert (call.id, call.name, call.arguments) == ("call_cut", "get_weather", "{}")
    _assert_one_warning(caplog, "controller.wire._gemini_server", CUT)


# ---------------------------------------------------------------- through a gateway


def _openai_history(arguments: str) -> Any:
    function = {"name": "get_weather", "arguments": arguments}
    call = {"id": "call_cut", "type": "function", "function": function}
    return [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_cut", "content": "error: arguments were cut"},
        {"role": "user", "content": "try again"},
    ]


async def _ask(oai: openai.AsyncOpenAI, *, stream: bool) -> tuple[str | None, str]:
    """(the provider that served, the answer's text) for the cut history, streamed or not."""
    chat, messages = oai.chat.completions.with_raw_response, _openai_history(CUT)
    if stream:
        streamed = await chat.create(model="gpt-test", messages=messages, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in streamed.parse()])
        return streamed.headers.get("x-failover-provider"), text
    whole = await chat.create(model="gpt-test", messages=messages)
    return whole.headers.get("x-failover-provider"), whole.parse().choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_client_with_a_cut_call_in_history_fails_over_to_anthropic(
    caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    async with (
        gateway_env() as env,
        openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key="sk-c", max_retries=0) as oai,
    ):
        env.primary.set_fault(FaultMode.ERROR_503)
        with caplog.at_level(logging.WARNING, logger="controller.wire"):
            served_by, text = await _ask(oai, stream=stream)
        assert served_by == "backup-anthropic"
        assert text.startswith("Hello from backup")
        assert env.primary.seen[-1].format == "openai"  # tried first, failed with 503
        served = env.backup.seen[-1]
        assert served.format == "anthropic"
        assert served.request.messages[1].tool_calls[0].arguments == "{}"
    _assert_one_warning(caplog, "controller.wire._anthropic_client", CUT)
