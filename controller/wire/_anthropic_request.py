"""Anthropic Messages request bodies -> our Request, checked the way the real API checks them
(the server side: the gateway's front and the fake provider). What the translation cannot carry
is noted, not refused (:class:`controller.wire._common.Notes`)."""

from __future__ import annotations

import json
from typing import Any

from controller._errors import (
    BadRequest,
)
from controller.model import (
    DocumentPart,
    ImagePart,
    Message,
    Origin,
    Part,
    Reasoning,
    Request,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    parts_message,
)
from controller.wire._anthropic_common import (
    PROVIDER_KIND,
    dump_arguments,
)
from controller.wire._common import Notes, is_json_kind
from controller.wire._media import text_data

__all__ = ["body_object", "check_generation", "decode_request", "field"]

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


def field(
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
        field(block, "type", str, path, required=True)
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
        texts.append(field(block, "text", str, path, required=True))
    return "\n".join(texts)


def _source(kind: str, block: dict[str, Any], where: str, notes: Notes) -> Part | None:
    """The image or document a block's ``source`` holds: base64, a URL, or (a document) text.
    A ``file`` source names a file uploaded to Anthropic, which no other provider can read, and
    a document made of content blocks is not carried: both noted."""
    source = field(block, "source", dict, where, required=True)
    path = f"{where}.source"
    source_type = field(source, "type", str, path, required=True)
    if source_type == "file":
        notes.add("file_id", path)
        return None
    if source_type not in _SOURCE_MEMBERS or (kind, source_type) == ("image", "text"):
        notes.add(f"{kind} source {source_type}", path)  # content, and types newer than this
        return None
    notes.extra(source, _SOURCE_MEMBERS[source_type], path, ".")
    title = field(block, "title", str, where) or ""
    if source_type == "url":
        url: str = field(source, "url", str, path, required=True)
        return ImagePart(url=url) if kind == "image" else DocumentPart(url=url, title=title)
    media_type: str = field(source, "media_type", str, path, required=True)
    data: str = field(source, "data", str, path, required=True)
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
        return TextPart(field(block, "text", str, where, required=True))
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
    call_id = field(block, "tool_use_id", str, where, required=True)
    content = block.get("content")
    parts = [] if content is None else _parts(content, f"{where}.content", notes)
    is_error = bool(field(block, "is_error", bool, where))
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
            texts.append(field(block, "text", str, path, required=True))
        elif kind == "tool_use":
            notes.extra(block, _TOOL_USE_MEMBERS, path, ".")
            call_id = field(block, "id", str, path, required=True)
            name = field(block, "name", str, path, required=True)
            args = field(block, "input", dict, path, required=True)
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
        role = field(turn, "role", str, where, required=True)
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
        name = field(tool, "name", str, where, required=True)
        description = field(tool, "description", str, where) or ""
        schema = field(tool, "input_schema", dict, where, required=True)
        tools.append(ToolDefinition(name=name, description=description, parameters=schema))
    return tuple(tools)


def _parallel(raw: dict[str, Any] | None) -> bool | None:
    """``tool_choice.disable_parallel_tool_use: true`` as our ``parallel_tool_calls=False``."""
    if raw is None:
        return None
    disabled = field(raw, "disable_parallel_tool_use", bool, "tool_choice")
    return None if disabled is None else not disabled


def _decode_tool_choice(raw: dict[str, Any] | None, notes: Notes) -> ToolChoice | None:
    if raw is None:
        return None
    notes.extra(raw, _TOOL_CHOICE_MEMBERS | {"disable_parallel_tool_use"}, "tool_choice", ".")
    kind = field(raw, "type", str, "tool_choice", required=True)
    if kind == "tool":
        name: str = field(raw, "name", str, "tool_choice", required=True)
        return name
    choices: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in choices:
        raise BadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    return choices[kind]


def _decode_end_user(metadata: dict[str, Any] | None, notes: Notes) -> str | None:
    if metadata is None:
        return None
    notes.extra(metadata, _METADATA_MEMBERS, "metadata", ".")
    user: str | None = field(metadata, "user_id", str, "metadata")
    return user


def _decode_reasoning(
    thinking: dict[str, Any] | None, config: dict[str, Any] | None, notes: Notes
) -> Reasoning | None:
    """``thinking`` (enabled with a budget, adaptive, or disabled) with ``output_config.effort``."""
    effort = field(config, "effort", str, "output_config") if config is not None else None
    if thinking is None:
        return Reasoning(effort=effort) if effort is not None else None
    notes.extra(thinking, _THINKING_MEMBERS, "thinking", ".")  # display, ...
    kind = field(thinking, "type", str, "thinking", required=True)
    if kind == "disabled":
        return Reasoning(effort=effort) if effort is not None else None
    if kind == "enabled":
        budget = field(thinking, "budget_tokens", int, "thinking", required=True)
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
    spec = field(config, "format", dict, "output_config")
    if spec is None:
        return None
    kind = field(spec, "type", str, "output_config.format", required=True)
    if kind != "json_schema":
        raise BadRequest("output_config.format.type: Input should be 'json_schema'")
    schema = field(spec, "schema", dict, "output_config.format", required=True)
    return ResponseFormat(schema=schema)


def _decode_stop(raw: list[Any] | None) -> tuple[str, ...]:
    for index, item in enumerate(raw or []):
        if not isinstance(item, str):
            raise BadRequest(f"stop_sequences.{index}: Input should be a valid string")
    return tuple(raw or ())


def check_generation(max_tokens: int, raw_messages: list[Any]) -> None:
    """What the real API refuses before generating: nothing to answer, or no room to answer."""
    if max_tokens < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    if not raw_messages:
        raise BadRequest("messages: at least one message is required")


def decode_request(
    body: dict[str, Any], origin: Origin, *, counting: bool = False
) -> tuple[str, Request]:
    """A ``/v1/messages`` body; with ``counting`` a ``count_tokens`` one (no ``max_tokens``)."""
    model: str = field(body, "model", str, required=True)
    max_tokens = field(body, "max_tokens", int, required=not counting)
    raw_messages = field(body, "messages", list, required=True)
    if not counting:  # a count_tokens body has no max_tokens; it is checked as it always was
        check_generation(max_tokens, raw_messages)
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
        tools=_decode_tools(field(body, "tools", list), notes),
        tool_choice=_decode_tool_choice(field(body, "tool_choice", dict), notes),
        max_tokens=max_tokens,
        temperature=field(body, "temperature", float),
        top_p=field(body, "top_p", float),
        stop=_decode_stop(field(body, "stop_sequences", list)),
        stream=bool(field(body, "stream", bool)),
        response_format=_decode_output(field(body, "output_config", dict), notes),
        parallel_tool_calls=_parallel(field(body, "tool_choice", dict)),
        user=_decode_end_user(field(body, "metadata", dict), notes),
        reasoning=_decode_reasoning(
            field(body, "thinking", dict), field(body, "output_config", dict), notes
        ),
        source=origin.source(PROVIDER_KIND, body, model, notes.found()),
    )
    return model, request


def body_object(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body: invalid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body: Input should be a valid dictionary")
    return body
