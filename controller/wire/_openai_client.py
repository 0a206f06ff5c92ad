"""Client side of OpenAI Chat Completions: our Request → HTTP call, answers / stream events /
errors → our types. See :mod:`controller.wire.openai` for why optional fields are tolerated."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import orjson

from controller import _json
from controller._errors import BadRequest, MalformedResponse, ProviderError
from controller.model import (
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Request,
    Response,
    ResponseFormat,
    Source,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Untranslatable,
    Usage,
)
from controller.wire._base import HttpCall, SSEEvent
from controller.wire._common import (
    load_event,
    load_json,
    require,
)
from controller.wire._media import data_url, file_name, media_of
from controller.wire._openai_common import (
    CHOICES,
    TOOL_ERROR_PREFIX,
    ErrorFields,
    openai_error,
    stream_usage_requested,
    tool_call_out,
)
from controller.wire._reasoning import effort_for
from controller.wire._relay import AnswerFacts, relay_for, relayed_body
from controller.wire._sse import sse

__all__ = ["WIRE_FORMAT", "OpenAIClientCodec", "OpenAIStreamDecoder"]

WIRE_FORMAT = "openai"
_TERMINATOR = sse("[DONE]")

_FINISH_IN = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,  # the legacy functions API
    "content_filter": FinishReason.CONTENT_FILTER,
}
_SECRET_HEADERS = frozenset({"authorization", "api-key"})


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
        token_limit: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        account: Mapping[str, str] | None = None,
    ) -> None:
        self.provider_kind = provider_kind
        self._token_limit = token_limit
        # OpenAI-Organization / OpenAI-Project: which of the key's organizations and projects
        # a call is billed to, sent on every call (the client's own never go upstream).
        self._account = dict(account or {})
        self._auth = auth
        self._path = path
        self._query = dict(query or {})
        self._include_usage = include_usage_option

    wire_format = WIRE_FORMAT

    def __repr__(self) -> str:
        return f"OpenAIClientCodec(provider_kind={self.provider_kind!r}, path={self._path!r})"

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        source = request.source
        if source is not None and source.format == WIRE_FORMAT:
            return self._relayed(source, model, api_key)
        body: dict[str, Any] = {"model": model, "messages": _messages_out(request)}
        if request.tools:
            body["tools"] = [_tool_out(t) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice_out(request.tool_choice)
        if request.tools and request.parallel_tool_calls is False:  # not allowed without tools
            body["parallel_tool_calls"] = False
        if request.response_format is not None:
            body["response_format"] = _response_format_out(request.response_format)
        # OpenAI's reasoning models refuse "max_tokens"; compatible servers know only that one.
        optional: dict[str, Any] = {self._token_limit: request.max_tokens}
        optional |= {"temperature": request.temperature}
        optional |= {"top_p": request.top_p, "stop": list(request.stop) or None}
        optional |= {"seed": request.seed, "user": request.user}
        if request.reasoning is not None:
            optional["reasoning_effort"] = effort_for(request.reasoning)
        body |= {k: v for k, v in optional.items() if v is not None}
        if request.stream:
            body["stream"] = True
            if self._include_usage:
                body["stream_options"] = {"include_usage": True}
        return HttpCall(
            path=self._model_path(model),
            body=body,
            headers=self._headers(api_key),
            query=self._query,
        )

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return _lost_media(request)  # everything else our Request carries has a field here

    def _relayed(self, source: Source, model: str, api_key: str | None) -> HttpCall:
        """The client's body as it came, ``model`` set. A stream also asks for usage (the
        gateway's accounting needs it); a client that did not ask is not shown that event."""
        extra: dict[str, Any] = {}
        body = source.body
        if body.get("stream") is True and self._include_usage and not stream_usage_requested(body):
            options = body.get("stream_options")
            kept = options if isinstance(options, dict) else {}
            extra = {"stream_options": kept | {"include_usage": True}}
        relay = relay_for(
            _TERMINATOR,
            drop_usage_only=bool(extra),
            echo_model=source.echo_model,
            starts=_begins_content,
            secret=api_key,
            read=read_answer if source.full is not None else None,  # not decoded: no capture
        )
        return HttpCall(
            path=self._model_path(model),
            body={},
            headers=self._headers(api_key),
            query=self._query,
            content=relayed_body(source, model, extra),
            relay=relay,
        )

    def _model_path(self, model: str) -> str:
        if "{model}" not in self._path:
            return self._path
        return self._path.replace("{model}", quote(model, safe=""))

    def _headers(self, api_key: str | None) -> _Headers:
        headers = _Headers(self._account)
        if api_key is None or self._auth == "none":
            return headers
        if self._auth == "api-key":
            headers["api-key"] = api_key
        else:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def parse_response(self, body: bytes, model: str) -> Response:
        data, message = _answer(body, model)
        content, calls = _message_fields(message, model)
        ident, served, finish, usage = _facts(data, bool(calls), model)
        return Response(
            id=ident,
            model=served,
            message=Message(role="assistant", content=content, tool_calls=calls),
            finish_reason=finish,
            usage=usage,
            provider=self.provider_kind,
        )

    def stream_decoder(self, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model=model, provider=self.provider_kind)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        return openai_error(status, headers, body, model, self.provider_kind)


