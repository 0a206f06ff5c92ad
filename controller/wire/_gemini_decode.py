"""A Gemini ``generateContent`` request body read into our Request's fields, with Google's error
wording (``Invalid value at 'contents[0].parts[1]'``, ``... is not specified``): contents and
their function calls and results paired by name, system instruction, tools and tool choice,
generation config and thinking, Gemini schemas as JSON Schema, and what a translation cannot
carry (:func:`request_notes`). Used by :class:`~controller.wire._gemini_server.GeminiServerCodec`.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from controller._errors import BadRequest
from controller.model import (
    DocumentPart,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    parts_message,
)
from controller.wire._common import Notes, is_json_kind
from controller.wire._gemini_common import EMPTY_SCHEMA, Call, args_text

_FROM_MODE: dict[str, ToolChoice | None] = {
    "AUTO": "auto",
    "NONE": "none",
    "VALIDATED": "auto",
    "MODE_UNSPECIFIED": None,
}


class _Result(NamedTuple):
    id: str | None
    name: str
    response: dict[str, Any]


def _invalid(path: str, value: Any) -> BadRequest:
    shown = json.dumps(value, default=repr)[:60]
    return BadRequest(f"Invalid value at '{path}', {shown}", status=400)


def _missing(path: str) -> BadRequest:
    field = path.rsplit(".", 1)[-1]
    return BadRequest(f"* GenerateContentRequest.{path}: {field} is not specified", status=400)


def _want(obj: dict[str, Any], key: str, kind: type, path: str, *, required: bool = False) -> Any:
    """``obj[key]`` checked against ``kind`` (float accepts ints; bools are never numbers)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(path)
        return None
    if not is_json_kind(value, kind):
        raise _invalid(path, value)
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value


def _read_part(part: Any, path: str) -> str | Call | _Result | ImagePart | DocumentPart | None:
    if not isinstance(part, dict):
        raise _invalid(path, part)
    if part.get("thought") is True:
        return None
    if "functionCall" in part:
        call = _want(part, "functionCall", dict, f"{path}.functionCall")
        name = _want(call, "name", str, f"{path}.functionCall.name", required=True)
        args = _want(call, "args", dict, f"{path}.functionCall.args") or {}
        return Call(_want(call, "id", str, f"{path}.functionCall.id"), name, args_text(args))
    if "functionResponse" in part:
        result = _want(part, "functionResponse", dict, f"{path}.functionResponse")
        name = _want(result, "name", str, f"{path}.functionResponse.name", required=True)
        response = _want(result, "response", dict, f"{path}.functionResponse.response") or {}
        return _Result(_want(result, "id", str, f"{path}.functionResponse.id"), name, response)
    if "text" in part:
        text: str = _want(part, "text", str, f"{path}.text", required=True)
        return text
    if "inlineData" in part or "fileData" in part:
        return _read_media(part, path)
    supported = "only text, inlineData, fileData, functionCall and functionResponse parts are"
    raise BadRequest(f"{path}: {supported} supported", status=400)


def _read_media(part: dict[str, Any], path: str) -> ImagePart | DocumentPart:
    """``inlineData`` {mimeType, data} or ``fileData`` {mimeType, fileUri}: an image when its
    media type says so, else a document."""
    inline = "inlineData" in part
    key = "inlineData" if inline else "fileData"
    blob = _want(part, key, dict, f"{path}.{key}")
    where = f"{path}.{key}"
    media_type = _want(blob, "mimeType", str, f"{where}.mimeType", required=inline) or ""
    data = _want(blob, "data", str, f"{where}.data", required=True) if inline else ""
    url = "" if inline else _want(blob, "fileUri", str, f"{where}.fileUri", required=True)
    if media_type.startswith("image/") or (not media_type and not inline):
        return ImagePart(media_type=media_type, data=data, url=url)
    return DocumentPart(media_type=media_type, data=data, url=url)


def _unwrap(response: dict[str, Any]) -> tuple[str, bool]:
    """``{"content": t}`` / ``{"output": t}`` → t, ``{"error": t}`` → (t, is_error); any other
    object the caller chose is kept whole as JSON text."""
    if len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("content", "output", "error"):
            return (value if isinstance(value, str) else args_text(value)), key == "error"
    return args_text(response), False


class _CallIds:
    """Pairs function responses with calls (Gemini keys them by name) and invents stable ids."""

    def __init__(self) -> None:
        self._count = 0
        self._open: list[tuple[str, str]] = []

    def for_call(self, given: str | None, name: str) -> str:
        call_id = given or f"call_{self._count}"
        self._count += 1
        self._open.append((call_id, name))
        return call_id

    def for_result(self, given: str | None, name: str) -> str:
        match = next((c for c in self._open if (c[0] == given if given else c[1] == name)), None)
        if match is not None:
            self._open.remove(match)
            return match[0]
        if given:
            return given
        self._count += 1
        return f"call_{self._count - 1}"


