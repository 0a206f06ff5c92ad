"""Server side of OpenAI Chat Completions (the fake provider and the gateway): request bodies →
our Request, validated with the real API's wording; our answers → its bytes and events."""

from __future__ import annotations

from typing import Any

from controller._clock import Clock, SystemClock
from controller._errors import ProviderError
from controller.model import (
    NO_ORIGIN,
    DocumentPart,
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
    ToolDefinition,
    Usage,
    parts_message,
)
from controller.wire._common import Notes, retry_after_headers, status_for
from controller.wire._media import PDF, parse_data_url
from controller.wire._openai_client import WIRE_FORMAT
from controller.wire._openai_common import (
    CHOICES,
    TOOL_ERROR_PREFIX,
    error_body,
    image_part,
    stream_usage_requested,
    tool_call_out,
)
from controller.wire._openai_common import invalid as _bad
from controller.wire._openai_common import optional as _optional
from controller.wire._openai_common import required as _field
from controller.wire._openai_common import typed as _typed
from controller.wire._openai_common import unsupported_value as _unsupported
from controller.wire._sse import SSEParser, sse

__all__ = ["OpenAIServerCodec", "OpenAIStreamEncoder", "stream_usage_requested"]

# ---------------------------------------------------------------- server: request


# The members each part of a request has that the translation carries; any other member (not
# null) is noted as untranslatable by its own name, so only an OpenAI-format provider gets it.
_TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",  # the gateway's own accounting: it asks for usage on every stream
        "response_format",
        "parallel_tool_calls",
        "seed",
        "user",
        "reasoning_effort",
    }
)
_NOTHING = object()
# Members whose value here is the API's default: they ask for nothing a translation loses.
_NEUTRAL: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "store": False,
}
_MESSAGE_MEMBERS = {
    "system": frozenset({"role", "content"}),
    "developer": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_FUNCTION_MEMBERS = frozenset({"name", "description", "parameters"})
# Content parts by the feature they are noted as (a type not listed is noted by its name).
_PART_FEATURES = {"image_url": "image", "input_audio": "audio", "file": "file"}
_IMAGE_URL_MEMBERS = frozenset({"url", "detail"})
_FILE_MEMBERS = frozenset({"file_data", "file_id", "filename"})


def _text_in(value: Any, path: str, notes: Notes) -> str:
    """Content as a string or a list of text parts (the SDKs send both); other parts are
    noted (a translation would lose them)."""
    if not isinstance(_typed(value, (str, list, type(None)), path), list):
        return value or ""
    texts: list[str] = []
    for i, part in enumerate(value):
        part = _typed(part, (dict,), f"{path}[{i}]")
        kind = _field(part, "type", (str,), f"{path}[{i}]")
        if kind not in ("text", "refusal"):
            notes.add(_PART_FEATURES.get(kind, kind), f"{path}[{i}]")
            continue
        texts.append(_field(part, kind, (str,), f"{path}[{i}]"))
    return "\n".join(texts)


def _user_in(value: str | list[Any], path: str, notes: Notes) -> Message:
    """A user turn: its text, images and files in order; other parts (audio) are noted."""
    if isinstance(value, str):
        return Message(role="user", content=value)
    parts: list[Part] = []
    for i, part in enumerate(value):
        where = f"{path}[{i}]"
        part = _typed(part, (dict,), where)
        kind = _field(part, "type", (str,), where)
        if kind in ("text", "refusal"):
            parts.append(TextPart(_field(part, kind, (str,), where)))
        elif kind == "image_url":
            parts.extend(_image_in(part, where, notes))
        elif kind == "file":
            parts.extend(_file_in(part, where, notes))
        else:
            notes.add(_PART_FEATURES.get(kind, kind), where)
    return parts_message("user", parts)


def _image_in(part: dict[str, Any], path: str, notes: Notes) -> list[Part]:
    """An ``image_url`` part: a base64 data URL or a URL. A ``detail`` other than ``auto`` is
    noted (only OpenAI has it); a data URL not in base64 (``;utf8,<svg...``) is noted too."""
    image = _field(part, "image_url", (dict,), path)
    where = f"{path}.image_url"
    notes.extra(image, _IMAGE_URL_MEMBERS, where, ".")
    return image_part(image, "url", where, path, notes)


def _file_in(part: dict[str, Any], path: str, notes: Notes) -> list[Part]:
    """A ``file`` part: ``file_data`` (a base64 data URL, or bare base64 of a PDF) with its
    ``filename``. A ``file_id`` names a file uploaded to OpenAI, which no other provider can
    read: noted."""
    file = _field(part, "file", (dict,), path)
    where = f"{path}.file"
    notes.extra(file, _FILE_MEMBERS, where, ".")
    if file.get("file_id") is not None:
        notes.add("file_id", f"{where}.file_id")
        return []
    data: str = _field(file, "file_data", (str,), where)
    media_type, data = parse_data_url(data) or (PDF, data)
    name = _optional(file, "filename", (str,), where) or ""
    return [DocumentPart(media_type=media_type or PDF, data=data, name=name)]


def _message_in_request(raw: Any, path: str, notes: Notes) -> Message | str | None:
    """A turn, or the text of a system/developer turn (folded into ``Request.system``); None
    for a turn of the legacy ``function`` role, which the translation does not carry (noted:
    an OpenAI-format provider gets it as it came)."""
    raw = _typed(raw, (dict,), path)
    role = _field(raw, "role", (str,), path)
    members = _MESSAGE_MEMBERS.get(role)
    if role == "function":  # the legacy functions API's result turn, which OpenAI still takes
        notes.add("role function", f"{path}.role")
        return None
    if members is None:
        supported = "'system', 'developer', 'user', 'assistant', 'tool', 'function'"
        raise _unsupported(role, f"{path}.role", supported)
    notes.extra(raw, members, path, ".")
    if role == "user":
        return _user_in(_field(raw, "content", (str, list), path), f"{path}.content", notes)
    if role in ("system", "developer"):
        return _text_in(_field(raw, "content", (str, list), path), f"{path}.content", notes)
    if role == "assistant":
        calls = _optional(raw, "tool_calls", (list,), path) or []
        return Message(
            role="assistant",
            content=_text_in(raw.get("content"), f"{path}.content", notes),
            tool_calls=tuple(
                _call_in(c, f"{path}.tool_calls[{i}]", notes) for i, c in enumerate(calls)
            ),
        )
    content = _text_in(_field(raw, "content", (str, list), path), f"{path}.content", notes)
    return Message(
        role="tool",
        content=content.removeprefix(TOOL_ERROR_PREFIX),
        tool_call_id=_field(raw, "tool_call_id", (str,), path),
        is_error=content.startswith(TOOL_ERROR_PREFIX),
    )


def _call_in(raw: Any, path: str, notes: Notes) -> ToolCall:
    raw = _typed(raw, (dict,), path)
    kind = raw.get("type", "function")
    if kind != "function":  # a custom tool's call: only an OpenAI provider knows it
        notes.add(str(kind), f"{path}.type")
        return ToolCall(id=str(raw.get("id", "")), name="", arguments="{}")
    function = _field(raw, "function", (dict,), path)
    return ToolCall(
        id=_field(raw, "id", (str,), path),
        name=_field(function, "name", (str,), f"{path}.function"),
        arguments=_field(function, "arguments", (str,), f"{path}.function"),
    )


def _tool_in(raw: Any, path: str, notes: Notes) -> ToolDefinition | None:
    kind = _field(_typed(raw, (dict,), path), "type", (str,), path)
    if kind != "function":  # custom (free-form) tools: only an OpenAI provider knows them
        notes.add(kind, f"{path}.type")
        return None
    function = _field(raw, "function", (dict,), path)
    where = f"{path}.function"
    notes.extra(function, _FUNCTION_MEMBERS, where, ".")  # strict: structured outputs
    name = _field(function, "name", (str,), where)
    parameters = _optional(function, "parameters", (dict,), where)
    return ToolDefinition(
        name=name,
        description=_optional(function, "description", (str,), where) or "",
        **({"parameters": parameters} if parameters is not None else {}),
    )


def _tool_choice_in(raw: Any, notes: Notes) -> str | None:
    if raw is None or raw in CHOICES:
        return None if raw is None else str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = _field(raw, "function", (dict,), "tool_choice")
        return str(_field(function, "name", (str,), "tool_choice.function"))
    if isinstance(raw, dict):  # allowed_tools, a custom tool: only an OpenAI provider knows them
        notes.add(f"tool_choice {raw.get('type')}", "tool_choice")
        return None
    raise _unsupported(raw, "tool_choice", "'none', 'auto', 'required', a function")


def _response_format_in(raw: Any) -> ResponseFormat | None:
    """``text`` (the default) is none; ``json_object`` any object; ``json_schema`` its schema."""
    if raw is None:
        return None
    kind = _field(_typed(raw, (dict,), "response_format"), "type", (str,), "response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat()
    if kind != "json_schema":
        supported = "'text', 'json_object', 'json_schema'"
        raise _unsupported(kind, "response_format.type", supported)
    spec = _field(raw, "json_schema", (dict,), "response_format")
    where = "response_format.json_schema"
    schema = _optional(spec, "schema", (dict,), where)
    return ResponseFormat(
        schema=schema if schema is not None else {"type": "object"},
        name=_field(spec, "name", (str,), where),
        description=_optional(spec, "description", (str,), where),
        strict=_optional(spec, "strict", (bool,), where),
    )


def _reasoning_in(effort: Any) -> Reasoning | None:
    if effort is None:
        return None
    return Reasoning(effort=_typed(effort, (str,), "reasoning_effort"))


def _token_limit(body: dict[str, Any], key: str) -> int | None:
    """``max_tokens`` or ``max_completion_tokens``: none, or room for at least one token."""
    value: int | None = _optional(body, key, (int,))
    if value is not None and value < 1:
        raise _bad(
            f"Invalid '{key}': integer below minimum value. "
            f"Expected a value >= 1, but got {value} instead."
        )
    return value


def _notable(body: dict[str, Any], notes: Notes) -> None:
    """Top-level members the translation does not carry, unless they hold the default."""
    for key, value in body.items():
        if key in _TRANSLATED or value is None:
            continue
        neutral = _NEUTRAL.get(key, _NOTHING)
        if value == neutral and isinstance(value, bool) == isinstance(neutral, bool):
            continue
        notes.add(key, key)


def _request_in(body: dict[str, Any], model: str, origin: Origin) -> Request:
    raw_messages = _field(body, "messages", (list,))
    if not raw_messages:
        raise _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead."
        )
    notes = Notes()
    _notable(body, notes)
    turns = [_message_in_request(m, f"messages[{i}]", notes) for i, m in enumerate(raw_messages)]
    system = [t for t in turns if isinstance(t, str)]
    stop = _optional(body, "stop", (str, list)) or ()
    raw_tools = _optional(body, "tools", (list,)) or []
    tools = [_tool_in(t, f"tools[{i}]", notes) for i, t in enumerate(raw_tools)]
    max_tokens = _token_limit(body, "max_completion_tokens")
    legacy_max_tokens = _token_limit(body, "max_tokens")
    temperature = _optional(body, "temperature", (int, float))
    top_p = _optional(body, "top_p", (int, float))
    return Request(
        messages=tuple(t for t in turns if isinstance(t, Message)),
        system="\n\n".join(system) if system else None,
        tools=tuple(t for t in tools if t is not None),
        tool_choice=_tool_choice_in(body.get("tool_choice"), notes),
        max_tokens=max_tokens if max_tokens is not None else legacy_max_tokens,
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        stop=(stop,) if isinstance(stop, str) else tuple(_typed(s, (str,), "stop") for s in stop),
        stream=bool(_optional(body, "stream", (bool,))),
        response_format=_response_format_in(body.get("response_format")),
        parallel_tool_calls=_optional(body, "parallel_tool_calls", (bool,)),
        seed=_optional(body, "seed", (int,)),
        user=_optional(body, "user", (str,)),
        reasoning=_reasoning_in(body.get("reasoning_effort")),
        source=origin.source(WIRE_FORMAT, body, model, notes.found()),
    )


# ---------------------------------------------------------------- server: response, stream, errors


class OpenAIServerCodec:
    """Provider side of Chat Completions: what the fake provider and the gateway speak.

    ``clock`` supplies the ``created`` timestamps, so tests pin the bytes exactly.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()

    def peek_request(self, body: Any) -> tuple[str, bool]:
        """The model and whether to stream, with the checks every provider makes (the body an
        object, a model, messages a non-empty array, token limits of at least one): all a
        request needs when an OpenAI-format provider gets it as it came."""
        body = _typed(body, (dict,), "body")
        model: str = _field(body, "model", (str,))
        if not _field(body, "messages", (list,)):
            raise _bad(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead."
            )
        _token_limit(body, "max_completion_tokens")
        _token_limit(body, "max_tokens")
        return model, bool(_optional(body, "stream", (bool,)))

    def parse_request(
        self, body: Any, path_model: str | None = None, origin: Origin = NO_ORIGIN
    ) -> tuple[str, Request]:
        body = _typed(body, (dict,), "body")
        if path_model is not None and body.get("model") is None:  # Azure: deployment in path
            return path_model, _request_in(body, path_model, origin)
        model = _field(body, "model", (str,))
        return model, _request_in(body, model, origin)

    def render_response(self, response: Response) -> dict[str, Any]:
        message = response.message
        rendered: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            rendered["content"] = message.content or None
            rendered["tool_calls"] = [tool_call_out(c) for c in message.tool_calls]
        rendered["refusal"] = None
        finish = response.finish_reason.value
        choice = {"index": 0, "message": rendered, "logprobs": None, "finish_reason": finish}
        return {
            "id": response.id,
            "object": "chat.completion",
            "created": int(self._clock.wall()),
            "model": response.model,
            "choices": [choice],
            "usage": _usage_out(response.usage),
        }

    def stream_encoder(
        self, *, id: str, model: str, include_usage: bool = True
    ) -> OpenAIStreamEncoder:
        created = int(self._clock.wall())
        return OpenAIStreamEncoder(id=id, model=model, created=created, usage=include_usage)

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        return status_for(err), error_body(err), retry_after_headers(err)


def _usage_out(usage: Usage) -> dict[str, int]:
    tokens = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens}
    return tokens | {"total_tokens": usage.total_tokens}


class OpenAIStreamEncoder:
    """Our chunks → ``chat.completion.chunk`` events in the order the real API sends them: a
    role chunk, content / tool-call deltas, a finish chunk with an empty delta, the usage chunk
    with ``"choices": []`` (when ``usage``; emitted by :meth:`end`), then ``data: [DONE]``.
    """

    def __init__(self, *, id: str, model: str, created: int, usage: bool = True) -> None:
        self._frame = {"id": id, "object": "chat.completion.chunk", "created": created}
        self._model = model
        self._send_usage = usage
        self._started = False
        self._usage: Usage | None = None

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event({"role": "assistant", "content": ""})

    @staticmethod
    def terminates(raw: bytes) -> bool:
        """Whether a relayed stream's events ``raw`` (one chunk's, as the provider framed
        them: ``data:[DONE]`` or CRLF too) begin with its terminator."""
        if b"[DONE]" not in raw:
            return False
        events = SSEParser().feed(raw)
        return bool(events) and events[0].data.strip() == "[DONE]"

    def resume(self) -> bytes:
        """Take over a stream relayed as the provider sent it (its role chunk went out)."""
        self._started = True
        return b""

    def encode(self, chunk: StreamChunk) -> bytes:
        out = [self.start()]
        self._model = chunk.model or self._model
        if chunk.text:
            out.append(self._event({"content": chunk.text}))
        if chunk.tool_call is not None:
            out.append(self._event({"tool_calls": [_delta_out(chunk.tool_call)]}))
        if chunk.finish_reason is not None:
            out.append(self._event({}, finish=chunk.finish_reason.value))
        self._usage = chunk.usage or self._usage
        return b"".join(out)

    def end(self) -> bytes:
        out = [self.start()]
        if self._send_usage and self._usage is not None:
            out.append(sse(self._body([]) | {"usage": _usage_out(self._usage)}))
        return b"".join([*out, sse("[DONE]")])

    def error(self, err: ProviderError) -> bytes:
        """The shape the official SDKs raise from: ``data: {"error": {...}}``, no event name."""
        return sse(error_body(err))

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(self._body([choice]))

    def _body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._frame, "model": self._model, "choices": choices}


def _delta_out(delta: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": delta.index}
    if delta.id is not None:
        out |= {"id": delta.id, "type": "function"}
    named = {"name": delta.name} if delta.name is not None else {}
    return out | {"function": {**named, "arguments": delta.arguments}}
