"""Shadow comparison: a share of a tier's requests is sent again to a candidate target after the
primary has answered, to see whether the candidate would do as a backup.

Off by default; per tier (``tiers.<name>.shadow``). The router hands over a sampled request's
served answer once its route has ended whole (:class:`~controller.routing.router.Mirror`: the
response, or a stream's chunks), and that is all it does on the request path: a dict lookup, a
random draw and a bounded queue put. The candidate's call runs in its own task, never waited
on by a request, its answer never reaches a client. Per tier at most ``max_concurrency`` calls
run at once and ``max_queue`` wait; past that a request is not shadowed (counted as
``dropped``). A daily allowance (``daily_requests``, and ``daily_usd`` at the candidate's price)
bounds what the shadow may spend on top of the served traffic; once it is used up, nothing more
is shadowed until the UTC day ends (counted as ``over_budget``). A call's cost is known when it
ends: the allowance is checked when a request is admitted and again when a queued one starts,
so only the calls under way (at most ``max_concurrency``) may go past ``daily_usd``.

What is recorded (metrics ``failover.shadow.*`` and one ``failover.shadow`` span per call, a
child of the request's route span): the candidate's latency beside the served request's, its
error type, its tokens and cost, and its agreement with the served answer: exact text, the
tool calls (names in order and JSON arguments equal as values), and the length ratio (candidate
over served, characters of text and arguments). A stream's served answer is assembled from its
chunks first. Neither answer's content is recorded anywhere: only these figures.

The candidate's calls do not count in the tripwire's windows (they are not traffic anyone
asked for); their errors show on the dashboard's shadow row. Internal to
:mod:`controller.routing`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from controller._clock import Clock
from controller._errors import MalformedResponse, ProviderError
from controller._tasks import cancel_and_wait
from controller.model import Message, Request, Response, StreamChunk, Usage, assemble
from controller.routing._ladder import readable as read
from controller.routing._records import Route
from controller.routing._spend import Prices
from controller.routing.plan import Target
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS
from controller.wire._relay import UNREAD

if TYPE_CHECKING:
    from controller.routing.router import Router

__all__ = ["Agreement", "Shadow", "ShadowPlan", "agreement"]

log = logging.getLogger(__name__)

SPAN_SHADOW = "failover.shadow"
_DAY = 86_400.0
_MAX_BYTES = 4 * 1024 * 1024  # of a served stream kept for the comparison (past it: not compared)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowPlan:
    """One tier's shadow: where, how much, how many at once, and the daily allowance."""

    target: Target
    share: float
    max_concurrency: int = 2
    max_queue: int = 16
    daily_requests: int = 1000
    daily_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Agreement:
    """How a candidate's answer compares with the served one. ``tools_equal`` is None when
    neither called a tool."""

    text_equal: bool
    tools_equal: bool | None
    length_ratio: float


def agreement(served: Message, candidate: Message) -> Agreement:
    """Compare two answers: text exactly; tool calls by name and arguments as JSON values (key
    order and spacing aside); length as the candidate's characters over the served one's."""
    tools_equal = None
    if served.tool_calls or candidate.tool_calls:
        tools_equal = _calls(served) == _calls(candidate)
    mine, theirs = _length(served), _length(candidate)
    ratio = 1.0 if mine == theirs else theirs / mine if mine else float("inf")
    return Agreement(served.content == candidate.content, tools_equal, ratio)


def _calls(message: Message) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    for call in message.tool_calls:
        try:
            arguments: Any = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = call.arguments  # not JSON: compared as text
        calls.append((call.name, arguments))
    return calls


def _length(message: Message) -> int:
    return len(message.content) + sum(len(c.arguments) for c in message.tool_calls)


@dataclass(slots=True)
class _Job:
    route: Route
    request: Request
    served: Response | list[StreamChunk]
    served_seconds: float


class _Lane:
    """One tier's queue, its calls under way and today's allowance used."""

    __slots__ = ("day", "pending", "requests", "running", "usd")

    def __init__(self) -> None:
        self.pending: collections.deque[_Job] = collections.deque()
        self.running = 0
        self.day = -1
        self.requests = 0
        self.usd = 0.0


