"""OpenAI Chat Completions (``POST {base}/chat/completions``) as a pure codec, both directions.

The client side also speaks to OpenAI-compatible servers (Azure, OpenRouter, Ollama, vLLM): they
differ in auth header, path and query, and often omit ids, usage or the ``[DONE]`` terminator, so
optional fields are tolerated while a missing ``choices``/``message`` is MalformedResponse.

OpenAI has no ``is_error`` flag on tool results. To keep a conversation lossless when it moves
between formats, a failed result is sent with :data:`TOOL_ERROR_PREFIX` before its content (which
also tells the model that the call failed) and the prefix is read back as the flag.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from controller._clock import Clock, SystemClock
from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ProviderError,
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
    "TOOL_ERROR_PREFIX",
    "OpenAIClientCodec",
    "OpenAIServerCodec",
    "OpenAIStreamDecoder",
    "OpenAIStreamEncoder",
    "stream_usage_requested",
]

TOOL_ERROR_PREFIX = "[tool error] "
_FINISH_IN = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,  # the legacy functions API
    "content_filter": FinishReason.CONTENT_FILTER,
}
_CHOICES = ("auto", "none", "required")
_SECRET_HEADERS = frozenset({"authorization", "api-key"})
# An in-stream error has no HTTP status: infer the one the same error would have had, from its
# code first, then its type (OpenAI's rate-limit type is "requests" or "tokens").
_STREAM_STATUS = {
    "context_length_exceeded": 400,
    "content_filter": 400,
    "invalid_api_key": 401,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "requests": 429,
    "tokens": 429,
}


class _Headers(dict[str, str]):
    """Request headers whose repr masks credentials, so logging an HttpCall leaks no key."""

    def __repr__(self) -> str:
        return repr({k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in self.items()})


# ---------------------------------------------------------------- client: request


class OpenAIClientCodec:
    """Client side of Chat Completions for OpenAI and OpenAI-compatible endpoints.

    ``path`` may contain ``{model}`` (Azure: ``/openai/deployments/{model}/chat/completions``);
    ``include_usage_option=False`` drops ``stream_options`` for servers that reject it.
    """

    def __init__(
        self,
        *,
        provider_kind: str = "openai",
        auth: Literal["bearer", "api-key", "none"] = "bearer",
        path: str = "/chat/completions",
        query: Mapping[str, str] | None = None,
        include_usage_option: bool = True,
    ) -> None:
        self.provider_kind = provider_kind
        self._auth = auth
        self._path = path
        self._query = dict(query or {})
        self._include_usage = include_usage_option

    def __repr__(self) -> str:
        return f"OpenAIClientCodec(provider_kind={self.provider_kind!r}, path={self._path!r})"

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        body: dict[str, Any] = {"model": model, "messages": _messages_out(request)}
        if request.tools:
            body["tools"] = [_tool_out(t) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice_out(request.tool_choice)
        # "max_tokens", not "max_completion_tokens": every compatible server understands it.
        optional: dict[str, Any] = {"max_tokens": request.max_tokens}
        optional |= {"temperature": request.temperature}
        optional |= {"top_p": request.top_p, "stop": list(request.stop) or None}
        body |= {k: v for k, v in optional.items() if v is not None}
        if request.stream:
            body["stream"] = True
            if self._include_usage:
                body["stream_options"] = {"include_usage": True}
        path = self._path.replace("{model}", quote(model, safe=""))
        return HttpCall(path=path, body=body, headers=self._headers(api_key), query=self._query)

    def _headers(self, api_key: str | None) -> _Headers:
        if api_key is None or self._auth == "none":
            return _Headers()
        if self._auth == "api-key":
            return _Headers({"api-key": api_key})
        return _Headers({"Authorization": f"Bearer {api_key}"})

    def parse_response(self, body: bytes, model: str) -> Response:
        data = load_json(body, what="chat completion", model=model)
        choices = require(data, "choices", list, what="chat completion", model=model)
        if not choices:
            raise MalformedResponse("chat completion: 'choices' is empty", model=model)
        raw = require(choices[0], "message", dict, what="choices[0]", model=model)
        message = _message_in(raw, model)
        finish = _finish_in(choices[0].get("finish_reason"), model)
        if finish is None:  # some compatible servers leave it null on a complete answer
            finish = FinishReason.TOOL_CALLS if message.tool_calls else FinishReason.STOP
        return Response(
            id=_opt(data, "id", str, "", model),
            model=_opt(data, "model", str, "", model) or model,
            message=message,
            finish_reason=finish,
            usage=_usage_in(data.get("usage"), model) or Usage(),
            provider=self.provider_kind,
        )

    def stream_decoder(self, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model=model, provider=self.provider_kind)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        try:
            data: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):  # an HTML page from a proxy, say
            data = body.decode("utf-8", errors="replace").strip()[:300] or None
        fields = _ErrorFields.of(data, status)
        retry_after = parse_retry_after(headers)
        err = error_for_status(status, fields.message, model=model, retry_after=retry_after)
        return fields.refine(err, provider=self.provider_kind)


def _messages_out(request: Request) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": request.system}] if request.system else []
    return system + [_message_out(m) for m in request.messages]


def _message_out(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        content = (TOOL_ERROR_PREFIX if message.is_error else "") + message.content
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": content}
    if message.role == "assistant" and message.tool_calls:
        calls = [_tool_call_out(c) for c in message.tool_calls]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    return {"role": message.role, "content": message.content}


def _tool_call_out(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _tool_out(tool: ToolDefinition) -> dict[str, Any]:
    described = {"description": tool.description} if tool.description else {}
    function = {"name": tool.name, **described, "parameters": tool.parameters}
    return {"type": "function", "function": function}


def _tool_choice_out(choice: str) -> Any:
    if choice in _CHOICES:
        return choice
    return {"type": "function", "function": {"name": choice}}


# ---------------------------------------------------------------- client: response and stream


def _opt(data: Mapping[str, Any], key: str, kind: type, default: Any, model: str) -> Any:
    """An optional field: absent or null gives ``default``; a wrong type is malformed."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedResponse(f"field {key!r} is not {kind.__name__}", model=model)
    return value


