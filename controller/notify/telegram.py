"""Telegram sender, via python-telegram-bot (``telegram.Bot``) with a configurable base URL.

PTB builds each request URL as ``base_url + token + "/" + method`` (default base
``https://api.telegram.org/bot``); a self-hosted Bot API server or a test fake is reached by
giving its ``http://host:port/bot``. :func:`normalize_base_url` accepts the bare server URL too.

The token is inside every URL, so it is registered with the log redactor (``_secret.protect``)
and never leaves this module in a repr, a result or an error: ``telegram.Bot``'s own repr shows
the token, so the bot object stays private here.

PTB ≥ 22.2 warns (``PTBDeprecationWarning``) when it builds a ``RetryAfter`` unless
``PTB_TIMEDELTA=true``; either way :func:`_retry_after_seconds` reads int or timedelta.
"""

from __future__ import annotations

import datetime as dt

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from controller.notify._bot_actions import ActionBook, Keyboard
from controller.notify._secret import Secret, protect, redact
from controller.notify.alert import Alert
from controller.notify.base import SendResult
from controller.notify.messages import LinkTemplates, render_telegram

DEFAULT_BASE_URL = "https://api.telegram.org/bot"
# The request was wrong or we are not allowed: sending it again cannot help.
_PERMANENT = (BadRequest, ChatMigrated, Forbidden, InvalidToken)


def normalize_base_url(url: str | None) -> str:
    """``http://host:8081`` → ``http://host:8081/bot``; PTB appends the token to this."""
    if not url:
        return DEFAULT_BASE_URL
    url = url.rstrip("/")
    if "{token}" in url or url.endswith("/bot"):
        return url
    return url + "/bot"


class TelegramBot:
    """One Bot API connection (token + HTTP pool), shared by the senders of several chats."""

    def __init__(self, *, token: Secret, base_url: str | None = None, timeout: float = 10.0):
        protect(token)
        self._request = HTTPXRequest(
            connection_pool_size=8,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        self._bot = Bot(
            token.reveal(),
            base_url=normalize_base_url(base_url),
            request=self._request,
            get_updates_request=self._request,
        )

    async def send_html(self, *, chat_id: str, text: str, keyboard: Keyboard = ()) -> None:
        """Raises PTB's ``TelegramError`` subclasses; the caller maps them. ``keyboard``: inline
        buttons under the message (rows of buttons)."""
        await self._bot.send_message(
            chat_id=chat_id,
            text=text,
            parse_mode=ParseMode.HTML,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            reply_markup=markup(keyboard),
        )

    async def aclose(self) -> None:
        await self._request.shutdown()  # idempotent in PTB

    def __repr__(self) -> str:
        return "TelegramBot(token=***)"


def markup(keyboard: Keyboard) -> InlineKeyboardMarkup | None:
    """PTB's inline keyboard for rows of :class:`~controller.notify._bot_actions.Button`."""
    if not keyboard:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in keyboard]
    )


class TelegramSender:
    """Sends each alert as one HTML message to one chat; with ``buttons`` (the command bot's
    book, when ``notify.telegram.commands`` is on) an alert carries buttons for the likely
    actions in the chats where commands are answered."""

    channel = "telegram"

    def __init__(
        self,
        *,
        bot: TelegramBot,
        chat_id: str,
        links: LinkTemplates,
        buttons: ActionBook | None = None,
    ) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._links = links
        self._buttons = buttons

    @property
    def name(self) -> str:
        return f"telegram:{self._chat_id}"

    async def send(self, alert: Alert) -> SendResult:
        text = render_telegram(alert, links=self._links)
        keyboard = self._buttons.for_alert(alert, self._chat_id) if self._buttons else ()
        try:
            await self._bot.send_html(chat_id=self._chat_id, text=text, keyboard=keyboard)
        except RetryAfter as exc:
            wait = _retry_after_seconds(exc)
            return SendResult.failed(
                self.channel, f"rate limited, retry after {wait:g} s", retry_after=wait
            )
        except _PERMANENT as exc:
            return SendResult.failed(self.channel, _describe(exc), retryable=False)
        except TelegramError as exc:  # NetworkError, TimedOut, 5xx: worth another try
            return SendResult.failed(self.channel, _describe(exc))
        return SendResult.sent(self.channel)

    async def aclose(self) -> None:
        await self._bot.aclose()

    def __repr__(self) -> str:
        return f"TelegramSender(chat_id={self._chat_id!r})"


def telegram_senders(
    *,
    token: Secret,
    chat_ids: list[str],
    links: LinkTemplates,
    base_url: str | None = None,
    timeout: float = 10.0,
    buttons: ActionBook | None = None,
) -> list[TelegramSender]:
    """One sender per chat over one shared bot, so each chat is retried on its own."""
    bot = TelegramBot(token=token, base_url=base_url, timeout=timeout)
    return [
        TelegramSender(bot=bot, chat_id=chat, links=links, buttons=buttons) for chat in chat_ids
    ]


def _retry_after_seconds(exc: RetryAfter) -> float:
    value: int | float | dt.timedelta = exc.retry_after
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value)


def _describe(exc: TelegramError) -> str:
    return redact(f"{type(exc).__name__}: {exc.message}")[:300]
