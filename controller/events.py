"""Frozen event records emitted by the router, and the listener hook that consumes them.

Telemetry (spans + metrics) and the controller's signal windows subscribe to the *same* events,
so the dashboard and the tripwire see the same numbers. Listeners must be quick and must not
raise: the router isolates them anyway (a failing listener is logged, never fails a call).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller._frozen import quick_init
from controller.model import Usage

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """What one attempt came to."""

    SUCCESS = "success"
    FAULT = "fault"  # the provider failed: counts toward its error rate
    CALLER_ERROR = "caller_error"  # the request was wrong: does not count
    # The client went away, the shutdown or the deadline cut it, or our own cap on a stream's
    # length did (error.type says which): not the provider's fault, does not count.
    CANCELLED = "cancelled"


class AttemptReason(enum.StrEnum):
    """Why this attempt was made (``failover.reason`` on the span)."""

    PRIMARY = "primary"  # first choice of the plan
    # First choice moved to the next target of the plan: a share of real traffic that keeps
    # the backup measured (tiers.<name>.warm_share; a failure goes back to the primary), and
    # away from a target low on rate-limit headroom (routing.headroom) before it answers 429.
    WARM = "warm"
    HEADROOM = "headroom"
    RETRY = "retry"  # same provider again after a transient error
    FAILOVER = "failover"  # next provider after the previous one failed
    CONTEXT_FALLBACK = "context_fallback"  # larger-context model after context_too_long
    PROBE = "probe"  # controller's health probe
    RESCUE = "rescue"  # next provider, beside an attempt whose provider left rotation
    HEDGE = "hedge"  # next provider, beside an attempt slower than the tier's hedge wait
    STEP_DOWN = "step_down"  # the step-down tier's first target, after the tier's own failed
    CONTINUATION = "continuation"  # a stream cut after it reached the client, continued
    BUDGET = "budget"  # first choice moved: the plan's first target is over its spend budget


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptEvent:
    """One attempt at one provider. Times: ``start``/``end`` monotonic, ``start_wall`` epoch."""

    request_id: str
    tier: str
    provider: str  # the configured provider name, e.g. "openai-primary"
    provider_kind: str  # gen_ai.provider.name, e.g. "openai", "anthropic", "gcp.gemini"
    model: str
    attempt: int  # 1-based, across the whole routed request
    reason: AttemptReason
    stream: bool
    start: float
    end: float
    start_wall: float
    outcome: Outcome
    error_type: str | None = None  # low-cardinality error.type
    error_status: int | None = None
    error_message: str | None = None
    response_model: str | None = None
    usage: Usage | None = None
    time_to_first_chunk: float | None = None
    server_address: str = ""
    server_port: int = 0
    failover_from: str | None = None  # previous provider, when reason is FAILOVER
    failover_cause: str | None = None  # error.type that made the router move on (or retry)
    trace_id: int = 0  # of the route span
    parent_span_id: int = 0  # the route span's id
    sampled: bool = True
    # Prompt/completion content as JSON text: set only when the user opted in to capture it.
    input_messages: str | None = None
    output_messages: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def is_fault(self) -> bool:
        return self.outcome is Outcome.FAULT


PROBE_TIER = "probe"  # the tier name on the controller's health probes (not user traffic)


class RouteOutcome(enum.StrEnum):
    """What one routed request came to (the ``outcome`` label of ``failover.requests``).

    ``failed`` means the gateway could not serve: every candidate failed, the deadline passed,
    or a stream broke (or hit ``stream_total``) after its first chunk. A request whose client
    went away first (or that the shutdown cut) is ``cancelled`` instead, so client impatience
    never reads as a gateway failure on the dashboard or in the alert rules.
    """

    SERVED = "served"  # the first candidate served it
    DEGRADED = "degraded"  # served, but only after a failover or in panic mode
    FAILED = "failed"  # the gateway could not serve it
    CANCELLED = "cancelled"  # the client left (or the shutdown cut it) before the answer ended


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RouteEvent:
    """One routed request, emitted once when it ends."""

    request_id: str
    tier: str
    outcome: RouteOutcome
    served_by: str | None
    attempts: int
    start: float
    end: float
    stream: bool
    error_type: str | None = None
    panic: bool = False
    candidates: tuple[str, ...] = ()  # providers the plan offered, in order
    start_wall: float = 0.0
    # The route span's identity: the router assigns ids up front (so attempts and alerts can
    # name the trace) and telemetry creates the span afterwards, off the request path.
    trace_id: int = 0
    span_id: int = 0
    parent_span_id: int = 0  # the span that was current when routing began (e.g. gateway SERVER)
    sampled: bool = True
    # Providers passed over because their wire format cannot carry what the client sent
    # ("provider: feature, ..."), and the features the serving provider's format dropped
    # because the config allows it (translation.droppable).
    skipped: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    # The rung of the tier's ladder that served it, when none of its own providers could:
    # "tier" (the step-down tier's), "cache" (the last good answer), "static".
    degraded: str = ""
    # The wire format the client spoke (openai, anthropic, gemini, responses); "" for a request
    # made in code (a probe, library use).
    front: str = ""


class Listener(Protocol):
    """Receives the router's events. Implementations must be fast and not raise."""

    def on_attempt(self, event: AttemptEvent) -> None: ...

    def on_route(self, event: RouteEvent) -> None: ...


class Listeners:
    """Fans events out to listeners, isolating each from the others' failures."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[Listener] = ()) -> None:
        self._items: tuple[Listener, ...] = tuple(items)

    def add(self, listener: Listener) -> None:
        self._items = (*self._items, listener)

    def attempt(self, event: AttemptEvent) -> None:
        for listener in self._items:
            try:
                listener.on_attempt(event)
            except Exception:  # a listener bug must never fail a user request
                log.exception("listener %r failed on an attempt event", listener)

    def route(self, event: RouteEvent) -> None:
        for listener in self._items:
            try:
                listener.on_route(event)
            except Exception:
                log.exception("listener %r failed on a route event", listener)