def _message_in(raw: dict[str, Any], model: str) -> Message:
    content = _opt(raw, "content", str, "", model) or _opt(raw, "refusal", str, "", model)
    calls = tuple(_tool_call_in(c, model) for c in _opt(raw, "tool_calls", list, [], model))
    return Message(role="assistant", content=content, tool_calls=calls)


def _tool_call_in(raw: Any, model: str) -> ToolCall:
    function = require(raw, "function", dict, what="tool_calls[]", model=model)
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # a few compatible servers send an object
        arguments = json.dumps(arguments)
    if arguments is not None and not isinstance(arguments, str):
        raise MalformedResponse("tool call arguments are not a string", model=model)
    return ToolCall(
        id=_opt(raw, "id", str, "", model),
        name=require(function, "name", str, what="tool_calls[].function", model=model),
        arguments=arguments or "{}",
    )


def _finish_in(value: Any, model: str) -> FinishReason | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _FINISH_IN:
        raise MalformedResponse(f"unknown finish_reason {value!r}", model=model)
    return _FINISH_IN[value]


def _usage_in(raw: Any, model: str) -> Usage | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MalformedResponse("'usage' is not an object", model=model)
    prompt = _opt(raw, "prompt_tokens", int, 0, model)
    return Usage(prompt, _opt(raw, "completion_tokens", int, 0, model))


