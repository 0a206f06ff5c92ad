"""Alerts: the dispatcher's policy end to end — fan-out, cooldowns, storms, retries, shutdown.

The dispatcher runs on a FakeClock (grouping windows, cooldowns, backoff sleeps advance only
when the test says so); the HTTP to the fake Telegram Bot API and Slack webhook is real, over
loopback. Submitting never blocks, a dead or raising sender never delays the others, and
secrets never reach logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from controller._clock import FakeClock
from controller.notify import (
    Alert,
    AlertEvent,
    Dispatcher,
    LogSender,
    NotifyConfig,
    Secret,
    SendResult,
    Severity,
    SlackSender,
    TelegramSender,
    render_slack,
    render_telegram,
    senders_from_env,
    telegram_senders,
)
from controller.notify.dispatcher import Delivery, Submitted
from controller.telemetry import names
from tests.fakes_chat import FakeSlack, FakeTelegram, Fault, unused_port
from tests.notify_support import AT, LINKS, TRACE, recovered, trip
from tests.notify_support import slack as slack  # fixtures: the aliases re-export them for pytest
from tests.notify_support import tg as tg


def config(**changes: Any) -> NotifyConfig:
    values: dict[str, Any] = {
        "link_base_url": "http://grafana.test",
        "trace_url": "{base}/trace/{trace_id}",
        "telegram": {"timeout_seconds": 2.0},
        "slack": {"timeout_seconds": 2.0},
        "max_attempts": 3,
    }
    values.update(changes)
    return NotifyConfig.model_validate(values)


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait for real I/O (or a task reaching its next await) to make ``predicate`` true."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def close_window(clock: FakeClock, cfg: NotifyConfig) -> None:
    """End the grouping window if the collector is waiting one out (after a recent send it
    does; an alert after a quiet spell goes out at once and opens none)."""
    for _ in range(50):
        await asyncio.sleep(0)
    if clock.sleepers:
        clock.advance(cfg.group_window_seconds)


def metric_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != names.METRIC_ALERTS:
                    continue
                for point in metric.data.data_points:
                    attrs = point.attributes or {}
                    key = (str(attrs["channel"]), str(attrs["event"]), str(attrs["result"]))
                    counts[key] = int(point.value)  # type: ignore[union-attr]
    return counts


@dataclass(frozen=True)
class Metrics:
    reader: InMemoryMetricReader
    meter: Meter

    def counts(self) -> dict[tuple[str, str, str], int]:
        return metric_counts(self.reader)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Metrics(reader=reader, meter=provider.get_meter("test"))
    provider.shutdown()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def env_for(tg: FakeTelegram | None, slack: FakeSlack | None, chats: str = "111") -> dict[str, str]:
    env: dict[str, str] = {}
    if tg is not None:
        env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_CHAT_ID": chats}
        env["TELEGRAM_API_BASE_URL"] = tg.url  # bare server URL: "/bot" is appended
    if slack is not None:
        env["SLACK_WEBHOOK_URL"] = slack.webhook_url
    return env


def dispatcher(
    cfg: NotifyConfig,
    env: dict[str, str],
    clock: FakeClock,
    metrics: Metrics | None = None,
) -> Dispatcher:
    meter = metrics.meter if metrics is not None else None
    return Dispatcher(senders=senders_from_env(cfg, env), clock=clock, cfg=cfg, meter=meter)


# --- dispatcher over real HTTP --------------------------------------------------------------------
async def test_one_message_per_chat_and_one_slack_post(
    tg: FakeTelegram,
    slack: FakeSlack,
    clock: FakeClock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller.alerts")
    cfg = config()
    d = dispatcher(cfg, env_for(tg, slack, chats="111,-1002222"), clock, metrics)
    d.start()
    assert d.submit(trip())
    await close_window(clock, cfg)
    messages = await tg.wait_messages(2)
    [post] = await slack.wait_posts(1)
    await eventually(lambda: d.counts().get(("telegram", "provider_tripped", "sent")) == 2)
    await d.stop(timeout=2)

    assert len(tg.messages) == 2
    assert len(slack.posts) == 1
    assert sorted(m["chat_id"] for m in messages) == ["-1002222", "111"]
    for message in messages:
        assert message["parse_mode"] == "HTML"
        assert message["text"] == render_telegram(trip(), links=cfg.links())
        assert "error rate 83% over 30 s, 41 requests ≥ threshold 50%" in message["text"]
        assert f"http://grafana.test/trace/{TRACE}" in message["text"]
        assert (
            "http://grafana.test/d/failover?from=1799999100000&amp;to=1800000300000"
            in (message["text"])
        )
    assert post == render_slack(trip(), links=cfg.links())
    assert "event=provider_tripped" in caplog.text
    assert metrics.counts() == {
        ("telegram", "provider_tripped", "sent"): 2,
        ("slack", "provider_tripped", "sent"): 1,
        ("log", "provider_tripped", "sent"): 1,
    }


async def test_duplicates_within_cooldown_are_suppressed(
    clock: FakeClock, metrics: Metrics
) -> None:
    cfg = config(cooldown_seconds=300)
    d = dispatcher(cfg, {}, clock, metrics)  # log sender only; not started: submit alone
    assert d.submit(trip()) is Submitted.QUEUED
    clock.advance(100)
    assert d.submit(trip()) is Submitted.DEDUPLICATED  # same event + provider
    assert d.submit(trip("anthropic-main"))  # another provider is news
    assert d.submit(recovered())  # a recovery is never held back by the trip's cooldown
    assert d.submit(trip())  # ...and a trip after a recovery is news again
    assert not d.submit(trip())
    clock.advance(300)
    assert d.submit(trip())  # cooldown over
    assert d.counts()[("log", "provider_tripped", "deduplicated")] == 2
    assert metrics.counts()[("log", "provider_tripped", "deduplicated")] == 2
    assert d.pending == 5
    await d.stop(timeout=1)


async def test_storm_is_grouped_into_one_message_per_sender(
    tg: FakeTelegram, slack: FakeSlack, clock: FakeClock, metrics: Metrics
) -> None:
    cfg = config(group_window_seconds=2)
    d = dispatcher(cfg, env_for(tg, slack), clock, metrics)
    d.start()
    assert d.submit(trip("openai-primary"))
    [first] = await tg.wait_messages(1)  # after a quiet spell: at once, no window
    assert first["text"].startswith("<b>🔴 openai-primary tripped")
    clock.advance(1)
    assert d.submit(trip("anthropic-main"))
    all_down = Alert(
        event=AlertEvent.TIER_ALL_DOWN, severity=Severity.CRITICAL, at=AT + 1, tier="frontier"
    )
    assert d.submit(all_down)
    await eventually(lambda: clock.sleepers == 1)  # inside the storm: the rest is held
    assert len(tg.messages) == 1
    clock.advance(2)
    [_, message] = await tg.wait_messages(2)
    [_, post] = await slack.wait_posts(2)
    text = message["text"]
    assert text.startswith("<b>🚨 2 alerts at once</b>")
    assert "• 🔴 anthropic-main tripped (frontier)" in text
    assert "• 🚨 all providers down in tier frontier" in text
    assert "2 alerts at once" in post["text"]

    clock.advance(10)
    assert d.submit(trip("gemini"))  # after the window: a message of its own, at once
    [_, _, third] = await tg.wait_messages(3)
    assert third["text"].startswith("<b>🔴 gemini tripped")
    await d.stop(timeout=2)
    counts = metrics.counts()
    assert counts[("telegram", "provider_tripped", "sent")] == 3
    assert counts[("telegram", "tier_all_down", "sent")] == 1
    assert counts[("slack", "tier_all_down", "sent")] == 1


async def test_telegram_retry_after_is_waited_out_exactly(
    tg: FakeTelegram, clock: FakeClock, metrics: Metrics
) -> None:
    cfg = config(group_window_seconds=0, log=False)
    d = dispatcher(cfg, env_for(tg, None), clock, metrics)
    tg.push(Fault.rate_limited(3))
    d.start()
    d.submit(trip())
    await tg.wait_messages(1)
    await eventually(lambda: clock.sleepers == 1)  # the worker waits out retry_after
    clock.advance(2.9)
    assert clock.sleepers == 1
    assert len(tg.messages) == 1  # not before
    clock.advance(0.1)
    await tg.wait_messages(2)
    await eventually(lambda: d.counts().get(("telegram", "provider_tripped", "sent")) == 1)
    await d.stop(timeout=2)
    assert len(tg.messages) == 2
    assert metrics.counts() == {("telegram", "provider_tripped", "sent"): 1}


async def test_slack_retry_after_is_honoured(slack: FakeSlack, clock: FakeClock) -> None:
    cfg = config(group_window_seconds=0, log=False)
    d = dispatcher(cfg, env_for(None, slack), clock)
    slack.push(Fault.rate_limited(4))
    d.start()
    d.submit(trip())
    await slack.wait_requests(1)
    await eventually(lambda: clock.sleepers == 1)
    clock.advance(3.99)
    assert clock.sleepers == 1
    assert len(slack.requests) == 1
    clock.advance(0.01)
    await slack.wait_posts(2)
    await eventually(lambda: d.counts().get(("slack", "provider_tripped", "sent")) == 1)
    await d.stop(timeout=2)


async def test_dead_sender_fails_and_never_delays_the_others(
    slack: FakeSlack, clock: FakeClock, metrics: Metrics
) -> None:
    cfg = config(max_attempts=2, backoff_base_seconds=1, backoff_max_seconds=10)
    env = env_for(None, slack)
    env |= {"TELEGRAM_BOT_TOKEN": "777:dead-token-zzz", "TELEGRAM_CHAT_ID": "111"}
    env["TELEGRAM_API_BASE_URL"] = f"http://127.0.0.1:{unused_port()}"
    d = dispatcher(cfg, env, clock, metrics)
    d.start()
    d.submit(trip())  # a first alert goes out at once
    await slack.wait_posts(1)
    await eventually(lambda: d.counts().get(("slack", "provider_tripped", "sent")) == 1)
    await eventually(lambda: clock.sleepers == 1)  # telegram backing off after attempt 1
    assert ("telegram", "provider_tripped", "failed") not in d.counts()
    clock.advance(1.0)  # equal jitter: the first backoff is within [0.5, 1] s
    await eventually(lambda: ("telegram", "provider_tripped", "failed") in d.counts())
    await d.stop(timeout=2)
    assert metrics.counts() == {
        ("slack", "provider_tripped", "sent"): 1,
        ("log", "provider_tripped", "sent"): 1,
        ("telegram", "provider_tripped", "failed"): 1,
    }


async def test_full_queue_drops_and_counts(clock: FakeClock, metrics: Metrics) -> None:
    cfg = config(queue_size=3)
    d = dispatcher(cfg, {}, clock, metrics)
    accepted = [d.submit(trip(f"p{i}")) for i in range(5)]
    assert accepted == [Submitted.QUEUED] * 3 + [Submitted.QUEUE_FULL] * 2
    assert [bool(a) for a in accepted] == [True, True, True, False, False]  # "if submit(...)"
    assert metrics.counts() == {("log", "provider_tripped", "dropped"): 2}
    await d.stop(timeout=1)  # never started: what was queued is dropped, and counted
    assert d.counts() == {("log", "provider_tripped", "dropped"): 5}


async def test_stop_flushes_without_waiting_for_the_window(
    tg: FakeTelegram, clock: FakeClock
) -> None:
    cfg = config(group_window_seconds=60, log=False)
    d = dispatcher(cfg, env_for(tg, None), clock)
    d.start()
    d.submit(trip())
    await tg.wait_messages(1)
    d.submit(trip("second"))  # within the window of the first: held for a summary
    await eventually(lambda: clock.sleepers == 1)
    started = time.perf_counter()
    await d.stop(timeout=2)
    assert time.perf_counter() - started < 1.0  # drained, not cut by the bound
    assert len(tg.messages) == 2
    assert d.counts() == {("telegram", "provider_tripped", "sent"): 2}
    assert d.submit(trip("late")) is Submitted.CLOSING


async def test_submit_never_blocks_while_servers_hang(
    tg: FakeTelegram, slack: FakeSlack, clock: FakeClock
) -> None:
    tg.always(Fault.hang())
    slack.always(Fault.hang())
    cfg = config(
        group_window_seconds=0,
        queue_size=10,
        telegram={"timeout_seconds": 30.0},
        slack={"timeout_seconds": 30.0},
    )
    d = dispatcher(cfg, env_for(tg, slack), clock)
    d.start()
    d.submit(trip("first"))
    await tg.wait_requests(1)
    await slack.wait_requests(1)  # both senders are now stuck in a hanging request
    started = time.perf_counter()
    accepted = [d.submit(trip(f"p{i}")) for i in range(100)]
    assert time.perf_counter() - started < 0.1
    assert accepted.count(Submitted.QUEUED) == 10
    assert d.counts()[("slack", "provider_tripped", "dropped")] == 90
    started = time.perf_counter()
    await d.stop(timeout=0.3)
    assert time.perf_counter() - started < 2.0
    counts = d.counts()
    assert counts[("slack", "provider_tripped", "dropped")] == 101  # 90 + 10 queued + 1 in flight
    assert counts[("log", "provider_tripped", "sent")] == 11  # the log never hangs


async def test_secrets_never_reach_logs_or_results(
    tg: FakeTelegram, slack: FakeSlack, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Open the libraries' loggers wide: redaction must hold even at DEBUG.
    for name in ("httpx", "httpcore", "telegram", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    cfg = config(group_window_seconds=0, max_attempts=2)
    d = dispatcher(cfg, env_for(tg, slack), clock)
    tg.push(Fault.error(500))
    slack.push(Fault.error(500))
    d.start()
    d.submit(trip())
    await tg.wait_messages(1)
    await slack.wait_posts(1)
    await eventually(lambda: clock.sleepers == 2)  # both back off once
    clock.advance(10)
    await eventually(lambda: d.counts().get(("slack", "provider_tripped", "sent")) == 1)
    await eventually(lambda: d.counts().get(("telegram", "provider_tripped", "sent")) == 1)
    await d.stop(timeout=2)

    logged = caplog.text
    assert "/bot***/sendMessage" in logged  # httpx's request line was seen, and scrubbed
    assert "POST *** HTTP" in logged  # so was urllib3's
    assert tg.token not in logged
    assert slack.path not in logged
    assert slack.webhook_url not in logged


async def test_a_raising_sender_is_isolated(clock: FakeClock) -> None:
    class Broken:
        channel = "broken"
        name = "broken"

        async def send(self, alert: Alert) -> SendResult:
            raise RuntimeError("token=abc would leak")

        async def aclose(self) -> None:
            return None

    cfg = config(group_window_seconds=0, max_attempts=1)
    d = Dispatcher(senders=[Broken(), LogSender()], clock=clock, cfg=cfg)
    d.start()
    d.submit(trip())
    await eventually(lambda: len(d.counts()) == 2)
    await d.stop(timeout=1)
    assert d.counts() == {
        ("broken", "provider_tripped", "failed"): 1,
        ("log", "provider_tripped", "sent"): 1,
    }


async def test_every_outcome_is_reported_to_the_listeners(clock: FakeClock) -> None:
    """Listeners hear each counted outcome as it happens; one that raises changes nothing."""
    heard: list[tuple[str, str, str]] = []

    def listen(outcome: Delivery) -> None:
        heard.append((outcome.channel, outcome.message.event.value, outcome.result))

    def broken(outcome: Delivery) -> None:
        raise RuntimeError("a listener bug")

    cfg = config(group_window_seconds=0, queue_size=1)
    d = Dispatcher(senders=[LogSender()], clock=clock, cfg=cfg, on_outcome=[broken, listen])
    alert = trip()
    assert d.submit(alert) is Submitted.QUEUED
    assert d.submit(trip("other")) is Submitted.QUEUE_FULL  # not started: the queue is full
    assert heard == [("log", "provider_tripped", "dropped")]
    d.start()
    await eventually(lambda: len(heard) == 2)
    assert heard[1] == ("log", "provider_tripped", "sent")
    assert d.submit(alert) is Submitted.DEDUPLICATED
    await d.stop(timeout=1)
    assert heard[2:] == [("log", "provider_tripped", "deduplicated")]
    assert d.counts() == {
        ("log", "provider_tripped", "sent"): 1,
        ("log", "provider_tripped", "dropped"): 1,
        ("log", "provider_tripped", "deduplicated"): 1,
    }


async def test_sender_reprs_hide_secrets() -> None:
    [sender] = telegram_senders(
        token=Secret("999:REPR-token-abc"), chat_ids=["5"], links=LINKS, base_url=None
    )
    assert isinstance(sender, TelegramSender)
    assert "REPR-token-abc" not in repr(sender)
    slack_sender = SlackSender(webhook_url=Secret("https://x.test/services/hidden"), links=LINKS)
    assert "hidden" not in repr(slack_sender)
    await sender.aclose()
    await slack_sender.aclose()
