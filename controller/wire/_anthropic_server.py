"""Server side of the Anthropic Messages API (the fake provider and the gateway): request bodies
→ our Request, checked the way the real API checks them; our answers → its bytes and events."""

from __future__ import annotations

import json
import logging
from typing import Any

from controller._errors import (
    AuthFailed,
    BadRequest,
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
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    Origin,
    Part,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
    parts_message,
)
from controller.wire._anthropic_common import (
    CONTEXT_MARKERS,
    FILTER_MARKER,
    PROVIDER_KIND,
    arguments_or_empty,
    dump_arguments,
)
from controller.wire._common import Notes, is_json_kind, retry_after_headers, status_for
from controller.wire._media import text_data
from controller.wire._sse import sse

__all__ = ["AnthropicServerCodec"]

log = logging.getLogger(__name__)

_FINISH_TO_WIRE = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}
_CALLER_TYPES = {404: "not_found_error", 413: "request_too_large"}
_IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_KIND_NAMES = {
    str: "a valid string",
    int: "a valid integer",
    float: "a valid number",
    bool: "a valid boolean",
    list: "a valid list",
    dict: "a valid dictionary",
}

# ---------------------------------------------------------------- Anthropic body -> our Request


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
    if not is_json_kind(value, kind):
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


# What the translation carries of each part of a request; any other member (not null) is noted
# as untranslatable by its own name (cache_control, citations, metadata, thinking, ...).
_TRANSLATED = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "metadata",  # its user_id (any other member is noted)
        "thinking",  # its type and budget_tokens (any other member is noted)
        "output_config",  # its format (any other member is noted)
    }
)
_NEUTRAL: dict[str, Any] = {}
_METADATA_MEMBERS = frozenset({"user_id"})
_OUTPUT_CONFIG_MEMBERS = frozenset({"format", "effort"})
_THINKING_MEMBERS = frozenset({"type", "budget_tokens"})
_TEXT_MEMBERS = frozenset({"type", "text"})
_TOOL_USE_MEMBERS = frozenset({"type", "id", "name", "input"})
_TOOL_RESULT_MEMBERS = frozenset({"type", "tool_use_id", "content", "is_error"})
_TOOL_MEMBERS = frozenset({"type", "name", "description", "input_schema"})
_TOOL_CHOICE_MEMBERS = frozenset({"type", "name"})
_MEDIA_MEMBERS = {
    "image": frozenset({"type", "source"}),
    "document": frozenset({"type", "source", "title"}),
}
_SOURCE_MEMBERS = {
    "base64": frozenset({"type", "media_type", "data"}),
    "url": frozenset({"type", "url"}),
    "text": frozenset({"type", "media_type", "data"}),  # a plain-text document
}


def _texts(content: Any, where: str, notes: Notes) -> str:
    """Text blocks (a system prompt), joined with newlines; any other block is noted by its
    type."""
    texts: list[str] = []
    for path, block in _blocks_at(content, where):
        if block["type"] != "text":
            notes.add(block["type"], path)
            continue
        notes.extra(block, _TEXT_MEMBERS, path, ".")
        texts.append(_field(block, "text", str, path, required=True))
    return "\n".join(texts)


def _source(kind: str, block: dict[str, Any], where: str, notes: Notes) -> Part | None:
    """The image or document a block's ``source`` holds: base64, a URL, or (a document) text.
    A ``file`` source names a file uploaded to Anthropic, which no other provider can read, and
    a document made of content blocks is not carried: both noted."""
    source = _field(block, "source", dict, where, required=True)
    path = f"{where}.source"
    source_type = _field(source, "type", str, path, required=True)
    if source_type == "file":
        notes.add("file_id", path)
        return None
    if source_type not in _SOURCE_MEMBERS or (kind, source_type) == ("image", "text"):
        notes.add(f"{kind} source {source_type}", path)  # content, and types newer than this
        return None
    notes.extra(source, _SOURCE_MEMBERS[source_type], path, ".")
    title = _field(block, "title", str, where) or ""
    if source_type == "url":
        url: str = _field(source, "url", str, path, required=True)
        return ImagePart(url=url) if kind == "image" else DocumentPart(url=url, title=title)
    media_type: str = _field(source, "media_type", str, path, required=True)
    data: str = _field(source, "data", str, path, required=True)
    if kind == "image":
        return ImagePart(media_type=media_type, data=data)
    data = text_data(data) if source_type == "text" else data
    return DocumentPart(media_type=media_type, data=data, title=title)


