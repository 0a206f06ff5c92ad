"""Reasoning ("thinking") across formats: effort levels and token budgets, and which models take
them.

OpenAI asks for an effort level (``reasoning_effort``), Anthropic for a thinking budget in
tokens (``thinking.budget_tokens``, or ``adaptive``) and Gemini for a budget too
(``thinkingConfig.thinkingBudget``). One is mapped onto the other by the tables below: a level
becomes the budget in the middle of what it means, a budget the level whose range holds it.

A model that does not reason refuses these parameters (OpenAI's gpt-4o answers 400 to
``reasoning_effort``; Claude 3.5 to ``thinking``), so a request that asks for reasoning is not
sent to such a model in another format: its codec reports ``reasoning`` as unsupported and the
router skips it, unless the config lets the gateway drop it (``translation.droppable:
[reasoning]``). Which models reason is told by name, from the vendors' model families; a
model named otherwise (a new family) is taken to reason, since every family released since
2025 does.
"""

from __future__ import annotations

import re

from controller.model import Reasoning

__all__ = ["NONE", "budget_for", "effort_for", "gemini_budget", "reasons"]

NONE = "none"  # the effort level that turns reasoning off (OpenAI's gpt-5.1 and later)
# The budget (tokens) an effort level stands for.
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
_BUDGETS["max"] = 32768
_DYNAMIC = -1  # Gemini's thinkingBudget: the model decides how much to think
# OpenAI's levels for each level a client may name: Anthropic's "max" and "xhigh" are OpenAI's
# "high" (its "xhigh" is taken by few models); a level nobody knows, "medium" (the default).
_EFFORTS = {level: level for level in ("none", "minimal", "low", "medium", "high")}
_EFFORTS |= {"xhigh": "high", "max": "high"}
# The smallest budget of each level, largest first: a budget gets the first level it reaches.
_LEVELS = (("high", 16384), ("medium", 4096), ("low", 1))
# Model families, by name, that do not take reasoning parameters.
_NOT_REASONING = {
    "openai": re.compile(r"^(?!o\d|gpt-5|codex)"),  # only o1/o3/o4..., gpt-5*, codex* reason
    "responses": re.compile(r"^(?!o\d|gpt-5|codex)"),  # the same models, by the Responses API
    "anthropic": re.compile(r"^claude-(?:instant|2|3-(?:5-|opus|sonnet|haiku))"),
    "gemini": re.compile(r"^(?:models/)?gemini-(?:1\.|2\.0)"),
}


def budget_for(reasoning: Reasoning, default: int = _BUDGETS["medium"]) -> int:
    """The thinking budget ``reasoning`` asks for (0 for effort ``none``)."""
    if reasoning.budget_tokens is not None:
        return reasoning.budget_tokens
    if reasoning.effort == NONE:
        return 0
    return _BUDGETS.get(reasoning.effort or "", default)


def effort_for(reasoning: Reasoning) -> str | None:
    """The OpenAI effort level ``reasoning`` asks for; None: the model's default."""
    effort = reasoning.effort
    if effort is not None:
        return _EFFORTS.get(effort, "medium")
    if reasoning.budget_tokens is None:
        return None  # adaptive: the model decides, which is what no level says
    if reasoning.budget_tokens <= 0:
        return NONE
    return next(level for level, least in _LEVELS if reasoning.budget_tokens >= least)


def gemini_budget(reasoning: Reasoning, model: str) -> int:
    """``thinkingBudget`` for ``model``, within what its family takes: Flash and Flash-Lite
    up to 24,576 tokens (Flash-Lite from 512), Pro from 128 to 32,768 and never 0 (it cannot
    stop thinking); -1 (the model decides) for Anthropic's adaptive thinking."""
    budget = budget_for(reasoning, default=_DYNAMIC)
    if budget == _DYNAMIC:
        return budget
    if "pro" in model:
        return min(max(budget, 128), 32768)
    if budget == 0:
        return 0
    floor = 512 if "lite" in model else 1
    return min(max(budget, floor), 24576)


def reasons(wire_format: str, model: str) -> bool:
    """Whether ``model`` of ``wire_format`` takes reasoning parameters (see the module doc)."""
    pattern = _NOT_REASONING.get(wire_format)
    return pattern is None or pattern.match(model) is None
