"""Rate-limit headroom: what each target's rate-limit headers say is left of its window.

Providers say on every answer (a 429 included) how much of their rate limit is left:

=============  ====================================================================
OpenAI         ``x-ratelimit-limit-requests`` / ``-tokens``,
(and most      ``x-ratelimit-remaining-requests`` / ``-tokens``,
compatible)    ``x-ratelimit-reset-requests`` / ``-tokens``: a duration (``1s``, ``6m0s``,
               ``20ms``, ``1h2m3.5s``) until the window is full again
Anthropic      ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-limit``,
               ``-remaining``, ``-reset``: an RFC 3339 time (``2025-08-21T12:40:59Z``)
=============  ====================================================================

:class:`Headroom` keeps the latest reading of each kind (``requests``, ``tokens``,
``input_tokens``, ``output_tokens``) per target (provider, model), with its reset time on the
injected clock's monotonic scale (an RFC 3339 time is placed there through ``clock.wall()``).
A target is *low* while, for some kind, ``remaining / limit`` is below ``below`` and its window
has not reset: the router then sends new requests to the next target of the plan first (attempt
reason ``headroom``), before the provider starts answering 429, and takes the target back the
moment its window resets (or a newer answer says there is room again). A low reading without a
reset time holds ``hold_seconds``. ``below`` 0 reads the headers (the gauges) and never shifts.

The provider tells :meth:`Headroom.observe` the headers of each answer as it arrives
(``HttpProvider.on_headers``); a header that does not parse is ignored, never an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller._clock import Clock
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

__all__ = ["Headroom", "Reading", "parse_duration", "readings"]

KINDS = ("requests", "tokens", "input_tokens", "output_tokens")
_OPENAI = "x-ratelimit-"
_ANTHROPIC = "anthropic-ratelimit-"
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# One of these is in every answer that states a limit (the lookups are case-insensitive).
_SIGNS = (
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")


@dataclass(frozen=True, slots=True)
class Reading:
    """One kind of limit as an answer stated it. ``reset``: seconds until the window is full
    again (None: not said), as of the answer."""

    kind: str
    limit: float
    remaining: float
    reset: float | None

    @property
    def share(self) -> float:
        """The share of the limit left (1 when the limit is unknown or 0)."""
        return min(1.0, max(0.0, self.remaining / self.limit)) if self.limit > 0 else 1.0


@dataclass(frozen=True, slots=True)
class _Kept:
    reading: Reading
    resets_at: float | None  # monotonic


def parse_duration(text: str) -> float | None:
    """OpenAI's reset duration (``6m0s``, ``1s``, ``20ms``, ``1h2m3.5s``; a bare number is
    seconds) in seconds; None when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    at, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        at = match.end()
    return total if at == len(text) else None


def _rfc3339_in(text: str, wall: float) -> float | None:
    """Seconds from ``wall`` (epoch) until the RFC 3339 time ``text``; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - wall)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def readings(headers: Mapping[str, str], wall: float) -> list[Reading]:
    """The limits ``headers`` state, in either vendor's format (``wall``: now, epoch seconds,
    for Anthropic's reset times). A kind missing its limit or remaining count is left out."""
    found: list[Reading] = []
    for kind in ("requests", "tokens"):
        limit = _number(headers.get(f"{_OPENAI}limit-{kind}"))
        left = _number(headers.get(f"{_OPENAI}remaining-{kind}"))
        if limit is not None and left is not None:
            reset = headers.get(f"{_OPENAI}reset-{kind}")
            found.append(Reading(kind, limit, left, parse_duration(reset) if reset else None))
    for kind in KINDS:
        stem = f"{_ANTHROPIC}{kind.replace('_', '-')}-"
        limit = _number(headers.get(stem + "limit"))
        left = _number(headers.get(stem + "remaining"))
        if limit is not None and left is not None:
            reset = headers.get(stem + "reset")
            found.append(Reading(kind, limit, left, _rfc3339_in(reset, wall) if reset else None))
    return found


