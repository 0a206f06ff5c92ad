"""The secrets the gateway holds, and the one scrubber for text that came from outside it.

Whoever reads a secret registers it with :func:`hold`: the provider keys (``HttpProvider``), the
client keys and the admin token (``gateway/_auth.py``), the Telegram bot token and the Slack
webhook URL (``notify/_secret.protect``). Then:

* :func:`mask` replaces every held secret with ``***`` (log lines of the HTTP libraries under
  the alert senders, a relayed answer that quotes a key);
* :func:`scrub` does that and also masks what looks like a credential whoever it belongs to: the
  value of an ``Authorization``, ``Proxy-Authorization``, ``x-api-key``, ``x-goog-api-key`` or
  ``api-key`` header or field, a ``Bearer`` token, ``sk-`` and ``AIza`` keys, a ``key=`` query
  parameter. It runs on every message a provider wrote (its errors, an error body quoted in
  them) once, at the provider edge, before a client, a log line, a span or an alert sees it.

A secret shorter than :data:`MIN_SECRET` is no secret (a local server's key "ollama"), and
masking it would mangle ordinary text: it is not held.
"""

from __future__ import annotations

import re
import threading

__all__ = ["MASK", "MIN_SECRET", "as_secret", "hold", "mask", "scrub"]

MASK = "***"
MIN_SECRET = 12

# A header or JSON field named for a credential, then its value (a scheme word kept).
_NAMED = re.compile(
    r"(?i)((?:proxy-)?authorization|x-(?:goog-)?api-key|\bapi[-_]?key)"
    r"([\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token)\s+)?[^\s\"',;&}\]]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_KEYLIKE = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,})")
_KEY_PARAM = re.compile(r"(?i)([?&]key=)[^&\s\"'#]+")


class _Held:
    """The registry: a sorted tuple (longest first, so a secret containing another is masked
    whole), replaced under a lock and read without one."""

    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secrets: tuple[str | None, ...], minimum: int) -> None:
        fresh = {s for s in secrets if s and len(s) >= minimum} - set(self.secrets)
        if fresh:
            with self._lock:
                merged = set(self.secrets) | fresh
                self.secrets = tuple(sorted(merged, key=len, reverse=True))


_HELD = _Held()


def as_secret(value: str | None) -> str | None:
    """``value`` when it is long enough to be masked as a secret, else None."""
    return value if value and len(value) >= MIN_SECRET else None


def hold(*secrets: str | None, minimum: int = MIN_SECRET) -> None:
    """Register ``secrets`` (None and short ones ignored); idempotent."""
    _HELD.add(secrets, minimum)


def mask(text: str) -> str:
    """``text`` with every held secret replaced by ``***``."""
    for secret in _HELD.secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub(text: str) -> str:
    """``text`` (from outside: a provider's message) with every held secret and every
    credential-shaped value replaced by ``***``."""
    text = mask(text)
    text = _NAMED.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{MASK}", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    text = _KEYLIKE.sub(MASK, text)
    return _KEY_PARAM.sub(rf"\g<1>{MASK}", text)
