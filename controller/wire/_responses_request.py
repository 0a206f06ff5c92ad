"""OpenAI Responses API requests (``POST /v1/responses``) → our :class:`Request`.

The Responses API keeps a conversation as a flat list of *items*, where Chat Completions and our
model keep turns: an assistant's text and its function calls arrive as separate ``message`` and
``function_call`` items, and are folded here into one assistant turn (a call joins the assistant
turn before it unless a tool result or a user turn came between). ``function_call_output`` items
become tool results matched by ``call_id``, which is the id our model carries, so a conversation
that moves to another provider and back keeps its calls paired.

What a translation cannot carry is noted (:class:`~controller.wire._common.Notes`), by its own
name, so that only a provider speaking the Responses API gets it as it came and any other is
skipped (or the request refused with a 400 naming it), unless ``translation.droppable`` lists
it: hosted tools (``web_search``, ``file_search``, ``namespace``, ``custom``...) and their call
items, ``previous_response_id`` and ``conversation`` (the gateway keeps no store of responses),
reasoning items carrying ``encrypted_content`` (opaque to any other vendor; noted as
``encrypted_reasoning``), file ids, ``text.verbosity`` other than ``medium``. A reasoning item
with only a summary is the model's own earlier thinking, which other vendors do not take back
either (the Anthropic front ignores thinking blocks in history the same way): left out.

Settings that ask for nothing an answer would show are neutral: ``store`` (no response is
stored here either way; a later ``previous_response_id`` is what is refused), ``include`` of
``reasoning.encrypted_content`` (there is none to include from another vendor),
``prompt_cache_key``, ``client_metadata``, ``reasoning.summary``, ``service_tier``
``auto``/``default``, ``truncation`` ``disabled``, ``stream_options``.
"""

from __future__ import annotations

from typing import Any

from controller.model import (
    DocumentPart,
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
from controller.wire._common import Notes
from controller.wire._media import PDF, parse_data_url
from controller.wire._openai_common import CHOICES, TOOL_ERROR_PREFIX, image_part
from controller.wire._openai_common import invalid as _bad
from controller.wire._openai_common import optional as _optional
from controller.wire._openai_common import required as _field
from controller.wire._openai_common import typed as _typed
from controller.wire._openai_common import unsupported_value as _unsupported

__all__ = ["WIRE_FORMAT", "decode_request", "peek_request"]

WIRE_FORMAT = "responses"


# Top-level members the translation carries (or that are the gateway's own business).
_TRANSLATED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "reasoning",
        "stream",
        "stream_options",
        "store",
        "include",
        "user",
        "safety_identifier",
        "metadata",  # echoed back in the answer, as the real API does
        "prompt_cache_key",
        "client_metadata",  # Codex CLI's ids for the vendor's analytics: ask nothing of an answer
    }
)
# Members whose value here asks for nothing a translation loses.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "service_tier": ("auto", "default"),
    "truncation": ("disabled",),
    "background": (False,),
    "top_logprobs": (0,),
}
_NEUTRAL_INCLUDES = frozenset({"reasoning.encrypted_content"})
_FUNCTION_MEMBERS = frozenset({"type", "name", "description", "parameters", "strict"})
_CALL_MEMBERS = frozenset({"type", "id", "call_id", "name", "arguments", "status"})
_OUTPUT_MEMBERS = frozenset({"type", "id", "call_id", "output", "status"})
# ``phase`` labels an assistant message commentary or final answer: nothing to translate.
_MESSAGE_MEMBERS = frozenset({"type", "id", "role", "content", "status", "phase"})
_STORED = ("previous_response_id", "conversation", "prompt")  # input kept elsewhere
_ROLES = ("user", "assistant", "system", "developer")


def peek_request(body: Any) -> tuple[str, bool]:
    """The model and whether to stream, with the checks every provider makes: all a request
    needs when a Responses provider gets it as it came."""
    body = _typed(body, (dict,), "body")
    model: str = _field(body, "model", (str,))
    _optional(body, "input", (str, list))
    _token_limit(body)
    return model, bool(_optional(body, "stream", (bool,)))


def _token_limit(body: dict[str, Any]) -> int | None:
    value: int | None = _optional(body, "max_output_tokens", (int,))
    if value is not None and value < 1:
        raise _bad(
            "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 1, but got {value} instead."
        )
    return value


# ---------------------------------------------------------------- content


def _texts(content: Any, path: str, notes: Notes, sep: str) -> str:
    """The text of a system/developer/assistant message's content (a string or text parts,
    joined by ``sep``)."""
    if isinstance(_typed(content, (str, list), path), str):
        return str(content)
    texts: list[str] = []
    for i, part in enumerate(content):
        where = f"{path}[{i}]"
        part = _typed(part, (dict,), where)
        kind = _field(part, "type", (str,), where)
        if kind in ("input_text", "output_text"):
            texts.append(_field(part, "text", (str,), where))
        elif kind == "refusal":
            texts.append(_field(part, "refusal", (str,), where))
        else:
            notes.add(kind, where)
    return sep.join(texts)


