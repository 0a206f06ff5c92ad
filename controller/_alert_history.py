"""The latest alerts as the status page and the demo list them, newest first, with their delivery.

An alert is listed when it is handed to the dispatcher, unless the dispatcher deduplicated it (a
repeat within the cooldown was not sent; the earlier one was and is listed). One the dispatcher
dropped at intake (queue full, shutting down) is listed with ``"sent": false`` and the reason in
its text: that is when the operator needs the page. A queued one stays ``"sent": null`` until a
channel takes it; then :meth:`AlertHistory.on_outcome`, one of the dispatcher's outcome hooks,
marks it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from controller.notify.alert import Alert
from controller.notify.dispatcher import DROPPED, FAILED, SENT, Delivery, Submitted

#: How many alerts (and routing events) the status document keeps.
HISTORY = 50
# Why the dispatcher did not queue an alert, as the status page's alert list says it.
_NOT_SENT = {Submitted.QUEUE_FULL: "alert queue full", Submitted.CLOSING: "shutting down"}


class AlertHistory:
    """A bounded, newest-first list of alert entries (``entries``: the status document's
    ``alerts``), each marked as the channels take, fail or drop its message.

    ``now`` stamps deliveries: the controller's clock, like the transitions the alerts report.
    """

    def __init__(self, *, now: Callable[[], float], size: int = HISTORY) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        # The alerts behind the entries, to mark them as channels take them.
        self._listed: collections.deque[tuple[Alert, dict[str, Any]]] = collections.deque(
            maxlen=size
        )
        self._now = now

    def add(self, alert: Alert, submitted: Submitted) -> None:
        """List ``alert`` as the dispatcher took it (``submitted``: what ``submit`` said)."""
        if submitted is Submitted.DEDUPLICATED:
            return
        entry: dict[str, Any] = {
            "time": alert.at,
            "severity": alert.severity.value,
            "event": alert.event,
            "text": _text(alert, submitted),
            "sent": None if submitted else False,
            "delivered_at": None,
            "delivered": {},  # channel -> when it first took the alert
            "not_sent_to": [],
        }
        self.entries.appendleft(entry)
        self._listed.appendleft((alert, entry))

    def on_outcome(self, outcome: Delivery) -> None:
        """Mark the listed alerts a message stood for: ``delivered_at`` when a channel first
        took it and ``delivered`` when each did, and each channel that failed or dropped it in
        ``not_sent_to``."""
        if outcome.result not in (SENT, FAILED, DROPPED):
            return
        for alert, entry in self._listed:
            if any(alert is member for member in outcome.message.alerts):
                self._mark(entry, outcome)

    def _mark(self, entry: dict[str, Any], outcome: Delivery) -> None:
        if outcome.result != SENT:
            if outcome.channel not in entry["not_sent_to"]:
                entry["not_sent_to"].append(outcome.channel)
        elif outcome.channel not in entry["delivered"]:
            now = self._now()
            entry["delivered"][outcome.channel] = now
            if entry["delivered_at"] is None:
                entry.update(sent=True, delivered_at=now)


def _text(alert: Alert, submitted: Submitted) -> str:
    """One line: its subject and event, its detail, and why it was not sent if it was not."""
    subject = alert.provider or alert.tier or ""
    text = " ".join(p for p in (subject, alert.event.value.replace("_", " ")) if p)
    if alert.detail:
        text += f": {alert.detail}"
    if not submitted:
        text += f" (not sent: {_NOT_SENT[submitted]})"
    return text
