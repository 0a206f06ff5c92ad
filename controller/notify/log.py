"""The log sender: every alert as one ``key=value`` line, at a level matching its severity.

It is the channel that always works, so an operator grepping the controller's log sees the same
facts as the phone. A storm summary is logged member by member, one line each.
"""

from __future__ import annotations

import logging

from controller.notify.alert import Alert, Severity
from controller.notify.base import SendResult
from controller.notify.messages import LinkTemplates, render_log

_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING}


class LogSender:
    """Writes alerts to ``logger`` (default ``controller.alerts``)."""

    channel = "log"
    name = "log"

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        links: LinkTemplates | None = None,
    ) -> None:
        self._logger = logger or logging.getLogger("controller.alerts")
        self._links = links

    async def send(self, alert: Alert) -> SendResult:
        for item in alert.alerts:
            level = _LEVELS.get(item.severity, logging.ERROR)
            self._logger.log(level, "%s", render_log(item, links=self._links))
        return SendResult.sent(self.channel)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LogSender(logger={self._logger.name!r})"
