"""Counting a request's input tokens, for ``POST /v1/messages/count_tokens``.

Anthropic clients ask for counts often: Claude Code does, to decide when to compact a long
conversation. The count comes from the provider that would serve the request now (the first
target of the tier's current plan: kill switch and controller state applied) when its API can
count, which among the formats here only Anthropic's can. Otherwise it is estimated locally
(:func:`estimate_tokens`): when that provider speaks another format (an Anthropic client served
by OpenAI during an Anthropic outage), when its count failed, or when it took longer than
:data:`COUNT_WITHIN` seconds. A provider's fault never fails a count, and a count is not an
attempt: it emits no routing event and does not feed the error-rate windows.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from controller._errors import ProviderError
from controller.model import Request
from controller.providers.base import CountsTokens
from controller.routing.router import Router

__all__ = ["COUNT_WITHIN", "TokenCount", "count_tokens", "estimate_tokens"]

log = logging.getLogger(__name__)

COUNT_WITHIN = 5.0  # seconds a provider gets to count before the estimate answers instead
_CHARS_PER_TOKEN = 4  # the rule of thumb OpenAI and Anthropic give for English text
_PER_MESSAGE = 3  # role and turn markers


@dataclass(frozen=True, slots=True)
class TokenCount:
    """``input_tokens`` as counted by ``provider`` on ``model``, or estimated (both None)."""

    input_tokens: int
    provider: str | None = None
    model: str | None = None

    @property
    def estimated(self) -> bool:
        return self.provider is None


async def count_tokens(router: Router, request: Request, *, tier: str) -> TokenCount:
    """The input tokens of ``request`` on ``tier``: counted by its serving provider, else
    estimated. Never raises for a provider's fault."""
    plan_for = router.tiers.get(tier)
    plan = router.plan(plan_for) if plan_for is not None else None
    if plan is not None and plan.targets:
        target = plan.targets[0]
        provider = router.providers.get(target.provider)
        if isinstance(provider, CountsTokens):
            timeouts = router.timeouts_for(target.provider).bounded(COUNT_WITHIN)
            try:
                counted = await provider.count_tokens(request, target.model, timeouts)
            except ProviderError as exc:
                log.info(
                    "token count by %s failed (%s); answering with an estimate",
                    target.provider,
                    exc.error_type,
                )
            else:
                if counted is not None:
                    return TokenCount(counted, target.provider, target.model)
    return TokenCount(estimate_tokens(request))


def estimate_tokens(request: Request) -> int:
    """About four characters per token over everything the model reads (system prompt, turns,
    tool calls and results, tool definitions), plus a few tokens per turn. A rough figure for
    a client deciding when a conversation grows too long, not a bill: real tokenizers differ
    by model and language (code and non-Latin text take more tokens per character)."""
    chars = len(request.system or "")
    for message in request.messages:
        chars += len(message.content)
        chars += sum(len(call.name) + len(call.arguments) for call in message.tool_calls)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return math.ceil(chars / _CHARS_PER_TOKEN) + _PER_MESSAGE * len(request.messages)
