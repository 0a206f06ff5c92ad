"""What the router keeps about one routed request, and the events it builds from that.

:class:`Route` is the mutable bookkeeping of one request (ids, plan, deadline, attempts so far),
:class:`Try` one attempt's target and why it is being made. :func:`attempt_event` and
:func:`route_event` turn them into the :mod:`controller.events` records every listener
(telemetry, signal windows, latency tracking) receives. Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from controller._errors import (
    AllProvidersFailed,
    CallerError,
    DeadlineExceeded,
    FailoverError,
    ProviderError,
)
from controller._frozen import quick_init
from controller.events import (
    AttemptEvent,
    AttemptReason,
    Outcome,
    RouteEvent,
    RouteOutcome,
)
from controller.model import Message, Request, Usage
from controller.providers.base import Provider
from controller.routing.plan import Plan, Target, TierPlan
from controller.signals.inflight import Waiter

__all__ = ["CANCELLED", "Once", "Route", "Try", "attempt_event", "route_event"]

# The error.type of an attempt or a request cut because its client went away (or the shutdown
# cut it): a value of its own, so the fault-rate queries can leave it out by name.
CANCELLED = "cancelled"


@dataclass(slots=True)
class Route:
    """The mutable bookkeeping of one routed request (never shared outside the router)."""

    request_id: str
    tier: TierPlan
    plan: Plan
    start: float
    start_wall: float
    deadline: float
    stream: bool
    trace_id: int
    span_id: int
    parent_span_id: int
    sampled: bool
    attempts: int = 0
    # The targets this request may be tried on, in order, and the one being tried: an attempt
    # started beside another (a rescue, a hedge) takes the next one.
    queue: list[Target] = field(default_factory=list)
    position: int = 0
    errors: list[ProviderError] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "provider: feature, ..." it cannot honour
    dropped: tuple[str, ...] = ()  # features the serving provider's format could not carry
    degraded: str = ""  # the rung of the ladder serving it (routing._degrade), if any
    front: str = ""  # the wire format the client spoke ("" for a request made in code)
    # A steer moved the plan's first choice (Router.steers): the reason the first attempt
    # gets, and the provider it moved the request away from.
    shift: tuple[AttemptReason, str] | None = None
    mirrored: bool = False  # its answer goes to the tier's shadow target (routing._shadow)


@quick_init
@dataclass(frozen=True, slots=True)
class Try:
    """Who is being tried, and why. ``waiter`` is its entry among the attempts waiting for an
    answer (:class:`~controller.signals.inflight.InFlight`)."""

    target: Target
    provider: Provider
    reason: AttemptReason
    previous: str | None
    cause: str | None
    remaining: float
    waiter: Waiter


T = TypeVar("T")
# One attempt of a request, by the router: a whole answer or a stream's start.
Once = Callable[[Route, Request, Try], Awaitable[T]]


def attempt_event(
    route: Route,
    attempt: Try,
    request: Request,
    *,
    start: float,
    wall: float,
    end: float,
    error: ProviderError | None = None,
    cancelled: bool = False,
    usage: Usage | None = None,
    response_model: str | None = None,
    ttfc: float | None = None,
    output: Message | None = None,
    capture: bool = False,
) -> AttemptEvent:
    """The record of one finished attempt. ``capture`` puts the prompt (and ``output``, the
    answer) on it as JSON, for content recording the user opted in to."""
    if error is None:
        outcome = Outcome.CANCELLED if cancelled else Outcome.SUCCESS
    elif isinstance(error, CallerError):
        outcome = Outcome.CALLER_ERROR
    elif error.counts_as_fault:
        outcome = Outcome.FAULT
    else:  # cut by our own limit (a stream past ``stream_total``): not the provider's fault
        outcome = Outcome.CANCELLED
    if error is not None:
        error_type: str | None = error.error_type
    else:
        error_type = CANCELLED if cancelled else None
    provider = attempt.provider
    return AttemptEvent(
        request_id=route.request_id,
        tier=route.tier.name,
        provider=provider.name,
        provider_kind=provider.kind,
        model=attempt.target.model,
        attempt=route.attempts,
        reason=attempt.reason,
        stream=route.stream,
        start=start,
        end=end,
        start_wall=wall,
        outcome=outcome,
        error_type=error_type,
        error_status=error.status if error is not None else None,
        error_message=error.message if error is not None else None,
        response_model=response_model,
        usage=usage,
        time_to_first_chunk=ttfc,
        server_address=provider.server_address,
        server_port=provider.server_port,
        failover_from=attempt.previous,
        failover_cause=attempt.cause,
        trace_id=route.trace_id,
        parent_span_id=route.span_id,
        sampled=route.sampled,
        input_messages=_content(request.messages) if capture else None,
        output_messages=_content((output,)) if output is not None else None,
    )


def route_event(
    route: Route,
    served_by: str | None,
    error: BaseException | None,
    *,
    end: float,
    cancelled: bool = False,
) -> RouteEvent:
    """The record of one routed request, served (by ``served_by``) or not.

    ``cancelled`` (or ``error`` being a cancellation) says the client went away, or the
    shutdown cut the request: it ends ``cancelled``, never ``failed``, whoever was serving it.
    """
    cancelled = cancelled or isinstance(error, asyncio.CancelledError)
    if cancelled:
        outcome = RouteOutcome.CANCELLED
    elif served_by is None:
        outcome = RouteOutcome.FAILED
    elif route.attempts > 1 or route.plan.panic or route.degraded:
        outcome = RouteOutcome.DEGRADED
    else:
        outcome = RouteOutcome.SERVED
    return RouteEvent(
        request_id=route.request_id,
        tier=route.tier.name,
        outcome=outcome,
        served_by=served_by,
        attempts=route.attempts,
        start=route.start,
        end=end,
        stream=route.stream,
        error_type=CANCELLED if cancelled else _error_type(error),
        panic=route.plan.panic,
        candidates=tuple(t.provider for t in route.plan.targets),
        start_wall=route.start_wall,
        trace_id=route.trace_id,
        span_id=route.span_id,
        parent_span_id=route.parent_span_id,
        sampled=route.sampled,
        skipped=tuple(route.skipped),
        dropped=route.dropped if served_by is not None else (),
        degraded=route.degraded if served_by is not None else "",
        front=route.front,
    )


def _error_type(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, FailoverError):
        if isinstance(error, AllProvidersFailed | DeadlineExceeded) and error.attempts:
            return error.attempts[-1].error_type
        return error.error_type
    return type(error).__qualname__


def _content(messages: Sequence[Message]) -> str:
    return json.dumps(
        [{"role": m.role, "content": m.content} for m in messages], separators=(",", ":")
    )
