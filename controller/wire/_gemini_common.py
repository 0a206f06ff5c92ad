"""Gemini ``generateContent`` pieces both directions share: function calls and their JSON
arguments, the empty-schema convention, and the error markers one side writes, the other reads."""

from __future__ import annotations

import json
import logging
import re
from typing import Any, NamedTuple

from controller.model import Message
from controller.wire._anthropic_common import arguments_or_empty

__all__ = [
    "CONTEXT_TOO_LONG",
    "EMPTY_SCHEMA",
    "ERROR_INFO",
    "FILTER_REASON",
    "PROVIDER_KIND",
    "RETRY_INFO",
    "SKIP_SIGNATURE",
    "Call",
    "args_text",
    "model_parts",
]

PROVIDER_KIND = "gcp.gemini"
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
CONTEXT_TOO_LONG = re.compile(r"input token count.*exceeds the maximum", re.I | re.S)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
#: ErrorInfo reason we render for ContentFiltered: real Gemini reports a blocked prompt in a 200
#: body (promptFeedback), which an error status cannot carry, so the type travels in the details.
FILTER_REASON = "CONTENT_FILTERED"
# Gemini 3 refuses a replayed function call of the current turn without the thoughtSignature its
# answer carried. Our model does not carry signatures (and calls made by another provider never
# had one), so replayed calls carry the
# value Google documents for history it did not generate: validation is skipped, at some cost
# to the model's reasoning continuity across tool calls.
SKIP_SIGNATURE = "skip_thought_signature_validator"


class Call(NamedTuple):
    id: str | None
    name: str
    arguments: str


def args_text(args: Any) -> str:
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)


def model_parts(message: Message, *, where: str, log: logging.Logger) -> list[Any]:
    """An assistant message → the parts of a ``model`` content. A call whose arguments hold no
    JSON object (one cut by max_tokens) goes with ``args: {}``, logged as ``where`` it sat:
    see :func:`~controller.wire._anthropic_common.arguments_or_empty`."""
    parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    for call in message.tool_calls:
        args = arguments_or_empty(call, log, where=where, sent="sent as args {}")
        function: dict[str, Any] = {"name": call.name, "args": args}
        if call.id:
            function["id"] = call.id
        parts.append({"functionCall": function})
    return parts or [{"text": ""}]
