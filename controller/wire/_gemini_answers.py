"""Our answers in Gemini's form: a stream's chunks as Gemini SSE events (function calls
buffered and sent whole), an error as Google's error body (status names, RetryInfo, ErrorInfo),
usage metadata and finish reasons. Used by
:class:`~controller.wire._gemini_server.GeminiServerCodec`.
"""

from __future__ import annotations

import logging
from typing import Any

from controller._errors import ContentFiltered, ContextTooLong, ProviderError, RateLimited
from controller.model import FinishReason, Message, StreamChunk, ToolCall, ToolCallDelta, Usage
from controller.wire._common import status_for
from controller.wire._gemini_common import (
    CONTEXT_TOO_LONG,
    ERROR_INFO,
    FILTER_REASON,
    RETRY_INFO,
    model_parts,
)
from controller.wire._gemini_signatures import signed
from controller.wire._sse import sse

# the logger the encoder's warnings have always had (tests and users filter on it)
log = logging.getLogger("controller.wire._gemini_server")


TO_GEMINI_FINISH = {
    FinishReason.STOP: "STOP",
    FinishReason.TOOL_CALLS: "STOP",
    FinishReason.LENGTH: "MAX_TOKENS",
    FinishReason.CONTENT_FILTER: "SAFETY",
}


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CONTEXT_MESSAGE = "The input token count exceeds the maximum number of tokens allowed"
_DOMAIN = "generativelanguage.googleapis.com"


def usage_metadata(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.total_tokens,
    }


def error_body(err: ProviderError) -> dict[str, Any]:
    status = status_for(err)
    message = err.message
    if isinstance(err, ContextTooLong) and not CONTEXT_TOO_LONG.search(message):
        message = f"{_CONTEXT_MESSAGE}: {message}" if message else f"{_CONTEXT_MESSAGE}."
    fallback = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _GOOGLE_STATUS.get(status, fallback),
    }
    details: list[dict[str, Any]] = []
    if isinstance(err, RateLimited) and err.retry_after is not None:
        details.append({"@type": RETRY_INFO, "retryDelay": _duration(err.retry_after)})
    if isinstance(err, ContentFiltered):
        details.append({"@type": ERROR_INFO, "reason": FILTER_REASON, "domain": _DOMAIN})
    if details:
        error["details"] = details
    return {"error": error}


class GeminiStreamEncoder:
    """Our chunks → Gemini SSE. Gemini sends a function call whole, so streamed argument pieces
    are buffered and the calls flushed with the finishing chunk (or at ``end()``). A call cut
    mid-arguments (finish LENGTH) goes out whole with ``args: {}``, as the Anthropic side
    sends ``input: {}``: the answer is still delivered, with its finishReason."""

    def __init__(self, *, id: str, model: str, sign_calls: bool = False) -> None:
        self._id = id
        self._model = model
        self._calls: dict[int, ToolCall] = {}
        self._sign = sign_calls

    def start(self) -> bytes:
        return b""

    def resume(self) -> bytes:
        """Take over a stream relayed as the provider sent it: each event stands alone."""
        return b""

    def encode(self, chunk: StreamChunk) -> bytes:
        self._model = chunk.model or self._model
        if chunk.tool_call is not None:
            self._buffer(chunk.tool_call)
        parts: list[dict[str, Any]] = [{"text": chunk.text}] if chunk.text else []
        if chunk.finish_reason is not None:
            parts += self._flush()
        if not parts and chunk.finish_reason is None and chunk.usage is None:
            return b""
        return self._event(parts, chunk.finish_reason, chunk.usage)

    def end(self) -> bytes:
        parts = self._flush()
        return self._event(parts, None, None) if parts else b""

    def error(self, err: ProviderError) -> bytes:
        return sse(error_body(err))

    def _buffer(self, delta: ToolCallDelta) -> None:
        seen = self._calls.get(delta.index)
        self._calls[delta.index] = ToolCall(
            id=delta.id or (seen.id if seen else ""),
            name=delta.name or (seen.name if seen else ""),
            arguments=(seen.arguments if seen else "") + delta.arguments,
        )

    def _flush(self) -> list[dict[str, Any]]:
        calls = tuple(call for _, call in sorted(self._calls.items()))
        self._calls = {}
        if not calls:
            return []
        message = Message(role="assistant", tool_calls=calls)
        parts = model_parts(message, where=f"answer {self._id}", log=log)
        return signed(parts) if self._sign else parts

    def _event(
        self, parts: list[dict[str, Any]], finish: FinishReason | None, usage: Usage | None
    ) -> bytes:
        body: dict[str, Any] = {}
        if parts or finish is not None:
            candidate: dict[str, Any] = {"content": {"parts": parts or [{"text": ""}]}}
            candidate["content"]["role"] = "model"
            if finish is not None:
                candidate["finishReason"] = TO_GEMINI_FINISH[finish]
            candidate["index"] = 0
            body["candidates"] = [candidate]
        if usage is not None:
            body["usageMetadata"] = usage_metadata(usage)
        body["modelVersion"] = self._model
        body["responseId"] = self._id
        return sse(body)


def _duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form: decimal seconds, at most nine fractional digits,
    never an exponent (``:g`` wrote 3.4e+08s)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