def _part(block: dict[str, Any], where: str, notes: Notes) -> Part | None:
    """A text, image or document block of a user turn or a tool result; any other block is
    noted by its type (search_result, ...), thinking blocks ignored. What an image or document
    asks for beyond its bytes (cache_control, citations, context) is noted by name."""
    kind = block["type"]
    if kind == "text":
        notes.extra(block, _TEXT_MEMBERS, where, ".")
        return TextPart(_field(block, "text", str, where, required=True))
    if kind in _MEDIA_MEMBERS:
        if block.get("citations") == {"enabled": False}:  # the default: asks for nothing
            block = {key: value for key, value in block.items() if key != "citations"}
        notes.extra(block, _MEDIA_MEMBERS[kind], where, ".")
        return _source(kind, block, where, notes)
    if kind not in _IGNORED_BLOCKS:
        notes.add(kind, where)
    return None


def _parts(content: Any, where: str, notes: Notes) -> list[Part]:
    found = (_part(block, path, notes) for path, block in _blocks_at(content, where))
    return [part for part in found if part is not None]


def _decode_tool_result(block: dict[str, Any], where: str, notes: Notes) -> Message:
    notes.extra(block, _TOOL_RESULT_MEMBERS, where, ".")
    call_id = _field(block, "tool_use_id", str, where, required=True)
    content = block.get("content")
    parts = [] if content is None else _parts(content, f"{where}.content", notes)
    is_error = bool(_field(block, "is_error", bool, where))
    return parts_message("tool", parts, tool_call_id=call_id, is_error=is_error)


def _decode_user(content: Any, where: str, notes: Notes) -> list[Message]:
    """One user turn → its tool results (in order), then one user message for the rest (its
    text, images and documents, in order)."""
    messages: list[Message] = []
    parts: list[Part] = []
    for path, block in _blocks_at(content, where):
        if block["type"] == "tool_result":
            messages.append(_decode_tool_result(block, path, notes))
        elif (part := _part(block, path, notes)) is not None:
            parts.append(part)
    if parts or not messages:
        messages.append(parts_message("user", parts))
    return messages


def _decode_assistant(content: Any, where: str, notes: Notes) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for path, block in _blocks_at(content, where):
        kind = block["type"]
        if kind == "text":
            notes.extra(block, _TEXT_MEMBERS, path, ".")
            texts.append(_field(block, "text", str, path, required=True))
        elif kind == "tool_use":
            notes.extra(block, _TOOL_USE_MEMBERS, path, ".")
            call_id = _field(block, "id", str, path, required=True)
            name = _field(block, "name", str, path, required=True)
            args = _field(block, "input", dict, path, required=True)
            calls.append(ToolCall(id=call_id, name=name, arguments=dump_arguments(args)))
        elif kind not in _IGNORED_BLOCKS:
            notes.add(kind, path)  # server_tool_use, web_search_tool_result, ...
    return Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _decode_messages(raw: list[Any], notes: Notes) -> tuple[tuple[Message, ...], list[str]]:
    """The turns, and the text of ``system`` turns among them (Anthropic's mid-conversation
    system messages, which a translation folds into the system prompt)."""
    messages: list[Message] = []
    system: list[str] = []
    for index, turn in enumerate(raw):
        where = f"messages.{index}"
        if not isinstance(turn, dict):
            raise BadRequest(f"{where}: Input should be a valid dictionary")
        role = _field(turn, "role", str, where, required=True)
        if "content" not in turn:
            raise BadRequest(f"{where}.content: Field required")
        if role == "user":
            messages.extend(_decode_user(turn["content"], f"{where}.content", notes))
        elif role == "assistant":
            messages.append(_decode_assistant(turn["content"], f"{where}.content", notes))
        elif role == "system":
            system.append(_texts(turn["content"], f"{where}.content", notes))
        else:
            raise BadRequest(f"{where}.role: Input should be 'user', 'assistant' or 'system'")
    return tuple(messages), system


