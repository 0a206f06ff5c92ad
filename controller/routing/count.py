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
does not feed the error-rate windows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass

from controller._clock import Clock, SystemClock
from controller.model import Request
from controller.providers.base import CountsTokens
from controller.routing.plan import Target
from controller.routing.router import Router

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
    failed or timed out is skipped for ``backoff`` seconds."""

    def __init__(
        self,
        router: Router,
        *,
        within: float = 2.0,
        backoff: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._router = router
        self._within = within
        self._backoff = backoff
        self._clock = clock or SystemClock()
        self._skip_until: dict[str, float] = {}

    async def count(self, request: Request, *, tier: str) -> TokenCount:
        """The input tokens of ``request`` on ``tier``: counted by its serving provider, else
        estimated. Never raises for anything a provider does."""
        target = self._counting_target(tier)
        if target is not None:
            counted = await self._ask(target, request)
            if counted is not None:
                return TokenCount(counted, target.provider, target.model)
        return TokenCount(estimate_tokens(request))

    def _counting_target(self, tier: str) -> Target | None:
        """The target that serves ``tier`` now, if it is fully in service and may be asked."""
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
        return target

    async def _ask(self, target: Target, request: Request) -> int | None:
        provider: object = self._router.providers.get(target.provider)
        if not isinstance(provider, CountsTokens):
            return None
        timeouts = self._router.timeouts_for(target.provider).bounded(self._within)
        try:
            async with asyncio.timeout(self._within):
                return await provider.count_tokens(request, target.model, timeouts)
        except Exception as exc:  # ProviderError, TimeoutError, or a provider's own bug
            self._skip_until[target.provider] = self._clock.monotonic() + self._backoff
            reason = getattr(exc, "error_type", None) or type(exc).__name__  # never the text
            log.info(
                "token count by %s failed (%s); estimating, and for %gs",
                target.provider,
                reason,
                self._backoff,
            )
            return None


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
