"""Operating from the phone, end to end: Telegram commands drive `failover serve`'s runtime.

The real python-telegram-bot ``Application`` long-polls a fake Bot API server on loopback
(getUpdates / sendMessage / answerCallbackQuery / editMessageText) through its configurable base
URL; the real Runtime routes the gateway's traffic to fake providers; the kill switch is written
to the config file through the same code as ``failover kill-switch``. Each check reads what a
person would: the chat's messages, the gateway's answers, the file on disk, the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from controller.config import load_config
from controller.control.audit import audit_path, read_audit
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.fakes_chat import FakeSlack, FakeTelegram, Fault, unused_port
from tests.gateway_support import wait_for

ADMIN = 111  # an allowlisted chat
OTHER = 222  # gets alerts (TELEGRAM_CHAT_ID) but may not command
STRANGER = 333  # neither

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
  spare: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
  fast:
    targets:
      - {{provider: primary, model: small}}
      - {{provider: backup, model: small}}
aliases: {{gpt-4o: frontier}}
kill_switch: {{pin: null}}
controller: {{tick_seconds: 0.1, window_seconds: 5, min_requests: 5, consecutive_failures: 3}}
notify:
  cooldown_seconds: 60
  group_window_seconds: 0
  backoff_base_seconds: 0.2
  max_attempts: 2
  telegram: {{commands: true, drill_command: {drill}, commands_per_minute: {per_minute}}}
state: {{path: "{state}"}}
"""


