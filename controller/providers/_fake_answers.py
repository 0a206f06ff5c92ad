"""What the fake provider (:mod:`controller.providers.fake`) answers, apart from its server
and its faults: the deterministic answer to a request (:func:`answer_to`), the stream chunks it
is sent as (:func:`stream_chunks`), and the rate-limit headers on it (:class:`RateLimits`,
:func:`rate_headers`). Each server codec turns these into its own wire format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["RateLimits", "Window", "answer_to", "count_tokens", "rate_headers", "stream_chunks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """Rate-limit headers the fake sends on every answer, in the vendor's format of the
    request: OpenAI's ``x-ratelimit-*`` (reset as a duration like ``6m0s``), Anthropic's
    ``anthropic-ratelimit-*`` (reset as an RFC 3339 time), none for Gemini. A window of
    ``requests`` requests and ``tokens`` tokens (each request takes its input words) that is
    full again ``window_seconds`` after it started, on the fake's ``wall`` clock."""

    requests: int = 1000
    tokens: int = 100_000
    window_seconds: float = 60.0


@dataclass(slots=True)
class Window:
    limits: RateLimits
    started: float
    requests: int = 0
    tokens: int = 0


def rate_headers(window: Window, fmt: str, request: Request, now: float) -> dict[str, str]:
    """This request's share of ``window`` taken at ``now``, and the headers (in ``fmt``, the
    vendor's format; never called for Gemini's, which sends none) that say what is left."""
    limits = window.limits
    if now >= window.started + limits.window_seconds:
        window.started, window.requests, window.tokens = now, 0, 0
    window.requests += 1
    window.tokens += count_tokens(request)
    left_requests = max(0, limits.requests - window.requests)
    left_tokens = max(0, limits.tokens - window.tokens)
    ends = window.started + limits.window_seconds
    if fmt == "anthropic":
        stamp = datetime.fromtimestamp(ends, UTC).isoformat(timespec="seconds")
        reset = stamp.replace("+00:00", "Z")
        head = "anthropic-ratelimit-"
        return {
            f"{head}requests-limit": str(limits.requests),
            f"{head}requests-remaining": str(left_requests),
            f"{head}requests-reset": reset,
            f"{head}tokens-limit": str(limits.tokens),
            f"{head}tokens-remaining": str(left_tokens),
            f"{head}tokens-reset": reset,
            f"{head}input-tokens-limit": str(limits.tokens),
            f"{head}input-tokens-remaining": str(left_tokens),
            f"{head}input-tokens-reset": reset,
        }
    left = _go_duration(max(0.0, ends - now))
    return {
        "x-ratelimit-limit-requests": str(limits.requests),
        "x-ratelimit-remaining-requests": str(left_requests),
        "x-ratelimit-reset-requests": left,
        "x-ratelimit-limit-tokens": str(limits.tokens),
        "x-ratelimit-remaining-tokens": str(left_tokens),
        "x-ratelimit-reset-tokens": left,
    }


def answer_to(request: Request, model: str, *, rid: str, provider: str, reply: str) -> Response:
    """The deterministic answer to ``request`` (see :mod:`controller.providers.fake`): ``rid``
    its id, ``provider`` the fake's name, ``reply`` the text it answers."""
    last = request.messages[-1] if request.messages else Message(role="user")
    usage = Usage(input_tokens=count_tokens(request), output_tokens=0)
    if last.role == "tool":
        text = f"tool said: {last.content}"
    elif request.tools and request.tool_choice != "none":
        tool = request.tools[0]
        if request.tool_choice not in (None, "auto", "required"):
            tool = next((t for t in request.tools if t.name == request.tool_choice), tool)
        call = ToolCall(
            id=f"call_{rid}",
            name=tool.name,
            arguments=json.dumps({"input": last.content}),
        )
        message = Message(role="assistant", tool_calls=(call,))
        usage = Usage(input_tokens=usage.input_tokens, output_tokens=12)
        return Response(
            id=rid,
            model=model,
            message=message,
            finish_reason=FinishReason.TOOL_CALLS,
            usage=usage,
            provider=provider,
        )
    elif request.response_format is not None:  # structured output: an instance of it
        text = json.dumps(_instance(request.response_format.schema or {"type": "object"}))
    else:
        text = reply
        if last.role == "assistant" and text.startswith(last.content):
            text = text[len(last.content) :]  # a prefill: the answer goes on from it
    return Response(
        id=rid,
        model=model,
        message=Message(role="assistant", content=text),
        finish_reason=FinishReason.STOP,
        usage=Usage(input_tokens=usage.input_tokens, output_tokens=len(text.split())),
        provider=provider,
    )


_SCALARS: dict[str, Any] = {"string": "text", "integer": 0, "number": 0, "boolean": False}


def _instance(schema: Mapping[str, Any]) -> Any:
    """The smallest value valid against a plain JSON schema (types, properties, required,
    enum, arrays): what the fake answers when asked for structured output."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _instance(properties.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return []
    return _SCALARS.get(kind)


def stream_chunks(answer: Response) -> Iterator[StreamChunk]:
    """Split an answer into stream chunks: words of text, tool calls in two argument pieces."""
    words = answer.message.content.split(" ") if answer.message.content else []
    for i, word in enumerate(words):
        yield StreamChunk(text=word if i == 0 else " " + word, model=answer.model)
    for index, call in enumerate(answer.message.tool_calls):
        half = len(call.arguments) // 2
        yield StreamChunk(tool_call=ToolCallDelta(index=index, id=call.id, name=call.name))
        yield StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[:half]))
        yield StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[half:]))
    yield StreamChunk(finish_reason=answer.finish_reason, usage=answer.usage)


def _go_duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def count_tokens(request: Request) -> int:
    text = (request.system or "") + " ".join(m.content for m in request.messages)
    return max(1, len(text.split()))