def _decode_turn(role: str, parts: list[Any], ids: _CallIds, path: str) -> list[Message]:
    items = [
        (f"{path}.parts[{j}]", _read_part(part, f"{path}.parts[{j}]"))
        for j, part in enumerate(parts)
    ]
    if role == "model":
        return [_decode_model_turn(items, ids)]
    return _decode_user_turn(items, ids, role)


def _decode_model_turn(items: list[tuple[str, Any]], ids: _CallIds) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for where, item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Call):
            call_id = ids.for_call(item.id, item.name)
            calls.append(ToolCall(id=call_id, name=item.name, arguments=item.arguments))
        elif item is not None:
            raise BadRequest(f"{where}: not allowed in a 'model' turn", status=400)
    return Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _decode_user_turn(items: list[tuple[str, Any]], ids: _CallIds, role: str) -> list[Message]:
    """Tool results, then one user message for the text, images and documents. Images and
    documents right after a functionResponse are that result's (how our client sends a tool's
    media); a text part ends that."""
    results: list[tuple[str, bool, list[Part]]] = []
    parts: list[Part] = []
    attached: list[Part] | None = None  # the parts of the result just read
    for where, item in items:
        if isinstance(item, _Result):
            content, is_error = _unwrap(item.response)
            attached = [TextPart(content)] if content else []
            results.append((ids.for_result(item.id, item.name), is_error, attached))
        elif isinstance(item, ImagePart | DocumentPart) and attached is not None:
            attached.append(item)
        elif isinstance(item, str | ImagePart | DocumentPart):
            # User text parts are separate pieces of input, not stream deltas: keep them apart.
            attached = None
            parts.append(TextPart(item) if isinstance(item, str) else item)
        elif item is not None:
            raise BadRequest(f"{where}: not allowed in a {role!r} turn", status=400)
    messages = [
        parts_message("tool", found, tool_call_id=call_id, is_error=is_error)
        for call_id, is_error, found in results
    ]
    if parts or not messages:
        messages.append(parts_message("user", parts))
    return messages


def decode_contents(data: dict[str, Any]) -> tuple[Message, ...]:
    contents = _want(data, "contents", list, "contents", required=True)
    if not contents:
        raise _missing("contents")
    ids = _CallIds()
    messages: list[Message] = []
    for i, content in enumerate(contents):
        path = f"contents[{i}]"
        if not isinstance(content, dict):
            raise _invalid(path, content)
        role = _want(content, "role", str, f"{path}.role") or "user"
        if role not in ("user", "model", "function"):
            raise BadRequest(f"{path}.role: Please use a valid role: user, model.", status=400)
        parts = _want(content, "parts", list, f"{path}.parts", required=True)
        messages.extend(_decode_turn(role, parts, ids, path))
    return tuple(messages)


def decode_system(data: dict[str, Any]) -> str | None:
    system = _want(data, "systemInstruction", dict, "systemInstruction")
    if system is None:
        return None
    parts = _want(system, "parts", list, "systemInstruction.parts", required=True)
    texts = [_read_part(p, f"systemInstruction.parts[{j}]") for j, p in enumerate(parts)]
    return "\n".join(t for t in texts if isinstance(t, str))


def decode_tools(data: dict[str, Any]) -> tuple[ToolDefinition, ...]:
    tools: list[ToolDefinition] = []
    for i, tool in enumerate(_want(data, "tools", list, "tools") or []):
        if not isinstance(tool, dict):
            raise _invalid(f"tools[{i}]", tool)
        path = f"tools[{i}].functionDeclarations"
        for j, decl in enumerate(_want(tool, "functionDeclarations", list, path) or []):
            where = f"{path}[{j}]"
            if not isinstance(decl, dict):
                raise _invalid(where, decl)
            schema = _json_schema(
                _want(decl, "parameters", dict, f"{where}.parameters")
                or _want(decl, "parametersJsonSchema", dict, f"{where}.parametersJsonSchema")
            )
            tools.append(
                ToolDefinition(
                    name=_want(decl, "name", str, f"{where}.name", required=True),
                    description=_want(decl, "description", str, f"{where}.description") or "",
                    parameters=schema if schema is not None else dict(EMPTY_SCHEMA),
                )
            )
    return tuple(tools)


