"""The command bot's parts on the fake clock: button tokens, the likely actions an alert offers,
the per-chat rate limit, the /status text, the dispatcher's ack (mute) and the origin rule, and
the configuration errors. The whole bot over real HTTP is in test_bot_e2e.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import parse_config
from controller.notify import Alert, AlertEvent, Dispatcher, NotifyConfig, senders_from_env
from controller.notify._bot_actions import Action, ActionBook, Kind, Step, likely_actions
from controller.notify._bot_commands import CommandCenter, Gate, Who, render_status
from controller.notify.dispatcher import Submitted
from controller.runtime import Runtime
from tests.fakes_chat import FakeSlack, FakeTelegram
from tests.notify_support import recovered, trip

ADMIN = Who(chat="111", user="7", name="@alice")


class Unused:
    """The runtime side, for tests of the gate alone (it is never reached)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the gate reached the operator ({name})")


def center(clock: FakeClock, *, users: Sequence[str] = (), per_minute: int = 3) -> CommandCenter:
    return CommandCenter(
        operator=Unused(),
        clock=clock,
        book=ActionBook(clock=clock, admin_chats=["111"]),
        admin_chats=["111"],
        admin_users=users,
        per_minute=per_minute,
    )


# --- tokens ----------------------------------------------------------------------------------
def test_a_confirmation_is_used_once_in_its_own_chat_before_it_expires() -> None:
    clock = FakeClock()
    book = ActionBook(clock=clock, admin_chats=["111"])
    pin = Action(kind=Kind.PIN, providers=("backup",))
    [(yes, no)] = book.confirmation(pin, chat="111", ttl=60, yes="Pin")
    assert len(yes.data.encode()) <= 64  # Telegram's callback_data limit
    assert book.take(yes.data, chat="222") is None  # another chat cannot press it
    taken = book.take(yes.data, chat="111")
    assert taken is not None
    assert (taken.action, taken.step) == (pin, Step.DO)
    assert book.take(no.data, chat="111") is None  # the pair retired together

    [(yes, _)] = book.confirmation(pin, chat="111", ttl=60, yes="Pin")
    clock.advance(60)
    assert book.take(yes.data, chat="111") is None  # expired


def test_tokens_are_bounded_oldest_out() -> None:
    book = ActionBook(clock=FakeClock(), admin_chats=["111"], size=4)
    tokens = [book.offer(Action(kind=Kind.CLEAR), Step.DO, chat="111", ttl=60) for _ in range(6)]
    assert [book.take(t, chat="111") is not None for t in tokens] == [False] * 2 + [True] * 4


# --- alert buttons ---------------------------------------------------------------------------
def test_a_trip_offers_its_backup_and_an_ack() -> None:
    actions = likely_actions(trip())  # frontier → anthropic-main, gemini
    assert [(label, step) for label, _, step in actions] == [
        ("Pin anthropic-main", Step.ASK),
        ("Ack 1 h", Step.DO),
    ]
    assert actions[0][1] == Action(kind=Kind.PIN, providers=("anthropic-main",))
    assert actions[1][1].alerts == (trip(),)


def test_other_alerts_offer_what_fits() -> None:
    engaged = Alert(
        event=AlertEvent.KILL_SWITCH_ENGAGED, severity=trip().severity, at=0, kill_switch="x"
    )
    assert [label for label, _, _ in likely_actions(engaged)] == ["Clear kill switch"]
    assert likely_actions(recovered()) == []
    pinned = trip(kill_switch="pinned to gemini", routes={"frontier": ("gemini",)})
    assert [label for label, _, _ in likely_actions(pinned)] == [
        "Pin gemini",
        "Clear kill switch",
        "Ack 1 h",
    ]


def test_buttons_only_in_admin_chats_and_the_latest_alert_is_remembered() -> None:
    outside = ActionBook(clock=FakeClock(), admin_chats=["111"])
    assert outside.for_alert(trip(), "222") == ()
    assert outside.latest is None
    book = ActionBook(clock=FakeClock(), admin_chats=["111"])
    [row] = book.for_alert(trip(), "111")
    assert [b.label for b in row] == ["Pin anthropic-main", "Ack 1 h"]
    assert book.latest == trip()
    engaged = Alert(
        event=AlertEvent.KILL_SWITCH_ENGAGED, severity=trip().severity, at=0, kill_switch="x"
    )
    assert book.for_alert(engaged, "111") != ()
    assert book.latest == trip()  # a switch change is no news to silence


