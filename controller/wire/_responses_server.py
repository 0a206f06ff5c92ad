"""Server side of the OpenAI Responses API (the gateway's ``/v1/responses`` front): requests →
our Request (:mod:`._responses_request`); our answers → a ``response`` object and the event
sequence the official SDKs and Codex CLI parse.

A stream is, in order: ``response.created`` and ``response.in_progress`` (the response, status
``in_progress``, no output); per output item ``response.output_item.added``, its deltas
(``response.content_part.added`` + ``response.output_text.delta`` for a message,
``response.function_call_arguments.delta`` for a call), then its closing events
(``response.output_text.done`` + ``response.content_part.done``, or
``response.function_call_arguments.done``) and ``response.output_item.done`` with the whole item;
finally ``response.completed`` (``response.incomplete`` when the answer hit its token limit or a
filter) carrying the whole response with usage. Every event carries ``type`` and a
``sequence_number`` and is named by an ``event:`` line. A stream that fails after it started
ends with ``response.failed`` (the response, status ``failed``, with its ``error``): the SDK's
``get_final_response`` then raises, and Codex CLI reports the error (and retries a retryable
one) instead of taking a truncated answer.
"""

from __future__ import annotations

from typing import Any

from controller import _json
from controller._clock import Clock, SystemClock
from controller._errors import ProviderError
from controller.model import (
    NO_ORIGIN,
    FinishReason,
    Message,
    Origin,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from controller.wire._common import retry_after_headers, status_for
from controller.wire._openai_common import error_body
from controller.wire._responses_request import decode_request, peek_request

__all__ = ["ResponsesServerCodec", "ResponsesStreamEncoder"]

_INCOMPLETE = {
    FinishReason.LENGTH: "max_output_tokens",
    FinishReason.CONTENT_FILTER: "content_filter",
}
# What the answer echoes of the request when it was sent (the real API echoes every setting).
_ECHOED = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)
_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": False,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def response_id(ident: str) -> str:
    """A Responses id (``resp_...``) for an answer's id."""
    return ident if ident.startswith("resp_") else f"resp_{ident}"


