"""The Anthropic same-format route's two judgements about a client's own request and its
answer: which stream events begin the answer (so failover stays possible until then), and the
one request the API would refuse for a history the gateway made (thinking in a tool loop whose
tool-calling turn another format served)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller import _json
from controller.wire._base import SSEEvent

__all__ = ["begins_content", "ends_with_tool_results", "refused_thinking"]


def begins_content(event: SSEEvent) -> bool:
    """Whether an event that decoded to no chunk still begins the answer: a thinking or
    signature delta, a server tool's block. A text block's empty opening does not (its first
    delta does), nor ``message_start`` or a ping."""
    if event.event == "content_block_delta":
        return True
    if event.event != "content_block_start":
        return False
    try:
        block = _json.loads(event.data).get("content_block")
    except (ValueError, AttributeError):
        return False
    return not (isinstance(block, dict) and block.get("type") == "text")


def refused_thinking(body: Mapping[str, Any]) -> str | None:
    """``"thinking"`` when the client's own request would be refused for it: thinking on, a
    tool loop under way, and the assistant turn that called the tool not starting with a
    thinking block. That turn was served by a provider of another format during an outage
    (which gives no thinking back); the API then answers 400, which is no reason to fail
    over, so the one request goes without thinking instead (its bytes are encoded again)."""
    thinking = body.get("thinking")
    messages = body.get("messages")
    if not isinstance(thinking, dict) or thinking.get("type") == "disabled":
        return None
    if not isinstance(messages, list) or not ends_with_tool_results(messages):
        return None
    turn = next(
        (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        None,
    )
    content = turn.get("content") if turn is not None else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    if content[0].get("type") in ("thinking", "redacted_thinking"):
        return None
    calls = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content)
    return "thinking" if calls else None


def ends_with_tool_results(messages: list[Any]) -> bool:
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
