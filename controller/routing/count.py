"""Counting a request's input tokens, for ``POST /v1/messages/count_tokens``.

Anthropic clients ask for counts often: Claude Code does, to decide when to compact a long
conversation. The count comes from the provider that would serve the request now (the first
target of the tier's current plan: kill switch and controller state applied) when it can count;
among the client codecs here only Anthropic's implements counting (Gemini's API has a
``countTokens`` method that is not wired in). Otherwise the gateway estimates
(:func:`estimate_tokens`):

* the serving provider speaks another format (an Anthropic client served by OpenAI during an
  Anthropic outage), or it is only partly back (``recovering``) or the tier is in panic;
* its count failed, or took longer than ``within`` seconds (2 by default; Anthropic answers in a
  few hundred milliseconds). After such a failure the provider is not asked again for
  ``backoff`` seconds (30), so a hanging count endpoint costs one slow count, not every count.

Nothing a provider does fails a count. A count is not an attempt: it emits no routing event and
does not feed the error-rate windows. It has telemetry of its own: every count adds one to
``failover.token_counts`` (tier, source ``provider`` / ``estimate``, the provider asked, the
``error.type`` of a failed count), and a provider's count is a CLIENT span
``count_tokens {model}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass

from opentelemetry.metrics import Meter
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer

from controller._clock import Clock, SystemClock
from controller._errors import ProviderError
from controller.model import Request
from controller.providers.base import CountsTokens
from controller.routing.plan import Target
from controller.routing.router import Router
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

__all__ = ["TokenCount", "TokenCounter", "estimate_tokens"]

log = logging.getLogger(__name__)

_CHARS_PER_TOKEN = 3  # English prose is nearer 4; code, JSON and other scripts take more tokens
_PER_MESSAGE = 3  # role and turn markers


@dataclass(frozen=True, slots=True)
class TokenCount:
    """``input_tokens`` as counted by ``provider`` on ``model``, or estimated (both None)."""

    input_tokens: int
    provider: str | None = None
    model: str | None = None


class TokenCounter:
    """Counts for one router. ``within`` bounds a provider's count; a provider whose count
    failed or timed out is skipped for ``backoff`` seconds. ``tracer`` and ``meter`` record
    the counts (see the module's docstring)."""

    def __init__(
        self,
        router: Router,
        *,
        tracer: Tracer | None = None,
        meter: Meter | None = None,
        within: float = 2.0,
        backoff: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._router = router
        self._tracer = tracer or NoOpTracer()
        self._counts = (
            meter.create_counter(
                names.METRIC_TOKEN_COUNTS,
                unit=METRIC_UNITS[names.METRIC_TOKEN_COUNTS],
                description="Token counts answered (POST /v1/messages/count_tokens), by source",
            )
            if meter is not None
            else None
        )
        self._within = within
        self._backoff = backoff
        self._clock = clock or SystemClock()
        self._skip_until: dict[str, float] = {}

    async def count(self, request: Request, *, tier: str) -> TokenCount:
        """The input tokens of ``request`` on ``tier``: counted by its serving provider, else
        estimated. Never raises for anything a provider does."""
        found = self._counting_target(tier)
        target = None if found is None else found[0]
        counted, error = (None, None) if found is None else await self._ask(*found, request)
        if target is not None and counted is not None:
            result = TokenCount(counted, target.provider, target.model)
        else:
            result = TokenCount(estimate_tokens(request))
        if self._counts is not None:
            attributes = {
                names.ATTR_TIER: tier,
                names.ATTR_SOURCE: "estimate" if result.provider is None else "provider",
                names.ATTR_PROVIDER: "" if target is None else target.provider,
            }
            if error is not None:
                attributes[names.ERROR_TYPE] = error
            self._counts.add(1, attributes)
        return result

    def _counting_target(self, tier: str) -> tuple[Target, CountsTokens] | None:
        """The target that serves ``tier`` now and its provider, if that provider can count,
        is fully in service and may be asked."""
        router = self._router
        plan_for = router.tiers.get(tier)
        if plan_for is None:
            return None
        plan = router.plan(plan_for)
        if plan.panic or not plan.targets:
            return None
        target = plan.targets[0]
        if router.state.current.status(target.provider).traffic_share < 1.0:
            return None
        if self._clock.monotonic() < self._skip_until.get(target.provider, 0.0):
            return None
        provider: object = router.providers.get(target.provider)
        if not isinstance(provider, CountsTokens) or not provider.counts_tokens:
            return None  # nothing to ask (its wire format cannot count): no span, no "asked"
        return target, provider

    async def _ask(
        self, target: Target, counter: CountsTokens, request: Request
    ) -> tuple[int | None, str | None]:
        """(the provider's count or None, the error type of a failed count or None)."""
        provider = self._router.providers[target.provider]  # the same object, as a Provider
        timeouts = self._router.timeouts_for(target.provider).bounded(self._within)
        with self._tracer.start_as_current_span(
            f"{names.OPERATION_COUNT_TOKENS} {target.model}",
            kind=SpanKind.CLIENT,
            attributes={
                names.GEN_AI_OPERATION_NAME: names.OPERATION_COUNT_TOKENS,
                names.GEN_AI_PROVIDER_NAME: provider.kind,
                names.GEN_AI_REQUEST_MODEL: target.model,
                names.SERVER_ADDRESS: provider.server_address,
                names.SERVER_PORT: provider.server_port,
                names.FAILOVER_PROVIDER: target.provider,
            },
            record_exception=False,  # an exception's text may quote a provider's answer
            set_status_on_exception=False,
        ) as span:
            try:
                async with asyncio.timeout(self._within):
                    counted = await counter.count_tokens(request, target.model, timeouts)
            except Exception as exc:  # ProviderError, TimeoutError, or a provider's own bug
                error = _error_type(exc)
                span.set_attribute(names.ERROR_TYPE, error)
                span.set_status(Status(StatusCode.ERROR, error))
                self._rest(target.provider, error, type(exc).__name__)
                return None, error
            if counted is not None:
                span.set_attribute(names.GEN_AI_USAGE_INPUT_TOKENS, counted)
            return counted, None

    def _rest(self, provider: str, error: str, kind: str) -> None:
        self._skip_until[provider] = self._clock.monotonic() + self._backoff
        log.info(
            "token count by %s failed (%s, %s); estimating, and for %gs",
            provider,
            error,
            kind,
            self._backoff,
        )


def _error_type(exc: Exception) -> str:
    """The same low-cardinality ``error.type`` values as the chat path's."""
    if isinstance(exc, ProviderError):
        return exc.error_type
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "_OTHER"


def estimate_tokens(request: Request) -> int:
    """About three characters per token over everything the model reads (system prompt, turns,
    tool calls and results, tool definitions), plus a few tokens per turn. A figure for a client
    deciding when a conversation grows too long, not a bill; it leans high on purpose (English
    prose runs nearer four characters per token), since counting low lets a conversation
    outgrow the context window."""
    chars = len(request.system or "")
    for message in request.messages:
        chars += len(message.content)
        chars += sum(len(call.name) + len(call.arguments) for call in message.tool_calls)
    for tool in request.tools:
        schema = json.dumps(tool.parameters, ensure_ascii=False)
        chars += len(tool.name) + len(tool.description) + len(schema)
    return math.ceil(chars / _CHARS_PER_TOKEN) + _PER_MESSAGE * len(request.messages)
