"""One attempt's call to its provider, and the events it and its route report.

A whole answer (:func:`complete_once`), or a stream once its first chunk came
(:func:`open_stream`, :func:`stream_once`); an attempt cut before its answer
(:func:`abandoned`); the attempt's event (:func:`emit`) and the route's at the end
(:func:`finish`). Each is a method of :class:`~controller.routing.router.Router` (its class body
takes these functions as they are: no call added between a caller and the work).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from controller._errors import MalformedResponse, ProviderError
from controller.model import Message, Request, Response, Usage
from controller.routing._race import lost_error
from controller.routing._records import Route, Try, attempt_event, route_event
from controller.routing._stream import Opened, RoutedStream

if TYPE_CHECKING:
    from controller.routing.router import Router


async def complete_once(self: Router, route: Route, request: Request, attempt: Try) -> Response:
    timeouts = self._limits.for_attempt(route, attempt)
    start, wall = self._clock.monotonic(), self._clock.wall()
    try:
        response = await attempt.provider.complete(request, attempt.target.model, timeouts)
    except ProviderError as exc:
        self.inflight.ended(attempt.waiter, responded=exc.status is not None)
        self._emit(route, attempt, request, start, wall, error=exc)
        raise
    except asyncio.CancelledError:
        self._abandoned(route, attempt, request, start, wall)
        raise
    except BaseException:  # a bug below us: the attempt must not look as if it still waits
        self.inflight.ended(attempt.waiter)
        raise
    self.inflight.answered(attempt.waiter)
    self._emit(
        route,
        attempt,
        request,
        start,
        wall,
        usage=response.usage,
        response_model=response.model,
        output=response.message if self._capture else None,
    )
    name = attempt.provider.name
    return response if response.provider == name else replace(response, provider=name)


async def stream_once(self: Router, route: Route, request: Request, attempt: Try) -> RoutedStream:
    routed = RoutedStream(self, route, request, await self._open(route, request, attempt))
    if route.mirrored and self.mirror is not None and routed._kept is None:
        # keep its chunks for the shadow: the whole stream comes back in _cache_stream
        routed._kept, routed._room = [], self.mirror.max_bytes
    return routed


async def open_stream(self: Router, route: Route, request: Request, attempt: Try) -> Opened:
    """``attempt``'s stream, once it has produced its first chunk."""
    timeouts = self._limits.for_attempt(route, attempt)
    start, wall = self._clock.monotonic(), self._clock.wall()
    chunks = attempt.provider.stream(request, attempt.target.model, timeouts)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        exc = MalformedResponse("stream ended without any chunk")
        exc.provider, exc.model = attempt.provider.name, attempt.target.model
        self.inflight.ended(attempt.waiter)
        self._emit(route, attempt, request, start, wall, error=exc)
        raise exc from None
    except ProviderError as exc:
        self.inflight.ended(attempt.waiter, responded=exc.status is not None)
        self._emit(route, attempt, request, start, wall, error=exc)
        raise
    except asyncio.CancelledError:
        self._abandoned(route, attempt, request, start, wall)
        raise
    except BaseException:  # a bug below us: the attempt must not look as if it still waits
        self.inflight.ended(attempt.waiter)
        raise
    self.inflight.answered(attempt.waiter)
    ttfc = self._clock.monotonic() - start
    return Opened(attempt, first, chunks, start, wall, ttfc)


def abandoned(
    self: Router, route: Route, attempt: Try, request: Request, start: float, wall: float
) -> None:
    """An attempt cut before its answer: the client went, or another attempt of the request
    answered first (``waiter.lost`` says which: outpaced, or stalled after a rescue)."""
    waiter = attempt.waiter
    self.inflight.ended(waiter)
    if waiter.lost is None:
        self._emit(route, attempt, request, start, wall, cancelled=True)
        return
    lost = lost_error(waiter, self._clock.monotonic() - start)
    lost.provider, lost.model = attempt.provider.name, attempt.target.model
    self._emit(route, attempt, request, start, wall, error=lost)


def emit(
    self: Router,
    route: Route,
    attempt: Try,
    request: Request,
    start: float,
    wall: float,
    *,
    error: ProviderError | None = None,
    cancelled: bool = False,
    usage: Usage | None = None,
    response_model: str | None = None,
    ttfc: float | None = None,
    output: Message | None = None,
) -> None:
    self.listeners.attempt(
        attempt_event(
            route,
            attempt,
            request,
            start=start,
            wall=wall,
            end=self._clock.monotonic(),
            error=error,
            cancelled=cancelled,
            usage=usage,
            response_model=response_model,
            ttfc=ttfc,
            output=output,
            capture=self._capture,
        )
    )


def finish(
    self: Router,
    route: Route,
    served_by: str | None,
    error: BaseException | None,
    *,
    cancelled: bool = False,
) -> None:
    end = self._clock.monotonic()
    if served_by is not None:
        self.rungs[route.tier.name] = route.degraded
    self.listeners.route(route_event(route, served_by, error, end=end, cancelled=cancelled))
