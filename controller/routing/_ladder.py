"""A tier's ladder, walked: what serves a request once every provider of its tier has failed,
and the answers handed to the cache rung on the way out of the requests that were served.

The rungs, each where configured (``tiers.<name>.degrade``): the step-down tiers' targets, in
turn; then the last good answer to the same request (the cache,
:class:`~controller.routing._degrade.AnswerCache`); then the static text. The cache is written
here too: a cache-enabled tier's whole answers as they go out, its streams once they have ended
whole (:class:`~controller.routing._stream.RoutedStream` hands them over), never an answer a
rung below the tier's own providers served. Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from controller._errors import CallerError, FailoverError, ProviderError
from controller.events import AttemptReason
from controller.model import Request, Response, StreamChunk, assemble
from controller.providers.base import Provider
from controller.routing._degrade import CACHE, STATIC, STEP_DOWN, static_answer
from controller.routing._records import Once, Route
from controller.wire._relay import UNREAD

if TYPE_CHECKING:
    from controller.routing.router import Router

__all__ = ["descend", "keep_answer", "keep_stream", "ladder_for", "readable"]

log = logging.getLogger("controller.routing.router")  # where operators have seen it since

T = TypeVar("T")


def ladder_for(exc: BaseException) -> bool:
    """Whether a routed request that failed with ``exc`` goes down its tier's ladder: every
    provider failed it (not the caller's mistake, not a cancellation)."""
    return isinstance(exc, FailoverError) and not isinstance(exc, CallerError)


async def descend(
    router: Router,
    route: Route,
    request: Request,
    once: Once[T],
    failure: BaseException,
    scope: str,
) -> tuple[T | Response, str] | None:
    """After every target of the tier failed: the answer of the tier's ladder (its step-down
    tiers' targets, then the last good answer to the same request, then the static text;
    each where configured) and who served it; None when no rung could. ``route.degraded``
    names the rung."""
    stepped = await _step_down(router, route, request, once, failure)
    if stepped is not None:
        return stepped
    degrade, cache = route.tier.degrade, router.cache
    if degrade.cache and cache is not None:
        cached = await cache.lookup(cache.key(route.tier.name, request, scope))
        if cached is not None:
            route.degraded = CACHE
            return replace(cached, id=route.request_id, provider=CACHE), CACHE
    if degrade.static is not None:
        route.degraded = STATIC
        model = route.plan.targets[0].model if route.plan.targets else route.tier.name
        return static_answer(degrade.static, model), STATIC
    route.degraded = ""
    return None


async def _step_down(
    router: Router, route: Route, request: Request, once: Once[T], failure: BaseException
) -> tuple[T, str] | None:
    """The answer of the first step-down tier (in the ladder's order) that serves, and its
    provider; None when none does."""
    lower, seen = route.tier.degrade.step_down, {route.tier.name}
    while lower is not None and lower not in seen and lower in router.tiers:
        seen.add(lower)
        tier = router.tiers[lower]
        route.plan = router.plan(tier)
        route.degraded = STEP_DOWN
        made = route.attempts
        try:
            answer, target = await router._attempts(
                route, request, once, AttemptReason.STEP_DOWN, tier
            )
        except BaseException as exc:
            # A tier none of whose providers can honour the request is passed over (its
            # 400 is no fault of the caller's); a 400 from one of its providers stands.
            passed_over = isinstance(exc, CallerError) and made == route.attempts
            if not (ladder_for(exc) or passed_over):
                raise
            lower = tier.degrade.step_down
            continue
        log.warning(
            "tier %s: no provider of it could serve (%s); served by step-down tier %s (%s)",
            route.tier.name,
            type(failure).__name__,
            tier.name,
            target.provider,
        )
        return answer, target.provider
    return None


def keep_answer(
    router: Router, route: Route, request: Request, response: Response, scope: str
) -> None:
    """Keep a good answer of a cache-enabled tier for its ladder (a whole one; a stream's
    is kept by :class:`RoutedStream` once it has ended)."""
    cache = router.cache
    if cache is None or not route.tier.degrade.cache or route.degraded:
        return
    cache.keep(route.tier.name, request, scope, lambda: readable(router.providers, response))


def readable(providers: Mapping[str, Provider], response: Response) -> Response | None:
    """``response`` with its message (one relayed undecoded is read by its provider, off the
    loop: on the cache's keeper thread, or the shadow comparison's worker), or None when it
    cannot be read."""
    if response.message is not UNREAD:
        return response
    provider = providers.get(response.provider)
    reader = getattr(provider, "parse_response", None)
    if reader is None or response.raw is None:
        return None
    try:
        parsed: Response = reader(response.raw, response.model)
    except ProviderError:
        return None
    return parsed


def keep_stream(
    router: Router,
    route: Route,
    request: Request,
    chunks: list[StreamChunk],
    model: str,
    scope: str,
) -> None:
    """Keep a cache-enabled tier's streamed answer, once it has ended whole (assembled on
    the cache's keeper thread); a mirrored one goes to the shadow comparison too."""
    if route.mirrored and router.mirror is not None:
        router.mirror.served(route, request, chunks)
    cache = router.cache
    if cache is None or not route.tier.degrade.cache or route.degraded:
        return

    def whole() -> Response | None:
        try:
            return assemble(chunks, id=route.request_id, model=model)
        except ValueError:  # no finish reason: not a whole answer
            return None

    cache.keep(route.tier.name, request, scope, whole)
