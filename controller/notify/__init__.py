"""Alerts to people: alert records, rendering, a dispatcher, and Telegram/Slack/log senders.

The dispatcher decides when and whether (dedup, storm grouping, bounded queues, retries that
honour RetryAfter / Retry-After); senders only send. Secrets come from the environment
(:func:`senders_from_env`) and never appear in logs, reprs or results.
"""

from controller.notify._secret import Secret
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent, Severity, combine
from controller.notify.base import Sender, SendResult
from controller.notify.config import NotifyConfig, SlackConfig, TelegramConfig, senders_from_env
from controller.notify.dispatcher import Dispatcher
from controller.notify.log import LogSender
from controller.notify.messages import LinkTemplates, render_log, render_slack, render_telegram
from controller.notify.slack import SlackSender
from controller.notify.telegram import TelegramBot, TelegramSender, telegram_senders

__all__ = [
    "DEFAULT_SEVERITY",
    "Alert",
    "AlertEvent",
    "Dispatcher",
    "LinkTemplates",
    "LogSender",
    "NotifyConfig",
    "Secret",
    "SendResult",
    "Sender",
    "Severity",
    "SlackConfig",
    "SlackSender",
    "TelegramBot",
    "TelegramConfig",
    "TelegramSender",
    "combine",
    "render_log",
    "render_slack",
    "render_telegram",
    "senders_from_env",
    "telegram_senders",
]