class OpenAIStreamDecoder:
    """``data: {chat.completion.chunk}`` events → chunks; ``data: [DONE]`` sets :attr:`done`.

    Usage on a finish event rides on the finish chunk, a usage-only event becomes its own chunk.
    The served model is reported once, on the first chunk, when it differs from the requested one.
    """

    def __init__(self, *, model: str, provider: str = "openai") -> None:
        self._model = model
        self._provider = provider
        self._done = False
        self._model_seen = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        data = event.data.strip()
        if self._done or event.event not in ("", "message", "error"):
            what = "data after [DONE]" if self._done else f"event {event.event!r}"
            raise MalformedResponse(f"unexpected stream {what}", model=self._model)
        if data == "[DONE]":
            self._done = True
            return []
        if not data:  # a keep-alive
            return []
        body = load_json(data, what="stream event", model=self._model)
        if isinstance(body, dict) and (body.get("error") or event.event == "error"):
            raise _ErrorFields.of(body, None).stream_error(self._model, self._provider)
        choices = require(body, "choices", list, what="stream chunk", model=self._model)
        chunks = self._choice(choices[0]) if choices else []
        usage = _usage_in(body.get("usage"), self._model)
        if usage is not None and chunks and chunks[-1].finish_reason is not None:
            chunks[-1] = dataclasses.replace(chunks[-1], usage=usage)
        elif usage is not None:
            chunks.append(StreamChunk(usage=usage))
        return self._stamp_model(body.get("model"), chunks)

    def _choice(self, choice: Any) -> list[StreamChunk]:
        if not isinstance(choice, dict):
            raise MalformedResponse("stream choice is not an object", model=self._model)
        delta = _opt(choice, "delta", dict, {}, self._model)
        text = _opt(delta, "content", str, "", self._model)
        chunks = [StreamChunk(text=text)] if text else []
        calls = _opt(delta, "tool_calls", list, [], self._model)
        chunks += [StreamChunk(tool_call=self._delta(c, i)) for i, c in enumerate(calls)]
        finish = _finish_in(choice.get("finish_reason"), self._model)
        return chunks + ([StreamChunk(finish_reason=finish)] if finish is not None else [])

    def _delta(self, raw: Any, position: int) -> ToolCallDelta:
        if not isinstance(raw, dict):
            raise MalformedResponse("tool call delta is not an object", model=self._model)
        function = _opt(raw, "function", dict, {}, self._model)
        return ToolCallDelta(
            index=_opt(raw, "index", int, position, self._model),
            id=_opt(raw, "id", str, None, self._model),
            name=_opt(function, "name", str, None, self._model),
            arguments=_opt(function, "arguments", str, "", self._model),
        )

    def _stamp_model(self, served: Any, chunks: list[StreamChunk]) -> list[StreamChunk]:
        if self._model_seen or not chunks or not isinstance(served, str) or not served:
            return chunks
        self._model_seen = True
        if served != self._model:
            chunks[0] = dataclasses.replace(chunks[0], model=served)
        return chunks


# ---------------------------------------------------------------- errors (both sides)


@dataclasses.dataclass(frozen=True, slots=True)
class _ErrorFields:
    """What an error body says: ``{"error": {message, type, param, code}}`` or a compatible
    server's variant (Ollama's ``{"error": "text"}``, FastAPI's ``{"detail": ...}``)."""

    message: str
    type: Any = None
    code: Any = None
    inner: Any = None  # Azure's innererror.code

    @classmethod
    def of(cls, data: Any, status: int | None) -> _ErrorFields:
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, str):
            return cls(error)
        if not isinstance(error, dict):
            return cls(f"HTTP {status}: unrecognised error body")
        message = error.get("message") or error.get("detail")
        inner = error.get("innererror")
        return cls(
            message if isinstance(message, str) else f"HTTP {status}: no message",
            error.get("type"),
            error.get("code"),
            inner.get("code") if isinstance(inner, dict) else None,
        )

    def refine(self, err: ProviderError, *, provider: str) -> ProviderError:
        """Turn a plain BadRequest into the documented subclasses, by code, never by text."""
        err.provider = provider
        if type(err) is not BadRequest:
            return err
        cls: type[BadRequest] = BadRequest
        if "context_length_exceeded" in (self.code, self.type):
            cls = ContextTooLong
        elif self.code == "content_filter" or self.inner == "ResponsibleAIPolicyViolation":
            cls = ContentFiltered
        return cls(err.message, provider=provider, model=err.model, status=err.status)

    def stream_error(self, model: str, provider: str) -> ProviderError:
        status = _STREAM_STATUS.get(str(self.code)) or _STREAM_STATUS.get(str(self.type))
        if isinstance(self.code, int) and 400 <= self.code < 600:  # vLLM puts the status here
            status = self.code
        err = error_for_status(status or 500, self.message, model=model)
        return self.refine(err, provider=provider)


