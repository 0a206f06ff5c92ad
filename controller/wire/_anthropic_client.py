"""Client side of the Anthropic Messages API: our Request → ``POST /v1/messages``, and answers,
stream events and errors → our types. :mod:`controller.wire.anthropic` explains the mapping."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ProviderError,
)
from controller.model import (
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Request,
    Response,
    Source,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Untranslatable,
    Usage,
)
from controller.wire._anthropic_common import (
    API_VERSION,
    CONTEXT_MARKERS,
    COUNT_TOKENS_PATH,
    DEFAULT_MAX_TOKENS,
    FILTER_MARKER,
    MESSAGES_PATH,
    PROVIDER_KIND,
    arguments_or_empty,
    dump_arguments,
)
from controller.wire._anthropic_relay import begins_content, refused_thinking
from controller.wire._base import HttpCall, SSEEvent
from controller.wire._common import (
    error_for_status,
    json_or_none,
    load_event,
    load_json,
    parse_retry_after,
    require,
)
from controller.wire._media import PDF, TEXT, media_of, text_of
from controller.wire._reasoning import budget_for
from controller.wire._relay import relay_for, relayed_body
from controller.wire._sse import sse

__all__ = ["AnthropicClientCodec"]

log = logging.getLogger(__name__)

# pause_turn (a server tool paused a long turn) ends the answer as far as our model can say.
# model_context_window_exceeded is a newer reason meaning the output ran out of room.
_FINISH_FROM_WIRE = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
# What a client's request says that the API reads from headers: its version and betas.
RELAYED_HEADERS = ("anthropic-version", "anthropic-beta")
_TERMINATOR = sse({"type": "message_stop"}, "message_stop")
_MIN_THINKING = 1024  # the smallest thinking budget the API takes
_MIN_TOP_P = 0.95  # the lowest top_p the API takes with thinking
# What count_tokens does not take: generation settings, and metadata (it bills nobody).
_GENERATION_ONLY = ("max_tokens", "temperature", "top_p", "stop_sequences", "stream", "metadata")


class _RedactedHeaders(dict[str, str]):
    """Request headers whose repr hides the API key, should anyone log the headers themselves."""

    def __repr__(self) -> str:
        shown = {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in self.items()}
        return repr(shown)


# ---------------------------------------------------------------- our Request -> Anthropic body


def _encode_message(message: Message, where: str) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id or "",
            "content": message.content,
        }
        if message.parts:
            block["content"] = _part_blocks(message.parts)
        if message.is_error:
            block["is_error"] = True
        return "user", [block]
    if message.role == "user" and message.parts:
        return "user", _part_blocks(message.parts)
    if message.role == "user":
        return "user", [{"type": "text", "text": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        args = arguments_or_empty(call, log, where=where, sent="sent as input {}")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return "assistant", blocks


def _part_blocks(parts: Sequence[Part]) -> list[dict[str, Any]]:
    """Text, image and document blocks, in order (empty text left out: the API refuses it)."""
    return [_part_block(part) for part in parts if not isinstance(part, TextPart) or part.text]


def _part_block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    source: dict[str, Any] = {"type": "base64", "media_type": part.media_type, "data": part.data}
    if part.url:
        source = {"type": "url", "url": part.url}
    elif isinstance(part, DocumentPart) and part.media_type == TEXT:
        source = {"type": "text", "media_type": TEXT, "data": text_of(part)}
    if isinstance(part, ImagePart):
        return {"type": "image", "source": source}
    title = part.title or part.name  # a file name is the only label such a document has
    return {"type": "document", "source": source} | ({"title": title} if title else {})


def _lost_media(request: Request) -> tuple[Untranslatable, ...]:
    """A document is a PDF (base64 or URL) or plain text (its text) here, nothing else."""
    for part in media_of(request.messages):
        if not isinstance(part, DocumentPart) or part.media_type == PDF:
            continue
        if part.media_type != TEXT or part.url:
            return (Untranslatable("document_type", "messages"),)
    return ()


def _encode_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our turns → Anthropic turns, folding tool results (and a text after them) into one."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for index, message in enumerate(messages):
        role, blocks = _encode_message(message, f"messages.{index}")
        last = turns[-1] if turns else None
        if role == "user" and last and last[0] == "user" and last[1][-1]["type"] == "tool_result":
            last[1].extend(blocks)
        else:
            turns.append((role, blocks))
    return [{"role": role, "content": _collapse(blocks)} for role, blocks in turns]


def _collapse(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A turn that is one text block is sent as a plain string, as SDK users write it."""
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _encode_tool(tool: ToolDefinition) -> dict[str, Any]:
    encoded: dict[str, Any] = {"name": tool.name}
    if tool.description:
        encoded["description"] = tool.description
    encoded["input_schema"] = tool.parameters
    return encoded


