"""Prompt-cache reads in each vendor's usage reach our ``Usage.cached_input_tokens`` (of the
input), so spend prices them at ``cached_input``: OpenAI chat ``prompt_tokens_details.
cached_tokens``, Responses ``input_tokens_details.cached_tokens``, Anthropic
``cache_read_input_tokens`` (whole and streamed), Gemini ``cachedContentTokenCount``. A count
that is not a count, or says more than the input, never makes a cost negative or larger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.model import Usage
from controller.routing._spend import Price
from controller.wire._base import SSEEvent
from controller.wire.anthropic import AnthropicClientCodec
from controller.wire.gemini import GeminiClientCodec
from controller.wire.openai import OpenAIClientCodec
from controller.wire.responses import ResponsesClientCodec


def chat_body(usage: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).encode()


def test_openai_chat_cached_tokens() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    }
    answer = OpenAIClientCodec().parse_response(chat_body(usage), "gpt-4o")
    assert answer.usage == Usage(2006, 300, 1920)


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        (None, 0),
        ({}, 0),
        ({"cached_tokens": None}, 0),
        ({"cached_tokens": True}, 0),
        ({"cached_tokens": "1920"}, 0),
        ({"cached_tokens": -5}, 0),
        ({"cached_tokens": 10**9}, 2006),  # never more than the input it is part of
    ],
)
def test_openai_chat_cached_tokens_that_are_not_a_count(details: Any, cached: int) -> None:
    usage = {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": details}
    answer = OpenAIClientCodec().parse_response(chat_body(usage), "gpt-4o")
    assert answer.usage.cached_input_tokens == cached


def test_responses_cached_tokens() -> None:
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": 2006,
            "input_tokens_details": {"cached_tokens": 1920},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 2306,
        },
    }
    answer = ResponsesClientCodec().parse_response(json.dumps(body).encode(), "gpt-4.1")
    assert answer.usage == Usage(2006, 300, 1920)


def test_gemini_cached_content_tokens() -> None:
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 10,
            "cachedContentTokenCount": 60,
            "totalTokenCount": 110,
        },
        "modelVersion": "gemini-2.5-flash",
    }
    answer = GeminiClientCodec().parse_response(json.dumps(body).encode(), "gemini-2.5-flash")
    assert answer.usage == Usage(100, 10, 60)


# A Claude Code turn: a long cached prefix, a little new input, a short answer.
CLAUDE_USAGE = {
    "input_tokens": 5_000,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 95_000,
    "output_tokens": 1_000,
}
CLAUDE_PRICE = Price(input=3.0, output=15.0, cached_input=0.30)  # USD per million
CLAUDE_COST = (5_000 * 3.0 + 95_000 * 0.30 + 1_000 * 15.0) / 1e6  # 0.0585, not 0.315


def test_anthropic_cache_reads_are_priced_as_cache_reads() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": CLAUDE_USAGE,
    }
    answer = AnthropicClientCodec().parse_response(json.dumps(body).encode(), "claude-sonnet-4-5")
    assert answer.usage == Usage(100_000, 1_000, 95_000)
    assert CLAUDE_PRICE.cost(answer.usage) == pytest.approx(CLAUDE_COST)


def test_anthropic_stream_carries_message_starts_cache_reads_to_the_end() -> None:
    decoder = AnthropicClientCodec().stream_decoder("claude-sonnet-4-5")
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [],
            "stop_reason": None,
            "usage": {**CLAUDE_USAGE, "output_tokens": 1},
        },
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1_000},
    }
    chunks = [
        *decoder.feed(SSEEvent(event="message_start", data=json.dumps(start))),
        *decoder.feed(SSEEvent(event="message_delta", data=json.dumps(delta))),
    ]
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert usage == Usage(100_000, 1_000, 95_000)
    assert CLAUDE_PRICE.cost(usage) == pytest.approx(CLAUDE_COST)
