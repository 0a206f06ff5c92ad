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
reset time holds ``hold_seconds``; a reset further away than :data:`MAX_RESET` (an hour) is
taken as an hour, and one that is not finite as none. ``below`` 0 reads the headers (the
gauges) and never shifts.

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
# Each vendor's (limit, remaining) header pairs: what decides whether a target is low, read on
# every answer (the rest of the headers is read only when it is low, or a reader collects).
_OPENAI_PAIRS = tuple((f"{_OPENAI}limit-{k}", f"{_OPENAI}remaining-{k}") for k in KINDS[:2])
_ANTHROPIC_PAIRS = tuple(
    (f"{_ANTHROPIC}{k.replace('_', '-')}-limit", f"{_ANTHROPIC}{k.replace('_', '-')}-remaining")
    for k in KINDS
)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
# The longest a reset is believed (seconds): a provider saying its window resets in a year,
# or never (``inf``), would otherwise keep a target away until a restart, since a target moved
# behind the others gets no answer that could say there is room again.
MAX_RESET = 3600.0


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


class _Kept:
    """The latest reading of one kind for one target, as the header said it: the reset is
    parsed only when it matters (the target is low, or a reader collects the gauges)."""

    __slots__ = ("limit", "mono", "remaining", "reset", "rfc3339", "wall")

    def __init__(self) -> None:
        self.limit = self.remaining = -1.0
        self.reset: str | None = None
        self.rfc3339 = False  # Anthropic's reset is a time, OpenAI's a duration
        self.mono = self.wall = 0.0  # when it was read

    @property
    def share(self) -> float:
        return Reading("", self.limit, self.remaining, None).share

    def reset_in(self) -> float | None:
        """Seconds from the reading until the window resets (None: not said, or unreadable)."""
        if self.reset is None:
            return None
        found = _rfc3339_in(self.reset, self.wall) if self.rfc3339 else parse_duration(self.reset)
        return None if found is None else min(found, MAX_RESET)

    def reading(self, kind: str) -> Reading:
        return Reading(kind, self.limit, self.remaining, self.reset_in())


