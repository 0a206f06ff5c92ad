"""Alerts: senders — channels built from the environment, and real HTTP to the chat fakes.

Only configured channels get a sender, a half-configured one names the missing variable, and
secrets never show in reprs or errors. The Telegram and Slack senders map rate limits, server
errors, rejections and a dead server to send results, over real HTTP on loopback.
"""

from __future__ import annotations

import pytest

from controller._errors import ConfigError
from controller.notify import (
    NotifyConfig,
    Secret,
    SendResult,
    SlackSender,
    render_slack,
    senders_from_env,
    telegram_senders,
)
from tests.fakes_chat import FakeSlack, FakeTelegram, Fault, unused_port
from tests.notify_support import LINKS, trip
from tests.notify_support import slack as slack  # fixtures: the aliases re-export them for pytest
from tests.notify_support import tg as tg


# --- config and secrets ---------------------------------------------------------------------------
def test_senders_from_env_builds_only_configured_channels() -> None:
    cfg = NotifyConfig()
    assert [s.channel for s in senders_from_env(cfg, {})] == ["log"]
    env = {
        "TELEGRAM_BOT_TOKEN": "111:AAA-secret-token",
        "TELEGRAM_CHAT_ID": "42, -1001234",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.test/services/T1/B1/secretpath",
    }
    senders = senders_from_env(cfg.model_copy(update={"log": False}), env)
    assert [s.name for s in senders] == ["telegram:42", "telegram:-1001234", "slack"]
    shown = repr(senders) + repr(cfg)
    assert "AAA-secret-token" not in shown
    assert "secretpath" not in shown
    assert repr(Secret("111:AAA-secret-token")) == "***"
    assert str(Secret("x")) == "***"


def test_half_configured_channel_names_the_variable_not_the_secret() -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_CHAT_ID") as info:
        senders_from_env(NotifyConfig(), {"TELEGRAM_BOT_TOKEN": "111:AAA-secret-token"})
    assert "AAA-secret-token" not in str(info.value)
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL") as info:
        senders_from_env(NotifyConfig(), {"SLACK_WEBHOOK_URL": "hooks.slack.test/secretpath"})
    assert "secretpath" not in str(info.value)


# --- senders over real HTTP -----------------------------------------------------------------------
async def test_telegram_sender_maps_rate_limit_and_errors(tg: FakeTelegram) -> None:
    [sender] = telegram_senders(
        token=Secret(tg.token), chat_ids=["111"], links=LINKS, base_url=tg.base_url, timeout=2
    )
    tg.push(Fault.rate_limited(3), Fault.error(500), Fault.error(400))
    limited, broken, rejected, ok = [await sender.send(trip()) for _ in range(4)]
    await sender.aclose()
    assert (limited.ok, limited.retryable, limited.retry_after) == (False, True, 3.0)
    assert (broken.ok, broken.retryable, broken.retry_after) == (False, True, None)
    assert (rejected.ok, rejected.retryable) == (False, False)
    assert ok == SendResult.sent("telegram")
    assert len(tg.messages) == 4
    for result in (limited, broken, rejected):
        assert tg.token not in repr(result)


async def test_telegram_sender_reports_a_dead_server_without_the_token() -> None:
    token = "555:DEAD-server-token"
    [sender] = telegram_senders(
        token=Secret(token),
        chat_ids=["111"],
        links=LINKS,
        base_url=f"http://127.0.0.1:{unused_port()}/bot",
        timeout=2,
    )
    result = await sender.send(trip())
    await sender.aclose()
    assert (result.ok, result.retryable) == (False, True)
    assert result.error is not None
    assert result.error.startswith("NetworkError")
    assert token not in repr(result)


async def test_slack_sender_maps_statuses(slack: FakeSlack) -> None:
    sender = SlackSender(webhook_url=Secret(slack.webhook_url), links=LINKS, timeout=2)
    slack.push(Fault.rate_limited(7), Fault.error(503), Fault.error(404))
    limited, broken, gone, ok = [await sender.send(trip()) for _ in range(4)]
    await sender.aclose()
    assert (limited.ok, limited.retryable, limited.retry_after) == (False, True, 7.0)
    assert (broken.retryable, broken.error) == (True, "HTTP 503: internal_error")
    assert (gone.retryable, gone.error) == (False, "HTTP 404: internal_error")
    assert ok.ok
    assert slack.posts[-1] == render_slack(trip(), links=LINKS)
    dead = SlackSender(
        webhook_url=Secret(f"http://127.0.0.1:{unused_port()}/services/T/B/deadhooksecret"),
        links=LINKS,
        timeout=2,
    )
    down = await dead.send(trip())
    await dead.aclose()
    assert (down.ok, down.retryable, down.error) == (False, True, "ConnectionError")
    for result in (limited, broken, gone, ok, down):
        assert "/services/" not in repr(result)