class Headroom:
    """The latest rate-limit readings per target, and which targets are low on headroom now.

    ``low`` is empty while every target has room (the router's check is then one truth test).
    """

    def __init__(self, clock: Clock, *, below: float = 0.0, hold_seconds: float = 60.0) -> None:
        self._clock = clock
        self.below = below
        self.hold_seconds = hold_seconds
        self._kept: dict[tuple[str, str], dict[str, _Kept]] = {}
        # Targets low on headroom -> when the soonest of their low windows resets (monotonic).
        self.low: dict[tuple[str, str], float] = {}

    def hook(self, provider: str) -> Callable[[str, Mapping[str, str]], None]:
        """What ``HttpProvider.on_headers`` of ``provider`` calls with each answer's headers."""

        def observe(model: str, headers: Mapping[str, str]) -> None:
            self.observe(provider, model, headers)

        return observe

    def observe(self, provider: str, model: str, headers: Mapping[str, str]) -> None:
        if not any(sign in headers for sign in _SIGNS):
            return  # the usual answer of a server that sends none: nothing to do
        found = readings(headers, self._clock.wall())
        if not found:
            return
        now = self._clock.monotonic()
        kept = self._kept.setdefault((provider, model), {})
        for reading in found:
            at = None if reading.reset is None else now + reading.reset
            kept[reading.kind] = _Kept(reading, at)
        self._judge((provider, model), kept, now)

    def _judge(self, target: tuple[str, str], kept: Mapping[str, _Kept], now: float) -> None:
        if self.below <= 0:
            return
        until = [
            k.resets_at if k.resets_at is not None else now + self.hold_seconds
            for k in kept.values()
            if k.reading.share < self.below and (k.resets_at is None or k.resets_at > now)
        ]
        if until:
            self.low[target] = max(until)  # room again once every low window has reset
        else:
            self.low.pop(target, None)

    def is_low(self, provider: str, model: str) -> bool:
        """Whether new requests should go to another target first; a window that has reset
        (on the injected clock) ends it."""
        until = self.low.get((provider, model))
        if until is None:
            return False
        if self._clock.monotonic() < until:
            return True
        del self.low[(provider, model)]
        return False

    def snapshot(self) -> dict[tuple[str, str], dict[str, Reading]]:
        """The latest reading of each kind per target (status, gauges)."""
        return {t: {k: v.reading for k, v in kinds.items()} for t, kinds in self._kept.items()}

    def register(self, meter: Meter) -> None:
        """``failover.ratelimit.remaining`` / ``.limit`` (provider, model, kind) and
        ``failover.ratelimit.low`` (provider, model: 1 while shifted away)."""

        def rows(value: Callable[[Reading], float]) -> Iterable[Observation]:
            for (provider, model), kinds in self.snapshot().items():
                for kind, reading in kinds.items():
                    attrs = {
                        names.ATTR_PROVIDER: provider,
                        names.ATTR_MODEL: model,
                        names.ATTR_KIND: kind,
                    }
                    yield Observation(value(reading), attrs)

        def remaining(_: CallbackOptions) -> Iterable[Observation]:
            return rows(lambda r: r.remaining)

        def limit(_: CallbackOptions) -> Iterable[Observation]:
            return rows(lambda r: r.limit)

        def low(_: CallbackOptions) -> Iterable[Observation]:
            for provider, model in list(self._kept):
                value = 1 if self.is_low(provider, model) else 0
                yield Observation(value, {names.ATTR_PROVIDER: provider, names.ATTR_MODEL: model})

        for name, callback, description in (
            (names.METRIC_RATELIMIT_REMAINING, remaining, "Rate limit left, as the provider said"),
            (names.METRIC_RATELIMIT_LIMIT, limit, "Rate limit of the window, as it said"),
            (names.METRIC_RATELIMIT_LOW, low, "1 while new requests go to the next target"),
        ):
            meter.create_observable_gauge(
                name, callbacks=[callback], unit=METRIC_UNITS[name], description=description
            )