def _error_body(err: ProviderError) -> dict[str, Any]:
    kind, code, param = "server_error", None, None
    if isinstance(err, ContextTooLong):
        kind, code, param = "invalid_request_error", "context_length_exceeded", "messages"
    elif isinstance(err, ContentFiltered):
        kind, code = "invalid_request_error", "content_filter"
    elif isinstance(err, BadRequest):
        kind = "invalid_request_error"
    elif isinstance(err, RateLimited):
        kind, code = "requests", "rate_limit_exceeded"
    elif isinstance(err, AuthFailed) and status_for(err) == 403:
        kind = "permission_error"
    elif isinstance(err, AuthFailed):
        kind, code = "invalid_request_error", "invalid_api_key"
    return {"error": {"message": err.message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------- server: request

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_TYPE_NAMES |= {list: "an array", dict: "an object", type(None): "null"}


def _bad(message: str) -> BadRequest:
    return BadRequest(message, status=400)


def _typed(value: Any, kinds: tuple[type, ...], path: str) -> Any:
    """``value`` if it has one of ``kinds``, else BadRequest worded like the real API's."""
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return value
    expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    raise _bad(f"Invalid type for '{path}': expected {expected}, but got {got} instead.")


def _field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], path: str = "") -> Any:
    full = f"{path}.{key}" if path else key
    if obj.get(key) is None:
        raise _bad(f"Missing required parameter: '{full}'.")
    return _typed(obj[key], kinds, full)


def _optional(obj: dict[str, Any], key: str, kinds: tuple[type, ...], path: str = "") -> Any:
    value = obj.get(key)
    return None if value is None else _typed(value, kinds, f"{path}.{key}" if path else key)


def _unsupported(value: Any, path: str, supported: str) -> BadRequest:
    return _bad(f"Invalid value for '{path}': {value!r}. Supported values are: {supported}.")


def _text_in(value: Any, path: str) -> str:
    """Content as a string or a list of text parts (the SDKs send both)."""
    if not isinstance(_typed(value, (str, list, type(None)), path), list):
        return value or ""
    texts: list[str] = []
    for i, part in enumerate(value):
        part = _typed(part, (dict,), f"{path}[{i}]")
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise _unsupported(kind, f"{path}[{i}].type", "'text'")
        texts.append(_field(part, kind, (str,), f"{path}[{i}]"))
    return "\n".join(texts)


