"""Drills: a simulated outage of one provider, to rehearse the alert path end to end.

:class:`Drillable` wraps a provider; while a drill is on, every attempt fails at once with
``Overloaded("drill: simulated outage")`` without touching the network. The failures flow
through the router like real ones, so the tripwire trips, traffic fails over, the alert goes
out and, once the drill ends, probes succeed and traffic fails back. :func:`start_drill` is what
the admin API's ``POST /admin/drill`` (and ``failover drill``) runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from controller._clock import Clock
from controller._errors import Overloaded
from controller.model import Request, Response, StreamChunk, Untranslatable
from controller.providers.base import CountsTokens, Provider, Timeouts

log = logging.getLogger(__name__)

#: The longest drill :func:`start_drill` starts; a longer request is cut to it.
MAX_SECONDS = 3600.0


class Drillable:
    """A provider that can be put into a drill. Implements :class:`Provider` and
    :class:`CountsTokens` (a drilled provider cannot count either)."""

    def __init__(self, inner: Provider, *, clock: Clock) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.wire_format = inner.wire_format
        self.server_address = inner.server_address
        self.server_port = inner.server_port
        self.takes_prefill = bool(getattr(inner, "takes_prefill", False))
        self._clock = clock
        self._until = 0.0

    def start_drill(self, seconds: float) -> float:
        """Begin (or extend) a drill; returns its end on the monotonic clock."""
        self._until = self._clock.monotonic() + max(0.0, seconds)
        return self._until

    def stop_drill(self) -> None:
        self._until = 0.0

    @property
    def drilling(self) -> bool:
        return self._clock.monotonic() < self._until

    def _fail(self, model: str) -> Overloaded:
        return Overloaded("drill: simulated outage", provider=self.name, model=model, status=503)

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return self.inner.unsupported(request)

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
        if self.drilling:
            raise self._fail(model)
        return await self.inner.complete(request, model, timeouts)

    @property
    def counts_tokens(self) -> bool:
        inner: object = self.inner
        return isinstance(inner, CountsTokens) and inner.counts_tokens

    async def count_tokens(self, request: Request, model: str, timeouts: Timeouts) -> int | None:
        inner: object = self.inner
        if not isinstance(inner, CountsTokens) or not inner.counts_tokens:
            return None  # cannot count, drill or not
        if self.drilling:
            raise self._fail(model)
        return await inner.count_tokens(request, model, timeouts)

    def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]:
        """The provider's own stream (no layer of ours on every chunk), or, in a drill, one
        that fails when it is first read, as the provider's would."""
        if self.drilling:
            return self._failing(model)
        return self.inner.stream(request, model, timeouts)

    async def _failing(self, model: str) -> AsyncIterator[StreamChunk]:
        none: tuple[StreamChunk, ...] = ()  # an async generator: raises when read, not when made
        for chunk in none:
            yield chunk
        raise self._fail(model)

    async def close(self) -> None:
        await self.inner.close()


def start_drill(
    providers: Mapping[str, Drillable], provider: str, seconds: float
) -> dict[str, Any]:
    """Put ``provider`` into a drill for ``seconds`` (held within 0..:data:`MAX_SECONDS`) and
    say so; returns the admin API's answer. Raises KeyError for an unknown provider."""
    target = providers[provider]
    seconds = max(0.0, min(seconds, MAX_SECONDS))
    target.start_drill(seconds)
    log.warning("drill: simulating an outage of %s for %.0f s", provider, seconds)
    return {"provider": provider, "seconds": seconds, "drill": True}
