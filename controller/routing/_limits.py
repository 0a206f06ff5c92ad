"""Each attempt's limits: its provider's configured :class:`Timeouts`, cut to what is left of
the request's deadline.

An attempt never waits past the deadline; the last target of a request (nowhere else to go)
has no bound of its own on the wait for a pooled connection, only its other limits and the
deadline. A cut set of limits is kept and reused while later requests' remaining time stays
within :data:`_CUT_SLACK` of it, so the usual first attempt builds none. Internal to
:mod:`controller.routing`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from controller.providers.base import Timeouts
from controller.routing._records import Route, Try

__all__ = ["AttemptLimits"]

_CUT_SLACK = 0.05  # seconds an attempt's limits may come out shorter than the deadline allows


class AttemptLimits:
    """The limits of one router's attempts, per provider."""

    def __init__(self, timeouts: Mapping[str, Timeouts], default: Timeouts) -> None:
        self._timeouts = dict(timeouts)
        self._default = default
        self._patient: dict[str, Timeouts] = {}  # per provider: no bound on the pool wait
        self._cut: dict[int, tuple[Timeouts, float, Timeouts]] = {}  # see bounded

    def of(self, provider: str) -> Timeouts:
        """The per-attempt limits configured for ``provider``."""
        return self._timeouts.get(provider, self._default)

    def for_attempt(self, route: Route, attempt: Try) -> Timeouts:
        """``attempt``'s limits, cut to its share of ``route``'s deadline."""
        provider = attempt.target.provider
        if route.position + 1 < len(route.queue):
            return self.bounded(self.of(provider), attempt.remaining)
        # The last target: nowhere else to go, so no bound of its own on the wait for a
        # connection (the attempt's own limits and the deadline still bound it).
        patient = self._patient.get(provider)
        if patient is None:
            patient = self._patient[provider] = replace(self.of(provider), pool=math.inf)
        return self.bounded(patient, attempt.remaining)

    def bounded(self, limits: Timeouts, remaining: float) -> Timeouts:
        """``limits.bounded(remaining)``, reusing the last one built from ``limits`` when it
        was cut to at most ``remaining`` and at most :data:`_CUT_SLACK` less: a first attempt's
        remaining time differs from request to request by microseconds (the default deadline
        and ``total`` are both 120 s, so each would build its own). Never longer than the
        deadline allows; at most 50 ms shorter."""
        kept = self._cut.get(id(limits))
        if (
            kept is not None
            and kept[0] is limits
            and remaining - _CUT_SLACK <= kept[1] <= remaining
        ):
            return kept[2]
        cut = limits.bounded(remaining)
        if cut is not limits:
            self._cut[id(limits)] = (limits, remaining, cut)
        return cut