def _messages_out(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    attached: list[dict[str, Any]] = []  # images and documents of the tool results just sent
    for message in request.messages:
        if message.role != "tool" and attached:
            out.append({"role": "user", "content": attached})
            attached = []
        out.append(_message_out(message))
        if message.role == "tool":
            attached += _attachments(message)
    if attached:
        out.append({"role": "user", "content": attached})
    return out


def _message_out(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        content = (TOOL_ERROR_PREFIX if message.is_error else "") + message.content
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": content}
    if message.role == "assistant" and message.tool_calls:
        calls = [tool_call_out(c) for c in message.tool_calls]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    if message.parts:
        return {"role": message.role, "content": [_part_out(part) for part in message.parts]}
    return {"role": message.role, "content": message.content}


def _attachments(result: Message) -> list[dict[str, Any]]:
    """The images and documents of a tool result. A tool message takes text parts only, so they
    go in a user message right after the run of tool messages (one between them would break
    the run the API requires after the calls), each result's introduced by a text naming its
    call, so the model can tell whose they are."""
    media = [_part_out(part) for part in result.parts if not isinstance(part, TextPart)]
    if not media:
        return []
    label = f"Attached to the result of tool call {result.tool_call_id}:"
    return [{"type": "text", "text": label}, *media]


def _part_out(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url or data_url(part.media_type, part.data)
        return {"type": "image_url", "image_url": {"url": url}}
    if part.url:  # see unsupported(): the router sends a client's such request elsewhere
        raise BadRequest("a document given by URL cannot be sent to OpenAI chat completions")
    file = {"filename": file_name(part), "file_data": data_url(part.media_type, part.data)}
    return {"type": "file", "file": file}


def _lost_media(request: Request) -> tuple[Untranslatable, ...]:
    """Chat Completions takes a file's bytes (``file_data``) or an OpenAI file id, never a URL."""
    if any(isinstance(p, DocumentPart) and p.url for p in media_of(request.messages)):
        return (Untranslatable("document_url", "messages"),)
    return ()


def _begins_content(event: SSEEvent) -> bool:
    """Whether an event that decoded to no chunk still carries content: a delta our decoder
    does not read (a compatible server's ``reasoning_content``, a refusal, another choice's
    text). The opening ``{"role": "assistant", "content": ""}`` carries none."""
    try:
        data = _json.loads(event.data)
    except ValueError:  # [DONE]
        return False
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
            return True
    return False


def _response_format_out(wanted: ResponseFormat) -> dict[str, Any]:
    if wanted.schema is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": wanted.name, "schema": wanted.schema}
    if wanted.description is not None:
        spec["description"] = wanted.description
    if wanted.strict is not None:
        spec["strict"] = wanted.strict
    return {"type": "json_schema", "json_schema": spec}


def _tool_out(tool: ToolDefinition) -> dict[str, Any]:
    described = {"description": tool.description} if tool.description else {}
    function = {"name": tool.name, **described, "parameters": tool.parameters}
    return {"type": "function", "function": function}


def _tool_choice_out(choice: str) -> Any:
    if choice in CHOICES:
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


def read_answer(body: bytes, model: str) -> AnswerFacts:
    """A whole answer relayed as it came, read for telemetry and failover (the light reader of
    :class:`~controller.wire._relay.Relay`): checked as :meth:`OpenAIClientCodec.parse_response`
    checks it, so a malformed answer still fails over, but its message is not built."""
    data, message = _answer(body, model)
    _, calls = _message_fields(message, model)
    return _facts(data, bool(calls), model)


def _answer(body: bytes, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parsed answer and its first choice's message; the choice's finish_reason is read
    by :func:`_facts`."""
    data = load_json(body, what="chat completion", model=model)
    choices = require(data, "choices", list, what="chat completion", model=model)
    if not choices:
        raise MalformedResponse("chat completion: 'choices' is empty", model=model)
    return data, require(choices[0], "message", dict, what="choices[0]", model=model)


def _facts(data: dict[str, Any], has_calls: bool, model: str) -> AnswerFacts:
    """The answer's id, model, finish reason and usage (``data`` checked by :func:`_answer`)."""
    finish = _finish_in(data["choices"][0].get("finish_reason"), model)
    if finish is None:  # some compatible servers leave it null on a complete answer
        finish = FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP
    return (
        _opt(data, "id", str, "", model),
        _opt(data, "model", str, "", model) or model,
        finish,
        _usage_in(data.get("usage"), model) or Usage(),
    )


def _message_fields(raw: dict[str, Any], model: str) -> tuple[str, tuple[ToolCall, ...]]:
    content = _opt(raw, "content", str, "", model) or _opt(raw, "refusal", str, "", model)
    calls = tuple(_tool_call_in(c, model) for c in _opt(raw, "tool_calls", list, [], model))
    return content, calls


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
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) and not isinstance(cached, bool) else 0
    return Usage(prompt, _opt(raw, "completion_tokens", int, 0, model), max(0, min(cached, prompt)))


def _text_only(body: dict[str, Any]) -> str | None:
    """The text of a chunk that carries only a piece of choice 0's text (or nothing: ""), as
    :meth:`OpenAIStreamDecoder.feed` reads it; None for any other chunk (read in full)."""
    choices = body.get("choices")
    if type(choices) is not list or len(choices) != 1 or body.get("usage") is not None:
        return None
    choice = choices[0]
    if body.get("error") or type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    index = choice.get("index")
    delta = choice.get("delta")
    if (index is not None and index != 0) or (delta is not None and type(delta) is not dict):
        return None
    if delta is None:
        return ""
    text = delta.get("content")
    if delta.get("tool_calls") is not None or (text is not None and type(text) is not str):
        return None
    return text or ""


def _index(choice: Any) -> int:
    """A stream choice's index; 0 when a compatible server leaves it out or null."""
    index = choice.get("index") if isinstance(choice, dict) else None
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


class OpenAIStreamDecoder:
    """``data: {chat.completion.chunk}`` events → chunks; ``data: [DONE]`` sets :attr:`done`.

    Usage on a finish event rides on the finish chunk, a usage-only event becomes its own chunk.
    The served model is reported once, on the first chunk, when it differs from the requested one.
    With several choices (``n``), the chunks are choice 0's, and its finish is reported only
    once every choice seen has finished: a finish ends the wait for more, and the other choices
    (relayed to a same-format client as they came) must not be cut short.
    """

    # The key of a text event's text, and a member that changes on every chunk (random
    # padding), for the reader's TextShape (controller.wire._shape).
    shape_keys = (b'"content"', b'"obfuscation"')

    def __init__(self, *, model: str, provider: str = "openai") -> None:
        self._model = model
        self._provider = provider
        self._done = False
        self._model_seen = False
        self._unfinished: set[int] = set()  # choices seen that have not finished yet
        self._finish: StreamChunk | None = None  # choice 0's, held while others stream

    @property
    def done(self) -> bool:
        return self._done

    def quick(self, event: SSEEvent) -> str | None:
        """The text of an event that carries only a piece of choice 0's text (or nothing: ""),
        read in one step; None for any other event (read it with :meth:`feed`). What it reads
        changes the decoder's state only as :meth:`feed` would: the stream's first text, when
        it names the requested model, marks the model seen (a different one goes to the full
        read, which reports it)."""
        if event.event or self._done:
            return None
        if self._unfinished or self._finish is not None or event.data[:1] != "{":
            return None  # ([DONE] and the like: no JSON error built, ~1.3 us, twice a stream)
        try:
            body = orjson.loads(event.data)
        except orjson.JSONDecodeError:  # a keep-alive, not JSON (or only Python's)
            return None
        if self._model_seen:
            return _text_only(body) if type(body) is dict else None
        return self._first_text(body)

    def quick_data(self, name: bytes, data: bytes) -> str | None:
        """:meth:`quick` of an event named ``name`` whose data is ``data``, read from their bytes
        (:meth:`SSEParser.whole <controller.wire._sse.SSEParser.whole>`): bytes that are not
        UTF-8 are not JSON to orjson either, and go to the full read, which decodes them."""
        if name or self._done:
            return None
        if self._unfinished or self._finish is not None or data[:1] != b"{":
            return None  # (as quick: an object's first byte, or the full read)
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if self._model_seen:
            return _text_only(body) if type(body) is dict else None
        return self._first_text(body)

    def _first_text(self, body: Any) -> str | None:
        """:func:`_text_only` of a decoded event before the model is seen, for an event that
        names the requested one only: its text (not "") marks the model seen, as the full
        read's :meth:`_stamp_model` would (one full read less a stream). An empty requested
        model (a target's ``model: ""``) is none to name: the full read marks no empty name."""
        model = self._model
        if type(body) is not dict or not model or body.get("model") != model:
            return None  # not named, or another model: the full read stamps or skips it
        text = _text_only(body)
        if text:
            self._model_seen = True
        return text

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        text = self.quick(event)  # most events (the few others are parsed again below)
        if text is not None:
            return [StreamChunk(text=text)] if text else []
        data = event.data.strip()
        if self._done or event.event not in ("", "message", "error"):
            what = "data after [DONE]" if self._done else f"event {event.event!r}"
            raise MalformedResponse(f"unexpected stream {what}", model=self._model)
        if data == "[DONE]":
            self._done = True
            return []
        if not data:  # a keep-alive
            return []
        return self._body(load_event(data, model=self._model), event)

    def _body(self, body: Any, event: SSEEvent) -> list[StreamChunk]:
        if isinstance(body, dict) and (body.get("error") or event.event == "error"):
            raise ErrorFields.of(body, None).stream_error(self._model, self._provider)
        choices = require(body, "choices", list, what="stream chunk", model=self._model)
        chunks = self._choices(choices)
        usage = _usage_in(body.get("usage"), self._model)
        if usage is not None and chunks and chunks[-1].finish_reason is not None:
            chunks[-1] = chunks[-1].adding(usage=usage)
        elif usage is not None:
            chunks.append(StreamChunk(usage=usage))
        return self._stamp_model(body.get("model"), chunks)

    def _choices(self, choices: list[Any]) -> list[StreamChunk]:
        if len(choices) == 1 and not self._unfinished and self._finish is None:
            only = choices[0]  # the usual case: one choice, nothing held
            if _index(only) == 0:
                return self._choice(only)
        chunks: list[StreamChunk] = []
        for choice in choices:
            index = _index(choice)
            if index == 0:
                chunks += self._choice(choice)
            if isinstance(choice, dict) and choice.get("finish_reason") is not None:
                self._unfinished.discard(index)
            else:
                self._unfinished.add(index)
        if chunks and chunks[-1].finish_reason is not None:
            self._finish = chunks.pop()
        if self._finish is not None and not self._unfinished:
            chunks.append(self._finish)
            self._finish = None
        return chunks

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
