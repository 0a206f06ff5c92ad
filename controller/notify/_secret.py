"""Secrets (bot token, webhook URL) that never print, and a log filter that scrubs them.

A bot token travels inside every Bot API URL (``.../bot<token>/sendMessage``) and a Slack
webhook URL *is* the credential, so the HTTP libraries underneath our senders (httpx via
python-telegram-bot, urllib3 via requests) would write them into DEBUG/INFO log lines. Two
defences, both installed by :func:`protect`:

- those libraries' loggers are raised to WARNING unless the application configured them;
- a redacting filter on the loggers that emit request lines replaces every held secret with
  ``***`` in the message and in formatted tracebacks, whatever the level.

The secrets are held in the gateway's one registry (:mod:`controller._redact`), with the
provider keys and the client keys: what a provider quotes back is scrubbed of them too.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from controller._redact import MASK, hold, mask

# Loggers whose records may carry a URL: the filter must sit on the emitting logger itself,
# because a logger's filters are not consulted for records propagated from its children.
_EMITTING_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram",
    "telegram.Bot",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.util.retry",
)
# Parents quietened to WARNING (children inherit) unless someone already set a level.
_QUIET_LOGGERS = ("httpx", "httpcore", "telegram", "urllib3")


class Secret:
    """A string that prints as ``***``. Call :meth:`reveal` only where it goes on the wire."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class _Redactor(logging.Filter):
    """Rewrites a record whose text contains a held secret; never drops a record."""

    def add(self, *secrets: str) -> None:
        # Short fragments would mask innocent text; real tokens and paths are long.
        hold(*secrets, minimum=8)

    def redact(self, text: str) -> str:
        return mask(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


_REDACTOR = _Redactor()


def protect(secret: Secret) -> None:
    """Register ``secret`` (and, for a URL, its path) with the log redactor; idempotent."""
    value = secret.reveal()
    parts = urlsplit(value)
    _REDACTOR.add(value, parts.path if parts.scheme and parts.path else "")
    for name in _EMITTING_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def redact(text: str) -> str:
    """``text`` with every protected secret replaced by ``***`` (for results and errors)."""
    return _REDACTOR.redact(text)