def parse_duration(text: str) -> float | None:
    """OpenAI's reset duration (``6m0s``, ``1s``, ``20ms``, ``1h2m3.5s``; a bare number is
    seconds) in seconds; None when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    at, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        at = match.end()
    return total if at == len(text) and math.isfinite(total) else None


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


def _fields() -> dict[str, tuple[str, int, bool]]:
    """Header name (lower case) -> (kind, 0 limit / 1 remaining / 2 reset, Anthropic's)."""
    table: dict[str, tuple[str, int, bool]] = {}
    for index, field in enumerate(("limit", "remaining", "reset")):
        for kind in ("requests", "tokens"):
            table[f"{_OPENAI}{field}-{kind}"] = (kind, index, False)
        for kind in KINDS:
            table[f"{_ANTHROPIC}{kind.replace('_', '-')}-{field}"] = (kind, index, True)
    return table


_FIELDS = _fields()


def _read(headers: Mapping[str, str], into: dict[str, _Kept], mono: float, wall: float) -> bool:
    """The limits ``headers`` state, written into ``into`` (by kind); whether there were any.
    One pass over the headers; a kind missing its limit or remaining count is left as it was."""
    seen: dict[str, list[str | None]] = {}
    for name, value in headers.items():
        hit = _FIELDS.get(name) or _FIELDS.get(name.lower())
        if hit is not None:
            kind, index, _ = hit
            seen.setdefault(kind, [None, None, None, None])[index] = value
            if index == 0:
                seen[kind][3] = "a" if hit[2] else ""
    found = False
    for kind, (limit_text, left_text, reset, vendor) in seen.items():
        limit, left = _number(limit_text), _number(left_text)
        if limit is None or left is None:
            continue
        kept = into.get(kind)
        if kept is None:
            kept = into[kind] = _Kept()
        kept.limit, kept.remaining, kept.reset = limit, left, reset
        kept.rfc3339, kept.mono, kept.wall = bool(vendor), mono, wall
        found = True
    return found


def readings(headers: Mapping[str, str], wall: float) -> list[Reading]:
    """The limits ``headers`` state, in either vendor's format (``wall``: now, epoch seconds,
    for Anthropic's reset times). A kind missing its limit or remaining count is left out."""
    kept: dict[str, _Kept] = {}
    _read(headers, kept, 0.0, wall)
    return [k.reading(kind) for kind, k in kept.items()]


class Headroom:
    """The latest rate-limit readings per target, and which targets are low on headroom now.

    ``low`` is empty while every target has room (the router's check is then one truth test).
    """

    def __init__(self, clock: Clock, *, below: float = 0.0, hold_seconds: float = 60.0) -> None:
        self._clock = clock
        self.below = below
        self.hold_seconds = hold_seconds
        # Per target: the headers of its latest answer that stated limits, when they came
        # (monotonic, wall). Kept as they came: read only when it matters.
        self._latest: dict[tuple[str, str], tuple[Mapping[str, str], float, float]] = {}
        # Targets low on headroom -> when the soonest of their low windows resets (monotonic).
        self.low: dict[tuple[str, str], float] = {}

    def hook(self, provider: str) -> Callable[[str, Mapping[str, str]], None]:
        """What ``HttpProvider.on_headers`` of ``provider`` calls with each answer's headers."""

        def observe(model: str, headers: Mapping[str, str]) -> None:
            self.observe(provider, model, headers)

        return observe

    def observe(self, provider: str, model: str, headers: Mapping[str, str]) -> None:
        if _OPENAI_PAIRS[0][1] in headers or _OPENAI_PAIRS[1][1] in headers:
            pairs = _OPENAI_PAIRS
        elif any(left in headers for _, left in _ANTHROPIC_PAIRS):
            pairs = _ANTHROPIC_PAIRS
        else:
            return  # the usual answer of a server that sends none: nothing to do
        target, now = (provider, model), self._clock.monotonic()
        self._latest[target] = (headers, now, self._clock.wall())
        if self.below > 0:
            self._judge(target, headers, pairs, now)

    def _judge(
        self,
        target: tuple[str, str],
        headers: Mapping[str, str],
        pairs: tuple[tuple[str, str], ...],
        now: float,
    ) -> None:
        below = self.below
        for limit_name, left_name in pairs:
            limit, left = _number(headers.get(limit_name)), _number(headers.get(left_name))
            if limit and left is not None and left < below * limit:
                break
        else:  # room in every window (the usual answer)
            if self.low:
                self.low.pop(target, None)
            return
        kept: dict[str, _Kept] = {}
        _read(headers, kept, now, self._clock.wall())
        until: list[float] = []
        for k in kept.values():
            if k.share >= below:
                continue
            reset = k.reset_in()
            resets_at = now + self.hold_seconds if reset is None else now + reset
            if resets_at > now:
                until.append(resets_at)
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
        """The latest reading of each kind per target (status, gauges; read from the headers
        now: at collection, not on the request path)."""
        found: dict[tuple[str, str], dict[str, Reading]] = {}
        for target, (headers, mono, wall) in list(self._latest.items()):
            kept: dict[str, _Kept] = {}
            _read(headers, kept, mono, wall)
            found[target] = {kind: k.reading(kind) for kind, k in kept.items()}
        return found

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
            # Read only (an exporter's thread may collect): is_low also forgets a reset window.
            now = self._clock.monotonic()
            for provider, model in list(self._latest):
                until = self.low.get((provider, model))
                value = 1 if until is not None and now < until else 0
                yield Observation(value, {names.ATTR_PROVIDER: provider, names.ATTR_MODEL: model})

        for name, callback, description in (
            (names.METRIC_RATELIMIT_REMAINING, remaining, "Rate limit left, as the provider said"),
            (names.METRIC_RATELIMIT_LIMIT, limit, "Rate limit of the window, as it said"),
            (names.METRIC_RATELIMIT_LOW, low, "1 while new requests go to the next target"),
        ):
            meter.create_observable_gauge(
                name, callbacks=[callback], unit=METRIC_UNITS[name], description=description
            )