def decode_tool_choice(data: dict[str, Any]) -> ToolChoice | None:
    config = _want(data, "toolConfig", dict, "toolConfig") or {}
    path = "toolConfig.functionCallingConfig"
    calling = _want(config, "functionCallingConfig", dict, path)
    if calling is None:
        return None
    mode = _want(calling, "mode", str, f"{path}.mode") or "MODE_UNSPECIFIED"
    allowed = _want(calling, "allowedFunctionNames", list, f"{path}.allowedFunctionNames") or []
    if mode == "ANY":
        only = allowed[0] if len(allowed) == 1 else None
        return only if isinstance(only, str) else "required"
    if mode not in _FROM_MODE:
        raise _invalid(f"{path}.mode", mode)
    return _FROM_MODE[mode]


def decode_generation(data: dict[str, Any]) -> dict[str, Any]:
    config = _want(data, "generationConfig", dict, "generationConfig") or {}
    stop = _want(config, "stopSequences", list, "generationConfig.stopSequences") or []
    for k, item in enumerate(stop):
        if not isinstance(item, str):
            raise _invalid(f"generationConfig.stopSequences[{k}]", item)
    mime = _want(config, "responseMimeType", str, "generationConfig.responseMimeType")
    schema = _json_schema(
        _want(config, "responseJsonSchema", dict, "generationConfig.responseJsonSchema")
    )
    if schema is None:
        where = "generationConfig.responseSchema"
        schema = _json_schema(_want(config, "responseSchema", dict, where))
    wanted = None
    if mime == "application/json" or schema is not None:
        wanted = ResponseFormat(schema=schema)
    return {
        "max_tokens": _want(config, "maxOutputTokens", int, "generationConfig.maxOutputTokens"),
        "temperature": _want(config, "temperature", float, "generationConfig.temperature"),
        "top_p": _want(config, "topP", float, "generationConfig.topP"),
        "stop": tuple(stop),
        "seed": _want(config, "seed", int, "generationConfig.seed"),
        "response_format": wanted,
        "reasoning": _decode_thinking(config),
    }


def _json_schema(schema: Any) -> Any:
    """A Gemini ``Schema`` (an OpenAPI subset whose types are upper case, ``OBJECT``, as the
    google-genai SDK writes them) as JSON Schema: type names in lower case, ``nullable`` as a
    ``null`` type, the rest as it was. Gemini takes upper-case types in its JSON-schema fields
    too (Gemini CLI sends ``responseJsonSchema`` so), which no other vendor does: every schema
    of a request goes through here. A JSON Schema in lower case passes unchanged."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "not"):
            out[key] = _json_schema(value)
        elif key != "nullable":
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# What a translation carries of a request (anything else is noted: only a Gemini provider
# honours it), and the generationConfig members it carries or that ask for nothing it loses.
_TRANSLATED = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}
)
_GENERATION = frozenset(
    {
        "maxOutputTokens",
        "temperature",
        "topP",
        "stopSequences",
        "seed",
        "responseMimeType",
        "responseJsonSchema",
        "responseSchema",
        "thinkingConfig",
    }
)
_GENERATION_NEUTRAL: dict[str, Any] = {"candidateCount": 1, "responseModalities": ["TEXT"]}


def request_notes(data: dict[str, Any]) -> Notes:
    """What of a request its translation cannot carry: top-level members (``safetySettings``,
    ``cachedContent``), tools other than function declarations (``googleSearch``,
    ``codeExecution``, ``urlContext``), generation settings with no counterpart (``topK``,
    ``presencePenalty``, a ``responseMimeType`` other than JSON or text)."""
    notes = Notes()
    notes.extra(data, _TRANSLATED, "", "")
    tools = data.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        if isinstance(tool, dict):
            notes.extra(tool, frozenset({"functionDeclarations"}), f"tools[{i}]", ".")
    config = data.get("generationConfig")
    if not isinstance(config, dict):
        return notes
    for key, value in config.items():
        if key in _GENERATION or value is None or _GENERATION_NEUTRAL.get(key) == value:
            continue
        notes.add(key, f"generationConfig.{key}")
    mime = config.get("responseMimeType")
    if mime not in (None, "text/plain", "application/json"):
        notes.add("responseMimeType", "generationConfig.responseMimeType")
    return notes


def _decode_thinking(config: dict[str, Any]) -> Reasoning | None:
    """``thinkingConfig``: a ``thinkingBudget`` (-1: the model decides) or a ``thinkingLevel``."""
    where = "generationConfig.thinkingConfig"
    thinking = _want(config, "thinkingConfig", dict, where)
    if thinking is None:
        return None
    budget = _want(thinking, "thinkingBudget", int, f"{where}.thinkingBudget")
    level = _want(thinking, "thinkingLevel", str, f"{where}.thinkingLevel")
    if budget is None and level is None:
        return None
    effort = level.lower() if level is not None else None
    return Reasoning(
        effort=effort, budget_tokens=budget if budget is not None and budget >= 0 else None
    )
