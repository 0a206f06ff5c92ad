"""Fake chat endpoints on loopback: a Telegram Bot API server and a Slack incoming webhook.

Both are real aiohttp servers on 127.0.0.1 with an ephemeral port, so the code under test (PTB's
httpx client, ``requests``, later Alertmanager) speaks real HTTP to them. Each records every
request it receives and can be told how to answer the next ones::

    async with FakeTelegram(token="123:abc") as tg, FakeSlack() as slack:
        tg.push(Fault.rate_limited(3))       # the next request gets 429 + retry_after 3
        slack.always(Fault.hang())            # every request hangs until the server closes
        ...
        [msg] = await tg.wait_messages(1)     # form or JSON body of sendMessage, as a dict

One-shot faults (``push``) are used in order, one per request; when none is left the sticky
default (``always``, initially ``Fault.ok()``) applies. ``unused_port()`` gives a port where
nothing listens, for "the server is down".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web

FaultKind = Literal["ok", "error", "rate_limited", "hang"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """How the fake answers one request."""

    kind: FaultKind = "ok"
    status: int = 200
    retry_after: int = 0

    @classmethod
    def ok(cls) -> Fault:
        return cls()

    @classmethod
    def error(cls, status: int = 500) -> Fault:
        return cls(kind="error", status=status)

    @classmethod
    def rate_limited(cls, retry_after: int = 1) -> Fault:
        return cls(kind="rate_limited", status=429, retry_after=retry_after)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer (until the server closes)."""
        return cls(kind="hang")


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """One request as the fake saw it; ``body`` is the parsed form or JSON object."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)


def unused_port() -> int:
    """A loopback port nothing listens on (bound then released), for "server down" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _ChatFake:
    """Shared plumbing: lifecycle, recording, the fault script, hang release."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Fault] = deque()
        self._default = Fault.ok()
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._entry)
        # No access log: request paths carry the bot token / webhook secret, and tests assert
        # that no secret reaches the captured logs.
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._release.set()  # hanging handlers return so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self._port}"

    # -- behaviour ------------------------------------------------------------------------------
    def push(self, *faults: Fault) -> None:
        """Answer the next ``len(faults)`` requests with these, in order."""
        self._script.extend(faults)

    def always(self, fault: Fault) -> None:
        """Answer every request without a pushed fault this way (``Fault.ok()`` to reset)."""
        self._default = fault

    # -- observation ----------------------------------------------------------------------------
    async def wait_requests(
        self,
        count: int,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a bound (a loaded machine may take seconds)
    ) -> list[Recorded]:
        """Wait until at least ``count`` requests arrived; returns all of them."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # -- request handling -----------------------------------------------------------------------
    async def _entry(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path=request.path,
            body=await _parse_body(request),
            headers=dict(request.headers),
        )
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        fault = self._script.popleft() if self._script else self._default
        if fault.kind == "hang":
            await self._release.wait()
            return web.Response(status=503, text="released")
        return self._answer(recorded, fault)

    def _answer(self, recorded: Recorded, fault: Fault) -> web.StreamResponse:
        raise NotImplementedError


async def _parse_body(request: web.Request) -> dict[str, Any]:
    """JSON when the client sent JSON, else the form fields; ``{}`` for anything else."""
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.text())
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {"_": data}
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {key: str(value) for key, value in form.items()}
    return {}


