"""What a button in a chat stands for: actions, the short tokens buttons carry, and the buttons an
alert gets.

A Telegram button carries at most 64 bytes of ``callback_data``, too few for "pin this provider"
with a long provider name, and a button must not be forgeable into an action nobody offered. So
each button carries a random token (:class:`ActionBook`), and the book maps it to the
:class:`Action` offered, the step (ask for confirmation, do it, cancel) and the chat it was
offered in; a token expires (on the injected clock) and the book is bounded, oldest out first.

Alert buttons (:meth:`ActionBook.for_alert`) offer the likely next step: "Pin <backup>" and
"Ack 1 h" on a trip, "Clear kill switch" once a switch is on. Pressing "Pin" asks for
confirmation like ``/pin`` does; "Ack" acts at once (it only silences repeats).
"""

from __future__ import annotations

import enum
import secrets
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from controller._clock import Clock
from controller.notify.alert import Alert, AlertEvent

__all__ = ["Action", "ActionBook", "Button", "Keyboard", "Kind", "Pending", "Step"]

ALERT_BUTTON_SECONDS = 24 * 3600.0  # an alert's buttons work this long after it was sent
ACK_SECONDS = 3600.0
_SIZE = 512  # tokens kept; the oldest go first


class Kind(enum.StrEnum):
    PIN = "pin"
    DISABLE = "disable"
    CLEAR = "clear"
    ACK = "ack"
    DRILL = "drill"


class Step(enum.StrEnum):
    ASK = "ask"  # show the confirmation (an alert's "Pin" button)
    DO = "do"  # carry it out
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One operator action. ``alerts``: what an ack silences; ``force``: confirmed despite the
    warning that it leaves a tier with nothing to route to."""

    kind: Kind
    providers: tuple[str, ...] = ()
    seconds: float = 0.0
    alerts: tuple[Alert, ...] = ()
    force: bool = False

    def describe(self) -> str:
        names = " ".join(self.providers)
        if self.kind is Kind.ACK:
            return f"ack {_duration(self.seconds)}"
        if self.kind is Kind.DRILL:
            return f"drill {names} {self.seconds:g}s"
        return f"{self.kind.value} {names}".strip()


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    data: str  # callback_data: a token, at most 64 bytes


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """What a token stands for. ``chat`` None: any admin chat may press it (an alert's)."""

    action: Action
    step: Step
    chat: str | None
    expires: float
    group: str  # a confirmation's buttons share one: pressing one retires them all


class ActionBook:
    """Tokens handed out on buttons, bounded and expiring. Also remembers the latest alert sent
    to an admin chat that an ack can silence: what ``/ack`` without a button acknowledges."""

    def __init__(self, *, clock: Clock, admin_chats: Collection[str], size: int = _SIZE) -> None:
        self._clock = clock
        self._admin = frozenset(admin_chats)
        self._size = size
        self._tokens: OrderedDict[str, Pending] = OrderedDict()
        self.latest: Alert | None = None

    def offer(
        self, action: Action, step: Step, *, chat: str | None, ttl: float, group: str = ""
    ) -> str:
        token = secrets.token_urlsafe(9)  # 12 characters
        expires = self._clock.monotonic() + ttl
        self._tokens[token] = Pending(
            action=action, step=step, chat=chat, expires=expires, group=group or token
        )
        while len(self._tokens) > self._size:
            self._tokens.popitem(last=False)
        return token

    def confirmation(self, action: Action, *, chat: str, ttl: float, yes: str) -> Keyboard:
        """[yes] [Cancel] for ``action`` in ``chat``: one press retires both."""
        do = self.offer(action, Step.DO, chat=chat, ttl=ttl)
        cancel = self.offer(action, Step.CANCEL, chat=chat, ttl=ttl, group=self._tokens[do].group)
        return ((Button(yes, do), Button("Cancel", cancel)),)

    def take(self, token: str, *, chat: str) -> Pending | None:
        """What ``token`` stands for, if it is live and was offered in ``chat`` (or to every
        admin chat). A confirmation's tokens are used once."""
        pending = self._tokens.get(token)
        if pending is None or pending.expires <= self._clock.monotonic():
            self._tokens.pop(token, None)
            return None
        if pending.chat is not None and pending.chat != chat:
            return None
        if pending.chat is not None:  # a confirmation: retire its group
            for key in [k for k, p in self._tokens.items() if p.group == pending.group]:
                del self._tokens[key]
        return pending

    # -- alert buttons ------------------------------------------------------------------------
    def for_alert(self, alert: Alert, chat_id: str) -> Keyboard:
        """The buttons ``alert`` carries in ``chat_id``: none outside the admin chats."""
        if alert.event in (AlertEvent.OPERATOR_COMMAND, AlertEvent.TEST):
            return ()
        if chat_id not in self._admin:
            return ()
        actions = likely_actions(alert)
        if any(action.kind is Kind.ACK for _, action, _ in actions):
            self.latest = alert  # what /ack silences: news that repeats, not a switch change
        row = []
        for label, action, step in actions:
            token = self.offer(action, step, chat=None, ttl=ALERT_BUTTON_SECONDS)
            row.append(Button(label, token))
        return (tuple(row),) if row else ()


def likely_actions(alert: Alert) -> list[tuple[str, Action, Step]]:
    """(label, action, step) of the buttons an alert offers."""
    out: list[tuple[str, Action, Step]] = []
    lead = alert.alerts[0] if alert.members else alert
    tripped = (
        AlertEvent.PROVIDER_TRIPPED,
        AlertEvent.AUTH_FAILURE,
        AlertEvent.WOULD_TRIP,
        AlertEvent.LATENCY_DEGRADED,
    )
    if not alert.members and lead.event in tripped and lead.provider:
        backup = _backup(lead)
        if backup is not None:
            out.append((f"Pin {backup}", Action(kind=Kind.PIN, providers=(backup,)), Step.ASK))
    if alert.kill_switch is not None or alert.event is AlertEvent.KILL_SWITCH_ENGAGED:
        out.append(("Clear kill switch", Action(kind=Kind.CLEAR), Step.ASK))
    quiet = (
        AlertEvent.KILL_SWITCH_ENGAGED,
        AlertEvent.KILL_SWITCH_RELEASED,
        AlertEvent.PROVIDER_RECOVERED,
    )
    if alert.event not in quiet:  # news that repeats: worth silencing for a while
        ack = Action(kind=Kind.ACK, seconds=ACK_SECONDS, alerts=alert.alerts)
        out.append(("Ack 1 h", ack, Step.DO))
    return out


def _backup(alert: Alert) -> str | None:
    """The provider the alert's tier now sends traffic to first (not the one in trouble)."""
    tiers = [t for t in (alert.tier or "").split(", ") if t] or list(alert.routes)
    for tier in tiers:
        for name in alert.routes.get(tier, ()):
            if name != alert.provider:
                return name
    return None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