def _parts(content: Any, path: str, notes: Notes) -> list[Part]:
    """A user message's or a tool output's content: text, images and files, in order."""
    if isinstance(_typed(content, (str, list), path), str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for i, part in enumerate(content):
        where = f"{path}[{i}]"
        part = _typed(part, (dict,), where)
        kind = _field(part, "type", (str,), where)
        if kind in ("input_text", "output_text"):
            parts.append(TextPart(_field(part, "text", (str,), where)))
        elif kind == "input_image":
            parts.extend(_image(part, where, notes))
        elif kind == "input_file":
            parts.extend(_file(part, where, notes))
        else:
            notes.add(kind, where)  # input_audio, and types newer than this code
    return parts


def _image(part: dict[str, Any], path: str, notes: Notes) -> list[Part]:
    if part.get("file_id") is not None:
        notes.add("file_id", f"{path}.file_id")
        return []
    return image_part(part, "image_url", path, path, notes)


def _file(part: dict[str, Any], path: str, notes: Notes) -> list[Part]:
    if part.get("file_id") is not None:
        notes.add("file_id", f"{path}.file_id")
        return []
    name = _optional(part, "filename", (str,), path) or ""
    url = _optional(part, "file_url", (str,), path)
    if url is not None:
        return [DocumentPart(url=url, name=name)]
    data: str = _field(part, "file_data", (str,), path)
    media_type, data = parse_data_url(data) or (PDF, data)
    return [DocumentPart(media_type=media_type or PDF, data=data, name=name)]


# ---------------------------------------------------------------- items


class _Conversation:
    """Items folded into turns: the messages so far and the system texts among them."""

    def __init__(self, notes: Notes) -> None:
        self.notes = notes
        self.messages: list[Message] = []
        self.system: list[str] = []

    def add(self, item: Any, path: str) -> None:
        item = _typed(item, (dict,), path)
        kind = _optional(item, "type", (str,), path)
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            self._message(item, path)
        elif kind == "function_call":
            self._call(item, path)
        elif kind == "function_call_output":
            self._output(item, path)
        elif kind == "reasoning":
            if item.get("encrypted_content") is not None:
                self.notes.add("encrypted_reasoning", f"{path}.encrypted_content")
        elif kind is None:
            raise _bad(f"Missing required parameter: '{path}.type'.")
        else:  # web_search_call, custom_tool_call, local_shell_call, item_reference, ...
            self.notes.add(kind, f"{path}.type")

    def _message(self, item: dict[str, Any], path: str) -> None:
        role = _field(item, "role", (str,), path)
        if role not in _ROLES:
            raise _unsupported(role, f"{path}.role", ", ".join(repr(r) for r in _ROLES))
        self.notes.extra(item, _MESSAGE_MEMBERS, path, ".")
        content = _field(item, "content", (str, list), path)
        where = f"{path}.content"
        if role in ("system", "developer"):
            self.system.append(_texts(content, where, self.notes, "\n"))
        elif role == "assistant":
            text = _texts(content, where, self.notes, "")
            self.messages.append(Message(role="assistant", content=text))
        else:
            self.messages.append(parts_message("user", _parts(content, where, self.notes)))

    def _call(self, item: dict[str, Any], path: str) -> None:
        self.notes.extra(item, _CALL_MEMBERS, path, ".")
        call = ToolCall(
            id=_field(item, "call_id", (str,), path),
            name=_field(item, "name", (str,), path),
            arguments=_field(item, "arguments", (str,), path),
        )
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            joined = Message(
                role="assistant", content=last.content, tool_calls=(*last.tool_calls, call)
            )
            self.messages[-1] = joined
        else:
            self.messages.append(Message(role="assistant", tool_calls=(call,)))

    def _output(self, item: dict[str, Any], path: str) -> None:
        self.notes.extra(item, _OUTPUT_MEMBERS, path, ".")
        call_id = _field(item, "call_id", (str,), path)
        parts = _parts(_field(item, "output", (str, list), path), f"{path}.output", self.notes)
        first = parts[0] if parts else None
        failed = isinstance(first, TextPart) and first.text.startswith(TOOL_ERROR_PREFIX)
        if failed and isinstance(first, TextPart):
            parts[0] = TextPart(first.text.removeprefix(TOOL_ERROR_PREFIX))
        self.messages.append(parts_message("tool", parts, tool_call_id=call_id, is_error=failed))


# ---------------------------------------------------------------- settings


def _tool(raw: Any, path: str, notes: Notes) -> ToolDefinition | None:
    raw = _typed(raw, (dict,), path)
    kind = _field(raw, "type", (str,), path)
    if kind != "function":  # web_search, file_search, namespace, custom, mcp, ...
        notes.add(kind, f"{path}.type")
        return None
    notes.extra(raw, _FUNCTION_MEMBERS, path, ".")
    if raw.get("strict") is True:
        notes.add("strict", f"{path}.strict")
    parameters = _optional(raw, "parameters", (dict,), path)
    return ToolDefinition(
        name=_field(raw, "name", (str,), path),
        description=_optional(raw, "description", (str,), path) or "",
        **({"parameters": parameters} if parameters is not None else {}),
    )


def _tool_choice(raw: Any, notes: Notes) -> ToolChoice | None:
    if raw is None or raw in CHOICES:
        return None if raw is None else str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        return str(_field(raw, "name", (str,), "tool_choice"))
    if isinstance(raw, dict):  # allowed_tools, a hosted tool, mcp, custom
        notes.add(f"tool_choice {raw.get('type')}", "tool_choice")
        return None
    raise _unsupported(raw, "tool_choice", "'none', 'auto', 'required', a function")


def _text_format(raw: Any, notes: Notes) -> ResponseFormat | None:
    """``text.format``: ``text`` (the default) is none, ``json_object`` any object,
    ``json_schema`` its schema (name, schema, description and strict side by side)."""
    if raw is None:
        return None
    text = _typed(raw, (dict,), "text")
    verbosity = _optional(text, "verbosity", (str,), "text")
    if verbosity not in (None, "medium"):
        notes.add("verbosity", "text.verbosity")
    spec = _optional(text, "format", (dict,), "text")
    if spec is None:
        return None
    kind = _field(spec, "type", (str,), "text.format")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat()
    if kind != "json_schema":
        raise _unsupported(kind, "text.format.type", "'text', 'json_object', 'json_schema'")
    schema = _optional(spec, "schema", (dict,), "text.format")
    return ResponseFormat(
        schema=schema if schema is not None else {"type": "object"},
        name=_field(spec, "name", (str,), "text.format"),
        description=_optional(spec, "description", (str,), "text.format"),
        strict=_optional(spec, "strict", (bool,), "text.format"),
    )


def _reasoning(raw: Any) -> Reasoning | None:
    if raw is None:
        return None
    effort = _optional(_typed(raw, (dict,), "reasoning"), "effort", (str,), "reasoning")
    return None if effort is None else Reasoning(effort=effort)


def _notable(body: dict[str, Any], notes: Notes) -> None:
    """Top-level members the translation does not carry, unless they hold a neutral value."""
    for key, value in body.items():
        if key in _TRANSLATED or value is None:
            continue
        if any(value == v and type(value) is type(v) for v in _NEUTRAL.get(key, ())):
            continue
        notes.add(key, key)  # previous_response_id, conversation, prompt, max_tool_calls, ...
    for i, wanted in enumerate(_optional(body, "include", (list,)) or []):
        if wanted not in _NEUTRAL_INCLUDES:
            notes.add(f"include {wanted}", f"include[{i}]")


def decode_request(body: Any, origin: Origin) -> tuple[str, Request]:
    """A ``/v1/responses`` body as (requested model, Request); a 400 names a malformed field."""
    model, stream = peek_request(body)
    notes = Notes()
    _notable(body, notes)
    conversation = _Conversation(notes)
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        conversation.messages.append(Message(role="user", content=raw_input))
    for i, item in enumerate(raw_input if isinstance(raw_input, list) else []):
        conversation.add(item, f"input[{i}]")
    if not conversation.messages and not any(body.get(key) for key in _STORED):
        raise _bad("Missing required parameter: 'input'.")
    instructions = _optional(body, "instructions", (str,))
    system = [instructions] if instructions else []
    system += conversation.system
    raw_tools = _optional(body, "tools", (list,)) or []
    tools = [_tool(t, f"tools[{i}]", notes) for i, t in enumerate(raw_tools)]
    temperature = _optional(body, "temperature", (int, float))
    top_p = _optional(body, "top_p", (int, float))
    user = _optional(body, "user", (str,)) or _optional(body, "safety_identifier", (str,))
    return model, Request(
        messages=tuple(conversation.messages),
        system="\n\n".join(system) if system else None,
        tools=tuple(t for t in tools if t is not None),
        tool_choice=_tool_choice(body.get("tool_choice"), notes),
        max_tokens=_token_limit(body),
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        stream=stream,
        response_format=_text_format(body.get("text"), notes),
        parallel_tool_calls=_optional(body, "parallel_tool_calls", (bool,)),
        user=user,
        reasoning=_reasoning(body.get("reasoning")),
        source=origin.source(WIRE_FORMAT, body, model, notes.found()),
    )
