"""Routing by name through a real gateway: a Runtime built from config, the official SDKs.

Each tier sends its traffic to its own target model on the fake providers, so the
``x-failover-model`` header of an answer says which tier a model name was routed to. The
runtime is not started: nothing here needs the controller loop, and a reload is applied by
hand (``apply_config``), as the config watcher does on save.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from controller.config import parse_config
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: anthropic, base_url: "{backup}"}}
tiers:
  frontier:
    targets: [{{provider: primary, model: frontier-model}}]
  fast:
    targets: [{{provider: backup, model: fast-model}}]
  cheap:
    targets: [{{provider: primary, model: cheap-model}}]
aliases:
  claude-haiku-4-5: frontier      # exact: beats both patterns below
  "claude-*": frontier
  "claude-haiku-*": fast          # more specific than claude-*
  "gpt-5*": cheap
state: {{path: "{state}"}}
"""
USER: Any = [{"role": "user", "content": "hi"}]
EXACT = ["cheap", "claude-haiku-4-5", "fast", "frontier"]  # tiers and exact aliases
PATTERNS = ["claude-haiku-*", "claude-*", "gpt-5*"]


@asynccontextmanager
async def served(text: str) -> AsyncIterator[tuple[Runtime, str]]:
    """A Runtime from ``text`` behind a gateway on loopback; (runtime, base URL)."""
    runtime = Runtime(parse_config(text, source="failover.yaml"), env={})
    try:
        app = create_app(runtime, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
            yield runtime, server.url
    finally:
        await runtime.stop(grace=0.5)


@pytest.fixture
def config(tmp_path: Path, primary: FakeProvider, backup: FakeProvider) -> str:
    return CONFIG.format(
        primary=primary.url("openai"), backup=backup.url("anthropic"), state=tmp_path / "s.json"
    )


@pytest.fixture
async def gateway(config: str) -> AsyncIterator[tuple[Runtime, str]]:
    async with served(config) as running:
        yield running


@pytest.fixture
async def oai(gateway: tuple[Runtime, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{gateway[1]}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as client:
        yield client


async def served_by(oai: openai.AsyncOpenAI, model: str) -> str:
    """The target model that served a chat request for ``model`` (it names the tier)."""
    raw = await oai.chat.completions.with_raw_response.create(model=model, messages=USER)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-failover-model"]


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("claude-haiku-4-5", "frontier-model"),  # exact beats the patterns
        ("claude-haiku-4-5-20251001", "fast-model"),  # claude-haiku-* beats claude-*
        ("claude-opus-4-8", "frontier-model"),  # claude-* (a release not listed anywhere)
        ("claude-sonnet-5", "frontier-model"),
        ("gpt-5", "cheap-model"),
        ("gpt-5.1-codex", "cheap-model"),
        ("fast", "fast-model"),  # a tier's own name
    ],
)
async def test_glob_aliases_route_by_name(oai: openai.AsyncOpenAI, model: str, target: str) -> None:
    assert await served_by(oai, model) == target


async def test_the_anthropic_sdk_is_routed_by_pattern_too(
    gateway: tuple[Runtime, str], backup: FakeProvider
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=gateway[1], api_key="sk-ant-client", max_retries=0
    ) as claude:
        raw = await claude.messages.with_raw_response.create(
            model="claude-haiku-4-5-20251001", max_tokens=16, messages=USER
        )
    assert raw.headers["x-failover-model"] == "fast-model"
    assert (await raw.parse()).content
    assert backup.seen[-1].model == "fast-model"


async def test_an_unknown_model_is_a_404_listing_names_and_patterns(
    oai: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="gemini-3-pro", messages=USER)
    assert caught.value.code == "model_not_found"
    assert caught.value.response.headers["x-should-retry"] == "false"
    listed = caught.value.message.split("Available models: ")[1].rstrip(".")
    assert listed.split(", ") == sorted(EXACT + PATTERNS)


async def test_default_tier_routes_an_unknown_model_after_a_reload(
    gateway: tuple[Runtime, str], oai: openai.AsyncOpenAI, config: str
) -> None:
    runtime, _ = gateway
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("gemini-3-pro")
    runtime.apply_config(parse_config(config + "default_tier: fast\n"))  # what a save does
    assert await served_by(oai, "gemini-3-pro") == "fast-model"
    assert await served_by(oai, "claude-opus-4-8") == "frontier-model"  # patterns come first
    assert (await oai.models.retrieve("gemini-3-pro")).id == "gemini-3-pro"
    ids = [model.id async for model in oai.models.list()]
    assert ids == EXACT  # the default adds no model id
    runtime.apply_config(parse_config(config))  # and a save without it takes it away
    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="gemini-3-pro", messages=USER)


async def test_the_model_list_names_what_a_client_may_ask_for(oai: openai.AsyncOpenAI) -> None:
    listed = await oai.models.list()
    assert [model.id for model in listed.data] == EXACT  # tiers and exact aliases, no patterns
    assert all(model.object == "model" for model in listed.data)
    found = await oai.models.retrieve("claude-opus-4-8")  # routed by a pattern: it exists
    assert found.id == "claude-opus-4-8"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("gemini-3-pro")