def _decode_tools(raw: list[Any] | None, notes: Notes) -> tuple[ToolDefinition, ...]:
    tools: list[ToolDefinition] = []
    for index, tool in enumerate(raw or []):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise BadRequest(f"{where}: Input should be a valid dictionary")
        kind = tool.get("type")
        if kind not in (None, "custom"):  # a server tool (web_search_20250305, bash_...)
            notes.add(str(kind), where)
            continue
        notes.extra(tool, _TOOL_MEMBERS, where, ".")
        name = _field(tool, "name", str, where, required=True)
        description = _field(tool, "description", str, where) or ""
        schema = _field(tool, "input_schema", dict, where, required=True)
        tools.append(ToolDefinition(name=name, description=description, parameters=schema))
    return tuple(tools)


def _parallel(raw: dict[str, Any] | None) -> bool | None:
    """``tool_choice.disable_parallel_tool_use: true`` as our ``parallel_tool_calls=False``."""
    if raw is None:
        return None
    disabled = _field(raw, "disable_parallel_tool_use", bool, "tool_choice")
    return None if disabled is None else not disabled


def _decode_tool_choice(raw: dict[str, Any] | None, notes: Notes) -> ToolChoice | None:
    if raw is None:
        return None
    notes.extra(raw, _TOOL_CHOICE_MEMBERS | {"disable_parallel_tool_use"}, "tool_choice", ".")
    kind = _field(raw, "type", str, "tool_choice", required=True)
    if kind == "tool":
        name: str = _field(raw, "name", str, "tool_choice", required=True)
        return name
    choices: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in choices:
        raise BadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    return choices[kind]


def _decode_end_user(metadata: dict[str, Any] | None, notes: Notes) -> str | None:
    if metadata is None:
        return None
    notes.extra(metadata, _METADATA_MEMBERS, "metadata", ".")
    user: str | None = _field(metadata, "user_id", str, "metadata")
    return user


def _decode_reasoning(
    thinking: dict[str, Any] | None, config: dict[str, Any] | None, notes: Notes
) -> Reasoning | None:
    """``thinking`` (enabled with a budget, adaptive, or disabled) with ``output_config.effort``."""
    effort = _field(config, "effort", str, "output_config") if config is not None else None
    if thinking is None:
        return Reasoning(effort=effort) if effort is not None else None
    notes.extra(thinking, _THINKING_MEMBERS, "thinking", ".")  # display, ...
    kind = _field(thinking, "type", str, "thinking", required=True)
    if kind == "disabled":
        return Reasoning(effort=effort) if effort is not None else None
    if kind == "enabled":
        budget = _field(thinking, "budget_tokens", int, "thinking", required=True)
        return Reasoning(effort=effort, budget_tokens=budget)
    if kind != "adaptive":
        notes.add(f"thinking {kind}", "thinking.type")
    return Reasoning(effort=effort)


def _decode_output(config: dict[str, Any] | None, notes: Notes) -> ResponseFormat | None:
    """``output_config.format`` (a JSON schema for the answer); ``effort`` and anything else
    in it are noted."""
    if config is None:
        return None
    notes.extra(config, _OUTPUT_CONFIG_MEMBERS, "output_config", ".")
    spec = _field(config, "format", dict, "output_config")
    if spec is None:
        return None
    kind = _field(spec, "type", str, "output_config.format", required=True)
    if kind != "json_schema":
        raise BadRequest("output_config.format.type: Input should be 'json_schema'")
    schema = _field(spec, "schema", dict, "output_config.format", required=True)
    return ResponseFormat(schema=schema)