@dataclass
class Env:
    runtime: Runtime
    tg: FakeTelegram
    slack: FakeSlack
    http: aiohttp.ClientSession
    url: str
    path: Path

    async def served_by(self) -> str:
        """Who served one chat request through the gateway."""
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with self.http.post(f"{self.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return resp.headers["x-failover-provider"]

    def file_switch(self) -> dict[str, Any]:
        switch: dict[str, Any] = yaml.safe_load(self.path.read_text())["kill_switch"]
        return {"pin": switch.get("pin"), "disable": switch.get("disable", [])}

    def audit(self) -> list[dict[str, Any]]:
        return read_audit(audit_path(self.path.parent / "state.json"))

    async def say(self, text: str, *, chat: int = ADMIN, user: int = 42) -> dict[str, Any]:
        """Send ``text`` from ``chat``; the bot's answer (its next message there that is no
        alert: alerts are HTML, answers plain text)."""
        before = len(self.tg.messages)
        self.tg.send_command(text, chat_id=chat, user_id=user)
        async with asyncio.timeout(5):
            while True:
                for body in self.tg.messages[before:]:
                    if body["chat_id"] == str(chat) and not body["text"].startswith("<b>"):
                        return with_id(self.tg, body)
                await self.tg.wait_messages(len(self.tg.messages) + 1)

    async def press(self, message: dict[str, Any], label: str, **kw: Any) -> dict[str, Any]:
        """Press ``label`` under ``message``; the edit of that message the bot makes."""
        before = len(self.tg.bodies("editMessageText"))
        self.tg.press(message["id"], label, **kw)
        edits = await self.tg.wait_for("editMessageText", before + 1)
        return edits[before]

    async def message_with(self, chat: int, text: str) -> dict[str, Any]:
        """The first message to ``chat`` containing ``text`` (waits for it, bounded)."""
        async with asyncio.timeout(10):
            while True:
                for body in self.tg.messages:
                    if body["chat_id"] == str(chat) and text in body["text"]:
                        return with_id(self.tg, body)
                await self.tg.wait_messages(len(self.tg.messages) + 1, timeout=10)


def with_id(tg: FakeTelegram, body: dict[str, Any]) -> dict[str, Any]:
    """A sendMessage body with the id the fake gave it (the latest message with its text)."""
    chat = int(body["chat_id"])
    ids = [m for m, s in tg.sent.items() if s["text"] == body["text"] and s["chat"]["id"] == chat]
    return {**body, "id": ids[-1]}


@asynccontextmanager
async def running(
    tmp_path: Path,
    primary: FakeProvider,
    backup: FakeProvider,
    *,
    drill: bool = False,
    per_minute: int = 30,
    env: dict[str, str] | None = None,
    tg_url: str | None = None,
    hang: bool = False,
) -> AsyncIterator[Env]:
    """The runtime behind a gateway on loopback, its bot polling the fake Telegram."""
    path = tmp_path / "failover.yaml"
    path.write_text(
        CONFIG.format(
            primary=primary.url("openai"),
            backup=backup.url("anthropic"),
            state=tmp_path / "state.json",
            drill=str(drill).lower(),
            per_minute=per_minute,
        )
    )
    async with FakeTelegram() as tg, FakeSlack() as slack, aiohttp.ClientSession() as http:
        variables = {
            "PRIMARY_KEY": "sk-primary-secret",
            "BACKUP_KEY": "sk-backup-secret",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_CHAT_ID": f"{ADMIN},{OTHER}",
            "TELEGRAM_ADMIN_CHAT_IDS": str(ADMIN),
            "TELEGRAM_API_BASE_URL": tg_url or tg.base_url,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            **(env or {}),
        }
        if hang:  # Telegram accepts connections and never answers
            tg.always(Fault.hang())
            variables["TELEGRAM_API_BASE_URL"] = tg.base_url
        runtime = Runtime(load_config(path), config_path=path, env=variables)
        await runtime.start()
        try:
            app = create_app(runtime, settings=GatewaySettings())
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
                if tg_url is None:
                    await tg.wait_for("getUpdates", 1)  # polling: commands reach it now
                yield Env(runtime, tg, slack, http, server.url, path)
        finally:
            await runtime.stop(grace=2.0)


@pytest.fixture
async def env(tmp_path: Path, primary: FakeProvider, backup: FakeProvider) -> AsyncIterator[Env]:
    async with running(tmp_path, primary, backup) as started:
        yield started


async def test_pin_asks_then_writes_the_file_and_moves_traffic(env: Env) -> None:
    assert await env.served_by() == "primary"
    prompt = await env.say("/pin backup")
    assert "off → pinned to backup" in prompt["text"]
    assert [b["text"] for b in env.tg.buttons(prompt["id"])] == ["Pin", "Cancel"]
    assert env.file_switch()["pin"] is None  # nothing happens before the confirmation
    assert await env.served_by() == "primary"

    edit = await env.press(prompt, "Pin")
    assert "Kill switch now pinned to backup (was off)" in edit["text"]
    assert "frontier → backup" in edit["text"]
    assert env.file_switch() == {"pin": "backup", "disable": []}
    assert "last changed by telegram:42" in env.path.read_text()
    assert await env.served_by() == "backup"

    [command] = [r for r in env.audit() if r["event"] == "kill_switch_command"]
    assert (command["by"], command["chat"], command["after"]) == (
        "telegram:42",
        str(ADMIN),
        "pinned to backup",
    )
    bot = [r for r in env.audit() if r["event"] == "bot_command"]
    assert [r["command"] for r in bot] == ["/pin backup", "[button] do pin backup"]
    assert all(r["chat"] == str(ADMIN) and r["name"] == "@alice" for r in bot)
    # Told to the other channels (Slack, the other chat), not back to the asking chat.
    told = await env.message_with(OTHER, "operator: kill switch pinned to backup by @alice")
    assert "Kill switch: pinned to backup" in told["text"]  # the state after the change
    assert "Traffic now: frontier → backup" in told["text"]
    await wait_for(lambda: any("by @alice" in json.dumps(p) for p in env.slack.posts))
    to_admin = [m["text"] for m in env.tg.messages if m["chat_id"] == str(ADMIN)]
    assert not any("operator:" in text for text in to_admin)


async def test_cancel_changes_nothing_and_a_used_button_expires(env: Env) -> None:
    prompt = await env.say("/disable primary")
    [disable, _] = env.tg.buttons(prompt["id"])
    edit = await env.press(prompt, "Cancel")
    assert edit["text"] == "Cancelled: disable primary."
    assert env.file_switch()["disable"] == []
    # A phone that still shows the old buttons: the pair was retired by the first press.
    again = await env.press(prompt, "Disable", data=disable["callback_data"])
    assert "expired" in again["text"]
    # Pressed once more: the same edit, which Telegram refuses (400, not modified); the press
    # is still answered and nothing counts as failed.
    env.tg.press(prompt["id"], "Disable", data=disable["callback_data"])
    await env.tg.wait_for("answerCallbackQuery", 3)
    await env.say("/status")  # handled after the press
    assert env.runtime.status()["telegram_bot"]["counts"].get("handler_failed", 0) == 0
    assert env.file_switch()["disable"] == []
    assert await env.served_by() == "primary"


async def test_disable_then_clear(env: Env) -> None:
    prompt = await env.say("/disable primary")
    assert prompt["text"] == "Kill switch: off → disabled: primary?"
    assert [b["text"] for b in env.tg.buttons(prompt["id"])] == ["Disable", "Cancel"]
    edit = await env.press(prompt, "Disable")
    assert "disabled: primary" in edit["text"]
    assert env.file_switch()["disable"] == ["primary"]
    assert await env.served_by() == "backup"

    prompt = await env.say("/clear")
    edit = await env.press(prompt, "Clear")
    assert "Kill switch now off (was disabled: primary)" in edit["text"]
    assert env.file_switch() == {"pin": None, "disable": []}
    assert await env.served_by() == "primary"


async def test_bad_input_is_answered_and_changes_nothing(env: Env) -> None:
    reply = await env.say("/pin nosuch")
    assert reply["text"] == "Unknown provider 'nosuch'. Known: primary, backup, spare"
    assert "Usage: /pin PROVIDER" in (await env.say("/pin"))["text"]
    assert "/clear takes no provider names" in (await env.say("/clear primary"))["text"]
    assert "Drills are off" in (await env.say("/drill primary 30"))["text"]
    assert "Unknown command /frobnicate" in (await env.say("/frobnicate"))["text"]
    assert (await env.say("/ack"))["text"] == "No alert to acknowledge yet."
    assert "Usage: /ack" in (await env.say("/ack 3d"))["text"]  # at most a day
    # A pin that strands a tier asks again, with the warning, before anything is written.
    prompt = await env.say("/pin spare")  # spare is in no tier and has no default model
    assert "Warning: tiers frontier, fast have no provider" in prompt["text"]
    assert [b["text"] for b in env.tg.buttons(prompt["id"])] == ["Pin anyway", "Cancel"]
    prompt = await env.say("/disable primary backup")
    assert "Warning: tiers frontier, fast have no provider" in prompt["text"]
    assert [b["text"] for b in env.tg.buttons(prompt["id"])] == ["Disable anyway", "Cancel"]
    assert env.file_switch()["pin"] is None
    assert await env.served_by() == "primary"


async def test_other_chats_are_ignored_and_counted(env: Env) -> None:
    for chat in (OTHER, STRANGER):
        env.tg.send_command("/pin backup", chat_id=chat)
    env.tg.send_command("/clear", chat_id=STRANGER)
    reply = await env.say("/status")  # answered after the three before it were handled
    assert reply["chat_id"] == str(ADMIN)
    assert [m for m in env.tg.messages if m["chat_id"] in (str(OTHER), str(STRANGER))] == []
    assert env.runtime.status()["telegram_bot"]["counts"]["ignored_chat"] == 3
    assert env.file_switch()["pin"] is None
    assert [r["chat"] for r in env.audit() if r["event"] == "bot_command"] == [str(ADMIN)]


async def test_status_shows_routes_states_and_the_kill_switch(env: Env) -> None:
    assert await env.served_by() == "primary"
    text = (await env.say("/status"))["text"]
    assert text.startswith("Kill switch: off · mode enforce")
    assert "frontier: primary → backup" in text
    assert "• primary healthy: 0% errors (threshold 50%" in text


async def test_a_button_from_another_chat_does_nothing(env: Env) -> None:
    prompt = await env.say("/pin backup")
    env.tg.press(prompt["id"], "Pin", chat_id=STRANGER)
    await env.say("/status")  # handled after the press
    assert env.tg.bodies("answerCallbackQuery") == []
    assert env.file_switch()["pin"] is None


async def test_non_admin_users_are_refused(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    admins = {"TELEGRAM_ADMIN_USER_IDS": "7,8"}
    async with running(tmp_path, primary, backup, env=admins) as env:
        reply = await env.say("/pin backup", user=42)
        assert reply["text"] == "Not allowed: you are not on the admin list."
        prompt = await env.say("/pin backup", user=7)
        assert "Kill switch: off → pinned to backup?" in prompt["text"]
        env.tg.press(prompt["id"], "Pin", user_id=42)  # someone else presses it
        [answer] = await env.tg.wait_for("answerCallbackQuery", 1)
        assert "Not allowed" in answer["text"]
        assert env.file_switch()["pin"] is None
        await env.press(prompt, "Pin", user_id=8)
        assert env.file_switch()["pin"] == "backup"
        refused = [r for r in env.audit() if r.get("result") == "refused_user"]
        assert [r["by"] for r in refused] == ["telegram:42", "telegram:42"]


async def test_a_flood_is_rate_limited(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    async with running(tmp_path, primary, backup, per_minute=3) as env:
        for _ in range(8):
            env.tg.send_command("/status", chat_id=ADMIN)
        bot = env.runtime.bot
        assert bot is not None
        await wait_for(lambda: bot.center.counts["rate_limited"] == 5)
        counts = env.runtime.status()["telegram_bot"]["counts"]
        assert counts["command"] == 3
        texts = [m["text"][:12] for m in await env.tg.wait_messages(4)]
        assert texts == ["Kill switch:"] * 3 + ["Too many com"]  # one notice, then silence


async def test_alert_buttons_pin_the_backup_and_ack(env: Env, primary: FakeProvider) -> None:
    primary.set_fault(FaultMode.ERROR_503)
    for _ in range(6):
        assert await env.served_by() == "backup"  # primary fails: the tripwire trips it
    alert = await env.message_with(ADMIN, "primary tripped")
    assert [b["text"] for b in env.tg.buttons(alert["id"])] == ["Pin backup", "Ack 1 h"]
    other = await env.message_with(OTHER, "primary tripped")
    assert env.tg.buttons(other["id"]) == []  # OTHER may not command: no buttons there

    env.tg.press(alert["id"], "Pin backup")
    prompt = await env.message_with(ADMIN, "Kill switch: off → pinned to backup?")
    await env.press(prompt, "Pin")
    assert env.file_switch()["pin"] == "backup"

    edit = await env.press(alert, "Ack 1 h")
    assert edit["text"].startswith("Acknowledged for 1 h: repeats of 🔴 primary tripped")
    env.tg.send_command("/ack 30m", chat_id=ADMIN)  # the latest alert that repeats: a trip
    await env.message_with(ADMIN, "Acknowledged for 30 min: repeats of 🔴 primary")
    assert [r["command"] for r in env.audit() if r["event"] == "bot_command"] == [
        "[button] ask pin backup",
        "[button] do pin backup",
        "[button] do ack 1 h",
        "/ack 30m",
    ]


async def test_drill_when_enabled(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    async with running(tmp_path, primary, backup, drill=True) as env:
        assert "Usage: /drill" in (await env.say("/drill primary forever"))["text"]
        prompt = await env.say("/drill primary 60")
        edit = await env.press(prompt, "Start drill")
        assert edit["text"] == "Drill started: primary fails every request for 60 s."
        assert await env.served_by() == "backup"


@pytest.mark.parametrize("telegram", ["refusing", "hanging"])
async def test_a_dead_telegram_never_affects_requests_or_the_controller(
    tmp_path: Path,
    primary: FakeProvider,
    backup: FakeProvider,
    telegram: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"http://127.0.0.1:{unused_port()}/bot"
    async with running(tmp_path, primary, backup, tg_url=dead, hang=telegram == "hanging") as env:
        for _ in range(3):
            assert await env.served_by() == "primary"
        assert env.runtime.status()["telegram_bot"]["polling"] is False
        primary.set_fault(FaultMode.ERROR_503)
        for _ in range(6):
            assert await env.served_by() == "backup"
        await wait_for(lambda: env.runtime.holder.current.status("primary").state == "tripped")
        text = env.path.read_text()
        env.path.write_text(text.replace("kill_switch: {pin: null}", "kill_switch: {pin: backup}"))
        await wait_for(lambda: env.runtime.holder.current.kill_switch.pin == "backup")
        assert env.runtime.status()["telegram_bot"]["polling"] is False
    if telegram == "refusing":
        assert env.runtime.status()["telegram_bot"]["counts"]["start_failed"] >= 1
        assert "telegram bot: cannot start polling" in caplog.text  # it said why...
    assert env.tg.token not in caplog.text  # ...without the token (it is in every URL)
    assert env.tg.token.split(":")[1] not in caplog.text
