"""Shared fixtures: fake providers on loopback, adapters pointed at them, a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.events import AttemptEvent, RouteEvent
from controller.model import StreamChunk
from controller.providers import HttpProvider, codec_for
from controller.providers.fake import FakeProvider
from tests.redis_support import RedisServer

#: provider kind → the fake's URL flavour for it
FORMATS: dict[str, str] = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}


def adapter(fake: FakeProvider, kind: str, name: str | None = None) -> HttpProvider:
    """An adapter of ``kind`` pointed at ``fake``."""
    return HttpProvider(
        name=name or f"{fake.name}-{kind}",
        codec=codec_for(kind),
        base_url=fake.url(FORMATS[kind]),
        api_key="sk-test-not-a-secret",
    )


async def drain(stream: AsyncIterable[StreamChunk], into: list[StreamChunk]) -> None:
    """Collect a stream's chunks into ``into`` (kept when the stream then fails)."""
    async for chunk in stream:
        into.append(chunk)  # noqa: PERF401 - a comprehension would lose chunks on failure


@dataclass
class Recorder:
    """A listener that keeps every event (the router's real listener hook, not a mock)."""

    attempts: list[AttemptEvent] = field(default_factory=list)
    routes: list[RouteEvent] = field(default_factory=list)

    def on_attempt(self, event: AttemptEvent) -> None:
        self.attempts.append(event)

    def on_route(self, event: RouteEvent) -> None:
        self.routes.append(event)


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # python-telegram-bot >= 22.2 warns while building RetryAfter unless opted in; the suite
    # turns warnings into errors. The CLI sets the same default.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def primary() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(name="primary") as fake:
        yield fake


@pytest.fixture
async def backup() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(name="backup") as fake:
        yield fake


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server of this test's own, on loopback (a missing binary fails under CI)."""
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
