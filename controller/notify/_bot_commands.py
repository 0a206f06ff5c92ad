"""What the Telegram commands do, apart from Telegram: who may ask, how often, and the answers.

::

    update ─► gate: a chat not on the allowlist ─► ignored (counted, never answered)
                    more than commands_per_minute from one chat ─► refused (told once a minute)
                    a user not on TELEGRAM_ADMIN_USER_IDS (when set) ─► refused
              command ─► /status: the status page's facts, short
                         /pin /disable /clear /drill ─► [confirm] [Cancel] buttons
                         /ack [30m|2h|1d] ─► silences repeats of the latest alert
              button  ─► confirm ─► the operator (the runtime) writes the kill switch ...

The runtime side is the :class:`Operator` protocol (``controller/notify/_bot_runtime.py`` is the
real one), so this module never touches a file, Redis or the controller itself. Every admitted
command and button press is audited through the operator (who, chat, when, what, the result)
and every one that changes something is announced to the other alert channels. Time (the rate
limit, a confirmation's life) is the injected clock's.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controller._clock import Clock
from controller._drill import MAX_SECONDS as MAX_DRILL_SECONDS
from controller.control.state import KillSwitch
from controller.notify._bot_actions import Action, ActionBook, Keyboard, Kind, Step
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent
from controller.notify.messages import TELEGRAM_LIMIT, format_when, headline

__all__ = ["Answer", "CommandCenter", "Operator", "OperatorError", "Reply", "Who"]

log = logging.getLogger(__name__)

MAX_ACK_SECONDS = 86400.0
_RATE_WINDOW = 60.0
HELP = (
    "/status: routes, providers, kill switch, last events\n"
    "/pin PROVIDER: send all traffic to one provider\n"
    "/disable PROVIDER...: take providers out of every route\n"
    "/clear: release the kill switch\n"
    "/ack [30m|2h|1d]: silence repeats of the latest alert (default 1 h)\n"
    "/drill PROVIDER SECONDS: simulate an outage (when enabled)"
)


class OperatorError(Exception):
    """An action the operator could not carry out; the text is shown in the chat."""


class Operator(Protocol):
    """What the commands need from the running gateway."""

    def providers(self) -> Sequence[str]: ...

    def status(self) -> Mapping[str, Any]:
        """The status document (``GET /status.json``)."""
        ...

    def kill_switch(self) -> KillSwitch:
        """The kill switch in force."""
        ...

    def unroutable(self, switch: KillSwitch) -> str:
        """What ``switch`` would leave with nothing to route to, in words, or ""."""
        ...

    async def set_kill_switch(self, switch: KillSwitch, *, by: str, chat: str) -> str:
        """Write ``switch`` where the flag lives; what it came to (the new routes), in words."""
        ...

    def ack(self, alerts: Sequence[Alert], seconds: float) -> None: ...

    def drill(self, provider: str, seconds: float) -> str: ...

    async def audit(self, record: Mapping[str, Any]) -> None: ...

    def announce(self, alert: Alert) -> None:
        """Send ``alert`` to the alert channels (``alert.origin`` excepted)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Who:
    """Where an update came from. ``name``: the user's @username or first name (for people)."""

    chat: str
    user: str | None
    name: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A new message (plain text) in the asking chat."""

    text: str
    keyboard: Keyboard = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a button press gets: a short notice on the phone (``toast``), the pressed message
    rewritten (``edit``: its buttons go), and maybe a new message (``reply``)."""

    toast: str
    edit: str | None = None
    reply: Reply | None = None


class Gate(enum.Enum):
    OPEN = "open"
    IGNORED = "ignored_chat"  # not an allowlisted chat: never answered
    LIMITED = "rate_limited"
    REFUSED = "refused_user"


class _Limiter:
    """At most ``per_minute`` updates per chat in any 60 s; a refusal is reported (to tell the
    chat) at most once a minute, the rest are silent. Bounded: one deque per admin chat."""

    def __init__(self, clock: Clock, per_minute: int) -> None:
        self._clock = clock
        self._per_minute = per_minute
        self._seen: dict[str, collections.deque[float]] = {}
        self._told: dict[str, float] = {}

    def allow(self, chat: str) -> tuple[bool, bool]:
        """(allowed, tell): ``tell`` on the first refusal since the chat was last allowed."""
        now = self._clock.monotonic()
        times = self._seen.setdefault(chat, collections.deque(maxlen=self._per_minute))
        while times and now - times[0] >= _RATE_WINDOW:
            times.popleft()
        if len(times) >= self._per_minute:
            tell = now - self._told.get(chat, -math.inf) >= _RATE_WINDOW
            if tell:
                self._told[chat] = now
            return False, tell
        times.append(now)
        return True, False


