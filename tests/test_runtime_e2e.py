"""The whole loop over real HTTP: outage → trip → failover → alert → recovery → failback.

Fake providers, a fake Telegram Bot API and a fake Slack webhook on loopback; the real router,
signal windows, controller, dispatcher and config watcher, as `failover serve` assembles them.
Traffic loops are bounded in count and time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.config import load_config
from controller.control.state import HealthState
from controller.events import AttemptReason
from controller.model import Message, Request
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.conftest import Recorder
from tests.fakes_chat import FakeSlack, FakeTelegram, Fault
from tests.traffic import Traffic, through_router

HELLO = Request(messages=(Message(role="user", content="hello"),))
RPS = 20.0  # client requests per second while a scenario runs
# How long a change may take to show before a test fails: far past what it takes (a tick, a
# poll), so a loaded machine cannot miss it. The speeds are the benchmarks' to measure
# (tests.bench.detection, tests.bench.kill_switch), never asserted here.
SETTLE = 15.0

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
aliases: {{gpt-4o: frontier}}
routing: {{deadline_seconds: 10}}
kill_switch: {{pin: {pin}}}
controller:
  window_seconds: 5
  min_requests: 5
  consecutive_failures: 3
  cooloff_seconds: 1
  probe_interval_seconds: 0.2
  probe_successes: 2
  failback_steps: [0.5, 1.0]
  failback_step_seconds: 0.5
  tick_seconds: 0.1
notify:
  cooldown_seconds: 60
  group_window_seconds: 0
  backoff_base_seconds: 0.2
state: {{path: "{state}"}}
"""


def steady_traffic(runtime: Runtime) -> Traffic:
    """Client traffic through the Runtime's router; records what each request got."""
    return Traffic(through_router(runtime.router, HELLO, tier="frontier"))


def write_config(
    path: Path, primary: FakeProvider, backup: FakeProvider, pin: str = "null"
) -> None:
    path.write_text(
        CONFIG.format(
            primary=primary.url("openai"),
            backup=backup.url("anthropic"),
            pin=pin,
            state=path.parent / "state.json",
        )
    )


@pytest.fixture
async def chat() -> AsyncIterator[tuple[FakeTelegram, FakeSlack]]:
    async with FakeTelegram() as tg, FakeSlack() as slack:
        yield tg, slack


@pytest.fixture
async def runtime(
    tmp_path: Path,
    primary: FakeProvider,
    backup: FakeProvider,
    chat: tuple[FakeTelegram, FakeSlack],
) -> AsyncIterator[Runtime]:
    tg, slack = chat
    path = tmp_path / "failover.yaml"
    write_config(path, primary, backup)
    env = {
        "PRIMARY_KEY": "sk-primary-secret",
        "BACKUP_KEY": "sk-backup-secret",
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_CHAT_ID": "111,222",
        "TELEGRAM_API_BASE_URL": tg.base_url,
        "SLACK_WEBHOOK_URL": slack.webhook_url,
    }
    rt = Runtime(load_config(path), config_path=path, env=env)
    await rt.start()
    yield rt
    await rt.stop(grace=2.0)


async def wait_for_state(rt: Runtime, provider: str, state: HealthState, within: float) -> float:
    """Seconds until ``provider`` reaches ``state``; fails after ``within``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if rt.holder.current.status(provider).state is state:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    pytest.fail(f"{provider} did not reach {state} within {within}s")


async def settled(done: Callable[[], bool], what: str) -> None:
    """Wait until ``done()``; fail if it is not by ``SETTLE`` seconds."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < SETTLE, f"{what} not applied within {SETTLE:g} s"
        await asyncio.sleep(0.02)