class FakeTelegram(_ChatFake):
    """The Bot API subset we use: ``POST /bot<token>/<method>`` (``sendMessage``, ``getMe``).

    PTB builds URLs as ``base_url + token + "/" + method``, so give it ``base_url``
    (``http://127.0.0.1:<port>/bot``). A wrong token gets 401, like the real API.
    """

    def __init__(self, *, token: str = "123456:TEST-token") -> None:
        super().__init__()
        self.token = token
        self._next_id = 0
        # The bot side (getUpdates long polling): updates waiting to be fetched, the messages
        # sent (by id, so a button press can quote its message), the last update id handed out.
        self.updates: deque[dict[str, Any]] = deque()
        self.sent: dict[int, dict[str, Any]] = {}
        self._update_id = 0
        self._poked = asyncio.Event()  # an update was queued: a waiting getUpdates answers

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies of every ``sendMessage`` request received (answered or not)."""
        return [r.body for r in self.requests if r.path.endswith("/sendMessage")]

    async def wait_messages(
        self,
        count: int,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a bound (a loaded machine may take seconds)
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages

    def _answer(self, recorded: Recorded, fault: Fault) -> web.StreamResponse:
        prefix = f"/bot{self.token}/"
        if not recorded.path.startswith(prefix):
            return _tg_error(401, "Unauthorized")
        if fault.kind == "rate_limited":
            text = f"Too Many Requests: retry after {fault.retry_after}"
            return _tg_error(429, text, parameters={"retry_after": fault.retry_after})
        if fault.kind == "error":
            return _tg_error(fault.status, "Internal Server Error")
        method = recorded.path.removeprefix(prefix)
        if method == "getMe":
            return web.json_response({"ok": True, "result": self._me()})
        if method == "sendMessage":
            return web.json_response({"ok": True, "result": self._message(recorded.body)})
        if method == "editMessageText" and self._unchanged(recorded.body):
            return _tg_error(400, "Bad Request: message is not modified")  # as Telegram says
        if method in _BOT_METHODS:
            return web.json_response({"ok": True, "result": _BOT_METHODS[method](self, recorded)})
        return _tg_error(404, "Not Found: method not found")

    def _me(self) -> dict[str, Any]:
        return {"id": 123456, "is_bot": True, "first_name": "Fake", "username": "fake_bot"}

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        raw = str(body.get("chat_id", "0"))
        chat_id = int(raw) if raw.lstrip("-").isdigit() else -1001
        message = {
            "message_id": self._next_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "text": str(body.get("text", "")),
        }
        self.sent[self._next_id] = {**message, "reply_markup": body.get("reply_markup")}
        return message

    # -- the bot side: what a person in a chat does, and what the bot answers -----------------
    def send_command(
        self, text: str, *, chat_id: int, user_id: int = 42, username: str = "alice"
    ) -> None:
        """A person types ``text`` in ``chat_id``: queued for the bot's next getUpdates."""
        command = text.split()[0] if text.startswith("/") else ""
        entities = [{"type": "bot_command", "offset": 0, "length": len(command)}] if command else []
        self._queue_update(
            message={
                "message_id": 10_000 + self._update_id,
                "date": int(time.time()),
                "chat": _chat(chat_id),
                "from": _user(user_id, username),
                "text": text,
                "entities": entities,
            }
        )

    def press(
        self,
        message_id: int,
        label: str,
        *,
        chat_id: int | None = None,
        user_id: int = 42,
        username: str = "alice",
        data: str | None = None,
    ) -> None:
        """A person presses the button labelled ``label`` under sent message ``message_id``
        (in its own chat unless ``chat_id`` says otherwise); ``data``: the button's data as an
        older copy of the message had it (a phone that did not see the edit)."""
        message = self.sent[message_id]
        if data is None:
            buttons = self.buttons(message_id)
            data = next(b["callback_data"] for b in buttons if b["text"] == label)
        chat = message["chat"] if chat_id is None else _chat(chat_id)
        quoted = {k: v for k, v in message.items() if k != "reply_markup"}
        self._queue_update(
            callback_query={
                "id": f"cq{self._update_id}",
                "from": _user(user_id, username),
                "chat_instance": "ci",
                "data": data,
                "message": {**quoted, "chat": chat},
            }
        )

    def buttons(self, message_id: int) -> list[dict[str, Any]]:
        """The inline buttons (``text``, ``callback_data``) under a sent message, row by row."""
        raw = self.sent[message_id].get("reply_markup")
        if not raw:
            return []
        markup = json.loads(raw) if isinstance(raw, str) else raw
        return [button for row in markup["inline_keyboard"] for button in row]

    def bodies(self, method: str) -> list[dict[str, Any]]:
        """Bodies of every request for Bot API ``method`` (``editMessageText``, ...)."""
        return [r.body for r in self.requests if r.path.endswith(f"/{method}")]

    async def wait_for(
        self,
        method: str,
        count: int,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a bound (a loaded machine may take seconds)
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` requests for ``method`` arrived; their bodies."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.bodies(method)) >= count)
        return self.bodies(method)

    def _unchanged(self, body: dict[str, Any]) -> bool:
        """An edit that would leave the message as it is (same text, same buttons)."""
        message = self.sent.get(int(body.get("message_id", 0)))
        return message is not None and (message["text"], message.get("reply_markup")) == (
            body.get("text"),
            body.get("reply_markup"),
        )

    def _queue_update(self, **content: Any) -> None:
        self._update_id += 1
        self.updates.append({"update_id": self._update_id, **content})
        self._poked.set()

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        """getUpdates long-polls (answered when an update is queued, after the ``timeout`` it
        asks for, or when the server closes) unless a fault is scripted for it."""
        polling = request.path.endswith("/getUpdates") and request.path.startswith(
            f"/bot{self.token}/"
        )
        if not polling or self._script or self._default.kind != "ok":
            return await super()._entry(request)
        recorded = Recorded(
            method=request.method, path=request.path, body=await _parse_body(request), headers={}
        )
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        offset = int(recorded.body.get("offset") or 0)
        while self.updates and self.updates[0]["update_id"] < offset:
            self.updates.popleft()  # confirmed by the offset
        if not self.updates:
            self._poked.clear()
            wait = float(recorded.body.get("timeout") or 0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await _first(self._poked.wait(), self._release.wait())
        return web.json_response({"ok": True, "result": list(self.updates)})


def _delete_webhook(fake: FakeTelegram, recorded: Recorded) -> bool:
    if str(recorded.body.get("drop_pending_updates", "")).lower() == "true":
        fake.updates.clear()
    return True


def _edit_message(fake: FakeTelegram, recorded: Recorded) -> dict[str, Any]:
    message_id = int(recorded.body.get("message_id", 0))
    message = fake.sent.get(message_id, {"message_id": message_id, "chat": _chat(1)})
    edited = {**message, "text": str(recorded.body.get("text", ""))}
    fake.sent[message_id] = {**edited, "reply_markup": recorded.body.get("reply_markup")}
    return {k: v for k, v in edited.items() if k != "reply_markup"}


def _true(fake: FakeTelegram, recorded: Recorded) -> bool:
    return True


_BOT_METHODS: dict[str, Callable[[FakeTelegram, Recorded], Any]] = {
    "deleteWebhook": _delete_webhook,
    "answerCallbackQuery": _true,
    "editMessageText": _edit_message,
    "setMyCommands": _true,
}


def _chat(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup", "title": "ops"}


def _user(user_id: int, username: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": username.title(), "username": username}


async def _first(*waits: Any) -> None:
    """Wait for whichever of ``waits`` (coroutines) finishes first; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _tg_error(status: int, description: str, **extra: Any) -> web.Response:
    body = {"ok": False, "error_code": status, "description": description, **extra}
    return web.json_response(body, status=status)


class FakeSlack(_ChatFake):
    """A Slack incoming webhook: ``POST <path>`` with a JSON payload answers ``ok``.

    Errors follow Slack's plain-text style: 404 ``no_service`` for an unknown path,
    400 ``invalid_payload`` for a body that is not a JSON object, 429 ``rate_limited`` with a
    ``Retry-After`` header.
    """

    def __init__(self, *, path: str = "/services/T0FAKE/B0FAKE/s3cr3tW3bh00kPath") -> None:
        super().__init__()
        self.path = path

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.path}"

    @property
    def posts(self) -> list[dict[str, Any]]:
        """JSON payloads of every POST to the webhook path."""
        return [r.body for r in self.requests if r.path == self.path and r.method == "POST"]

    async def wait_posts(
        self,
        count: int,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a bound (a loaded machine may take seconds)
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.posts) >= count)
        return self.posts

    def _answer(self, recorded: Recorded, fault: Fault) -> web.StreamResponse:
        if recorded.path != self.path or recorded.method != "POST":
            return web.Response(status=404, text="no_service")
        if fault.kind == "rate_limited":
            headers = {"Retry-After": str(fault.retry_after)}
            return web.Response(status=429, text="rate_limited", headers=headers)
        if fault.kind == "error":
            return web.Response(status=fault.status, text="internal_error")
        if not recorded.body:
            return web.Response(status=400, text="invalid_payload")
        return web.Response(text="ok")