class Shadow:
    """The shadow comparison of every tier that has one (the router's ``mirror``)."""

    max_bytes = _MAX_BYTES

    def __init__(
        self,
        plans: Mapping[str, ShadowPlan],
        *,
        clock: Clock,
        prices: Prices | None = None,
        meter: Meter | None = None,
        tracer: Tracer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.plans = dict(plans)
        self.router: Router | None = None  # set by attach()
        self._clock = clock
        self._route_clock = clock
        self._prices = prices or Prices({})
        self._tracer = tracer or trace.NoOpTracer()
        self._rng = rng or random.Random()
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: dict[tuple[str, str, str], int] = {}
        self._agreement: dict[tuple[str, str, str, str], int] = {}
        self._costs: dict[tuple[str, str, str], float] = {}
        self._duration: Histogram | None = None
        self._ratio: Histogram | None = None
        if meter is not None:
            self._instruments(meter)

    def attach(self, router: Router) -> None:
        """Take the router's providers, limits and capability checks, and get its answers."""
        self.router = router
        self._route_clock = router._clock  # what the served request's times are taken on
        router.mirror = self

    # ----------------------------------------------------------------------------- the hook
    def wants(self, tier: str) -> bool:
        plan = self.plans.get(tier)
        return plan is not None and self._rng.random() < plan.share

    def served(self, route: Route, request: Request, answer: Response | list[StreamChunk]) -> None:
        """A sampled request's whole served answer: queued for its tier's candidate (or
        counted as dropped / over budget). Never blocks, never raises."""
        tier = route.tier.name
        plan = self.plans.get(tier)
        if plan is None or route.degraded:
            return  # the tier's shadow was removed by a reload, or the ladder served it
        lane = self._lanes.setdefault(tier, _Lane())
        provider = plan.target.provider
        if _served_on(route) == (provider, plan.target.model):
            self._count(tier, provider, "same_target")  # it served: nothing to compare with
            return
        if isinstance(answer, list) and _size(answer) > self.max_bytes:
            # kept up to a cache-enabled tier's bound, more than the shadow keeps waiting
            self._count(tier, provider, "too_big")
            return
        if not self._allowed(plan, lane):
            self._count(tier, provider, "over_budget")
            return
        job = _Job(route, request, answer, self._route_clock.monotonic() - route.start)
        if lane.running < plan.max_concurrency:
            self._start(tier, plan, lane, job)
        elif len(lane.pending) < plan.max_queue:
            lane.pending.append(job)
        else:
            lane.requests -= 1  # not sent: the day's allowance counts calls made
            self._count(tier, provider, "dropped")

    def _allowed(self, plan: ShadowPlan, lane: _Lane) -> bool:
        today = int(self._clock.wall() // _DAY)
        if lane.day != today:
            lane.day, lane.requests, lane.usd = today, 0, 0.0
        if lane.requests >= plan.daily_requests:
            return False
        if plan.daily_usd is not None:
            if lane.usd >= plan.daily_usd:
                return False
            target = plan.target
            if self._prices.of(target.provider, target.model) is None:
                return False  # uncountable: a reload gave the price, which waits for a restart
        lane.requests += 1
        return True

    def _start(self, tier: str, plan: ShadowPlan, lane: _Lane, job: _Job) -> None:
        lane.running += 1
        task = asyncio.get_running_loop().create_task(self._run(tier, plan, job))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._next(tier, lane, done))

    def _next(self, tier: str, lane: _Lane, done: asyncio.Task[None]) -> None:
        self._tasks.discard(done)
        lane.running -= 1
        plan = self.plans.get(tier)
        if plan is None:
            lane.pending.clear()
            return
        while lane.pending and lane.running < plan.max_concurrency and not done.cancelled():
            job = lane.pending.popleft()
            if plan.daily_usd is not None and lane.usd >= plan.daily_usd:
                # admitted before the calls under way cost it all: the queue must not
                # multiply the daily allowance (at most max_concurrency calls overshoot it)
                self._count(tier, plan.target.provider, "over_budget")
                continue
            self._start(tier, plan, lane, job)

    async def aclose(self) -> None:
        """Stop: calls under way are cut, queued ones forgotten."""
        for lane in self._lanes.values():
            lane.pending.clear()
        await cancel_and_wait(list(self._tasks))

    async def idle(self) -> None:
        """Wait until no call is under way or queued (for tests and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def running(self) -> int:
        return sum(lane.running for lane in self._lanes.values())

    # ----------------------------------------------------------------------------- one call
    async def _run(self, tier: str, plan: ShadowPlan, job: _Job) -> None:
        try:
            await self._compare(tier, plan, job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach a request: logged, counted
            log.exception("shadow comparison on tier %s failed", tier)
            self._count(tier, plan.target.provider, "internal_error")

    async def _compare(self, tier: str, plan: ShadowPlan, job: _Job) -> None:
        router, target = self.router, plan.target
        assert router is not None, "Shadow.attach(router) first"
        provider = router.providers.get(target.provider)
        if provider is None or router._capability.missing(job.request, target):
            self._count(tier, target.provider, "unsupported")
            return
        request = router._capability.request_for(job.request, target)
        limits = router.timeouts_for(target.provider)
        start, wall = self._clock.monotonic(), self._clock.wall()
        error: ProviderError | None = None
        answer: Response | None = None
        try:
            if job.route.stream:
                chunks = [c async for c in provider.stream(request, target.model, limits)]
                answer = assemble(chunks, id="shadow", model=target.model)
            else:
                answer = await provider.complete(request, target.model, limits)
        except ProviderError as exc:
            error = exc
        except ValueError:  # a stream without its finish reason
            error = MalformedResponse("the candidate's stream ended without a finish reason")
        seconds = self._clock.monotonic() - start
        served = await asyncio.to_thread(_message, router, job.served)
        candidate = await asyncio.to_thread(_message, router, answer) if answer else None
        self._record(tier, plan, job, seconds, error, answer, served, candidate, wall)

    def _record(
        self,
        tier: str,
        plan: ShadowPlan,
        job: _Job,
        seconds: float,
        error: ProviderError | None,
        answer: Response | None,
        served: Message | None,
        candidate: Message | None,
        wall: float,
    ) -> None:
        target = plan.target
        who = {names.ATTR_TIER: tier, names.ATTR_PROVIDER: target.provider}
        result = error.error_type if error is not None else "ok"
        self._count(tier, target.provider, result)
        if self._duration is not None:
            self._duration.record(seconds, {**who, names.ATTR_ROLE: "shadow"})
            self._duration.record(job.served_seconds, {**who, names.ATTR_ROLE: "served"})
        attributes: dict[str, Any] = {
            names.FAILOVER_TIER: tier,
            names.FAILOVER_PROVIDER: target.provider,
            names.GEN_AI_REQUEST_MODEL: target.model,
            "failover.shadow.served_by": _served_by(job.served),
            "failover.shadow.seconds": seconds,
            "failover.shadow.served_seconds": job.served_seconds,
        }
        usage = answer.usage if answer is not None else None
        if usage is not None:
            self._charge(tier, plan, usage, attributes)
        if error is not None:
            attributes[names.ERROR_TYPE] = error.error_type
        elif served is not None and candidate is not None:
            found = agreement(served, candidate)
            self._agree(tier, target.provider, found, attributes)
        self._span(job.route, attributes, wall, seconds, error)

    def _charge(
        self, tier: str, plan: ShadowPlan, usage: Usage, attributes: dict[str, Any]
    ) -> None:
        target = plan.target
        attributes[names.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        attributes[names.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        price = self._prices.of(target.provider, target.model)
        if price is None:
            return
        usd = price.cost(usage)
        attributes["failover.shadow.cost_usd"] = usd
        key = (tier, target.provider, target.model)
        self._costs[key] = self._costs.get(key, 0.0) + usd
        lane = self._lanes.get(tier)
        if lane is not None:
            lane.usd += usd

    def _agree(
        self, tier: str, provider: str, found: Agreement, attributes: dict[str, Any]
    ) -> None:
        checks = {"text": found.text_equal}
        if found.tools_equal is not None:
            checks["tool_calls"] = found.tools_equal
        for check, equal in checks.items():
            key = (tier, provider, check, "equal" if equal else "differ")
            self._agreement[key] = self._agreement.get(key, 0) + 1
            attributes[f"failover.shadow.{check}_equal"] = equal
        attributes["failover.shadow.length_ratio"] = found.length_ratio
        if self._ratio is not None and found.length_ratio != float("inf"):
            who = {names.ATTR_TIER: tier, names.ATTR_PROVIDER: provider}
            self._ratio.record(found.length_ratio, who)

    def _span(
        self,
        route: Route,
        attributes: dict[str, Any],
        wall: float,
        seconds: float,
        error: ProviderError | None,
    ) -> None:
        flags = TraceFlags(TraceFlags.SAMPLED if route.sampled else TraceFlags.DEFAULT)
        parent = SpanContext(route.trace_id, route.span_id, is_remote=False, trace_flags=flags)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        start_ns = int(wall * 1e9)
        span = self._tracer.start_span(
            SPAN_SHADOW, context=context, attributes=attributes, start_time=start_ns
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error.error_type))
        span.end(end_time=start_ns + int(seconds * 1e9))

    # ----------------------------------------------------------------------------- metrics
    def _count(self, tier: str, provider: str, result: str) -> None:
        key = (tier, provider, result)
        self._results[key] = self._results.get(key, 0) + 1

    def counts(self) -> dict[tuple[str, str, str], int]:
        """(tier, candidate provider, result) -> calls: ok, an error type, dropped, ..."""
        return dict(self._results)

    def agreements(self) -> dict[tuple[str, str, str, str], int]:
        """(tier, candidate provider, check, equal|differ) -> answers compared."""
        return dict(self._agreement)

    def _instruments(self, meter: Meter) -> None:
        def tally(name: str, source: Any, keys: tuple[str, ...], what: str) -> None:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(value, dict(zip(keys, key, strict=True)))
                    for key, value in source.copy().items()
                ]

            meter.create_observable_counter(
                name, callbacks=[observe], unit=METRIC_UNITS[name], description=what
            )

        tier, provider = names.ATTR_TIER, names.ATTR_PROVIDER
        tally(
            names.METRIC_SHADOW_REQUESTS,
            self._results,
            (tier, provider, names.ATTR_RESULT),
            "Shadow calls by result: ok, the candidate's error type, dropped (queue full), "
            "over_budget (daily allowance used), unsupported (the candidate cannot honour it), "
            "too_big (a served stream over the shadow's 4 MiB), "
            "same_target (the candidate served the request itself).",
        )
        tally(
            names.METRIC_SHADOW_AGREEMENT,
            self._agreement,
            (tier, provider, names.ATTR_CHECK, names.ATTR_RESULT),
            "Shadow answers compared with the served ones: text, tool_calls; equal or differ.",
        )
        tally(
            names.METRIC_SHADOW_COST,
            self._costs,
            (tier, provider, names.ATTR_MODEL),
            "What the shadow calls cost in USD at the configured prices.",
        )
        self._duration = meter.create_histogram(
            names.METRIC_SHADOW_DURATION,
            unit=METRIC_UNITS[names.METRIC_SHADOW_DURATION],
            description="Shadowed requests' time: the served answer's and the candidate's.",
            explicit_bucket_boundaries_advisory=names.DURATION_BUCKETS,
        )
        self._ratio = meter.create_histogram(
            names.METRIC_SHADOW_LENGTH_RATIO,
            unit=METRIC_UNITS[names.METRIC_SHADOW_LENGTH_RATIO],
            description="The candidate's answer length over the served one's.",
            explicit_bucket_boundaries_advisory=names.RATIO_BUCKETS,
        )


def _served_on(route: Route) -> tuple[str, str] | None:
    """The provider and model that served ``route`` (the target its attempts ended on)."""
    if not route.queue or route.position >= len(route.queue):
        return None
    target = route.queue[route.position]
    return target.provider, target.model


def _size(chunks: list[StreamChunk]) -> int:
    """A stream's bytes as the router counts what it keeps (its events, or text)."""
    return sum(len(chunk.raw or chunk.text) for chunk in chunks)


def _served_by(served: Response | list[StreamChunk]) -> str:
    return served.provider if isinstance(served, Response) else ""


def _message(router: Router, answer: Response | list[StreamChunk]) -> Message | None:
    """The message of an answer (a relayed one read from its bytes, a stream assembled); None
    when it cannot be read. Runs on a worker thread: parsing is not the loop's work."""
    if isinstance(answer, list):
        try:
            return assemble(answer, id="served", model="").message
        except ValueError:
            return None
    if answer.message is not UNREAD:
        return answer.message
    readable = read(router.providers, answer)
    return readable.message if readable is not None else None
