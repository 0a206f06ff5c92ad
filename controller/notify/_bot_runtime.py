"""The command bot's hands in the running gateway: :class:`RuntimeOperator`.

The kill switch goes where ``failover kill-switch`` puts it, through the same code, so the flag
on disk stays the truth: the config file is rewritten by
:func:`controller.config._kill_switch_file.set_kill_switch` (validated, written in place, audited
as a ``kill_switch_command``), then applied at once instead of at the watcher's next look (which
then finds nothing new). In fleet mode it is the fleet's kill switch in Redis
(:func:`controller.fleet.set_fleet_kill_switch`, audited there), applied by every replica from
pub/sub. An ack mutes the alert's dedup keys in the dispatcher; a drill is the admin API's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller import _json
from controller._drill import start_drill
from controller._errors import ConfigError, FailoverError
from controller.config._kill_switch_file import set_kill_switch
from controller.control.audit import kill_switch_record
from controller.control.state import KillSwitch
from controller.fleet import Role
from controller.notify._bot_actions import ActionBook
from controller.notify._bot_commands import CommandCenter, OperatorError
from controller.notify._secret import Secret
from controller.notify.alert import Alert
from controller.notify.config import TelegramConfig

if TYPE_CHECKING:
    from controller.notify._bot import TelegramCommandBot
    from controller.runtime import Runtime

__all__ = ["RuntimeOperator", "command_bot", "describe_commands"]

log = logging.getLogger(__name__)

_FLEET_APPLY_WAITS = 40  # x 50 ms: how long an answer waits to show the fleet's new routes


class RuntimeOperator:
    """:class:`~controller.notify._bot_commands.Operator` over a :class:`Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def providers(self) -> Sequence[str]:
        return list(self._rt.config.providers)

    def status(self) -> Mapping[str, Any]:
        return self._rt.status()

    def kill_switch(self) -> KillSwitch:
        return self._rt.holder.current.kill_switch

    def unroutable(self, switch: KillSwitch) -> str:
        return self._rt.config.unroutable(switch)

    async def set_kill_switch(self, switch: KillSwitch, *, by: str, chat: str) -> str:
        before = self.kill_switch()
        if self._rt.fleet is not None:
            await self._set_fleet(switch, by=by)
        else:
            await self._set_file(switch, by=by, chat=chat, before=before)
        now = self.kill_switch()
        text = f"Kill switch now {now.describe()} (was {before.describe()})."
        if now != switch:
            text += f" Asked for {switch.describe()}: an override in force wins (environment)."
        return f"{text}\nRoutes now: {self.routes_text()}"

    async def _set_file(
        self, switch: KillSwitch, *, by: str, chat: str, before: KillSwitch
    ) -> None:
        rt = self._rt
        if rt.config_path is None:
            raise OperatorError("this gateway runs without a config file to write the flag to")
        try:
            config = await asyncio.to_thread(set_kill_switch, rt.config_path, switch, who=by)
        except (ConfigError, FailoverError) as exc:
            raise OperatorError(str(exc)) from None
        if rt.audit is not None:
            record = kill_switch_record(
                before,
                switch,
                by=by,
                at=rt.clock.wall(),
                event="kill_switch_command",
                config=str(rt.config_path.absolute()),
                chat=chat,
            )
            rt.audit.append(record)
        rt.apply_config(config)  # now; the watcher then finds the file as applied

    async def _set_fleet(self, switch: KillSwitch, *, by: str) -> None:
        from controller.fleet import FleetUnavailable, set_fleet_kill_switch

        fleet = self._rt.fleet
        assert fleet is not None
        try:
            await set_fleet_kill_switch(fleet.link, switch, by=by)
        except FleetUnavailable as exc:
            raise OperatorError(f"the fleet's Redis did not answer: {exc}") from None
        for _ in range(_FLEET_APPLY_WAITS):  # pub/sub brings it back here within a second
            if fleet.effective_switch() == switch or not fleet.available:
                break
            await self._rt.clock.sleep(0.05)

    def routes_text(self) -> str:
        routes = self._rt.routes()
        return "; ".join(
            f"{tier} → {', '.join(names) or 'nothing'}" for tier, names in routes.items()
        )

    def ack(self, alerts: Sequence[Alert], seconds: float) -> None:
        for alert in alerts:
            for member in alert.alerts:
                self._rt.dispatcher.mute(member.dedup_key, seconds)

    def drill(self, provider: str, seconds: float) -> str:
        try:
            start_drill(self._rt.providers, provider, seconds)
        except KeyError:
            raise OperatorError(f"unknown provider {provider!r}") from None
        return f"Drill started: {provider} fails every request for {seconds:g} s."

    async def audit(self, record: Mapping[str, Any]) -> None:
        rt = self._rt
        if (fleet := rt.fleet) is not None:  # the fleet's trail (failover history reads it)
            await fleet.link.audit(_json.dumps(dict(record)))
        elif rt.audit is not None:
            rt.audit.append(record)
        else:
            log.info("operator command (no audit log kept): %s", dict(record))

    def announce(self, alert: Alert) -> None:
        self._rt.notify(alert)


@dataclass(frozen=True, slots=True)
class _Access:
    """Who may command, from the environment."""

    token: Secret
    chats: list[str]
    users: list[str]


def _access(cfg: TelegramConfig, env: Mapping[str, str]) -> _Access:
    """Raises :class:`ConfigError` naming the variable when the token or the chat allowlist is
    missing, or an id is not a number."""
    token = env.get(cfg.bot_token_env, "").strip()
    if not token:
        raise ConfigError(
            "notify.telegram.commands needs the bot token", key=cfg.bot_token_env, source="env"
        )
    chats = _ids(env, cfg.admin_chat_ids_env)
    if not chats:
        raise ConfigError(
            "notify.telegram.commands needs the chats that may command (comma-separated ids)",
            key=cfg.admin_chat_ids_env,
            source="env",
        )
    return _Access(Secret(token), chats, _ids(env, cfg.admin_user_ids_env))


def describe_commands(cfg: TelegramConfig, env: Mapping[str, str]) -> str:
    """One line for ``failover check``: off, or who may command. Raises like the bot's start."""
    if not cfg.commands:
        return "off"
    access = _access(cfg, env)
    users = f"users {', '.join(access.users)}" if access.users else "any user in them"
    drill = "on" if cfg.drill_command else "off"
    return f"on: chats {', '.join(access.chats)} ({users}); /drill {drill}"


def command_bot(runtime: Runtime) -> TelegramCommandBot | None:
    """The command bot ``notify.telegram.commands`` asks for (None when off). Raises
    :class:`ConfigError` naming the variable when the token or the chat allowlist is missing,
    or an admin id is not a number."""
    cfg = runtime.config.notify.telegram
    if not cfg.commands:
        return None
    from controller.notify._bot import TelegramCommandBot  # telegram.ext: only when on

    access = _access(cfg, runtime.env)
    fleet = runtime.fleet
    center = CommandCenter(
        operator=RuntimeOperator(runtime),
        clock=runtime.clock,
        book=ActionBook(clock=runtime.clock, admin_chats=access.chats),
        admin_chats=access.chats,
        admin_users=access.users,
        per_minute=cfg.commands_per_minute,
        confirm_seconds=cfg.confirm_seconds,
        drill_enabled=cfg.drill_command,
    )
    return TelegramCommandBot(
        token=access.token,
        center=center,
        clock=runtime.clock,
        base_url=runtime.env.get(cfg.api_base_url_env) or None,
        timeout=cfg.timeout_seconds,
        poll_timeout=cfg.poll_timeout_seconds,
        may_poll=lambda: fleet is None or fleet.role is Role.LEADER,  # one poller per token
    )


def _ids(env: Mapping[str, str], name: str) -> list[str]:
    """Telegram ids (integers, a group's negative) listed in variable ``name``."""
    ids = [part.strip() for part in env.get(name, "").split(",") if part.strip()]
    for value in ids:
        if not value.lstrip("-").isdigit():
            raise ConfigError("not a numeric Telegram id (comma-separated)", key=name, source="env")
    return [str(int(value)) for value in ids]