class CommandCenter:
    """Commands and button presses from Telegram, answered for the admin chats only."""

    def __init__(
        self,
        *,
        operator: Operator,
        clock: Clock,
        book: ActionBook,
        admin_chats: Collection[str],
        admin_users: Collection[str] = (),
        per_minute: int = 10,
        confirm_seconds: float = 120.0,
        drill_enabled: bool = False,
    ) -> None:
        self._op = operator
        self._clock = clock
        self.book = book
        self._chats = frozenset(admin_chats)
        self._users = frozenset(admin_users)
        self._limiter = _Limiter(clock, per_minute)
        self._per_minute = per_minute
        self._confirm = confirm_seconds
        self._drill = drill_enabled
        self.counts: collections.Counter[str] = collections.Counter()
        self.username: str | None = None  # the bot's own (getMe): "/status@other_bot" is not ours

    # -- the gate -----------------------------------------------------------------------------
    def gate(self, who: Who) -> tuple[Gate, Reply | None]:
        """Whether to act on an update from ``who``, and what to say when not (or nothing)."""
        if who.chat not in self._chats:
            self.counts[Gate.IGNORED.value] += 1
            return Gate.IGNORED, None
        allowed, tell = self._limiter.allow(who.chat)
        if not allowed:
            self.counts[Gate.LIMITED.value] += 1
            text = f"Too many commands: at most {self._per_minute} a minute. Try again soon."
            return Gate.LIMITED, Reply(text) if tell else None
        if self._users and who.user not in self._users:
            self.counts[Gate.REFUSED.value] += 1
            return Gate.REFUSED, Reply("Not allowed: you are not on the admin list.")
        return Gate.OPEN, None

    # -- commands -----------------------------------------------------------------------------
    async def command(self, who: Who, text: str) -> Reply | None:
        """Answer one message from ``who`` (None: say nothing)."""
        name, target, args = _parse(text)
        addressed = not target or target.lower() == (self.username or target).lower()
        if (not name or not addressed) and who.chat in self._chats:
            return None  # chatter in an admin group, or a command for another bot
        gate, refusal = self.gate(who)
        if gate is Gate.IGNORED:
            return None
        if gate is not Gate.OPEN:
            await self._audit(who, text, result=gate.value)
            return refusal
        self.counts["command"] += 1
        reply = await self._run(who, name, args)
        await self._audit(who, text, result=_first_line(reply.text))
        return reply

    async def _run(self, who: Who, name: str, args: list[str]) -> Reply:
        if name == "status":
            return Reply(render_status(self._op.status()))
        if name in ("start", "help"):
            return Reply(HELP)
        if name == "ack":
            return self._ack_command(who, args)
        if name in ("pin", "disable", "clear", "drill"):
            action = self._action(name, args)
            if isinstance(action, Reply):
                return action
            return self._ask(who, action)
        return Reply(f"Unknown command /{name}.\n{HELP}")

    def _action(self, name: str, args: list[str]) -> Action | Reply:
        """The action a kill-switch or drill command asks for, or why it cannot be."""
        known = list(self._op.providers())
        if name == "clear":
            return Action(kind=Kind.CLEAR) if not args else Reply("/clear takes no provider names.")
        if name == "drill":
            return self._drill_action(args, known)
        if not args or (name == "pin" and len(args) != 1):
            return Reply(f"Usage: /{name} PROVIDER{'...' if name == 'disable' else ''}")
        unknown = [a for a in args if a not in known]
        if unknown:
            return Reply(f"Unknown provider {unknown[0]!r}. Known: {', '.join(known)}")
        return Action(kind=Kind(name), providers=tuple(dict.fromkeys(args)))

    def _drill_action(self, args: list[str], known: list[str]) -> Action | Reply:
        if not self._drill:
            return Reply("Drills are off here (notify.telegram.drill_command: false).")
        seconds = _number(args[1]) if len(args) == 2 else None
        if seconds is None or not 0 < seconds <= MAX_DRILL_SECONDS:
            return Reply(f"Usage: /drill PROVIDER SECONDS (at most {MAX_DRILL_SECONDS:g})")
        if args[0] not in known:
            return Reply(f"Unknown provider {args[0]!r}. Known: {', '.join(known)}")
        return Action(kind=Kind.DRILL, providers=(args[0],), seconds=seconds)

    def _ask(self, who: Who, action: Action) -> Reply:
        """The confirmation prompt for ``action``, with the warning when it strands a tier."""
        current = self._op.kill_switch()
        if action.kind is Kind.DRILL:
            text = (
                f"Simulate an outage of {action.providers[0]} for {action.seconds:g} s? "
                "Its requests fail, the tripwire trips and alerts go out."
            )
            keyboard = self._confirm_buttons(who, action, "Start drill")
            return Reply(text, keyboard)
        switch = _switch(action)
        if switch == current:
            return Reply(f"The kill switch is already {current.describe()}.")
        text = f"Kill switch: {current.describe()} → {switch.describe()}?"
        yes = {Kind.PIN: "Pin", Kind.DISABLE: "Disable", Kind.CLEAR: "Clear"}[action.kind]
        problem = self._op.unroutable(switch)
        if problem:
            text += f"\n⚠️ Warning: {problem}."
            action = Action(kind=action.kind, providers=action.providers, force=True)
            yes += " anyway"
        return Reply(text, self._confirm_buttons(who, action, yes))

    def _confirm_buttons(self, who: Who, action: Action, yes: str) -> Keyboard:
        return self.book.confirmation(action, chat=who.chat, ttl=self._confirm, yes=yes)

    def _ack_command(self, who: Who, args: list[str]) -> Reply:
        seconds = _duration(args[0]) if args else 3600.0
        if seconds is None or not 0 < seconds <= MAX_ACK_SECONDS:
            return Reply("Usage: /ack [30m|2h|1d] (default 1 h, at most 1 d)")
        latest = self.book.latest
        if latest is None:
            return Reply("No alert to acknowledge yet.")
        return Reply(self._do_ack(who, Action(kind=Kind.ACK, seconds=seconds, alerts=(latest,))))

    # -- buttons ------------------------------------------------------------------------------
    async def button(self, who: Who, data: str) -> Answer | None:
        """Answer a press on one of our buttons (None: an ignored chat, say nothing)."""
        gate, refusal = self.gate(who)
        if gate is Gate.IGNORED:
            return None
        if gate is not Gate.OPEN:
            await self._audit(who, f"[button] {data}", result=gate.value)
            return Answer(toast=refusal.text if refusal else "Not now.")
        pending = self.book.take(data, chat=who.chat)
        if pending is None:
            self.counts["button_expired"] += 1
            text = "This button has expired. Send the command again."
            return Answer(toast=text, edit=text)
        self.counts["button"] += 1
        action = pending.action
        if pending.step is Step.CANCEL:
            answer = Answer(toast="Cancelled.", edit=f"Cancelled: {action.describe()}.")
        elif pending.step is Step.ASK:
            answer = Answer(toast="Confirm below.", reply=self._ask(who, action))
        else:
            text = await self._do(who, action)
            answer = Answer(toast=_first_line(text)[:190], edit=text)
        await self._audit(who, f"[button] {pending.step.value} {action.describe()}", answer.toast)
        return answer

    async def _do(self, who: Who, action: Action) -> str:
        """Carry out a confirmed action; what it came to."""
        if action.kind is Kind.ACK:
            return self._do_ack(who, action)
        if action.kind is Kind.DRILL:
            try:
                text = self._op.drill(action.providers[0], action.seconds)
            except OperatorError as exc:
                return f"Drill not started: {exc}"
            self._announce(who, f"/drill {action.providers[0]} {action.seconds:g}", text)
            return text
        switch = _switch(action)
        problem = self._op.unroutable(switch)
        if problem and not action.force:  # the config changed since the question: ask again
            return f"Not done: {problem}. Send the command again."
        try:
            text = await self._op.set_kill_switch(switch, by=_by(who), chat=who.chat)
        except OperatorError as exc:
            return f"Not done: {exc}"
        self._announce(who, f"kill switch {switch.describe()}", text)
        return text

    def _do_ack(self, who: Who, action: Action) -> str:
        self._op.ack(action.alerts, action.seconds)
        what = "; ".join(headline(a) for a in action.alerts[:3])
        text = f"Acknowledged for {_say(action.seconds)}: repeats of {what} are held back."
        self._announce(who, f"ack {_say(action.seconds)}", text)
        return text

    # -- records ------------------------------------------------------------------------------
    def _announce(self, who: Who, what: str, result: str) -> None:
        """An operator_command alert for every channel but the asking chat, with the kill
        switch and the routes as they are now (after the change)."""
        detail = f"{what} by {who.name} (Telegram chat {who.chat}): {result}"
        switch = self._op.kill_switch()
        tiers = self._op.status().get("tiers", [])
        self._op.announce(
            Alert(
                event=AlertEvent.OPERATOR_COMMAND,
                severity=DEFAULT_SEVERITY[AlertEvent.OPERATOR_COMMAND],
                at=self._clock.wall(),
                detail=detail,
                routes={t["name"]: tuple(t.get("route", [])) for t in tiers},
                kill_switch=switch.describe() if switch.active else None,
                origin=f"telegram:{who.chat}",
            )
        )

    async def _audit(self, who: Who, command: str, result: str) -> None:
        record = {
            "at": self._clock.wall(),
            "event": "bot_command",
            "by": _by(who),
            "name": who.name,
            "chat": who.chat,
            "command": command[:200],
            "result": result[:300],
        }
        try:
            await self._op.audit(record)
        except Exception as exc:  # the trail is best effort; the command already ran
            log.error("auditing a Telegram command failed: %s", type(exc).__name__)