def _decode_stop(raw: list[Any] | None) -> tuple[str, ...]:
    for index, item in enumerate(raw or []):
        if not isinstance(item, str):
            raise BadRequest(f"stop_sequences.{index}: Input should be a valid string")
    return tuple(raw or ())


def _check_generation(max_tokens: int, raw_messages: list[Any]) -> None:
    """What the real API refuses before generating: nothing to answer, or no room to answer."""
    if max_tokens < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    if not raw_messages:
        raise BadRequest("messages: at least one message is required")


def _decode_request(
    body: dict[str, Any], origin: Origin, *, counting: bool = False
) -> tuple[str, Request]:
    """A ``/v1/messages`` body; with ``counting`` a ``count_tokens`` one (no ``max_tokens``)."""
    model: str = _field(body, "model", str, required=True)
    max_tokens = _field(body, "max_tokens", int, required=not counting)
    raw_messages = _field(body, "messages", list, required=True)
    if not counting:  # a count_tokens body has no max_tokens; it is checked as it always was
        _check_generation(max_tokens, raw_messages)
    notes = Notes()
    for key, value in body.items():
        if key not in _TRANSLATED and value is not None and _NEUTRAL.get(key) != value:
            notes.add(key, key)  # thinking, metadata, context_management, top_k, ...
    messages, midway = _decode_messages(raw_messages, notes)
    raw_system = body.get("system")
    system = [] if raw_system is None else [_texts(raw_system, "system", notes)]
    request = Request(
        messages=messages,
        system="\n\n".join(system + midway) if system or midway else None,
        tools=_decode_tools(_field(body, "tools", list), notes),
        tool_choice=_decode_tool_choice(_field(body, "tool_choice", dict), notes),
        max_tokens=max_tokens,
        temperature=_field(body, "temperature", float),
        top_p=_field(body, "top_p", float),
        stop=_decode_stop(_field(body, "stop_sequences", list)),
        stream=bool(_field(body, "stream", bool)),
        response_format=_decode_output(_field(body, "output_config", dict), notes),
        parallel_tool_calls=_parallel(_field(body, "tool_choice", dict)),
        user=_decode_end_user(_field(body, "metadata", dict), notes),
        reasoning=_decode_reasoning(
            _field(body, "thinking", dict), _field(body, "output_config", dict), notes
        ),
        source=origin.source(PROVIDER_KIND, body, model, notes.found()),
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


def _body_object(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body: invalid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body: Input should be a valid dictionary")
    return body


class AnthropicServerCodec:
    """Server side: what api.anthropic.com accepts and sends, for the fake and the gateway."""

    def peek_request(self, body: Any) -> tuple[str, bool]:
        """The model and whether to stream, with the checks every provider makes (the body an
        object, a model, max_tokens of at least one, messages a non-empty list): all a request
        needs when an Anthropic-format provider gets it as it came."""
        body = _body_object(body)
        model: str = _field(body, "model", str, required=True)
        max_tokens = _field(body, "max_tokens", int, required=True)
        _check_generation(max_tokens, _field(body, "messages", list, required=True))
        return model, bool(_field(body, "stream", bool))

    def parse_request(
        self, body: Any, path_model: str | None = None, origin: Origin = NO_ORIGIN
    ) -> tuple[str, Request]:
        return _decode_request(_body_object(body), origin)

    def parse_count_request(self, body: Any, origin: Origin = NO_ORIGIN) -> tuple[str, Request]:
        """A ``POST /v1/messages/count_tokens`` body: the messages body without ``max_tokens``."""
        return _decode_request(_body_object(body), origin, counting=True)

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