# --- the gate --------------------------------------------------------------------------------
async def test_a_flood_is_refused_and_told_once_a_minute() -> None:
    clock = FakeClock()
    c = center(clock, per_minute=3)
    gates = [c.gate(ADMIN) for _ in range(6)]
    assert [g for g, _ in gates] == [Gate.OPEN] * 3 + [Gate.LIMITED] * 3
    assert [r is not None for _, r in gates[3:]] == [True, False, False]  # told once
    clock.advance(30)
    assert c.gate(ADMIN)[0] is Gate.LIMITED
    clock.advance(30)  # a minute after the first three
    assert c.gate(ADMIN)[0] is Gate.OPEN
    assert c.counts["rate_limited"] == 4


async def test_other_chats_are_ignored_and_non_admins_refused() -> None:
    c = center(FakeClock(), users=["7"])
    assert c.gate(Who(chat="222", user="7", name="x")) == (Gate.IGNORED, None)
    gate, reply = c.gate(Who(chat="111", user="8", name="y"))
    assert gate is Gate.REFUSED
    assert reply is not None
    assert "Not allowed" in reply.text
    assert c.gate(ADMIN)[0] is Gate.OPEN
    assert await c.command(Who(chat="222", user="7", name="x"), "/pin backup") is None
    assert await c.command(ADMIN, "good morning") is None  # chatter is no command
    c.username = "fake_bot"
    assert await c.command(ADMIN, "/status@other_bot") is None  # for another bot
    assert dict(c.counts) == {"ignored_chat": 2, "refused_user": 1}


# --- /status ---------------------------------------------------------------------------------
def test_status_text() -> None:
    doc: Mapping[str, Any] = {
        "version": 7,
        "mode": "enforce",
        "kill_switch": {"describe": "off"},
        "tiers": [
            {"name": "frontier", "route": ["backup"], "panic": False},
            {"name": "fast", "route": ["primary"], "panic": True},
        ],
        "providers": [
            {
                "name": "primary",
                "state": "tripped",
                "error_rate": 0.83,
                "threshold": 0.5,
                "requests": 41,
                "traffic_share": 0.0,
            },
            {
                "name": "backup",
                "state": "recovering",
                "error_rate": 0.0,
                "threshold": 0.5,
                "requests": 9,
                "traffic_share": 0.5,
                "drill": True,
            },
        ],
        "models": [
            {"name": "backup/alt", "state": "healthy"},
            {"name": "primary/big", "state": "tripped"},
        ],
        "events": [{"time": 1_800_000_000.0, "text": "primary: healthy -> tripped (errors)"}],
    }
    assert render_status(doc).split("\n") == [
        "Kill switch: off · mode enforce · v7",
        "frontier: backup",
        "fast: primary (PANIC: all tripped)",
        "• primary tripped: 83% errors (threshold 50%, 41 req)",
        "• backup recovering 50% traffic DRILL: 0% errors (threshold 50%, 9 req)",
        "• primary/big tripped",
        "Last events:",
        "• 08:00:00 primary: healthy -> tripped (errors)",
    ]


# --- the dispatcher: ack and origin ----------------------------------------------------------
async def test_an_ack_holds_repeats_back_until_it_ends_or_the_incident_does() -> None:
    clock = FakeClock()
    cfg = NotifyConfig(cooldown_seconds=0, log=True)
    d = Dispatcher(senders=senders_from_env(cfg, {}), clock=clock, cfg=cfg)
    d.mute(trip().dedup_key, 3600)
    assert d.submit(trip()) is Submitted.DEDUPLICATED
    assert d.submit(trip("gemini")) is Submitted.QUEUED  # another provider is news
    clock.advance(3600)
    assert d.submit(trip()) is Submitted.QUEUED  # the ack ran out
    d.mute(trip().dedup_key, 3600)
    assert d.submit(recovered()) is Submitted.QUEUED  # the incident ended...
    assert d.submit(trip()) is Submitted.QUEUED  # ...so a new trip is news again
    assert d.counts()[("log", "provider_tripped", "deduplicated")] == 1
    await d.stop(timeout=1)


