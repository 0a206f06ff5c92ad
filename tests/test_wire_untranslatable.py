"""What each server codec notes as untranslatable while it decodes a client's request.

A noted feature is not refused: the request goes on, as it came, to a provider of the client's
own format, and the router skips providers of other formats unless the config lets them drop it
(tests/test_same_format.py drives that through the gateway).
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.model import Untranslatable
from controller.wire.anthropic import AnthropicServerCodec
from controller.wire.openai import OpenAIServerCodec

OPENAI = OpenAIServerCodec()
ANTHROPIC = AnthropicServerCodec()
PNG = "iVBORw0KGgo="


def openai_found(**extra: Any) -> tuple[Untranslatable, ...]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    source = OPENAI.parse_request(body)[1].source
    assert source is not None
    assert source.format == "openai"
    return source.untranslatable


def anthropic_found(**extra: Any) -> tuple[Untranslatable, ...]:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    source = ANTHROPIC.parse_request(body | extra)[1].source
    assert source is not None
    assert source.format == "anthropic"
    return source.untranslatable


def test_a_plain_openai_request_is_all_translatable() -> None:
    """Including structured output, a seed, an end user and one tool call at a time: each
    has a field in every format that can take it (tests/test_wire_request_fields.py)."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    found = openai_found(
        tools=tools,
        tool_choice="auto",
        max_completion_tokens=9,
        temperature=0.5,
        top_p=1,
        stop=["x"],
        stream=True,
        stream_options={"include_usage": True},
        # the API's defaults ask for nothing a translation loses
        n=1,
        parallel_tool_calls=True,
        logprobs=False,
        presence_penalty=0.0,
        frequency_penalty=0,
        store=False,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        seed=7,
        user="u-1",
    )
    assert found == ()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"verbosity": "low"}, ("verbosity", "verbosity")),
        ({"n": 2}, ("n", "n")),
        ({"service_tier": "flex"}, ("service_tier", "service_tier")),
        ({"logprobs": True}, ("logprobs", "logprobs")),
        ({"x_future_field": {"a": 1}}, ("x_future_field", "x_future_field")),
    ],
)
def test_openai_top_level_fields_a_translation_would_lose(
    extra: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert openai_found(**extra) == (Untranslatable(*expected),)


def test_openai_audio_image_detail_and_message_names_are_noted_where_they_are() -> None:
    """Images translate (tests/test_wire_media.py); audio and a ``detail`` do not."""
    messages = [
        {"role": "system", "content": "be brief", "name": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.invalid/b.png", "detail": "low"},
                },
                {"type": "file", "file": {"file_id": "file-abc"}},
            ],
        },
    ]
    body = {"model": "m", "messages": messages}
    _, request = OPENAI.parse_request(body)
    assert request.messages[0].content == "what is this?"  # the text still decodes
    assert len(request.messages[0].parts) == 3  # the text and the two images
    assert request.source is not None
    assert request.source.untranslatable == (
        Untranslatable("name", "messages[0].name"),
        Untranslatable("audio", "messages[1].content[2]"),
        Untranslatable("image_detail", "messages[1].content[3].image_url.detail"),
        Untranslatable("file_id", "messages[1].content[4].file.file_id"),
    )


def test_openai_strict_tools_and_custom_tools_are_noted() -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}},
        {"type": "custom", "custom": {"name": "grammar"}},
    ]
    assert openai_found(tools=tools) == (
        Untranslatable("strict", "tools[0].function.strict"),
        Untranslatable("custom", "tools[1].type"),
    )


def test_claude_code_shaped_request_notes_what_only_anthropic_honours() -> None:
    """The shape Claude Code sends: system blocks with cache_control, a system turn in
    messages, thinking, metadata, context_management, betas' fields, a server tool."""
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 32000,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Be careful."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
            {"role": "system", "content": "The user switched to plan mode."},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                    },
                ],
            },
        ],
        "tools": [
            {"name": "Bash", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 16000},
        "metadata": {"user_id": "user_abc"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "stream": True,
    }
    _, request = ANTHROPIC.parse_request(body)
    assert request.system == (
        "You are Claude Code.\nBe careful.\n\nThe user switched to plan mode."
    )  # the system turn folds into the system prompt for a translation
    assert [t.name for t in request.tools] == ["Bash"]
    assert request.source is not None
    assert request.source.untranslatable == (
        Untranslatable("context_management", "context_management"),
        Untranslatable("cache_control", "system.0.cache_control"),
        Untranslatable("web_search_20250305", "tools.1"),
    )


def test_anthropic_disabled_thinking_and_parallel_defaults_are_translatable() -> None:
    assert anthropic_found(thinking={"type": "disabled"}) == ()
    choice = {"type": "auto", "disable_parallel_tool_use": False}
    assert anthropic_found(tool_choice=choice) == ()
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    assert anthropic_found(tool_choice=choice) == ()  # parallel_tool_calls=False


def test_anthropic_server_tool_history_is_noted_and_images_in_tool_results_are_not() -> None:
    messages = [
        {"role": "user", "content": "look"},
        {
            "role": "assistant",
            "content": [
                {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
                {"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "a screenshot"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                }
            ],
        },
    ]
    assert anthropic_found(messages=messages) == (
        Untranslatable("server_tool_use", "messages.1.content.0"),
    )


def test_the_legacy_function_role_is_noted_not_refused() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "function", "name": "f", "content": "result"},
        ],
    }
    _, request = OPENAI.parse_request(body)
    assert [m.role for m in request.messages] == ["user"]
    assert request.source is not None
    assert request.source.untranslatable == (Untranslatable("role function", "messages[1].role"),)