def _by(who: Who) -> str:
    return f"telegram:{who.user or '?'}"


def _switch(action: Action) -> KillSwitch:
    if action.kind is Kind.PIN:
        return KillSwitch(pin=action.providers[0])
    if action.kind is Kind.DISABLE:
        return KillSwitch(disable=action.providers)
    return KillSwitch()


def _parse(text: str) -> tuple[str, str, list[str]]:
    """``/pin@my_bot openai`` → ("pin", "my_bot", ["openai"]); not a command: ("", "", [...])."""
    words = text.strip().split()
    if not words or not words[0].startswith("/"):
        return "", "", words
    name, _, target = words[0][1:].partition("@")
    return name.lower(), target, words[1:]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # nan


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float | None:
    """``90s``, ``30m``, ``2h``, ``1d``; a bare number is minutes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS.get(match.group(2) or "m", 60.0)


def _say(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


# --- /status ---------------------------------------------------------------------------------
def render_status(doc: Mapping[str, Any]) -> str:
    """The status page's facts in a few lines: per tier the route, per provider its state and
    error rate against the threshold, the kill switch, the last routing events."""
    switch = doc.get("kill_switch", {}).get("describe", "off")
    lines = [f"Kill switch: {switch} · mode {doc.get('mode')} · v{doc.get('version')}"]
    for tier in doc.get("tiers", []):
        route = " → ".join(tier.get("route", [])) or f"nothing ({tier.get('reason')})"
        panic = " (PANIC: all tripped)" if tier.get("panic") else ""
        lines.append(f"{tier['name']}: {route}{panic}")
    for p in doc.get("providers", []):
        share = p.get("traffic_share", 1.0)
        step = f" {share:.0%} traffic" if 0 < share < 1 else ""
        drill = " DRILL" if p.get("drill") else ""
        lines.append(
            f"• {p['name']} {p['state']}{step}{drill}: {p['error_rate']:.0%} errors "
            f"(threshold {p['threshold']:.0%}, {p['requests']} req)"
        )
    models = doc.get("models", [])  # one model of a provider, judged on its own
    lines += [f"• {m['name']} {m['state']}" for m in models if m.get("state") != "healthy"]
    events = list(doc.get("events", []))[:3]
    if events:
        lines.append("Last events:")
        lines += [f"• {format_when(e['time'])[11:19]} {e['text']}" for e in events]
    text = "\n".join(lines)
    return text if len(text) < TELEGRAM_LIMIT else text[: TELEGRAM_LIMIT - 2] + "…"