async def test_outage_trips_fails_over_alerts_and_recovers(
    runtime: Runtime,
    primary: FakeProvider,
    chat: tuple[FakeTelegram, FakeSlack],
) -> None:
    tg, slack = chat
    attempts = Recorder()
    runtime.router.listeners.add(attempts)
    traffic = steady_traffic(runtime)
    load = asyncio.create_task(traffic.run(rate=RPS, max_seconds=9.0))
    await asyncio.sleep(1.0)
    primary.set_fault(FaultMode.ERROR_503)
    # How fast it trips is measured by ``python -m tests.bench.detection``; here, that it does.
    await wait_for_state(runtime, "primary", HealthState.TRIPPED, within=SETTLE)
    tripped_at = time.monotonic()
    await asyncio.sleep(1.5)
    cleared_at = time.monotonic()
    primary.clear_fault()
    await wait_for_state(runtime, "primary", HealthState.HEALTHY, within=SETTLE)
    await load

    assert traffic.errors == []  # zero client-visible errors while the backup is healthy
    after_trip = [
        e
        for e in attempts.attempts
        if e.provider == "primary"
        and e.reason is not AttemptReason.PROBE
        and tripped_at < e.start < cleared_at
    ]
    assert after_trip == []  # no request waits on the dead provider after the trip
    last = [p for _, p in traffic.served[-10:]]
    assert last.count("primary") >= 8  # failed back

    messages = await tg.wait_messages(4)  # two chats x (tripped, recovered)
    await asyncio.sleep(0.3)
    assert len(tg.messages) == 4
    assert sorted(m["chat_id"] for m in messages) == ["111", "111", "222", "222"]
    texts = [m["text"] for m in messages if m["chat_id"] == "111"]
    assert "primary" in texts[0]
    assert "tripped" in texts[0].lower()
    assert "%" in texts[0]  # the error rate, with numbers
    assert "recovered" in texts[1].lower()
    assert "down for" in texts[1].lower()
    posts = await slack.wait_posts(2)
    await asyncio.sleep(0.3)
    assert len(slack.posts) == 2
    assert "primary" in posts[0]["text"]
    for body in [*messages, *posts]:
        assert "sk-primary-secret" not in str(body)
        assert tg.token not in str(body)


async def test_dead_or_throttling_chat_never_slows_requests(
    runtime: Runtime,
    primary: FakeProvider,
    chat: tuple[FakeTelegram, FakeSlack],
) -> None:
    tg, slack = chat
    tg.push(Fault.rate_limited(1))
    slack.always(Fault.hang())
    traffic = steady_traffic(runtime)
    load = asyncio.create_task(traffic.run(rate=RPS, max_seconds=4.0))
    await asyncio.sleep(0.5)
    primary.set_fault(FaultMode.ERROR_500)
    await wait_for_state(runtime, "primary", HealthState.TRIPPED, within=SETTLE)
    await load
    assert traffic.errors == []
    assert len(traffic.served) >= 60
    # Telegram answered 429 (retry after 1 s) first; the dispatcher retried within its bounds.
    messages = await tg.wait_messages(2, timeout=6.0)
    assert len([r for r in tg.requests if r.path.endswith("/sendMessage")]) >= 3
    assert all("tripped" in m["text"].lower() for m in messages)


async def test_kill_switch_edit_applies_and_bad_edit_is_rejected(
    runtime: Runtime,
    tmp_path: Path,
    primary: FakeProvider,
    backup: FakeProvider,
    chat: tuple[FakeTelegram, FakeSlack],
) -> None:
    tg, _ = chat
    path = tmp_path / "failover.yaml"
    assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "primary"
    write_config(path, primary, backup, pin="backup")
    await settled(lambda: runtime.holder.current.kill_switch.pin == "backup", "the pin")
    assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "backup"
    engaged = await tg.wait_messages(2)
    assert "kill switch" in engaged[0]["text"].lower()

    path.write_text(path.read_text().replace("tiers:", "tiers:\n  broken: {targets: []}"))
    rejected = await tg.wait_messages(4)
    assert "rejected" in rejected[-1]["text"].lower() or "config" in rejected[-1]["text"].lower()
    assert runtime.holder.current.kill_switch.pin == "backup"  # the old config keeps serving
    assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "backup"

    write_config(path, primary, backup, pin="null")
    await settled(lambda: not runtime.holder.current.kill_switch.active, "the release")
    assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "primary"


async def test_a_reloaded_tier_reaches_the_controller(
    runtime: Runtime, tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    """After a reload that adds a tier served by primary alone, the controller will not eject
    primary (it would leave that tier with nothing): it raises panic instead."""
    path = tmp_path / "failover.yaml"
    write_config(path, primary, backup)
    text = path.read_text().replace(
        "aliases:", "  solo:\n    targets:\n      - {provider: primary, model: big}\naliases:"
    )
    path.write_text(text)
    await settled(lambda: "solo" in runtime.router.tiers, "the tier edit")
    primary.set_fault(FaultMode.ERROR_500)
    for _ in range(20):  # bounded: enough consecutive faults to trip
        await runtime.router.complete(HELLO, tier="frontier")
    await asyncio.sleep(0.5)
    assert runtime.holder.current.status("primary").state is HealthState.HEALTHY
    assert any(alert["event"] == "tier_all_down" for alert in runtime.alerts)
