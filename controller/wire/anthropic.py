"""Anthropic Messages API (``POST /v1/messages``) as a pure codec, in both directions.

Why the translation looks the way it does:

* Anthropic keeps the system prompt top-level and tool results inside *user* turns, where our
  model has ``role="tool"`` messages. Consecutive tool results become blocks of one user turn,
  and a user text right after them joins that same turn (the API wants results first, then
  text). Decoding splits such a turn back into tool messages followed by one user message.
* Tool arguments are JSON text in our model but objects on this wire: parsed on the way out and
  serialised with ``json.dumps(..., ensure_ascii=False)`` on the way in. That spacing is the one
  Anthropic uses in ``input_json_delta``, so a streamed and a whole answer give the same text.
* Blocks our model cannot carry: ``thinking`` / ``redacted_thinking`` are dropped (the model's
  scratch work, not conversation content); images, documents and server tools in a *request*
  are refused with BadRequest rather than silently lost; unknown block and event types in a
  *response* are skipped, as Anthropic's versioning policy asks of clients.
* Text joins: several assistant text blocks join with "" (what streaming yields); several user or
  system text blocks join with "\\n" so words from separate blocks never run together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from controller._errors import (
    AuthFailed,
    BadRequest,
    CallerError,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
)
from controller.wire._base import HttpCall, SSEEvent
from controller.wire._common import (
    error_for_status,
    load_json,
    parse_retry_after,
    require,
    retry_after_headers,
    status_for,
)
from controller.wire._sse import sse

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "PROVIDER_KIND",
    "AnthropicClientCodec",
    "AnthropicServerCodec",
]

PROVIDER_KIND = "anthropic"
API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
#: The API requires max_tokens; this is sent when the caller did not choose one.
DEFAULT_MAX_TOKENS = 4096

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
_FINISH_TO_WIRE = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}
_CALLER_TYPES = {404: "not_found_error", 413: "request_too_large"}
_IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
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
# Anthropic has no error *code* for these two: both arrive as invalid_request_error and only the
# message tells them apart (e.g. "prompt is too long: 208310 tokens > 200000 maximum", "Output
# blocked by content filtering policy"). This edge is the ONE place allowed to read message text,
# so that everything downstream decides by type.
_CONTEXT_MARKERS = ("prompt is too long", "exceed context limit")
_FILTER_MARKER = "content filtering policy"
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
_KIND_NAMES = {
    str: "a valid string",
    int: "a valid integer",
    float: "a valid number",
    bool: "a valid boolean",
    list: "a valid list",
    dict: "a valid dictionary",
}


class _RedactedHeaders(dict[str, str]):
    """Request headers whose repr hides the API key, should anyone log the headers themselves."""

    def __repr__(self) -> str:
        shown = {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in self.items()}
        return repr(shown)


def _dump(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def _arguments_object(call: ToolCall, *, where: str, error: type[ProviderError]) -> Any:
    """The argument object of ``call``; ``error`` names whose fault bad JSON is."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise error(f"{where}: arguments of tool call {call.id!r} are not a JSON object")
    return value


# ---------------------------------------------------------------- our Request -> Anthropic body


