"""Anthropic Messages API pieces both directions share: the format's constants, how an error's
message marks the two refinements, and tool-argument conversion (object ↔ JSON text; the Gemini
codec, whose wire also wants an object, reads arguments with the same helpers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from controller.model import ToolCall

__all__ = [
    "API_VERSION",
    "CONTEXT_MARKERS",
    "COUNT_TOKENS_PATH",
    "DEFAULT_MAX_TOKENS",
    "FILTER_MARKER",
    "MESSAGES_PATH",
    "PROVIDER_KIND",
    "arguments_or_empty",
    "dump_arguments",
    "read_arguments",
]

PROVIDER_KIND = "anthropic"
API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
#: The API requires max_tokens; this is sent when the caller did not choose one.
DEFAULT_MAX_TOKENS = 4096
# Anthropic has no error *code* for these two: both arrive as invalid_request_error and only the
# message tells them apart (e.g. "prompt is too long: 208310 tokens > 200000 maximum", "Output
# blocked by content filtering policy"). This edge is the ONE place allowed to read message text,
# so that everything downstream decides by type.
CONTEXT_MARKERS = ("prompt is too long", "exceed context limit")
FILTER_MARKER = "content filtering policy"


def dump_arguments(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def read_arguments(text: str) -> dict[str, Any] | None:
    """The argument object in ``text`` (blank reads as ``{}``), or None when it holds none: a
    call cut by max_tokens mid-arguments, or a provider that sent a list, a string or junk."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def arguments_or_empty(
    call: ToolCall, log: logging.Logger, *, where: str, sent: str
) -> dict[str, Any]:
    """The argument object of ``call``, or ``{}`` when its text holds none.

    Such a call is no fault of whoever sent it: an OpenAI model stopped by max_tokens in the
    middle of the arguments leaves exactly that, OpenAI takes it back in a replayed history, and
    the tool result after it still tells what happened. Refusing it would turn a request fit for
    one provider into a 400 on the next, with no failover; so it is sent as ``{}`` and logged
    as a warning naming the call (``where`` it sat, ``sent`` what went instead). The arguments
    themselves are the caller's content and stay out of the log."""
    value = read_arguments(call.arguments)
    if value is None:
        log.warning(
            "%s: arguments of tool call %r (%r) are not a JSON object; %s",
            where,
            call.id,
            call.name,
            sent,
        )
        return {}
    return value