async def test_an_operators_alert_goes_everywhere_but_the_asking_chat() -> None:
    clock = FakeClock()
    cfg = NotifyConfig(group_window_seconds=0, log=False)
    async with FakeTelegram() as tg, FakeSlack() as slack:
        env = {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_CHAT_ID": "111,222",
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
        }
        d = Dispatcher(senders=senders_from_env(cfg, env), clock=clock, cfg=cfg)
        d.start()
        command = Alert(
            event=AlertEvent.OPERATOR_COMMAND,
            severity=trip().severity,
            at=0,
            detail="ack 1 h by @alice",
            origin="telegram:111",
        )
        d.submit(trip())
        d.submit(command)  # in the same batch as the trip: never mixed into one summary
        await slack.wait_posts(2)
        await d.stop(timeout=2)
    assert sorted((m["chat_id"], "operator" in m["text"]) for m in tg.messages) == [
        ("111", False),
        ("222", False),
        ("222", True),
    ]


# --- configuration ---------------------------------------------------------------------------
CONFIG = """\
providers:
  primary: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: K}
tiers:
  frontier: {targets: [{provider: primary, model: m}]}
notify: {telegram: {commands: true}}
"""


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TELEGRAM_ADMIN_CHAT_IDS": "111"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "1:x"}, "TELEGRAM_ADMIN_CHAT_IDS"),
        (
            {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_ADMIN_CHAT_IDS": "@ops"},
            "TELEGRAM_ADMIN_CHAT_IDS",
        ),
        (
            {
                "TELEGRAM_BOT_TOKEN": "1:x",
                "TELEGRAM_ADMIN_CHAT_IDS": "1",
                "TELEGRAM_ADMIN_USER_IDS": "b",
            },
            "TELEGRAM_ADMIN_USER_IDS",
        ),
    ],
)
def test_commands_on_need_a_token_and_the_allowlist(env: dict[str, str], variable: str) -> None:
    config = parse_config(CONFIG, source="failover.yaml")
    with pytest.raises(ConfigError) as caught:
        Runtime(config, env={"K": "k", **env})
    assert variable in str(caught.value)
    assert "1:x" not in str(caught.value)


async def test_commands_are_off_by_default() -> None:
    config = parse_config(CONFIG.replace("notify: {telegram: {commands: true}}\n", ""), source="f")
    runtime = Runtime(config, env={"K": "k", "TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_CHAT_ID": "1"})
    try:
        assert runtime.bot is None
        assert "telegram_bot" not in runtime.status()
    finally:
        await runtime.stop(grace=0.5)


def test_failover_history_shows_a_command() -> None:
    from controller.cli import _history_line

    record = {
        "time": "2027-01-15T08:00:00.000Z",
        "event": "bot_command",
        "by": "telegram:7",
        "name": "@alice",
        "chat": "111",
        "command": "/pin backup",
        "result": "Kill switch: off → pinned to backup?",
    }
    assert _history_line(record).endswith(
        "telegram @alice in chat 111: /pin backup -> Kill switch: off → pinned to backup?"
    )


def test_failover_check_says_who_may_command() -> None:
    from controller.notify._bot_runtime import describe_commands
    from controller.notify.config import TelegramConfig

    on = TelegramConfig(commands=True, drill_command=True)
    env = {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_ADMIN_CHAT_IDS": "5, -1001"}
    assert describe_commands(TelegramConfig(), {}) == "off"
    assert describe_commands(on, env) == "on: chats 5, -1001 (any user in them); /drill on"
    env["TELEGRAM_ADMIN_USER_IDS"] = "7"
    assert describe_commands(on, env) == "on: chats 5, -1001 (users 7); /drill on"
    with pytest.raises(ConfigError, match="TELEGRAM_ADMIN_CHAT_IDS"):
        describe_commands(on, {"TELEGRAM_BOT_TOKEN": "1:x"})
