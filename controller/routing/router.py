"""The router: one request, tried across a tier's providers until one answers.

For each routed request it assigns the ids of one INTERNAL span (``failover.route``; telemetry
creates the span from the RouteEvent afterwards, off the request path), makes attempts in the
order the routing view gives (:mod:`controller.routing.plan`), retries the same provider only
where the retry policy says it helps, and emits one :class:`AttemptEvent` per attempt and one
:class:`RouteEvent` at the end. It never retries or fails over a caller error.

Streams fail over transparently only until their first chunk: :meth:`Router.stream` returns once
a provider has produced one, so the caller can still answer with a clean error status before
that. After it, a failure ends the stream with :class:`StreamInterrupted`, never a truncated
answer presented as complete. The request's deadline bounds the time to that first chunk
(failover attempts included), not the delivery of a stream already flowing: that is bounded by
the provider's ``idle`` and ``stream_total`` limits (see :class:`Timeouts`).

A request whose client goes away (or that the shutdown cuts) ends with the route outcome
``cancelled``, not ``failed``: ``failed`` means the gateway could not serve.

Silence is handled while it lasts, not when a timeout expires. Every attempt waiting for its
answer is registered in :class:`~controller.signals.inflight.InFlight` (the controller trips a
provider whose attempts wait past the limit learned from its own answers). When a provider
leaves rotation (tripped for any reason, or switched off by the kill switch) every request still
waiting on it starts on its next target at once: a *rescue*. A tier with ``hedge`` set starts
the next target beside an attempt that has produced nothing after the hedge wait. Either way the
first answer wins (:mod:`controller.routing._race`; when a second attempt starts:
:mod:`controller.routing._hedging`).

Some of :class:`Router`'s methods are written in modules of their own and taken into its class
body as they are: an attempt's call and its events (:mod:`controller.routing._router_attempts`),
what it tells of a tier without routing (:mod:`controller.routing._router_views`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from opentelemetry import trace

from controller._clock import Clock, SystemClock
from controller._errors import (
    AllProvidersFailed,
    CallerError,
    ContextTooLong,
    DeadlineExceeded,
    ProviderError,
)
from controller.control.state import RoutingState, StateHolder
from controller.events import PROBE_TIER, AttemptReason, Listener, Listeners
from controller.model import Message, Request, Response, StreamChunk
from controller.providers.base import Provider, Timeouts
from controller.routing import _router_attempts as attempting
from controller.routing import _router_views as views
from controller.routing._capability import Capability
from controller.routing._continue import Overlap
from controller.routing._degrade import AnswerCache, CannedStream
from controller.routing._hedging import Hedging
from controller.routing._ladder import descend, keep_answer, keep_stream, ladder_for
from controller.routing._limits import AttemptLimits
from controller.routing._records import Once, Route, Try
from controller.routing._resume import resume
from controller.routing._stream import Opened, RoutedStream
from controller.routing.plan import (
    LatencyTracker,
    Plan,
    Target,
    TierPlan,
    in_rotation,
)
from controller.routing.policy import DefaultRetryPolicy, RetryPolicy, RetryState
from controller.signals.inflight import InFlight

__all__ = ["AnswerCache", "CannedStream", "LatencyTracker", "RoutedStream", "Router"]

T = TypeVar("T")
# Re-orders a tier's plan for one request (a spend budget, say): the new plan, the reason its
# first attempt gets and the provider moved away from; None leaves the plan as it is.
Steer = Callable[[TierPlan, Plan], tuple[Plan, AttemptReason, str] | None]
log = logging.getLogger(__name__)
_DEFAULT_TIMEOUTS = Timeouts()
_PROBE = Request(messages=(Message(role="user", content="ping"),), max_tokens=1)


class Mirror(Protocol):
    """Takes the served answers of a share of routed requests once they are whole, off the
    request path (:class:`controller.routing._shadow.Shadow`)."""

    max_bytes: int  # of a streamed answer kept for it

    def wants(self, tier: str) -> bool: ...

    def served(
        self, route: Route, request: Request, answer: Response | list[StreamChunk]
    ) -> None: ...


class Router:
    """Routes requests across providers with failover. Construct once; share freely."""

    def __init__(
        self,
        *,
        tiers: Mapping[str, TierPlan],
        providers: Mapping[str, Provider],
        state: StateHolder | None = None,
        listeners: Sequence[Listener] = (),
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Mapping[str, Timeouts] | None = None,
        default_timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        deadline: float = 120.0,
        max_attempts: int = 6,
        default_models: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        capture_content: bool = False,
        sample_root: Callable[[int], bool] | None = None,
        droppable: frozenset[str] = frozenset(),
        inflight: InFlight | None = None,
        cache: AnswerCache | None = None,
        steers: Sequence[Steer] = (),
        mirror: Mirror | None = None,
    ) -> None:
        self.tiers = dict(tiers)
        self.providers = dict(providers)
        self.state = state or StateHolder()
        self.latency = LatencyTracker()
        self.listeners = Listeners([self.latency, *listeners])
        self._clock = clock or SystemClock()
        self._retry = retry or DefaultRetryPolicy()
        self._limits = AttemptLimits(timeouts or {}, default_timeouts)
        self._deadline = deadline
        self._max_attempts = max_attempts
        self._default_models = dict(default_models or {})
        self._rng = rng or random.Random()
        self._capture = capture_content
        self._capability = Capability(self.providers, droppable)
        # Whether a trace this router starts itself (no current span: probes, library use) is
        # kept: the attempt spans must follow the decision the route span will get.
        self._sample_root = sample_root
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{random.getrandbits(24):06x}"
        # Attempts waiting for an answer (shared with the signal windows the controller reads).
        self.inflight = inflight if inflight is not None else InFlight(self._clock)
        # The last good answers, for the ladders of tiers with degrade.cache (routing._degrade).
        self.cache = cache
        self.steers = list(steers)  # applied in order to each request's plan (see Steer)
        self.mirror = mirror  # gets a share of served answers (shadow comparison)
        # Per tier: the rung of its ladder its last served request came from ("": its own).
        self.rungs: dict[str, str] = {}
        self._hedging = Hedging(self)  # the rescue or hedge beside each attempt
        # Per tier, while the routing state and the tier stay the same objects (see plan()).
        self._plans: dict[str, tuple[RoutingState, TierPlan, Plan]] = {}
        self._as_is: dict[tuple[str, str], tuple[TierPlan, str | None, bool]] = {}
        self.state.watch(self._on_state)

    @property
    def droppable(self) -> frozenset[str]:
        """What a provider of another format may serve without (counted, logged once each);
        the runtime replaces it on a config reload."""
        return self._capability.droppable

    @droppable.setter
    def droppable(self, features: frozenset[str]) -> None:
        self._capability.droppable = features

    # ------------------------------------------------------------------------------- public
    async def complete(
        self, request: Request, *, tier: str, deadline: float | None = None, scope: str = ""
    ) -> Response:
        """One non-streaming answer; raises the last attempt's reason when every try fails.
        ``scope``: whose answer it is for the answer cache (the gateway gives the client's key:
        a cached answer goes back only to the client that was given it)."""
        route = self._begin(request, tier, deadline, stream=False)
        try:
            response, target = await self._attempts(route, request, self._complete_once)
        except BaseException as exc:
            if not ladder_for(exc):
                self._finish(route, None, exc)
                raise
            degraded = await descend(self, route, request, self._complete_once, exc, scope)
            if degraded is None:
                self._finish(route, None, exc)
                raise
            response, served_by = degraded
            self._finish(route, served_by, None)
            return replace(response, degraded=route.degraded)
        keep_answer(self, route, request, response, scope)
        self._finish(route, target.provider, None)
        if route.mirrored and self.mirror is not None:
            self.mirror.served(route, request, response)
        return response

    async def stream(
        self, request: Request, *, tier: str, deadline: float | None = None, scope: str = ""
    ) -> RoutedStream | CannedStream:
        """Start a stream. Returns once a provider has produced the first chunk (the deadline
        bounds the wait for it; the stream may then outlive the deadline). ``scope``: as for
        :meth:`complete`."""
        route = self._begin(request, tier, deadline, stream=True)
        try:
            routed, _ = await self._attempts(route, request, self._stream_once)
        except BaseException as exc:
            if not ladder_for(exc):
                self._finish(route, None, exc)
                raise
            degraded = await descend(self, route, request, self._stream_once, exc, scope)
            if degraded is None:
                self._finish(route, None, exc)
                raise
            answer, _ = degraded
            if isinstance(answer, Response):  # the cache's or the static answer
                return CannedStream(self, route, answer, route.degraded)
            return answer
        routed.scope = scope
        return routed

    async def probe(self, provider: str, model: str, *, within: float = 5.0) -> bool:
        """A tiny real request to one provider, reported as an attempt with reason ``probe``."""
        target = Target(provider=provider, model=model)
        tier = TierPlan(name=PROBE_TIER, targets=(target,))
        route = self._begin(_PROBE, PROBE_TIER, within, stream=False, tier_plan=tier)
        waiter = self.inflight.begin(provider, stream=False, model=model)
        attempt = Try(
            target, self.providers[provider], AttemptReason.PROBE, None, None, within, waiter
        )
        route.attempts = 1
        try:
            await self._complete_once(route, _PROBE, attempt)
        except (ProviderError, TimeoutError):
            self._finish(route, None, None)
            return False
        except asyncio.CancelledError:  # cut by the probe timeout (or the shutdown)
            self._finish(route, None, None, cancelled=True)
            raise
        self._finish(route, provider, None)
        return True

    # what a tier's requests meet now, without routing one (controller.routing._router_views)
    plan = views.plan
    takes_as_is = views.takes_as_is
    degraded = views.degraded
    timeouts_for = views.timeouts_for

    async def aclose(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()))
        if self.cache is not None:  # its thread writes what it holds to SQLite, then stops
            await asyncio.to_thread(self.cache.close)

    # ------------------------------------------------------------------------------- routing
    def _begin(
        self,
        request: Request,
        tier: str,
        deadline: float | None,
        *,
        stream: bool,
        tier_plan: TierPlan | None = None,
    ) -> Route:
        plan_for = tier_plan or self.tiers.get(tier)
        if plan_for is None:
            known = ", ".join(sorted(self.tiers)) or "none"
            raise AllProvidersFailed(f"unknown tier {tier!r} (configured: {known})")
        plan = self.plan(plan_for)
        shift = None
        if tier_plan is None:
            for steer in self.steers:
                steered = steer(plan_for, plan)
                if steered is None:
                    continue
                if steered[1] is AttemptReason.WARM and not self._hedging.warm_guarded(
                    plan_for, steered[0], stream or request.stream
                ):
                    continue  # the client would pay for it: not warmed now
                plan, shift = steered[0], steered[1:]
        start = self._clock.monotonic()
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:  # e.g. the gateway's SERVER span: the route joins its trace
            trace_id, parent_id = parent.trace_id, parent.span_id
            sampled = parent.trace_flags.sampled
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, 0
            sampled = self._sample_root(trace_id) if self._sample_root is not None else True
        return Route(
            request_id=f"{self._id_prefix}-{next(self._ids)}",
            tier=plan_for,
            plan=plan,
            start=start,
            start_wall=self._clock.wall(),
            deadline=start + (deadline if deadline is not None else self._deadline),
            stream=stream or request.stream,
            trace_id=trace_id,
            span_id=random.getrandbits(64) or 1,
            parent_span_id=parent_id,
            sampled=sampled,
            front=request.source.format if request.source is not None else "",
            shift=shift,
            mirrored=tier_plan is None and self.mirror is not None and self.mirror.wants(tier),
        )

    async def _attempts(
        self,
        route: Route,
        request: Request,
        once: Once[T],
        reason: AttemptReason = AttemptReason.PRIMARY,
        tier: TierPlan | None = None,
    ) -> tuple[T, Target]:
        """``route``'s attempts on its plan's targets (those of ``tier``, a step-down of the
        route's own, when given: its first attempt names the last failure before it)."""
        targets = list(route.plan.targets)
        queue = route.queue = self._capability.capable(
            route, request, targets, tier or route.tier, self.state
        )
        route.position = 0
        if not queue:
            raise AllProvidersFailed(route.plan.reason or f"tier {route.tier.name} has no targets")
        previous, cause = None, None
        if tier is not None and route.errors:
            previous, cause = route.errors[-1].provider, route.errors[-1].error_type
        elif (
            route.shift is not None
            and reason is AttemptReason.PRIMARY
            and queue[0] is targets[0]  # the target it was moved to can take the request
            # and a warm one has a target to go back to (it alone can: it serves as a primary)
            and (route.shift[0] is not AttemptReason.WARM or len(queue) > 1)
        ):
            reason, previous = route.shift  # e.g. budget: moved off an over-budget target
            cause = reason.value
        while route.position < len(queue):
            index = route.position
            target = queue[index]
            tries = 0
            while True:
                tries += 1
                attempt = self._try(route, target, reason, previous, cause)
                try:
                    answer, target = await self._hedging.race(route, request, attempt, once)
                except ContextTooLong as exc:
                    fallback = route.tier.context_fallback
                    if (
                        fallback is None
                        or fallback in queue[: route.position + 1]  # tried already
                        or not self._allowed(route, fallback)
                        or self._capability.missing(request, fallback)
                    ):
                        raise
                    route.errors.append(exc)
                    queue[route.position + 1 :] = [fallback]
                    reason, cause = AttemptReason.CONTEXT_FALLBACK, exc.error_type
                    previous = queue[route.position].provider
                    break
                except CallerError:
                    raise
                except ProviderError as exc:
                    delay = None
                    # No attempt beside it took the next target; a warm attempt is not retried:
                    # the request goes back to its primary (the client never pays for warming).
                    if route.position == index and reason is not AttemptReason.WARM:
                        delay = self._retry(
                            RetryState(
                                error=exc,
                                tries_here=tries,
                                remaining=self._remaining(route),
                                has_alternative=index + 1 < len(queue),
                            )
                        )
                    if delay is not None and route.attempts < self._max_attempts:
                        await self._clock.sleep(delay)
                        if not self._ejected(route, target):  # tripped while we waited?
                            reason, cause = AttemptReason.RETRY, exc.error_type
                            continue
                    reason, cause = AttemptReason.FAILOVER, exc.error_type
                    previous = queue[route.position].provider
                    break
                else:
                    route.dropped = self._capability.dropped(request, target)
                    return answer, target
            if route.attempts >= self._max_attempts:
                break
            route.position += 1
        raise self._exhausted(route)

    def _try(
        self,
        route: Route,
        target: Target,
        reason: AttemptReason,
        previous: str | None,
        cause: str | None,
    ) -> Try:
        """The next attempt of ``route`` (counted), waiting for its answer from now on."""
        remaining = self._remaining(route)
        route.attempts += 1
        waiter = self.inflight.begin(target.provider, stream=route.stream, model=target.model)
        provider = self.providers[target.provider]
        return Try(target, provider, reason, previous, cause, remaining, waiter)

    # ------------------------------------------------------------------------------- hand-offs
    def _cache_stream(
        self, route: Route, request: Request, chunks: list[StreamChunk], model: str, scope: str
    ) -> None:
        """Hand a stream that has ended to the cache rung and the shadow comparison
        (:func:`controller.routing._ladder.keep_stream`)."""
        keep_stream(self, route, request, chunks, model, scope)

    def _on_state(self, old: RoutingState, new: RoutingState) -> None:
        """A provider (or one model of it) left rotation: rescue every request still waiting
        on it."""
        for provider in self.inflight.providers():
            for waiter in self.inflight.waiting_on(provider):
                target = (provider, waiter.model)
                left = in_rotation(old, *target) and not in_rotation(new, *target)
                if left and waiter.on_trip is not None:
                    waiter.on_trip()

    # ------------------------------------------------------------------------------- targets
    def _allowed(self, route: Route, target: Target) -> bool:
        """May ``target`` be tried outside the plan (the context fallback)? The kill switch and
        the controller's state apply to it like to any planned target."""
        state = self.state.current
        if not state.kill_switch.allows(target.provider):
            return False
        return route.plan.panic or state.share(target.provider, target.model) > 0

    def _ejected(self, route: Route, target: Target) -> bool:
        """Tripped while this request was on it: move on rather than retry a dead provider."""
        return not route.plan.panic and not self.state.current.share(target.provider, target.model)

    def _remaining(self, route: Route) -> float:
        remaining = route.deadline - self._clock.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"request deadline passed after {route.attempts} attempt(s)",
                attempts=tuple(route.errors),
            )
        return remaining

    def _exhausted(self, route: Route) -> AllProvidersFailed:
        tried = "; ".join(str(e) for e in route.errors) or "no attempt was made"
        skipped = f"; passed over (format): {'; '.join(route.skipped)}" if route.skipped else ""
        return AllProvidersFailed(
            f"all providers failed for tier {route.tier.name} after {route.attempts} "
            f"attempt(s): {tried}{skipped}",
            attempts=tuple(route.errors),
            passed_over=tuple(route.skipped),
        )

    # ------------------------------------------------------------------------------- attempts
    # an attempt's call and what it reports (controller.routing._router_attempts)
    _complete_once = attempting.complete_once
    _stream_once = attempting.stream_once
    _open = attempting.open_stream
    _abandoned = attempting.abandoned
    _emit = attempting.emit
    _finish = attempting.finish

    async def _continuation(
        self, route: Route, request: Request, cut: Try, error: ProviderError, delivered: str
    ) -> tuple[Opened, Overlap] | None:
        """A stream of ``request`` that continues ``delivered`` (the text a stream cut by
        ``error`` got to the client), on the next target that can take it, the cut one last;
        None when none can before the deadline or the attempts run out
        (:mod:`controller.routing._resume`)."""
        return await resume(self, route, request, cut, error, delivered)
