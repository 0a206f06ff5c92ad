"""Gemini 3's thought signatures: the check the fake provider makes of a request as Gemini 3
does, and Google's placeholder the gateway's front puts on the first function call of an answer.
"""

from __future__ import annotations

import re
from typing import Any

from controller._errors import BadRequest
from controller.wire._gemini_common import SKIP_SIGNATURE

# Google's documented placeholders for history Gemini did not generate (real signatures are
# opaque, and checked against the conversation they were issued in).
_ACCEPTED_SIGNATURES = frozenset({SKIP_SIGNATURE, "context_engineering_is_the_way_to_go"})


def validates_signatures(model: str) -> bool:
    """Gemini 3 and later models check thought signatures on the current turn's calls."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model)
    return match is not None and int(match.group(1)) >= 3


def require_signatures(data: dict[str, Any]) -> None:
    """As Gemini 3 does: in the current turn (the model turns after the last user turn with
    text), each model turn's first function call needs a ``thoughtSignature``. Malformed
    contents are left to :func:`decode_contents` to report."""
    turns = [
        (i, c.get("role", "user"), c["parts"])
        for i, c in enumerate(data.get("contents") or [])
        if isinstance(c, dict) and isinstance(c.get("parts"), list)
    ]
    start = 0
    for i, role, parts in turns:
        if role != "model" and any(isinstance(p, dict) and "text" in p for p in parts):
            start = i + 1
    for i, role, parts in turns:
        if i < start or role != "model":
            continue
        calls = [p for p in parts if isinstance(p, dict) and "functionCall" in p]
        if not calls:
            continue
        signature = calls[0].get("thoughtSignature")
        if signature not in _ACCEPTED_SIGNATURES:  # the fake issues none of its own
            call = calls[0]["functionCall"]
            name = call.get("name") if isinstance(call, dict) else None
            problem = "is missing a thought_signature" if not signature else "has an invalid"
            raise BadRequest(
                f"Function call {problem} in functionCall parts. Additional data, function "
                f"call `default_api:{name}`, position {i}.",
                status=400,
            )


def signed(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``parts`` with Google's placeholder signature on the first function call: what a
    client replays of an answer another provider made then passes Gemini 3's check when that
    history reaches a Gemini provider as it came (the same-format route adds nothing)."""
    for part in parts:
        if "functionCall" in part:
            part["thoughtSignature"] = SKIP_SIGNATURE
            break
    return parts
