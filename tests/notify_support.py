"""Shared pieces of the alert tests: golden alerts, link templates, the chat fakes as fixtures.

A provider trip and its recovery as the controller would raise them, the link templates they
render with, and the fake Telegram Bot API and Slack webhook on loopback (``tg`` and ``slack``
fixtures). Not collected by pytest; the test_notify_* files import from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.notify import Alert, AlertEvent, LinkTemplates, Severity
from tests.fakes_chat import FakeSlack, FakeTelegram

AT = 1_800_000_000.0  # 2027-01-15T08:00:00Z, FakeClock's default wall start
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LINKS = LinkTemplates(
    dashboard_url="{base}/d/failover?from={from_ms}&to={to_ms}",
    trace_url="{base}/trace/{trace_id}",
    base_url="http://grafana.test",
)


def trip(provider: str = "openai-primary", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "event": AlertEvent.PROVIDER_TRIPPED,
        "severity": Severity.WARNING,
        "at": AT,
        "provider": provider,
        "tier": "frontier",
        "error_rate": 0.83,
        "requests": 41,
        "window_seconds": 30.0,
        "threshold": 0.5,
        "top_errors": (("overloaded", 30), ("timeout", 4)),
        "routes": {"frontier": ("anthropic-main", "gemini")},
        "trace_ids": (TRACE, "b" * 32, "c" * 32, "d" * 32),
    }
    fields.update(changes)
    return Alert(**fields)


def recovered(provider: str = "openai-primary") -> Alert:
    return Alert(
        event=AlertEvent.PROVIDER_RECOVERED,
        severity=Severity.INFO,
        at=AT + 252,
        provider=provider,
        tier="frontier",
        down_for_seconds=252,
        routes={"frontier": (provider, "anthropic-main")},
    )


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token="987654:SECRET-bot-token-xyz") as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server