def _encode_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _encode_request(request: Request, model: str) -> dict[str, Any]:
    max_tokens = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if request.system is not None:
        body["system"] = request.system
    body["messages"] = _encode_messages(request.messages)
    if request.tools:
        body["tools"] = [_encode_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _encode_tool_choice(request.tool_choice)
    sampling = {"temperature": request.temperature, "top_p": request.top_p}
    body.update({key: value for key, value in sampling.items() if value is not None})
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.parallel_tool_calls is False and request.tools:
        choice = body.setdefault("tool_choice", {"type": "auto"})
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    wanted = request.response_format
    if wanted is not None and wanted.schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": wanted.schema}}
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    thinking = _thinking(request, max_tokens)
    if thinking is not None:
        body["thinking"] = thinking
    if request.stream:
        body["stream"] = True
    return body


def _thinking(request: Request, max_tokens: int) -> dict[str, Any] | None:
    """Extended thinking for the request's reasoning: its budget, at least the API's 1,024
    tokens and less than ``max_tokens`` (which counts the thinking too, as OpenAI's limit
    counts the reasoning). None where the API refuses thinking, which the client's own API
    took: no room for the budget, effort ``none``, a forced tool call, a sampling setting
    other than its default, or a tool loop under way (the last turn a tool result: the turn
    that asked for the call then had to start with a thinking block, which no other format
    gives back)."""
    reasoning = request.reasoning
    if reasoning is None or not _may_think(request):
        return None
    budget = min(budget_for(reasoning), max_tokens - 1)
    if budget < _MIN_THINKING:
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _may_think(request: Request) -> bool:
    if request.tool_choice not in (None, "auto", "none"):
        return False  # a forced tool call ("any" or a named tool)
    if request.temperature not in (None, 1.0) or (request.top_p or 1.0) < _MIN_TOP_P:
        return False
    return not request.messages or request.messages[-1].role != "tool"


# ---------------------------------------------------------------- Anthropic answers -> ours


def _finish(value: Any, model: str) -> FinishReason:
    """Map stop_reason; a reason added after this code was written ends the answer normally."""
    if not isinstance(value, str):
        raise MalformedResponse("message: stop_reason missing or not str", model=model)
    return _FINISH_FROM_WIRE.get(value, FinishReason.STOP)


def _input_tokens(usage: dict[str, Any], model: str) -> int:
    """Anthropic counts cache reads/writes apart from input_tokens; our input is their sum."""
    total: int = require(usage, "input_tokens", int, what="usage", model=model)
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        extra = usage.get(key)
        total += extra if isinstance(extra, int) else 0
    return total


def _cache_reads(usage: dict[str, Any]) -> int:
    """Of our input, what Anthropic read from its prompt cache (``cache_read_input_tokens``)."""
    reads = usage.get("cache_read_input_tokens")
    return reads if isinstance(reads, int) and not isinstance(reads, bool) and reads > 0 else 0


def _usage(data: dict[str, Any], model: str) -> Usage:
    usage = require(data, "usage", dict, what="message", model=model)
    output = require(usage, "output_tokens", int, what="usage", model=model)
    return Usage(_input_tokens(usage, model), output, _cache_reads(usage))


def _response_content(blocks: list[Any], model: str) -> tuple[str, tuple[ToolCall, ...]]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        kind = require(block, "type", str, what="content block", model=model)
        if kind == "text":
            texts.append(require(block, "text", str, what="text block", model=model))
        elif kind == "tool_use":
            what = "tool_use block"
            call_id = require(block, "id", str, what=what, model=model)
            name = require(block, "name", str, what=what, model=model)
            args = require(block, "input", dict, what=what, model=model)
            calls.append(ToolCall(id=call_id, name=name, arguments=dump_arguments(args)))
    return "".join(texts), tuple(calls)


def _error_payload(body: bytes | str) -> tuple[str, str]:
    """(error type, message) from an error body; anything unreadable becomes its own text."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        message = message if isinstance(message, str) else ""
        return (kind if isinstance(kind, str) else ""), message
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return "", text.strip()[:200]


def _error_for(
    status: int | None, kind: str, message: str, *, model: str, retry_after: float | None = None
) -> ProviderError:
    """Map an error; ``status`` is None for an in-stream error (the HTTP answer was 200)."""
    code = status if status is not None else _STATUS_BY_TYPE.get(kind, 500)
    err = error_for_status(code, message or kind, model=model, retry_after=retry_after)
    if kind == "billing_error":  # no credit: the account is unusable, like a suspended key
        return AuthFailed(message, model=model, status=code)
    if type(err) is not BadRequest or kind != "invalid_request_error":
        return err
    lowered = message.lower()  # the documented exception: see CONTEXT_MARKERS
    if any(marker in lowered for marker in CONTEXT_MARKERS):
        return ContextTooLong(message, model=model, status=code)
    if FILTER_MARKER in lowered:
        return ContentFiltered(message, model=model, status=code)
    return err


class _StreamDecoder:
    """Anthropic SSE events → our chunks. Content-block indexes map to 0-based tool-call indexes."""

    # The key of a text_delta's text, for the reader's TextShape (controller.wire._shape).
    shape_keys = (b'"text"', b"")

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._done = False
        self._open: dict[int, str | int] = {}  # block index → "text" | "ignored" | tool index
        self._seen: set[int] = set()
        self._tools = 0
        self._input = 0
        self._cached = 0  # of _input, the cache reads message_start reported
        self._served_model: str | None = None

    @property
    def done(self) -> bool:
        return self._done

    def quick(self, event: SSEEvent) -> str | None:
        """The text of a ``text_delta`` to an open text block (most of a stream's events), read
        in one step; None for any other event (read it with :meth:`feed`). What it reads
        changes nothing of the decoder's state."""
        if event.event != "content_block_delta" or self._done or self._served_model is not None:
            return None
        return self._text_delta(event.data)

    def quick_data(self, name: bytes, data: bytes) -> str | None:
        """:meth:`quick` of an event named ``name`` whose data is ``data``, read from their bytes
        (:meth:`SSEParser.whole <controller.wire._sse.SSEParser.whole>`): bytes that are not
        UTF-8 are not JSON to orjson either, and go to the full read, which decodes them."""
        if name != b"content_block_delta" or self._done or self._served_model is not None:
            return None
        return self._text_delta(data)

    def _text_delta(self, raw: str | bytes) -> str | None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict or data.get("type") != "content_block_delta":
            return None
        index, delta = data.get("index"), data.get("delta")
        if type(index) is not int or self._open.get(index) != "text" or type(delta) is not dict:
            return None
        text = delta.get("text")
        return text if delta.get("type") == "text_delta" and type(text) is str else None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        data = load_event(event.data, model=self._model)
        kind = require(data, "type", str, what="stream event", model=self._model)
        if event.event and event.event != kind:
            raise self._bad(f"event {event.event!r} carries data of type {kind!r}")
        if kind == "error":
            kind, message = _error_payload(event.data)
            raise _error_for(None, kind, message, model=self._model)
        if kind == "ping":
            return []
        if self._done:
            raise self._bad(f"{kind} after message_stop")
        if (kind == "message_start") == self._started:
            raise self._bad(f"{kind} before message_start" if not self._started else "second start")
        return self._stamp(self._dispatch(kind, data))

    def _dispatch(self, kind: str, data: dict[str, Any]) -> list[StreamChunk]:
        match kind:
            case "message_start":
                return self._message_start(data)
            case "content_block_start":
                return self._block_start(data)
            case "content_block_delta":
                return self._block_delta(data)
            case "content_block_stop":
                self._open.pop(self._index(data, opened=True))
                return []
            case "message_delta":
                return self._message_delta(data)
            case "message_stop":
                self._done = True
        return []  # message_stop, and event types newer than this code

    def _bad(self, problem: str) -> MalformedResponse:
        return MalformedResponse(f"anthropic stream: {problem}", model=self._model)

    def _get(self, data: Any, key: str, kind: type, what: str) -> Any:
        return require(data, key, kind, what=what, model=self._model)

    def _stamp(self, chunks: list[StreamChunk]) -> list[StreamChunk]:
        """Attach the served model (from message_start) to the first chunk that follows."""
        if chunks and self._served_model is not None:
            chunks[0] = replace(chunks[0], model=self._served_model)
            self._served_model = None
        return chunks

    def _index(self, data: dict[str, Any], *, opened: bool) -> int:
        index: int = self._get(data, "index", int, "content block event")
        if opened and index not in self._open:
            raise self._bad(f"content block {index} is not open")
        if not opened and index in self._seen:
            raise self._bad(f"content block {index} started twice")
        return index

    def _message_start(self, data: dict[str, Any]) -> list[StreamChunk]:
        message = self._get(data, "message", dict, "message_start")
        self._served_model = self._get(message, "model", str, "message_start.message")
        usage = message.get("usage")
        self._input = _input_tokens(usage, self._model) if isinstance(usage, dict) else 0
        self._cached = _cache_reads(usage) if isinstance(usage, dict) else 0
        self._started = True
        return []

    def _block_start(self, data: dict[str, Any]) -> list[StreamChunk]:
        index = self._index(data, opened=False)
        self._seen.add(index)
        block = self._get(data, "content_block", dict, "content_block_start")
        kind = self._get(block, "type", str, "content_block")
        if kind == "text":
            self._open[index] = "text"
            text = self._get(block, "text", str, "text block")
            return [StreamChunk(text=text)] if text else []
        if kind != "tool_use":
            self._open[index] = "ignored"
            return []
        self._open[index] = call = self._tools
        self._tools += 1
        initial = block.get("input")
        delta = ToolCallDelta(
            index=call,
            id=self._get(block, "id", str, "tool_use block"),
            name=self._get(block, "name", str, "tool_use block"),
            arguments=dump_arguments(initial) if isinstance(initial, dict) and initial else "",
        )
        return [StreamChunk(tool_call=delta)]

    def _block_delta(self, data: dict[str, Any]) -> list[StreamChunk]:
        slot = self._open[self._index(data, opened=True)]
        delta = self._get(data, "delta", dict, "content_block_delta")
        kind = self._get(delta, "type", str, "delta")
        if slot == "text" and kind == "text_delta":
            text = self._get(delta, "text", str, "text_delta")
            return [StreamChunk(text=text)] if text else []
        if isinstance(slot, int) and kind == "input_json_delta":
            part = self._get(delta, "partial_json", str, "input_json_delta")
            call = ToolCallDelta(index=slot, arguments=part)
            return [StreamChunk(tool_call=call)] if part else []
        if kind in ("text_delta", "input_json_delta") and slot != "ignored":
            raise self._bad(f"{kind} for a {'text' if slot == 'text' else 'tool_use'} block")
        return []  # thinking, signature, citations: nothing our model carries

    def _message_delta(self, data: dict[str, Any]) -> list[StreamChunk]:
        delta = self._get(data, "delta", dict, "message_delta")
        stop = delta.get("stop_reason")
        usage = self._get(data, "usage", dict, "message_delta")
        output = self._get(usage, "output_tokens", int, "message_delta.usage")
        has_input = isinstance(usage.get("input_tokens"), int)
        input_tokens = _input_tokens(usage, self._model) if has_input else self._input
        cached = _cache_reads(usage) if has_input else self._cached
        finish = None if stop is None else _finish(stop, self._model)
        return [StreamChunk(finish_reason=finish, usage=Usage(input_tokens, output, cached))]


def _headers(api_key: str | None, source: Source | None = None) -> _RedactedHeaders:
    """Ours; on the same-format route with the client's version and betas."""
    headers = _RedactedHeaders(
        {"content-type": "application/json", "anthropic-version": API_VERSION}
    )
    if source is not None:
        headers.update(source.headers)
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _own(source: Source | None) -> Source | None:
    """``source`` when it is an Anthropic client's request (to send on as it came)."""
    return source if source is not None and source.format == PROVIDER_KIND else None


class AnthropicClientCodec:
    """Client side: our Request → ``POST /v1/messages``; Anthropic answers → our types."""

    provider_kind: str = PROVIDER_KIND
    wire_format: str = PROVIDER_KIND

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        source = _own(request.source)
        if source is not None:
            return HttpCall(
                path=MESSAGES_PATH,
                body={},
                headers=_headers(api_key, source),
                content=relayed_body(source, model, drop=refused_thinking(source.body)),
                relay=relay_for(
                    _TERMINATOR,
                    echo_model=source.echo_model,
                    starts=begins_content,
                    secret=api_key,
                ),
            )
        body = _encode_request(request, model)
        return HttpCall(path=MESSAGES_PATH, body=body, headers=_headers(api_key))

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        """No seed, and no "any JSON object" mode (structured output needs a schema)."""
        missing = []
        if request.seed is not None:
            missing.append(Untranslatable("seed", "seed"))
        if request.response_format is not None and request.response_format.schema is None:
            missing.append(Untranslatable("response_format json_object", "response_format"))
        return (*missing, *_lost_media(request))

    def build_count(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        """``POST /v1/messages/count_tokens``: what ``request`` would cost as input on ``model``
        (an Anthropic client's own count body goes on as it came, ``model`` set)."""
        source = _own(request.source)
        if source is not None and not any(key in source.body for key in _GENERATION_ONLY):
            content = relayed_body(source, model)
            headers = _headers(api_key, source)
            return HttpCall(path=COUNT_TOKENS_PATH, body={}, headers=headers, content=content)
        if source is not None:  # a messages body: its generation settings are not counted
            body = {k: v for k, v in source.body.items() if k not in _GENERATION_ONLY}
            body["model"] = model
        else:
            body = _encode_request(request, model)
            for generation_only in _GENERATION_ONLY:
                body.pop(generation_only, None)
        return HttpCall(path=COUNT_TOKENS_PATH, body=body, headers=_headers(api_key, source))

    def parse_count(self, body: bytes, model: str) -> int:
        data = load_json(body, model=model)
        count = require(data, "input_tokens", int, what="anthropic token count", model=model)
        if isinstance(count, bool) or count < 0:
            raise MalformedResponse("anthropic token count: bad input_tokens", model=model)
        return int(count)

    def parse_response(self, body: bytes, model: str) -> Response:
        data = load_json(body, model=model)
        if not isinstance(data, dict) or data.get("type") != "message":
            raise MalformedResponse("anthropic answer is not a 'message' object", model=model)
        blocks = require(data, "content", list, what="message", model=model)
        text, calls = _response_content(blocks, model)
        return Response(
            id=require(data, "id", str, what="message", model=model),
            model=require(data, "model", str, what="message", model=model),
            message=Message(role="assistant", content=text, tool_calls=calls),
            finish_reason=_finish(data.get("stop_reason"), model),
            usage=_usage(data, model),
            provider=PROVIDER_KIND,
        )

    def stream_decoder(self, model: str) -> _StreamDecoder:
        return _StreamDecoder(model=model)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        kind, message = _error_payload(body)
        retry_after = parse_retry_after(headers)
        return _error_for(status, kind, message, model=model, retry_after=retry_after)
