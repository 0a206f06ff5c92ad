"""Gemini 3 thought signatures on replayed function calls.

Gemini 3 refuses a request whose current turn replays a function call without the
``thoughtSignature`` its answer carried ("Function call ... is missing a thought_signature").
Our model keeps no signatures (OpenAI and Anthropic clients cannot hand them back, and calls
another provider made never had one), so the client codec puts Google's documented placeholder
on the first call of every replayed model turn. The fake's server codec validates like Gemini 3
does, so the adapter is tested against the rule, over HTTP, with a conversation that started on
another provider.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller._errors import BadRequest
from controller.model import Message, Request, ToolCall, text_message
from controller.providers.fake import FakeProvider
from tests.conftest import adapter
from tests.gateway_support import TIMEOUTS
from tests.wire_gemini_support import CLIENT, SERVER

GEMINI_3 = "gemini-3-pro-preview"
PLACEHOLDER = "skip_thought_signature_validator"

# A tool loop that began elsewhere (ids in OpenAI's style): two parallel calls, their results.
TOOL_LOOP = Request(
    messages=(
        text_message("user", "Weather in Paris and Rome?"),
        Message(
            role="assistant",
            tool_calls=(
                ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="call_b", name="get_weather", arguments='{"city": "Rome"}'),
            ),
        ),
        Message(role="tool", tool_call_id="call_a", content="18C"),
        Message(role="tool", tool_call_id="call_b", content="24C"),
    )
)


def model_turns(body: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [c["parts"] for c in body["contents"] if c["role"] == "model"]


def test_the_first_call_of_each_replayed_turn_carries_the_placeholder() -> None:
    body = CLIENT.build(TOOL_LOOP, GEMINI_3, None).body
    [parts] = model_turns(body)
    assert parts[0]["thoughtSignature"] == PLACEHOLDER
    assert "thoughtSignature" not in parts[1]  # parallel calls: only the first carries one
    text_only = Request(messages=(text_message("user", "hi"), text_message("assistant", "yo")))
    [plain] = model_turns(CLIENT.build(text_only, GEMINI_3, None).body)
    assert plain == [{"text": "yo"}]


def test_the_fake_validates_the_current_turn_like_gemini_3() -> None:
    body = CLIENT.build(TOOL_LOOP, GEMINI_3, None).body
    assert SERVER.parse_request(body, GEMINI_3)[1].messages[1].tool_calls[1].id == "call_b"
    del body["contents"][1]["parts"][0]["thoughtSignature"]
    with pytest.raises(BadRequest, match=r"missing a thought_signature.*get_weather"):
        SERVER.parse_request(body, GEMINI_3)
    body["contents"][1]["parts"][0]["thoughtSignature"] = "a-signature-from-elsewhere"
    with pytest.raises(BadRequest, match="invalid"):
        SERVER.parse_request(body, GEMINI_3)
    del body["contents"][1]["parts"][0]["thoughtSignature"]
    SERVER.parse_request(body, "gemini-2.5-flash")  # older models do not check
    # Only the current turn is checked: a new user question closes the earlier loop.
    body["contents"].append({"role": "user", "parts": [{"text": "And Oslo?"}]})
    SERVER.parse_request(body, GEMINI_3)


def test_every_step_of_the_current_turn_is_checked() -> None:
    two_steps = Request(
        messages=(
            *TOOL_LOOP.messages,
            Message(
                role="assistant",
                tool_calls=(ToolCall(id="call_c", name="get_time", arguments='{"city": "Rome"}'),),
            ),
            Message(role="tool", tool_call_id="call_c", content="noon"),
        )
    )
    body = CLIENT.build(two_steps, GEMINI_3, None).body
    assert [parts[0]["thoughtSignature"] for parts in model_turns(body)] == [PLACEHOLDER] * 2
    SERVER.parse_request(body, GEMINI_3)
    del body["contents"][3]["parts"][0]["thoughtSignature"]  # the second step's call
    with pytest.raises(BadRequest, match="get_time`, position 3"):
        SERVER.parse_request(body, GEMINI_3)


async def test_a_conversation_from_another_provider_continues_on_gemini_3() -> None:
    async with FakeProvider(name="gemini") as fake:
        provider = adapter(fake, "gemini")
        try:
            answer = await provider.complete(TOOL_LOOP, GEMINI_3, TIMEOUTS)
        finally:
            await provider.close()
    assert answer.message.content == "tool said: 24C"  # the fake answered the tool results
    seen = fake.seen[-1]
    assert (seen.format, seen.model) == ("gemini", GEMINI_3)
    assert [m.role for m in seen.request.messages] == ["user", "assistant", "tool", "tool"]
