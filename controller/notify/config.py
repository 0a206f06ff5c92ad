"""Notify configuration, and building the senders from the environment.

The config names *which environment variables* hold the secrets, never the secrets themselves,
so a config file can be committed and shown. :func:`senders_from_env` reads those variables
once, at startup, and builds a sender for each channel whose variables are set; a channel that
is half configured (a token without a chat id) is an error naming the missing variable.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller._env_name import EnvName
from controller._errors import ConfigError
from controller.notify._bot_actions import ActionBook
from controller.notify._secret import Secret
from controller.notify.base import Sender
from controller.notify.log import LogSender
from controller.notify.messages import (
    DASHBOARD_FIELDS,
    TRACE_FIELDS,
    LinkTemplates,
    check_template,
)
from controller.notify.slack import SlackSender
from controller.notify.telegram import telegram_senders

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TelegramConfig(BaseModel):
    model_config = _FROZEN

    bot_token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    chat_id_env: EnvName = "TELEGRAM_CHAT_ID"  # one id, or several separated by commas
    api_base_url_env: EnvName = "TELEGRAM_API_BASE_URL"  # self-hosted Bot API server (optional)
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Operating from the phone (controller/notify/_bot.py): off unless turned on. Commands are
    # answered only in the chats listed in admin_chat_ids_env (required when on), and, when
    # admin_user_ids_env is set, only from those users.
    commands: bool = False
    admin_chat_ids_env: EnvName = "TELEGRAM_ADMIN_CHAT_IDS"
    admin_user_ids_env: EnvName = "TELEGRAM_ADMIN_USER_IDS"
    drill_command: bool = False  # /drill PROVIDER SECONDS simulates an outage: opt in
    commands_per_minute: int = Field(default=10, ge=1, le=600)  # per chat; more are refused
    confirm_seconds: float = Field(default=120.0, gt=0, le=3600)  # a confirmation button lives
    poll_timeout_seconds: float = Field(default=30.0, gt=0, le=60)  # long polling (getUpdates)


class SlackConfig(BaseModel):
    model_config = _FROZEN

    webhook_url_env: EnvName = "SLACK_WEBHOOK_URL"
    timeout_seconds: float = Field(default=10.0, gt=0)


class NotifyConfig(BaseModel):
    """Delivery policy. Times are seconds; ``backoff_*`` shape retries after a failed send."""

    model_config = _FROZEN

    telegram: TelegramConfig = TelegramConfig()
    slack: SlackConfig = SlackConfig()
    log: bool = True  # also write every alert to the log
    link_base_url: str = ""  # fills {base} in the templates, e.g. http://grafana:3000
    dashboard_url: str | None = "{base}/d/failover?from={from_ms}&to={to_ms}"
    # The dashboard uid "failover" matches dashboards/; the trace backend varies (Jaeger UI:
    # "{base}/trace/{trace_id}"), so trace links are off until configured.
    trace_url: str | None = None
    dashboard_before_seconds: float = Field(default=900.0, ge=0)
    dashboard_after_seconds: float = Field(default=300.0, ge=0)
    cooldown_seconds: float = Field(default=300.0, ge=0)
    group_window_seconds: float = Field(default=2.0, ge=0)
    queue_size: int = Field(default=100, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard_placeholders(cls, value: str | None) -> str | None:
        if value:
            check_template(value, DASHBOARD_FIELDS)
        return value

    @field_validator("trace_url")
    @classmethod
    def _trace_placeholders(cls, value: str | None) -> str | None:
        if value:
            check_template(value, TRACE_FIELDS)
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> NotifyConfig:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_base_seconds")
        return self

    def links(self) -> LinkTemplates:
        # Without a base URL a "{base}/..." link would be relative and useless: leave it out.
        def usable(template: str | None) -> str | None:
            if not template or ("{base}" in template and not self.link_base_url):
                return None
            return template

        return LinkTemplates(
            dashboard_url=usable(self.dashboard_url),
            trace_url=usable(self.trace_url),
            base_url=self.link_base_url,
            before_seconds=self.dashboard_before_seconds,
            after_seconds=self.dashboard_after_seconds,
        )


def senders_from_env(
    cfg: NotifyConfig, env: Mapping[str, str], *, buttons: ActionBook | None = None
) -> list[Sender]:
    """The senders whose environment variables are set (plus the log sender if enabled);
    ``buttons``: the command bot's, so Telegram alerts carry buttons (commands on)."""
    links = cfg.links()
    senders: list[Sender] = [LogSender(links=links)] if cfg.log else []
    senders.extend(_telegram(cfg.telegram, env, links, buttons))
    senders.extend(_slack(cfg.slack, env, links))
    return senders


def _telegram(
    cfg: TelegramConfig,
    env: Mapping[str, str],
    links: LinkTemplates,
    buttons: ActionBook | None = None,
) -> list[Sender]:
    token = env.get(cfg.bot_token_env, "").strip()
    chats = [c.strip() for c in env.get(cfg.chat_id_env, "").split(",") if c.strip()]
    if not token and not chats:
        return []
    if not token:
        raise ConfigError("chat id set but no bot token", key=cfg.bot_token_env, source="env")
    if not chats:
        raise ConfigError("bot token set but no chat id", key=cfg.chat_id_env, source="env")
    return list(
        telegram_senders(
            token=Secret(token),
            chat_ids=chats,
            links=links,
            base_url=env.get(cfg.api_base_url_env) or None,
            timeout=cfg.timeout_seconds,
            buttons=buttons,
        )
    )


def _slack(cfg: SlackConfig, env: Mapping[str, str], links: LinkTemplates) -> list[Sender]:
    url = env.get(cfg.webhook_url_env, "").strip()
    if not url:
        return []
    if not url.startswith(("https://", "http://")):
        # The value is the secret: name the variable, never echo it.
        raise ConfigError("not an http(s) URL", key=cfg.webhook_url_env, source="env")
    return [SlackSender(webhook_url=Secret(url), links=links, timeout=cfg.timeout_seconds)]