def _encode_message(message: Message, where: str) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id or "",
            "content": message.content,
        }
        if message.is_error:
            block["is_error"] = True
        return "user", [block]
    if message.role == "user":
        return "user", [{"type": "text", "text": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        args = _arguments_object(call, where=where, error=BadRequest)
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return "assistant", blocks


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
    if request.stream:
        body["stream"] = True
    return body


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


def _usage(data: dict[str, Any], model: str) -> Usage:
    usage = require(data, "usage", dict, what="message", model=model)
    output = require(usage, "output_tokens", int, what="usage", model=model)
    return Usage(_input_tokens(usage, model), output)


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
            calls.append(ToolCall(id=call_id, name=name, arguments=_dump(args)))
    return "".join(texts), tuple(calls)


def _error_payload(body: bytes | str) -> tuple[str, str]:
    """(error type, message) from an error body; anything unreadable becomes its own text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
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
    lowered = message.lower()  # the documented exception: see _CONTEXT_MARKERS
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        return ContextTooLong(message, model=model, status=code)
    if _FILTER_MARKER in lowered:
        return ContentFiltered(message, model=model, status=code)
    return err


class _StreamDecoder:
    """Anthropic SSE events → our chunks. Content-block indexes map to 0-based tool-call indexes."""

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._done = False
        self._open: dict[int, str | int] = {}  # block index → "text" | "ignored" | tool index
        self._seen: set[int] = set()
        self._tools = 0
        self._input = 0
        self._served_model: str | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        data = load_json(event.data, what="stream event", model=self._model)
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
            arguments=_dump(initial) if isinstance(initial, dict) and initial else "",
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
        finish = None if stop is None else _finish(stop, self._model)
        return [StreamChunk(finish_reason=finish, usage=Usage(input_tokens, output))]


class AnthropicClientCodec:
    """Client side: our Request → ``POST /v1/messages``; Anthropic answers → our types."""

    provider_kind: str = PROVIDER_KIND

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        headers = _RedactedHeaders(
            {"content-type": "application/json", "anthropic-version": API_VERSION}
        )
        if api_key:
            headers["x-api-key"] = api_key
        body = _encode_request(request, model)
        return HttpCall(path=MESSAGES_PATH, body=body, headers=headers)

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


# ---------------------------------------------------------------- Anthropic body -> our Request


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _field(
    obj: dict[str, Any], key: str, kind: type, where: str = "", *, required: bool = False
) -> Any:
    """``obj[key]`` checked like the real API checks it; errors name the field's path."""
    path = f"{where}.{key}" if where else key
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{path}: Field required")
        return None
    if not _is(value, kind):
        raise BadRequest(f"{path}: Input should be {_KIND_NAMES[kind]}")
    return value


def _blocks_at(content: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, block) pairs of a content field that is a string or a list of typed blocks."""
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise BadRequest(f"{where}: Input should be a valid string or a list of content blocks")
    pairs: list[tuple[str, dict[str, Any]]] = []
    for index, block in enumerate(content):
        path = f"{where}.{index}"
        if not isinstance(block, dict):
            raise BadRequest(f"{path}: Input should be a valid dictionary")
        _field(block, "type", str, path, required=True)
        pairs.append((path, block))
    return pairs


def _unsupported(where: str, kind: str) -> BadRequest:
    return BadRequest(f"{where}.type: content block type {kind!r} is not supported here")


def _texts(content: Any, where: str) -> str:
    """Text blocks only (system prompt, tool result content), joined with newlines."""
    texts: list[str] = []
    for path, block in _blocks_at(content, where):
        if block["type"] != "text":
            raise _unsupported(path, block["type"])
        texts.append(_field(block, "text", str, path, required=True))
    return "\n".join(texts)


def _decode_tool_result(block: dict[str, Any], where: str) -> Message:
    call_id = _field(block, "tool_use_id", str, where, required=True)
    content = block.get("content")
    text = "" if content is None else _texts(content, f"{where}.content")
    is_error = bool(_field(block, "is_error", bool, where))
    return Message(role="tool", content=text, tool_call_id=call_id, is_error=is_error)


def _decode_user(content: Any, where: str) -> list[Message]:
    """One user turn → its tool results (in order), then one user message for any text."""
    messages: list[Message] = []
    texts: list[str] = []
    for path, block in _blocks_at(content, where):
        kind = block["type"]
        if kind == "tool_result":
            messages.append(_decode_tool_result(block, path))
        elif kind == "text":
            texts.append(_field(block, "text", str, path, required=True))
        elif kind not in _IGNORED_BLOCKS:
            raise _unsupported(path, kind)
    if texts or not messages:
        messages.append(Message(role="user", content="\n".join(texts)))
    return messages


def _decode_assistant(content: Any, where: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for path, block in _blocks_at(content, where):
        kind = block["type"]
        if kind == "text":
            texts.append(_field(block, "text", str, path, required=True))
        elif kind == "tool_use":
            call_id = _field(block, "id", str, path, required=True)
            name = _field(block, "name", str, path, required=True)
            args = _field(block, "input", dict, path, required=True)
            calls.append(ToolCall(id=call_id, name=name, arguments=_dump(args)))
        elif kind not in _IGNORED_BLOCKS:
            raise _unsupported(path, kind)
    return Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _decode_messages(raw: list[Any]) -> tuple[Message, ...]:
    messages: list[Message] = []
    for index, turn in enumerate(raw):
        where = f"messages.{index}"
        if not isinstance(turn, dict):
            raise BadRequest(f"{where}: Input should be a valid dictionary")
        role = _field(turn, "role", str, where, required=True)
        if "content" not in turn:
            raise BadRequest(f"{where}.content: Field required")
        if role == "user":
            messages.extend(_decode_user(turn["content"], f"{where}.content"))
        elif role == "assistant":
            messages.append(_decode_assistant(turn["content"], f"{where}.content"))
        else:
            raise BadRequest(f"{where}.role: Input should be 'user' or 'assistant'")
    return tuple(messages)


def _decode_tools(raw: list[Any] | None) -> tuple[ToolDefinition, ...]:
    tools: list[ToolDefinition] = []
    for index, tool in enumerate(raw or []):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise BadRequest(f"{where}: Input should be a valid dictionary")
        name = _field(tool, "name", str, where, required=True)
        description = _field(tool, "description", str, where) or ""
        schema = _field(tool, "input_schema", dict, where, required=True)
        tools.append(ToolDefinition(name=name, description=description, parameters=schema))
    return tuple(tools)


def _decode_tool_choice(raw: dict[str, Any] | None) -> ToolChoice | None:
    if raw is None:
        return None
    kind = _field(raw, "type", str, "tool_choice", required=True)
    if kind == "tool":
        name: str = _field(raw, "name", str, "tool_choice", required=True)
        return name
    choices: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in choices:
        raise BadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    return choices[kind]


def _decode_stop(raw: list[Any] | None) -> tuple[str, ...]:
    for index, item in enumerate(raw or []):
        if not isinstance(item, str):
            raise BadRequest(f"stop_sequences.{index}: Input should be a valid string")
    return tuple(raw or ())


def _decode_request(body: dict[str, Any]) -> tuple[str, Request]:
    model: str = _field(body, "model", str, required=True)
    max_tokens = _field(body, "max_tokens", int, required=True)
    raw_messages = _field(body, "messages", list, required=True)
    system = body.get("system")
    request = Request(
        messages=_decode_messages(raw_messages),
        system=None if system is None else _texts(system, "system"),
        tools=_decode_tools(_field(body, "tools", list)),
        tool_choice=_decode_tool_choice(_field(body, "tool_choice", dict)),
        max_tokens=max_tokens,
        temperature=_field(body, "temperature", float),
        top_p=_field(body, "top_p", float),
        stop=_decode_stop(_field(body, "stop_sequences", list)),
        stream=bool(_field(body, "stream", bool)),
    )
    return model, request


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
    elif isinstance(err, Overloaded) and status != 500:
        kind = "overloaded_error"
    elif isinstance(err, ProviderTimeout):
        kind = "timeout_error"
    else:
        kind = "api_error"
    message = err.message
    lowered = message.lower()
    # Mark the two refinements the way Anthropic words them, so error_from keeps their type.
    if isinstance(err, ContextTooLong) and not any(m in lowered for m in _CONTEXT_MARKERS):
        message = f"prompt is too long: {message}"
    elif isinstance(err, ContentFiltered) and _FILTER_MARKER not in lowered:
        message = f"Output blocked by content filtering policy: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def _response_blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        args = _arguments_object(call, where="response", error=MalformedResponse)
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return blocks


class _StreamEncoder:
    """Our chunks → a valid Anthropic event sequence (blocks opened and closed in order)."""

    def __init__(self, *, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._index = 0  # the Anthropic index of the open block, or of the next one
        self._open: str | int | None = None  # "text", our tool-call index, or nothing
        self._tools_seen: set[int] = set()
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
        if not delta.arguments:
            return opening
        json_delta = {"type": "input_json_delta", "partial_json": delta.arguments}
        return opening + self._event("content_block_delta", delta=json_delta)

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

    def parse_request(self, body: Any, path_model: str | None = None) -> tuple[str, Request]:
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("request body: invalid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body: Input should be a valid dictionary")
        return _decode_request(body)

    def render_response(self, response: Response) -> dict[str, Any]:
        usage = response.usage
        return {
            "id": response.id,
            "type": "message",
            "role": "assistant",
            "model": response.model,
            "content": _response_blocks(response.message),
            "stop_reason": _FINISH_TO_WIRE[response.finish_reason],
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    def stream_encoder(self, *, id: str, model: str) -> _StreamEncoder:
        return _StreamEncoder(id=id, model=model)

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        status = _status(err)
        return status, _error_body(err, status), retry_after_headers(err)