def _message_in_request(raw: Any, path: str) -> Message | str:
    """A turn, or the text of a system/developer turn (folded into ``Request.system``)."""
    raw = _typed(raw, (dict,), path)
    role = _field(raw, "role", (str,), path)
    if role in ("system", "developer", "user"):
        text = _text_in(_field(raw, "content", (str, list), path), f"{path}.content")
        return text if role != "user" else Message(role="user", content=text)
    if role == "assistant":
        calls = _optional(raw, "tool_calls", (list,), path) or []
        return Message(
            role="assistant",
            content=_text_in(raw.get("content"), f"{path}.content"),
            tool_calls=tuple(_call_in(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(calls)),
        )
    if role == "tool":
        content = _text_in(_field(raw, "content", (str, list), path), f"{path}.content")
        return Message(
            role="tool",
            content=content.removeprefix(TOOL_ERROR_PREFIX),
            tool_call_id=_field(raw, "tool_call_id", (str,), path),
            is_error=content.startswith(TOOL_ERROR_PREFIX),
        )
    supported = "'system', 'developer', 'user', 'assistant', 'tool'"
    raise _unsupported(role, f"{path}.role", supported)


def _call_in(raw: Any, path: str) -> ToolCall:
    function = _field(_typed(raw, (dict,), path), "function", (dict,), path)
    return ToolCall(
        id=_field(raw, "id", (str,), path),
        name=_field(function, "name", (str,), f"{path}.function"),
        arguments=_field(function, "arguments", (str,), f"{path}.function"),
    )


def _tool_in(raw: Any, path: str) -> ToolDefinition:
    if _field(_typed(raw, (dict,), path), "type", (str,), path) != "function":
        raise _unsupported(raw["type"], f"{path}.type", "'function'")
    function = _field(raw, "function", (dict,), path)
    where = f"{path}.function"
    name = _field(function, "name", (str,), where)
    parameters = _optional(function, "parameters", (dict,), where)
    return ToolDefinition(
        name=name,
        description=_optional(function, "description", (str,), where) or "",
        **({"parameters": parameters} if parameters is not None else {}),
    )


def _tool_choice_in(raw: Any) -> str | None:
    if raw is None or raw in _CHOICES:
        return None if raw is None else str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = _field(raw, "function", (dict,), "tool_choice")
        return str(_field(function, "name", (str,), "tool_choice.function"))
    raise _unsupported(raw, "tool_choice", "'none', 'auto', 'required', a function")


def _request_in(body: dict[str, Any]) -> Request:
    raw_messages = _field(body, "messages", (list,))
    if not raw_messages:
        raise _bad("Invalid 'messages': empty array. Expected an array with minimum length 1.")
    turns = [_message_in_request(m, f"messages[{i}]") for i, m in enumerate(raw_messages)]
    system = [t for t in turns if isinstance(t, str)]
    stop = _optional(body, "stop", (str, list)) or ()
    tools = _optional(body, "tools", (list,)) or []
    max_tokens = _optional(body, "max_completion_tokens", (int,))
    temperature = _optional(body, "temperature", (int, float))
    top_p = _optional(body, "top_p", (int, float))
    return Request(
        messages=tuple(t for t in turns if isinstance(t, Message)),
        system="\n\n".join(system) if system else None,
        tools=tuple(_tool_in(t, f"tools[{i}]") for i, t in enumerate(tools)),
        tool_choice=_tool_choice_in(body.get("tool_choice")),
        max_tokens=max_tokens if max_tokens is not None else _optional(body, "max_tokens", (int,)),
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        stop=(stop,) if isinstance(stop, str) else tuple(_typed(s, (str,), "stop") for s in stop),
        stream=bool(_optional(body, "stream", (bool,))),
    )


def stream_usage_requested(body: Any) -> bool:
    """Whether a client asked for the usage-only chunk (``stream_options.include_usage``).

    The real API sends that chunk (with empty ``choices``) only on request, and client code that
    reads ``chunk.choices[0]`` breaks on it otherwise: pass the answer to ``stream_encoder``.
    """
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


# ---------------------------------------------------------------- server: response, stream, errors


class OpenAIServerCodec:
    """Provider side of Chat Completions: what the fake provider and the gateway speak.

    ``clock`` supplies the ``created`` timestamps, so tests pin the bytes exactly.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()

    def parse_request(self, body: Any, path_model: str | None = None) -> tuple[str, Request]:
        body = _typed(body, (dict,), "body")
        if path_model is not None and body.get("model") is None:  # Azure: deployment in path
            return path_model, _request_in(body)
        return _field(body, "model", (str,)), _request_in(body)

    def render_response(self, response: Response) -> dict[str, Any]:
        message = response.message
        rendered: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            rendered["content"] = message.content or None
            rendered["tool_calls"] = [_tool_call_out(c) for c in message.tool_calls]
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
        return status_for(err), _error_body(err), retry_after_headers(err)


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
        return sse(_error_body(err))

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
