"""Helpers every wire format shares: status → error class, Retry-After, strict JSON."""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from controller import _json
from controller._errors import (
    AuthFailed,
    BadRequest,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    MalformedEvent,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from controller.model import Untranslatable


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _seconds(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lowered.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _seconds(value: str | None) -> float | None:
    """A finite, non-negative number from a header value, or None (``inf``/``nan`` included)."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def error_for_status(
    status: int,
    message: str,
    *,
    model: str = "",
    retry_after: float | None = None,
) -> ProviderError:
    """The generic mapping of an HTTP status. Formats refine 400s (context length, filter)."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after, model=model, status=status)
    if status in (401, 402, 403):
        return AuthFailed(message, model=model, status=status)
    if status == 404:  # the model and the path come from the config, not from the caller
        return ModelNotFound(message, model=model, status=status)
    if status == 408 or status >= 500:
        return Overloaded(message, model=model, status=status)
    if 300 <= status < 400:  # redirects are not followed (they would carry keys elsewhere)
        return MalformedResponse(f"unexpected redirect: {message}", model=model, status=status)
    return BadRequest(message, model=model, status=status)


def status_for(err: ProviderError) -> int:
    """The HTTP status a server answers with for ``err`` (fake provider and gateway)."""
    if err.status:
        return err.status
    table: list[tuple[type[ProviderError], int]] = [
        (RateLimited, 429),
        (AuthFailed, 401),
        (ModelNotFound, 404),
        (ContextTooLong, 400),
        (ContentFiltered, 400),
        (BadRequest, 400),
        (ProviderTimeout, 504),
        (ConnectionFailed, 502),
        (MalformedResponse, 502),
        (Overloaded, 503),
    ]
    for cls, status in table:
        if isinstance(err, cls):
            return status
    return 500


def retry_after_headers(err: ProviderError) -> dict[str, str]:
    """``Retry-After`` in whole seconds (RFC 9110 delta-seconds), rounded up: never sooner than
    the provider asked. A fraction or an exponent (``1.5``, ``3.4e+08``) is not a valid value."""
    if isinstance(err, RateLimited) and err.retry_after is not None:
        return {"Retry-After": str(math.ceil(err.retry_after))}
    return {}


def load_json(body: bytes | str, *, what: str = "response", model: str = "") -> Any:
    """Parse JSON or raise MalformedResponse (never a bare ValueError)."""
    try:
        return _json.loads(body)
    except ValueError as exc:
        raise MalformedResponse(f"invalid JSON in {what}: {exc}", model=model) from None


def load_event(data: bytes | str, *, model: str = "") -> Any:
    """A stream event's JSON, or :class:`MalformedEvent` (the stream may skip it)."""
    try:
        return _json.loads(data)
    except ValueError as exc:
        raise MalformedEvent(f"invalid JSON in a stream event: {exc}", model=model) from None


def require(mapping: Any, key: str, kind: type, *, what: str, model: str = "") -> Any:
    """``mapping[key]`` if it is a ``kind``, else MalformedResponse naming the field."""
    if not isinstance(mapping, dict):
        raise MalformedResponse(f"{what}: expected an object", model=model)
    value = mapping.get(key)
    if not isinstance(value, kind):
        problem = f"field {key!r} missing or not {kind.__name__}"
        raise MalformedResponse(f"{what}: {problem}", model=model)
    return value


def is_json_kind(value: Any, kind: type) -> bool:
    """Whether a decoded JSON ``value`` is a ``kind`` as the real APIs judge it: a bool is never a
    number (though Python calls it an int), and a float field also takes an integer."""
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def json_or_none(body: bytes | str) -> Any:
    """Parsed JSON, or None when ``body`` is not JSON: error bodies may be HTML or plain text, and
    the caller then falls back on the status alone."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


# A client could send thousands of unknown fields: the first 32 are enough to skip providers
# by, and to name in a 400 or a span attribute (each path cut to 200 characters).
_MAX_NOTED = 32
_MAX_PATH = 200


class Notes:
    """What a request uses that translation into :class:`~controller.model.Request` cannot
    carry, by feature (the first path each was seen at). A server codec fills it while it
    decodes: such a request is still served, as it came, by a provider of its own format."""

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: dict[str, str] = {}

    def add(self, feature: str, path: str) -> None:
        if len(self._found) < _MAX_NOTED or feature in self._found:
            self._found.setdefault(feature, path[:_MAX_PATH])

    def extra(self, obj: Mapping[str, Any], known: frozenset[str], where: str, sep: str) -> None:
        """Every member of ``obj`` not in ``known`` (and not null), by its own name."""
        for key, value in obj.items():
            if key not in known and value is not None:
                self.add(key, f"{where}{sep}{key}" if where else key)

    def found(self) -> tuple[Untranslatable, ...]:
        if not self._found:
            return ()
        return tuple(Untranslatable(feature, path) for feature, path in self._found.items())
