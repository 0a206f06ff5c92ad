"""Telegram commands in fleet mode: only the leader polls, and /pin sets the fleet's kill switch.

Two whole Runtimes (as ``failover serve`` builds them) on one real redis-server and one fake
Telegram Bot API on loopback, each with ``notify.telegram.commands: true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.config import load_config
from controller.fleet import Role, fleet_audit
from controller.model import Message, Request
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime
from tests.fakes_chat import FakeTelegram
from tests.fleet_support import stop_within
from tests.gateway_support import wait_for
from tests.redis_support import RedisServer

HELLO = Request(messages=(Message(role="user", content="hello"),))
CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
kill_switch: {{pin: null}}
controller: {{tick_seconds: 0.1}}
notify: {{group_window_seconds: 0, telegram: {{commands: true}}}}
state:
  backend: redis
  path: "{state}"
  redis:
    prefix: "bot-test"
    replica: "{replica}"
    lease_seconds: 1.5
    push_seconds: 0.2
    read_seconds: 0.5
    timeout_seconds: 0.3
"""


@pytest.fixture
async def replicas(
    tmp_path: Path, redis: RedisServer, primary: FakeProvider, backup: FakeProvider
) -> AsyncIterator[tuple[FakeTelegram, list[Runtime]]]:
    async with FakeTelegram() as tg:
        env = {
            "PRIMARY_KEY": "k1",
            "BACKUP_KEY": "k2",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_CHAT_ID": "111",
            "TELEGRAM_ADMIN_CHAT_IDS": "111",
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "FAILOVER_REDIS_URL": redis.url,
        }
        runtimes = []
        try:
            for name in ("a", "b"):
                path = tmp_path / f"{name}.yaml"
                text = CONFIG.format(
                    primary=primary.url("openai"),
                    backup=backup.url("anthropic"),
                    replica=name,
                    state=path.with_suffix(".state.json"),
                )
                path.write_text(text)
                runtime = Runtime(load_config(path), config_path=path, env=env)
                await runtime.start()
                runtimes.append(runtime)
            yield tg, runtimes
        finally:
            for runtime in runtimes:
                await stop_within(runtime.stop(grace=1.0))


def polling(runtimes: list[Runtime]) -> list[Runtime]:
    return [r for r in runtimes if r.bot is not None and r.bot.polling]


def leader(runtime: Runtime) -> bool:
    return runtime.fleet is not None and runtime.fleet.role is Role.LEADER


async def test_only_the_leader_polls_and_a_pin_sets_the_fleet_switch(
    replicas: tuple[FakeTelegram, list[Runtime]], tmp_path: Path
) -> None:
    tg, runtimes = replicas
    await wait_for(lambda: len(polling(runtimes)) == 1, within=10)
    [poller] = polling(runtimes)
    assert leader(poller)
    assert [leader(r) for r in runtimes].count(True) == 1

    await tg.wait_for("getUpdates", 1)  # past the start (which drops what waited before)
    tg.send_command("/pin backup", chat_id=111)
    [prompt] = await tg.wait_messages(1)
    assert "off → pinned to backup" in prompt["text"]
    [message_id] = [m for m, sent in tg.sent.items() if sent["text"] == prompt["text"]]
    tg.press(message_id, "Pin")
    [edit] = await tg.wait_for("editMessageText", 1)
    assert "Kill switch now pinned to backup" in edit["text"]
    await wait_for(lambda: all(r.holder.current.kill_switch.pin == "backup" for r in runtimes))
    for runtime in runtimes:  # every replica routes to the pin
        assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "backup"
    for name in ("a", "b"):  # the fleet's switch: the config files are left alone
        assert "pin: null" in (tmp_path / f"{name}.yaml").read_text()
    assert poller.fleet is not None
    events = [r["event"] for r in await fleet_audit(poller.fleet.link)]
    assert "fleet_kill_switch" in events
    assert events.count("bot_command") == 2  # /pin and the button press
    assert len([r for r in runtimes if r.bot is not None and r.bot.center.counts["command"]]) == 1


async def test_commands_move_with_the_lease(
    replicas: tuple[FakeTelegram, list[Runtime]],
) -> None:
    tg, runtimes = replicas
    await wait_for(lambda: len(polling(runtimes)) == 1, within=10)
    [first] = polling(runtimes)
    await first.stop(grace=1.0)  # the leader goes: its lease is handed back
    runtimes.remove(first)
    # Counted before the new leader can poll: its first long poll may go out (and be held by
    # the fake until it times out) before it is seen polling, so counting after raced it.
    polls = len(tg.bodies("getUpdates"))
    await wait_for(lambda: len(polling(runtimes)) == 1, within=10)
    await tg.wait_for("getUpdates", polls + 1)  # the new leader's long poll is out
    tg.send_command("/status", chat_id=111)
    [answer] = await tg.wait_messages(1)
    assert answer["text"].startswith("Kill switch: off")