def usage_out(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def message_item(ident: str, text: str, *, done: bool = True) -> dict[str, Any]:
    content = [_text_part(text)] if done else []
    status = "completed" if done else "in_progress"
    return {
        "id": ident,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def call_item(ident: str, call: ToolCall, *, done: bool = True) -> dict[str, Any]:
    return {
        "id": ident,
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "arguments": call.arguments if done else "",
        "call_id": call.id,
        "name": call.name,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _item_id(prefix: str, ident: str, index: int) -> str:
    return f"{prefix}_{ident.removeprefix('resp_')}_{index}"


def output_items(ident: str, message: Message) -> list[dict[str, Any]]:
    """An answer's ``output``: its text as one message item, then one item per call."""
    items: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        items.append(message_item(_item_id("msg", ident, 0), message.content))
    for call in message.tool_calls:
        items.append(call_item(_item_id("fc", ident, len(items)), call))
    return items


def response_object(
    ident: str,
    model: str,
    created: int,
    *,
    body: Any = None,
    status: str = "completed",
    output: list[dict[str, Any]] | None = None,
    usage: Usage | None = None,
    finish: FinishReason | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object; the request's settings echoed from ``body`` where it is known."""
    sent = body if isinstance(body, dict) else {}
    echoed = {key: sent.get(key, default) for key, default in _DEFAULTS.items()}
    if echoed["metadata"] is None:
        echoed["metadata"] = {}
    reason = _INCOMPLETE.get(finish) if finish is not None else None
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if reason and status == "completed" else status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": reason} if reason else None,
        "model": model,
        "output": output or [],
        **echoed,
        "usage": usage_out(usage) if usage is not None else None,
    }


class ResponsesServerCodec:
    """The ``/v1/responses`` front's codec. ``clock`` supplies ``created_at``."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()

    def peek_request(self, body: Any) -> tuple[str, bool]:
        return peek_request(body)

    def parse_request(
        self, body: Any, path_model: str | None = None, origin: Origin = NO_ORIGIN
    ) -> tuple[str, Request]:
        return decode_request(body, origin)

    def render_response(self, response: Response, body: Any = None) -> dict[str, Any]:
        ident = response_id(response.id)
        return response_object(
            ident,
            response.model,
            int(self._clock.wall()),
            body=body,
            output=output_items(ident, response.message),
            usage=response.usage,
            finish=response.finish_reason,
        )

    def stream_encoder(self, *, id: str, model: str, body: Any = None) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(
            id=response_id(id), model=model, created=int(self._clock.wall()), body=body
        )

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        return status_for(err), error_body(err), retry_after_headers(err)


class ResponsesStreamEncoder:
    """Our chunks → the Responses event sequence (module docstring). One per stream."""

    def __init__(self, *, id: str, model: str, created: int, body: Any = None) -> None:
        self._id = id
        self._model = model
        self._created = created
        self._body = body
        self._sequence = 0
        self._items: list[dict[str, Any]] = []  # the finished output items
        self._text: list[str] | None = None  # the open message item's text
        self._call: ToolCall | None = None  # the open function call item
        self._call_index = -1  # the ToolCallDelta.index of the open call
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._started = False

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._response("in_progress")
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def encode(self, chunk: StreamChunk) -> bytes:
        out = [self.start()]
        self._model = chunk.model or self._model
        if chunk.text:
            out.append(self._text_delta(chunk.text))
        if chunk.tool_call is not None:
            out.append(self._call_delta(chunk.tool_call))
        self._finish = chunk.finish_reason or self._finish
        self._usage = chunk.usage or self._usage
        return b"".join(out)

    def end(self) -> bytes:
        out = [self.start(), self._close()]
        response = self._response("completed", output=self._items)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=response))
        return b"".join(out)

    def error(self, err: ProviderError) -> bytes:
        """``response.failed``: the response so far, status ``failed``, with the error's code
        and message (the code as the real API's: ``rate_limit_exceeded``, ``server_error``...)."""
        fields = error_body(err)["error"]
        code = fields["code"] or fields["type"]
        failed = {"code": code, "message": fields["message"]}
        response = self._response("failed", output=self._items, error=failed)
        return self.start() + self._event("response.failed", response=response)

    # ----------------------------------------------------------------- items
    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self._call is not None:
            out += self._close()
        index = len(self._items)
        ident = _item_id("msg", self._id, index)
        if self._text is None:
            self._text = []
            item = message_item(ident, "", done=False)
            out += self._event("response.output_item.added", output_index=index, item=item)
            out += self._event(
                "response.content_part.added",
                item_id=ident,
                output_index=index,
                content_index=0,
                part=_text_part(""),
            )
        self._text.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=ident,
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _call_delta(self, delta: ToolCallDelta) -> bytes:
        out = b""
        new = self._call is None or delta.index != self._call_index
        if new:
            out += self._close()
            self._call_index = delta.index
            self._call = ToolCall(id=delta.id or "", name=delta.name or "", arguments="")
            item = call_item(_item_id("fc", self._id, len(self._items)), self._call, done=False)
            out += self._event(
                "response.output_item.added", output_index=len(self._items), item=item
            )
        call = self._call
        assert call is not None
        if not delta.arguments:
            return out
        self._call = ToolCall(
            id=call.id, name=call.name, arguments=call.arguments + delta.arguments
        )
        return out + self._event(
            "response.function_call_arguments.delta",
            item_id=_item_id("fc", self._id, len(self._items)),
            output_index=len(self._items),
            delta=delta.arguments,
        )

    def _close(self) -> bytes:
        """The closing events of the open item, if one is open."""
        index = len(self._items)
        if self._text is not None:
            text, self._text = "".join(self._text), None
            ident = _item_id("msg", self._id, index)
            where = {"item_id": ident, "output_index": index, "content_index": 0}
            item = message_item(ident, text)
            self._items.append(item)
            return (
                self._event("response.output_text.done", **where, text=text, logprobs=[])
                + self._event("response.content_part.done", **where, part=_text_part(text))
                + self._event("response.output_item.done", output_index=index, item=item)
            )
        if self._call is not None:
            call, self._call = self._call, None
            call = ToolCall(id=call.id, name=call.name, arguments=call.arguments or "{}")
            ident = _item_id("fc", self._id, index)
            item = call_item(ident, call)
            self._items.append(item)
            return self._event(
                "response.function_call_arguments.done",
                item_id=ident,
                output_index=index,
                name=call.name,
                arguments=call.arguments,
            ) + self._event("response.output_item.done", output_index=index, item=item)
        return b""

    # ----------------------------------------------------------------- framing
    def _response(
        self,
        status: str,
        *,
        output: list[dict[str, Any]] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self._id,
            self._model,
            self._created,
            body=self._body,
            status=status,
            output=list(output or []),
            usage=self._usage if status != "in_progress" else None,
            finish=self._finish if status == "completed" else None,
            error=error,
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _json.dumps(data) + b"\n\n"
