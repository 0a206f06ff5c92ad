"""Images and documents through the gateway with the official SDKs, served by a provider of the
other wire format (translated), checked on the bytes the fake provider received.

Tier "claude" (alias ``claude-test``) is primary-anthropic -> backup-openai; tier "frontier"
(alias ``gpt-test``) is primary-openai -> backup-anthropic (tests/gateway_support.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from controller.providers.fake import FaultMode
from tests.gateway_support import GatewayEnv, gateway_env

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
PDF = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K"


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        yield running


def _received(env: GatewayEnv, which: str = "primary") -> dict[str, Any]:
    fake = env.primary if which == "primary" else env.backup
    body: dict[str, Any] = json.loads(fake.seen[-1].body)
    return body


async def test_openai_sdk_image_is_served_by_an_anthropic_provider(env: GatewayEnv) -> None:
    content: Any = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {
            "type": "file",
            "file": {"filename": "r.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
        },
    ]
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-test", messages=[{"role": "user", "content": content}]
        )
    answer = raw.parse()
    assert raw.headers["x-failover-provider"] == "primary-anthropic"  # translated, not skipped
    assert (answer.choices[0].message.content or "").startswith("Hello from primary")
    assert env.primary.seen[-1].format == "anthropic"
    assert _received(env)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "r.pdf",
                },
            ],
        }
    ]


async def test_anthropic_sdk_image_is_served_by_an_openai_provider(env: GatewayEnv) -> None:
    content: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"},
    ]
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="gpt-test", max_tokens=64, messages=[{"role": "user", "content": content}]
        )
    message = await raw.parse()
    assert raw.headers["x-failover-provider"] == "primary-openai"
    assert message.content[0].type == "text"
    assert env.primary.seen[-1].format == "openai"
    assert _received(env)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


async def test_anthropic_sdk_tool_result_image_fails_over_to_an_openai_provider(
    env: GatewayEnv,
) -> None:
    """The Anthropic provider is down: the backup of the other format gets the history, the
    tool result's image and document in a user message after the tool message."""
    env.primary.set_fault(FaultMode.ERROR_503)
    image: Any = {"type": "base64", "media_type": "image/png", "data": PNG}
    messages: Any = [
        {"role": "user", "content": "Take a screenshot."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "here"},
                        {"type": "image", "source": image},
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "log"},
                            "title": "app.log",
                        },
                    ],
                }
            ],
        },
    ]
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-test", max_tokens=64, messages=messages
        )
    message = await raw.parse()
    assert raw.headers["x-failover-provider"] == "backup-openai"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Hello from backup")
    assert env.backup.seen[-1].format == "openai"
    assert _received(env, "backup")["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "here"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Attached to the result of tool call toolu_1:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {
                    "type": "file",
                    "file": {"filename": "app.log", "file_data": "data:text/plain;base64,bG9n"},
                },
            ],
        },
    ]


async def test_a_pdf_url_skips_the_openai_provider_and_is_served_by_an_anthropic_one(
    env: GatewayEnv,
) -> None:
    """Chat Completions takes no file URL: the OpenAI provider first in the tier is skipped for
    this request (not failed), the Anthropic one behind it serves it."""
    content: Any = [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "text", "text": "Summarise."},
    ]
    async with anthropic.AsyncAnthropic(
        base_url=env.url, api_key="sk-ant-client", max_retries=0
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="gpt-test", max_tokens=64, messages=[{"role": "user", "content": content}]
        )
    assert raw.headers["x-failover-provider"] == "backup-anthropic"
    assert env.primary.requests == 0  # skipped, not failed: never asked
    assert _received(env, "backup")["messages"] == [
        {"role": "user", "content": content}
    ]  # the client's own format: its body as it came
