"""A started stream: what :meth:`Router.stream <controller.routing.router.Router.stream>`
returns once a provider has produced the first chunk. Internal to :mod:`controller.routing`
(exported from ``router`` as before)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from controller._errors import Outpaced, ProviderError, StreamInterrupted
from controller.model import Request, StreamChunk, Usage
from controller.routing._continue import MAX_DELIVERED, Delivered, Diverged, Overlap, unrelayed
from controller.routing._records import Route, Try

if TYPE_CHECKING:
    from controller.routing.router import Router

__all__ = ["Opened", "RoutedStream"]

log = logging.getLogger("controller.routing.router")


class Opened:
    """One attempt's stream that has produced its first chunk."""

    __slots__ = ("attempt", "first", "rest", "start", "ttfc", "wall")

    def __init__(
        self,
        attempt: Try,
        first: StreamChunk,
        rest: AsyncIterator[StreamChunk],
        start: float,
        wall: float,
        ttfc: float,
    ) -> None:
        self.attempt, self.first, self.rest = attempt, first, rest
        self.start, self.wall, self.ttfc = start, wall, ttfc


class RoutedStream:
    """A started stream. ``provider`` and ``model`` name what serves it.

    Iterate it once. A provider failure mid-stream is continued on the next target where it
    can be (:mod:`controller.routing._continue`): the chunks of a continuation carry no
    ``raw``, even on a stream that was ``relayed``, and are to be encoded in the client's
    format from there on. One that cannot be continued raises :class:`StreamInterrupted`.
    Closing it early (client gone) reports the attempt and the request as cancelled.
    ``relayed`` says the provider speaks the client's format: every chunk's ``raw`` (until a
    continuation) holds the events to forward. ``continuable`` is for the caller to clear when
    it could not encode a continuation of a relayed stream.
    """

    def __init__(self, router: Router, route: Route, request: Request, opened: Opened) -> None:
        attempt, first = opened.attempt, opened.first
        self.provider = attempt.provider.name
        self.model = first.model or attempt.target.model
        self.request_id = route.request_id
        # In the client's own format: each chunk's ``raw`` is what to forward, as it came, and
        # ``headers`` the provider's answer headers that go with it.
        self.relayed = first.raw is not None
        self.headers = first.headers
        self.continuable = True
        self.continued = 0  # continuations made
        self._router = router
        self._route = route
        self._request = request
        self._opened = opened
        self._first: StreamChunk | None = first
        self._delivered = Delivered()
        self._cut: ProviderError | None = None  # the first failure, when it was continued
        self._overlap: Overlap | None = None
        self.degraded = route.degraded  # the rung of the tier's ladder serving it, if any
        self.scope = ""  # whose answer it is, for the answer cache (Router.stream sets it)
        # Chunks kept for the answer cache (a cache-enabled tier's answer, not a degraded one),
        # while their bytes (``raw`` included) are within what the cache keeps at all.
        self._kept: list[StreamChunk] | None = None
        self._room = 0
        if router.cache is not None and route.tier.degrade.cache and not route.degraded:
            self._kept, self._room = [], router.cache.max_bytes
        self._done = False  # the request is reported
        self._reported = False  # the current attempt is reported
        self._usage: Usage | None = None

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamChunk]:
        """The current attempt's chunks, as they go on (a continuation's trimmed to what is
        new), each noted as delivered. One generator between the provider's and the client's:
        every layer more is paid on every chunk."""
        try:
            while True:
                try:
                    if self._first is not None:
                        first, self._first = self._first, None
                        seen = self._seen(first)
                        if seen is not None:
                            yield seen
                    async for chunk in self._opened.rest:
                        seen = self._seen(chunk)
                        if seen is not None:
                            yield seen
                    break
                except ProviderError as exc:
                    if not await self._continue(exc):
                        raise
        except ProviderError as exc:
            cause = self._cut or exc  # the client hears of the cut, not of a failed rescue
            self._report(error=exc)
            self._end(error=cause)
            raise StreamInterrupted(
                cause, provider=cause.provider or self.provider, model=cause.model or self.model
            ) from exc
        except BaseException:
            await self.aclose()
            raise
        self._end()

    def _seen(self, chunk: StreamChunk) -> StreamChunk | None:
        if self._overlap is not None:
            taken = self._overlap.take(unrelayed(chunk))  # raises Diverged
            if taken is None:
                return None
            chunk = taken
        text = chunk.text  # what was delivered (Delivered.saw, inline: once per chunk)
        if text:
            delivered = self._delivered
            delivered.size += len(text)
            if delivered.size <= MAX_DELIVERED:
                delivered.parts.append(text)
            elif delivered.parts:
                delivered.parts.clear()  # too long to be continued: its text let go at once
        if chunk.tool_call is not None:
            self._delivered.tools = True
        if chunk.finish_reason is not None:
            self._delivered.finished = True
        kept = self._kept
        if kept is not None:  # within the cache's bound (its events, or text, counted)
            self._room -= len(chunk.raw or chunk.text)
            if self._room >= 0:
                kept.append(chunk)
            else:
                self._kept = None  # too big for the cache: let it go now
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    async def _continue(self, error: ProviderError) -> bool:
        """Continue after ``error`` on the next target where that can be done: True once a
        continuation produced its first chunk (the stream goes on with it)."""
        delivered = self._delivered
        if isinstance(error, Diverged):  # the continuation said something else: stop there
            await self._close_rest()
            return False
        if not error.counts_as_fault:  # e.g. our own cap on a stream's length: it stands
            return False
        if not self.continuable or delivered.finished or delivered.tools:
            return False
        if delivered.size > MAX_DELIVERED:  # its text was let go: nothing to continue from
            return False
        self._report(error=error)  # the cut attempt counts against its provider
        await self._close_rest()
        self._cut = self._cut or error
        found = await self._router._continuation(
            self._route, self._request, self._opened.attempt, error, delivered.text
        )
        if found is None:
            return False
        self._opened, self._overlap = found
        self._first, self._reported, self._usage = self._opened.first, False, None
        self.provider = self._opened.attempt.provider.name
        self.continued += 1
        log.info("stream %s: %s; continued on %s", self.request_id, error.message, self.provider)
        return True

    async def discard(self) -> None:
        """Drop a stream another attempt of the same request beat to its first chunk: only this
        attempt is reported (outpaced), the request goes on with the winner."""
        if self._done:
            return
        self._done = True
        await self._close_rest()
        lost = Outpaced("another attempt of the request answered first")
        lost.provider, lost.model = self.provider, self.model
        self._report(error=lost)

    async def aclose(self) -> None:
        """Stop early (e.g. the client disconnected): the attempt and the request are reported
        as cancelled."""
        if self._done:
            return
        await self._close_rest()
        self._end(cancelled=True)

    async def _close_rest(self) -> None:
        aclose = getattr(self._opened.rest, "aclose", None)
        if aclose is not None:
            await aclose()

    def _report(self, *, error: ProviderError | None = None, cancelled: bool = False) -> None:
        """The current attempt's event (once)."""
        if self._reported:
            return
        self._reported = True
        opened = self._opened
        self._router._emit(
            self._route,
            opened.attempt,
            self._request,
            opened.start,
            opened.wall,
            error=error,
            cancelled=cancelled,
            usage=self._usage,
            response_model=self.model,
            ttfc=opened.ttfc,
        )

    def _end(self, *, error: ProviderError | None = None, cancelled: bool = False) -> None:
        if self._done:
            return
        self._done = True
        self._report(error=error, cancelled=cancelled)
        # A stream the client left is ``cancelled`` (not ``failed``), still naming who served it.
        served_by = None if error is not None else self.provider
        if served_by is not None and not cancelled and self._kept is not None:
            self._router._cache_stream(
                self._route, self._request, self._kept, self.model, self.scope
            )
        self._router._finish(self._route, served_by, error, cancelled=cancelled)
