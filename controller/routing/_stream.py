"""A started stream: what :meth:`Router.stream <controller.routing.router.Router.stream>`
returns once a provider has produced the first chunk. Internal to :mod:`controller.routing`
(exported from ``router`` as before)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from controller._errors import Outpaced, ProviderError, StreamInterrupted
from controller.model import Request, StreamChunk, Usage
from controller.routing._records import Route, Try

if TYPE_CHECKING:
    from controller.routing.router import Router

__all__ = ["RoutedStream"]


class RoutedStream:
    """A started stream. ``provider`` and ``model`` name what serves it.

    Iterate it once. A provider failure mid-stream raises :class:`StreamInterrupted`; closing it
    early (client gone) reports the attempt and the request as cancelled. ``relayed`` says the
    provider speaks the client's format: every chunk's ``raw`` then holds the events to forward.
    """

    def __init__(
        self,
        router: Router,
        route: Route,
        attempt: Try,
        request: Request,
        first: StreamChunk,
        rest: AsyncIterator[StreamChunk],
        start: float,
        wall: float,
        ttfc: float,
    ) -> None:
        self.provider = attempt.provider.name
        self.model = first.model or attempt.target.model
        self.request_id = route.request_id
        # In the client's own format: each chunk's ``raw`` is what to forward, as it came, and
        # ``headers`` the provider's answer headers that go with it.
        self.relayed = first.raw is not None
        self.headers = first.headers
        self._router = router
        self._route = route
        self._attempt = attempt
        self._request = request
        self._first: StreamChunk | None = first
        self._rest = rest
        self._start = start
        self._wall = wall
        self._ttfc = ttfc
        self._done = False
        self._usage: Usage | None = None

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamChunk]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield self._seen(first)
            async for chunk in self._rest:
                yield self._seen(chunk)
        except ProviderError as exc:
            self._end(error=exc)
            raise StreamInterrupted(exc, provider=self.provider, model=self.model) from exc
        except BaseException:
            await self.aclose()
            raise
        self._end()

    def _seen(self, chunk: StreamChunk) -> StreamChunk:
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    async def discard(self) -> None:
        """Drop a stream another attempt of the same request beat to its first chunk: only this
        attempt is reported (outpaced), the request goes on with the winner."""
        if self._done:
            return
        self._done = True
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()
        lost = Outpaced("another attempt of the request answered first")
        lost.provider, lost.model = self.provider, self.model
        router = self._router
        router._emit(self._route, self._attempt, self._request, self._start, self._wall, error=lost)

    async def aclose(self) -> None:
        """Stop early (e.g. the client disconnected): the attempt and the request are reported
        as cancelled."""
        if self._done:
            return
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()
        self._end(cancelled=True)

    def _end(self, *, error: ProviderError | None = None, cancelled: bool = False) -> None:
        if self._done:
            return
        self._done = True
        router, route = self._router, self._route
        router._emit(
            route,
            self._attempt,
            self._request,
            self._start,
            self._wall,
            error=error,
            cancelled=cancelled,
            usage=self._usage,
            response_model=self.model,
            ttfc=self._ttfc,
        )
        # A stream the client left is ``cancelled`` (not ``failed``), still naming who served it.
        served_by = None if error is not None else self.provider
        router._finish(route, served_by, error, cancelled=cancelled)
