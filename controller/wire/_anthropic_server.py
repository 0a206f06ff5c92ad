"""Server side of the Anthropic Messages API (the fake provider and the gateway): our answers →
its bytes and events, and the codec that also reads request bodies (decoded in
:mod:`controller.wire._anthropic_request`)."""

from __future__ import annotations

import logging
from typing import Any

from controller import _json
from controller._errors import (
    AuthFailed,
    CallerError,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from controller.model import (
    NO_ORIGIN,
    FinishReason,
    Origin,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from controller.wire._anthropic_common import (
    CONTEXT_MARKERS,
    FILTER_MARKER,
    arguments_or_empty,
)
from controller.wire._anthropic_request import (
    body_object,
    check_generation,
    decode_request,
    field,
)
from controller.wire._common import retry_after_headers, status_for
from controller.wire._sse import SSEParser, sse

__all__ = ["AnthropicServerCodec"]

log = logging.getLogger(__name__)

_FINISH_TO_WIRE = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}
_CALLER_TYPES = {404: "not_found_error", 413: "request_too_large"}
# ---------------------------------------------------------------- our answers -> Anthropic bytes


def _status(err: ProviderError) -> int:
    """Anthropic answers an overload with 529, not the generic 503."""
    if isinstance(err, Overloaded) and err.status is None:
        return 529
    return status_for(err)


def _error_body(err: ProviderError, status: int) -> dict[str, Any]:
    if isinstance(err, RateLimited):
        kind = "rate_limit_error"
    elif isinstance(err, AuthFailed):
        kind = "permission_error" if status == 403 else "authentication_error"
    elif isinstance(err, CallerError):
        kind = _CALLER_TYPES.get(status, "invalid_request_error")
    elif isinstance(err, ModelNotFound):
        kind = "not_found_error"
    elif isinstance(err, Overloaded) and status != 500:
        kind = "overloaded_error"
    elif isinstance(err, ProviderTimeout):
        kind = "timeout_error"
    else:
        kind = "api_error"
    message = err.message
    lowered = message.lower()
    # Mark the two refinements the way Anthropic words them, so error_from keeps their type.
    if isinstance(err, ContextTooLong) and not any(m in lowered for m in CONTEXT_MARKERS):
        message = f"prompt is too long: {message}"
    elif isinstance(err, ContentFiltered) and FILTER_MARKER not in lowered:
        message = f"Output blocked by content filtering policy: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def _response_blocks(response: Response) -> list[dict[str, Any]]:
    message = response.message
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        # The provider did answer: delivered with its stop_reason (max_tokens), input {}.
        args = arguments_or_empty(call, log, where=f"answer {response.id}", sent="sent as input {}")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return blocks


_FOREIGN = -1  # an open block of a relayed stream that is neither text nor a tool call of ours


class _StreamEncoder:
    """Our chunks → a valid Anthropic event sequence (blocks opened and closed in order).

    Tool-call arguments are relayed piece by piece once they open a JSON object. Arguments that
    cannot become one (a list, a string, junk) are held back, so the client's ``input`` stays the
    ``{}`` of ``content_block_start``, as in a whole answer. An object cut short (max_tokens) has
    already been relayed when the cut shows: the SDKs' partial parser keeps its complete members
    (``{}`` when the cut falls in the first value), and the gateway logs it as for a whole answer.
    """

    def __init__(self, *, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._index = 0  # the Anthropic index of the open block, or of the next one
        self._open: str | int | None = None  # "text", our tool-call index, or nothing
        self._tools_seen: set[int] = set()
        self._call: tuple[str, str] = ("", "")  # id and name of the open tool call
        self._args: list[str] = []  # its argument pieces so far
        self._relaying: bool | None = None  # its pieces open an object; None: not known yet
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._delta_sent = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse({"type": "message_start", "message": message}, "message_start")

    def follow(self, raw: bytes) -> None:
        """Keep up with a stream relayed as the provider sent it (``raw``: its events), so
        that :meth:`resume` can take it over: which block is open, at which index."""
        # neither a start nor a stop: nothing changes (find: bytes' ``in`` first tries its
        # operand as an integer, ~1.7x the time, on every relayed event)
        if raw.find(b"content_block_st") < 0:
            return
        for sent in SSEParser(max_event_bytes=len(raw)).feed(raw):  # data: one line or more
            try:
                event = _json.loads(sent.data)
            except ValueError:
                continue
            index = event.get("index") if isinstance(event, dict) else None
            if not isinstance(index, int):
                continue
            if event.get("type") == "content_block_start":
                block = event.get("content_block")
                text = isinstance(block, dict) and block.get("type") == "text"
                self._index, self._open = index, "text" if text else _FOREIGN
            elif event.get("type") == "content_block_stop":
                self._index, self._open = index + 1, None

    @staticmethod
    def terminates(raw: bytes) -> bool:
        """Whether a relayed stream's events ``raw`` (one chunk's, as the provider framed
        them: ``event:message_stop``, its data first, or no name at all) begin with its
        terminator."""
        if b"message_stop" not in raw:
            return False
        events = SSEParser().feed(raw)
        if not events:
            return False
        try:
            data = _json.loads(events[0].data)
        except ValueError:
            return events[0].event == "message_stop"
        kind = data.get("type") if isinstance(data, dict) else None
        return events[0].event == "message_stop" or (not events[0].event and kind == "message_stop")

    def resume(self) -> bytes:
        """Take over a relayed stream (:meth:`follow`): its ``message_start`` went out; an
        open text block goes on, any other open block (thinking) is closed first."""
        if self._open != _FOREIGN:
            return b""
        closing = self._event("content_block_stop")
        self._open, self._index = None, self._index + 1
        return closing

    def encode(self, chunk: StreamChunk) -> bytes:
        out = [self._text(chunk.text)] if chunk.text else []
        if chunk.tool_call is not None:
            out.append(self._tool(chunk.tool_call))
        self._usage = chunk.usage or self._usage
        if chunk.finish_reason is not None and self._finish is None:
            self._finish = chunk.finish_reason
            out.append(self._close())
        out.append(self._message_delta(final=False))
        return b"".join(out)

    def end(self) -> bytes:
        tail = self._close() + self._message_delta(final=True)
        return tail + sse({"type": "message_stop"}, "message_stop")

    def error(self, err: ProviderError) -> bytes:
        return sse(_error_body(err, _status(err)), "error")

    def _event(self, kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "index": self._index, **fields}, kind)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        if self._open != "text":  # warns when the arguments ended holding no object
            call = ToolCall(id=self._call[0], name=self._call[1], arguments="".join(self._args))
            sent = "relayed as it came" if self._relaying else "held back (input {})"
            arguments_or_empty(call, log, where=f"answer {self._id}", sent=sent)
        closing = self._event("content_block_stop")
        self._open = None
        self._index += 1
        return closing

    def _begin(self, block: dict[str, Any], slot: str | int) -> bytes:
        opening = self._close() + self._event("content_block_start", content_block=block)
        self._open = slot
        return opening

    def _text(self, text: str) -> bytes:
        opening = b"" if self._open == "text" else self._begin({"type": "text", "text": ""}, "text")
        delta = {"type": "text_delta", "text": text}
        return opening + self._event("content_block_delta", delta=delta)

    def _tool(self, delta: ToolCallDelta) -> bytes:
        opening = b""
        if self._open != delta.index:
            if delta.index in self._tools_seen or not delta.name:
                raise MalformedResponse(f"tool call {delta.index}: no name, or resumed too late")
            self._tools_seen.add(delta.index)
            call_id = delta.id or f"toolu_{self._id}_{delta.index}"
            block = {"type": "tool_use", "id": call_id, "name": delta.name, "input": {}}
            opening = self._begin(block, delta.index)
            self._call, self._args, self._relaying = (call_id, delta.name), [], None
        return opening + self._arguments(delta.arguments)

    def _arguments(self, piece: str) -> bytes:
        """An ``input_json_delta`` for ``piece`` (with any held-back leading whitespace), or
        nothing while it is unknown whether, or known that, the arguments cannot be an object."""
        if not piece:
            return b""
        self._args.append(piece)
        if self._relaying is None:
            piece = "".join(self._args)
            if not piece.strip():
                return b""
            self._relaying = piece.lstrip().startswith("{")
        if not self._relaying:
            return b""
        json_delta = {"type": "input_json_delta", "partial_json": piece}
        return self._event("content_block_delta", delta=json_delta)

    def _message_delta(self, *, final: bool) -> bytes:
        """Sent once the finish reason and usage are both known (usage may trail), or at end."""
        if self._finish is None or self._delta_sent or (self._usage is None and not final):
            return b""
        self._delta_sent = True
        usage = self._usage or Usage()
        payload = {
            "type": "message_delta",
            "delta": {"stop_reason": _FINISH_TO_WIRE[self._finish], "stop_sequence": None},
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }
        return sse(payload, "message_delta")


class AnthropicServerCodec:
    """Server side: what api.anthropic.com accepts and sends, for the fake and the gateway."""

    def peek_request(self, body: Any) -> tuple[str, bool]:
        """The model and whether to stream, with the checks every provider makes (the body an
        object, a model, max_tokens of at least one, messages a non-empty list): all a request
        needs when an Anthropic-format provider gets it as it came."""
        body = body_object(body)
        model: str = field(body, "model", str, required=True)
        max_tokens = field(body, "max_tokens", int, required=True)
        check_generation(max_tokens, field(body, "messages", list, required=True))
        return model, bool(field(body, "stream", bool))

    def parse_request(
        self, body: Any, path_model: str | None = None, origin: Origin = NO_ORIGIN
    ) -> tuple[str, Request]:
        return decode_request(body_object(body), origin)

    def parse_count_request(self, body: Any, origin: Origin = NO_ORIGIN) -> tuple[str, Request]:
        """A ``POST /v1/messages/count_tokens`` body: the messages body without ``max_tokens``."""
        return decode_request(body_object(body), origin, counting=True)

    def render_count(self, input_tokens: int) -> dict[str, Any]:
        return {"input_tokens": input_tokens}

    def render_response(self, response: Response) -> dict[str, Any]:
        usage = response.usage
        return {
            "id": response.id,
            "type": "message",
            "role": "assistant",
            "model": response.model,
            "content": _response_blocks(response),
            "stop_reason": _FINISH_TO_WIRE[response.finish_reason],
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    def stream_encoder(self, *, id: str, model: str) -> _StreamEncoder:
        return _StreamEncoder(id=id, model=model)

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        status = _status(err)
        return status, _error_body(err, status), retry_after_headers(err)
