"""The Telegram command bot: python-telegram-bot's ``Application``, long polling, inside
``failover serve``.

::

    supervisor task (this module)                 PTB Application
      may poll? (no fleet, or this replica leads) ─► initialize (getMe), start,
      not yet polling ─► start it; a failure is     updater.start_polling (deleteWebhook,
        retried with backoff on the clock            getUpdates long polls, retried by PTB)
      no longer may poll ─► stop polling             one TypeHandler ─► CommandCenter
                                                     ─► sendMessage / answerCallbackQuery /
                                                        editMessageText

The bot has its own connections (a long poll never holds a slot an alert needs) and nothing
waits on it: a dead or hanging Telegram only makes the supervisor retry, requests and the
controller never see it. In fleet mode only the leader polls (two pollers of one token fight
with 409 Conflict), so commands move with the lease. The token is inside every URL: it is
registered with the log redactor and never leaves this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import Any

from telegram import Update, User
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ContextTypes, TypeHandler
from telegram.request import HTTPXRequest

from controller._clock import Clock
from controller._tasks import cancel_and_wait
from controller.notify._bot_commands import CommandCenter, Reply, Who
from controller.notify._secret import Secret, protect, redact
from controller.notify.telegram import markup, normalize_base_url

__all__ = ["TelegramCommandBot"]

log = logging.getLogger(__name__)

_CHECK_SECONDS = 1.0  # how often the supervisor looks at the fleet role
_BACKOFF_MAX = 60.0
_LOG_EVERY = 60.0  # polling errors are logged at most this often
_UPDATES = ["message", "callback_query"]
_QUEUE = 100  # updates fetched and not yet handled


class TelegramCommandBot:
    """Answers commands and button presses from the admin chats. ``start()``, ``await stop()``."""

    def __init__(
        self,
        *,
        token: Secret,
        center: CommandCenter,
        clock: Clock,
        base_url: str | None = None,
        timeout: float = 10.0,
        poll_timeout: float = 30.0,
        may_poll: Callable[[], bool] = lambda: True,
    ) -> None:
        protect(token)
        self.center = center
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._may_poll = may_poll
        self._app = _application(token, base_url, timeout=timeout, poll_timeout=poll_timeout)
        self._app.add_handler(TypeHandler(Update, self._on_update))
        self._app.add_error_handler(self._on_error)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self._last_logged = -math.inf

    @property
    def polling(self) -> bool:
        updater = self._app.updater
        return updater is not None and updater.running

    def describe(self) -> dict[str, Any]:
        """For the status document: polling or not, and what came in (counts)."""
        return {"polling": self.polling, "counts": dict(self.center.counts + self.counts)}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="tg-bot")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop polling and close; bounded by ``grace`` real seconds (Telegram may hang)."""
        self._stopping.set()
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        try:
            async with asyncio.timeout(grace):
                await self._halt()
                await self._app.shutdown()  # a no-op when never initialized
        except (TimeoutError, TelegramError) as exc:
            log.warning("telegram bot: stopping took too long or failed (%s)", type(exc).__name__)

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            if not self._may_poll():
                await self._halt()
            elif not self.polling:
                try:
                    await self._begin()
                    backoff = 1.0
                except Exception as exc:  # the supervisor outlives any failure to start
                    self.counts["start_failed"] += 1
                    why = _describe(exc) if isinstance(exc, TelegramError) else type(exc).__name__
                    self._log(f"cannot start polling ({why}); retry in {backoff:g} s")
                    await self._pause(backoff)
                    backoff = min(_BACKOFF_MAX, backoff * 2)
                    continue
            await self._pause(_CHECK_SECONDS)

    async def _begin(self) -> None:
        app = self._app
        await app.initialize()  # getMe: the bot's own @username, to skip others' commands
        self.center.username = app.bot.username
        if not app.running:
            await app.start()
        assert app.updater is not None
        await app.updater.start_polling(
            timeout=dt.timedelta(seconds=self._poll_timeout),
            bootstrap_retries=0,
            drop_pending_updates=True,  # a command typed while no one listened is stale
            allowed_updates=_UPDATES,
            error_callback=self._poll_error,
        )
        log.info("telegram bot: answering commands (long polling)")

    async def _halt(self) -> None:
        if self.polling:
            assert self._app.updater is not None
            await self._app.updater.stop()
            log.info("telegram bot: stopped polling")
        if self._app.running:
            await self._app.stop()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` on the clock, cut short by ``stop``."""
        waits = {
            asyncio.ensure_future(self._clock.sleep(seconds)),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # -- updates ------------------------------------------------------------------------------
    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat, user = update.effective_chat, update.effective_user
        if chat is None:
            return
        who = Who(chat=str(chat.id), user=str(user.id) if user else None, name=_name(user))
        query = update.callback_query
        if query is not None:
            answer = await self.center.button(who, query.data or "")
            if answer is None:
                return
            with contextlib.suppress(BadRequest):  # a query too old to answer: edit anyway
                await query.answer(answer.toast[:200])
            if answer.edit and query.message is not None:
                with contextlib.suppress(BadRequest):  # "message is not modified": said already
                    await query.edit_message_text(answer.edit[:4096])
            if answer.reply is not None:
                await self._send(context, chat.id, answer.reply)
            return
        message = update.effective_message
        if message is None or not message.text:
            return
        reply = await self.center.command(who, message.text)
        if reply is not None:
            await self._send(context, chat.id, reply)

    async def _send(self, context: ContextTypes.DEFAULT_TYPE, chat: int, reply: Reply) -> None:
        await context.bot.send_message(
            chat_id=chat, text=reply.text[:4096], reply_markup=markup(reply.keyboard)
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A handler failed (Telegram refused an answer, a bug): logged without a secret."""
        self.counts["handler_failed"] += 1
        error = context.error
        what = _describe(error) if isinstance(error, TelegramError) else type(error).__name__
        log.error("telegram bot: handling an update failed: %s", what)

    def _poll_error(self, exc: TelegramError) -> None:
        self.counts["poll_failed"] += 1
        self._log(f"polling failed ({_describe(exc)}); PTB retries")

    def _log(self, text: str) -> None:
        now = self._clock.monotonic()
        if now - self._last_logged >= _LOG_EVERY:
            self._last_logged = now
            log.warning("telegram bot: %s", text)


def _application(
    token: Secret, base_url: str | None, *, timeout: float, poll_timeout: float
) -> Application[Any, Any, Any, Any, Any, Any]:
    def request(read: float) -> HTTPXRequest:
        return HTTPXRequest(
            connection_pool_size=4,
            connect_timeout=timeout,
            read_timeout=read,
            write_timeout=timeout,
            pool_timeout=timeout,
        )

    return (
        Application.builder()
        .token(token.reveal())
        .base_url(normalize_base_url(base_url))
        .request(request(timeout))
        .get_updates_request(request(poll_timeout + timeout))
        .concurrent_updates(False)  # one at a time: a confirmation is never raced
        # Bounded: when full, polling waits (Telegram keeps the rest, up to a day).
        .update_queue(asyncio.Queue(maxsize=_QUEUE))
        .job_queue(None)
        .build()
    )


def _name(user: User | None) -> str:
    if user is None:
        return "?"
    return f"@{user.username}" if user.username else (user.first_name or str(user.id))


def _describe(exc: TelegramError) -> str:
    return redact(f"{type(exc).__name__}: {exc.message}")[:300]
