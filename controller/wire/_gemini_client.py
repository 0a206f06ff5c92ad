"""Client side of Gemini ``generateContent``: our Request → HTTP call, and answers, stream
events and errors → our types. :mod:`controller.wire.gemini` explains the mapping."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controller import _json
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
    Message,
    Part,
    Reasoning,
    Request,
    Response,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Untranslatable,
    Usage,
)
from controller.wire._base import HttpCall, SSEEvent
from controller.wire._common import (
    error_for_status,
    json_or_none,
    load_event,
    load_json,
    parse_retry_after,
    require,
)
from controller.wire._gemini_common import (
    CONTEXT_TOO_LONG,
    EMPTY_SCHEMA,
    ERROR_INFO,
    FILTER_REASON,
    PROVIDER_KIND,
    RETRY_INFO,
    SKIP_SIGNATURE,
    Call,
    args_text,
    model_parts,
)
from controller.wire._media import media_of, url_media_type
from controller.wire._reasoning import gemini_budget
from controller.wire._relay import relay_for

__all__ = ["GeminiClientCodec"]

log = logging.getLogger(__name__)

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
)
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

# --------------------------------------------------------------------------- client: encode


def _encode_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our turns → Gemini contents; consecutive tool results share one ``user`` content."""
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    previous_was_tool = False
    for i, msg in enumerate(messages):
        if msg.role == "tool":  # its images and documents follow its functionResponse
            result = _encode_result(msg, names, where=f"messages[{i}]")
            parts = [result, *(_part_out(p) for p in msg.parts if not isinstance(p, TextPart))]
            if previous_was_tool:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": "user", "parts": parts})
        elif msg.role == "assistant":
            names.update((call.id, call.name) for call in msg.tool_calls)
            parts = model_parts(msg, where=f"messages[{i}]", log=log)
            _sign_first_call(parts)
            contents.append({"role": "model", "parts": parts})
        elif msg.parts:  # empty text parts left out, as the API refuses them
            parts = [_part_out(p) for p in msg.parts if not isinstance(p, TextPart) or p.text]
            contents.append({"role": "user", "parts": parts})
        else:
            contents.append({"role": "user", "parts": [{"text": msg.content}]})
        previous_was_tool = msg.role == "tool"
    return contents


def _part_out(part: Part) -> dict[str, Any]:
    """Text; bytes as ``inlineData``; a URL as ``fileData`` (Gemini fetches public and signed
    URLs; the media type is sent when known, from the client or the URL's path)."""
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url:
        media_type = url_media_type(part.url, part.media_type)
        named = {"mimeType": media_type} if media_type else {}
        return {"fileData": named | {"fileUri": part.url}}
    return {"inlineData": {"mimeType": part.media_type, "data": part.data}}


def _lost_media(request: Request) -> tuple[Untranslatable, ...]:
    """A document's title has no place here (inline data carries no name; a file name, the
    bytes' label OpenAI requires, is left behind as no more than that)."""
    if any(isinstance(p, DocumentPart) and p.title for p in media_of(request.messages)):
        return (Untranslatable("document_title", "messages"),)
    return ()


def _sign_first_call(parts: list[dict[str, Any]]) -> None:
    """The first function call of a replayed model turn carries the documented placeholder
    signature (Gemini 3 validates the first call's; parallel calls after it carry none)."""
    first = next((part for part in parts if "functionCall" in part), None)
    if first is not None:
        first["thoughtSignature"] = SKIP_SIGNATURE


def _encode_result(msg: Message, names: dict[str, str], *, where: str) -> dict[str, Any]:
    name = names.get(msg.tool_call_id or "")
    if name is None:
        raise BadRequest(f"{where}.tool_call_id {msg.tool_call_id!r} answers no earlier tool call")
    response = {"error" if msg.is_error else "content": msg.content}
    return {"functionResponse": {"name": name, "response": response, "id": msg.tool_call_id}}


def _encode_tool(tool: ToolDefinition) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    # Gemini rejects an OBJECT schema without properties; "no parameters" is how it says that.
    if tool.parameters != EMPTY_SCHEMA:
        decl["parameters"] = tool.parameters
    return decl


def _encode_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    mode = _MODES.get(choice)
    config: dict[str, Any] = {"mode": mode or "ANY"}
    if mode is None:
        config["allowedFunctionNames"] = [choice]
    return {"functionCallingConfig": config}


def _encode_request(request: Request, model: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _encode_contents(request.messages)}
    if request.system is not None:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_encode_tool(t) for t in request.tools]}]
    if request.tool_choice is not None:
        body["toolConfig"] = _encode_tool_choice(request.tool_choice)
    wanted = request.response_format
    settings = (
        ("maxOutputTokens", request.max_tokens),
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("stopSequences", list(request.stop) or None),
        ("seed", request.seed),
        ("responseMimeType", "application/json" if wanted is not None else None),
        ("responseJsonSchema", wanted.schema if wanted is not None else None),
        ("thinkingConfig", _thinking_config(request.reasoning, model)),
    )
    config = {key: value for key, value in settings if value is not None}
    if config:
        body["generationConfig"] = config
    return body


def _thinking_config(reasoning: Reasoning | None, model: str) -> dict[str, int] | None:
    """``thinkingBudget`` for ``reasoning``: its budget within what ``model`` takes, 0 for
    effort ``none`` (where the model can stop thinking), -1 (the model decides) for
    Anthropic's adaptive thinking."""
    if reasoning is None:
        return None
    return {"thinkingBudget": gemini_budget(reasoning, model)}


# --------------------------------------------------------------------------- client: decode


def _finish(reason: str, has_calls: bool) -> FinishReason:
    """MALFORMED_FUNCTION_CALL, OTHER and reasons Google adds later read as STOP."""
    if reason == "MAX_TOKENS":
        return FinishReason.LENGTH
    if reason in _FILTERED or "PROHIBITED" in reason:
        return FinishReason.CONTENT_FILTER
    return FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP


def _usage(meta: Any, model: str) -> Usage | None:
    """Thinking tokens are billed as output, and our Usage has no separate slot for them."""
    if meta is None:
        return None
    counts = []
    for key in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount"):
        value = meta.get(key, 0) if isinstance(meta, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedResponse(f"usageMetadata: {key!r} is not an integer", model=model)
        counts.append(value)
    cached = meta.get("cachedContentTokenCount") if isinstance(meta, dict) else None  # of prompt
    cached = cached if isinstance(cached, int) and not isinstance(cached, bool) else 0
    return Usage(counts[0], counts[1] + counts[2], max(0, min(cached, counts[0])))


def _parts(candidate: dict[str, Any], model: str) -> list[str | Call]:
    """The text deltas and whole function calls of a candidate, in order; thoughts skipped."""
    content = candidate.get("content")
    if content is None:
        return []
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise MalformedResponse("candidate content: 'parts' is not a list", model=model)
    items: list[str | Call] = []
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedResponse("candidate content: a part is not an object", model=model)
        if part.get("thought") is True:
            continue
        if "functionCall" in part:
            items.append(_response_call(part["functionCall"], model))
        elif "text" in part:
            text = require(part, "text", str, what="text part", model=model)
            if text:
                items.append(text)
    return items


def _response_call(call: Any, model: str) -> Call:
    name = require(call, "name", str, what="functionCall", model=model)
    args = call.get("args", {})
    if not isinstance(args, dict):
        raise MalformedResponse("functionCall: 'args' is not an object", model=model)
    given = call.get("id")
    return Call(given if isinstance(given, str) and given else None, name, args_text(args))


def _candidate(data: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The first candidate; None when there is none. A blocked prompt raises ContentFiltered."""
    candidates = data.get("candidates")
    if not candidates:
        feedback = data.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if isinstance(reason, str):
            raise ContentFiltered(f"prompt blocked by the provider: {reason}", model=model)
        return None
    if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        raise MalformedResponse("'candidates' is not a list of objects", model=model)
    return candidates[0]


def _decode_response(data: Any, model: str) -> Response:
    if not isinstance(data, dict):
        raise MalformedResponse("response: expected an object", model=model)
    _raise_if_error(data, model)
    candidate = _candidate(data, model)
    if candidate is None:
        raise MalformedResponse("response has no candidates", model=model)
    items = _parts(candidate, model)
    calls = [item for item in items if isinstance(item, Call)]
    tool_calls = tuple(
        ToolCall(id=c.id or f"call_{i}", name=c.name, arguments=c.arguments)
        for i, c in enumerate(calls)
    )
    text = "".join(item for item in items if isinstance(item, str))
    reason = require(candidate, "finishReason", str, what="candidate", model=model)
    response_id = data.get("responseId")
    version = data.get("modelVersion")
    return Response(
        id=response_id if isinstance(response_id, str) else "",
        model=version if isinstance(version, str) and version else model,
        message=Message(role="assistant", content=text, tool_calls=tool_calls),
        finish_reason=_finish(reason, bool(tool_calls)),
        usage=_usage(data.get("usageMetadata"), model) or Usage(),
    )


# --------------------------------------------------------------------------- client: errors


def _error_object(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an error body (a bare object, or a list of them when the stream
    endpoint answered without ``alt=sse``); empty when the body is not one."""
    data = json_or_none(body)
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == kind]


def _retry_delay(error: dict[str, Any]) -> float | None:
    """RetryInfo.retryDelay ("34s", "1.5s"): how Gemini says when to come back after a 429."""
    for detail in _details(error, RETRY_INFO):
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _mapped_error(
    status: int, headers: Mapping[str, str], error: dict[str, Any], model: str
) -> ProviderError:
    message = error.get("message")
    text = message if isinstance(message, str) and message else f"HTTP {status}"
    retry_after = parse_retry_after(headers)
    if retry_after is None:
        retry_after = _retry_delay(error)
    base = error_for_status(status, text, model=model, retry_after=retry_after)
    if type(base) is not BadRequest:
        return base
    reasons = {d.get("reason") for d in _details(error, ERROR_INFO)}
    if "API_KEY_INVALID" in reasons:  # Gemini answers a bad key with 400, not 401
        return AuthFailed(text, model=model, status=status)
    if FILTER_REASON in reasons:
        return ContentFiltered(text, model=model, status=status)
    # Gemini has no error code for context overflow: it is a plain INVALID_ARGUMENT that only its
    # message tells apart. This edge is the one place allowed to read it; past here, types rule.
    if error.get("status") == "INVALID_ARGUMENT" and CONTEXT_TOO_LONG.search(text):
        return ContextTooLong(text, model=model, status=status)
    return base


def _raise_if_error(data: dict[str, Any], model: str) -> None:
    """An ``error`` object in a 200 body or in a stream event is raised as the mapped error."""
    error = data.get("error")
    if error is None:
        return
    if not isinstance(error, dict):
        raise MalformedResponse("'error' is not an object", model=model)
    code = error.get("code")
    status = code if isinstance(code, int) and code >= 400 else 500
    raise _mapped_error(status, {}, error, model)


class _GeminiStreamDecoder:
    """One per stream. Usage rides on every Gemini chunk as a running total; it is reported on
    the finishing chunk (and after it, if more arrives), never as interim noise."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._reported_model = model
        self._calls = 0
        self._finished = False
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return False  # Gemini sends no terminator event

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        data = load_event(event.data, model=self._model)
        if not isinstance(data, dict):
            raise MalformedResponse("stream event: expected an object", model=self._model)
        _raise_if_error(data, self._model)
        usage = _usage(data.get("usageMetadata"), self._model)
        self._usage = usage or self._usage
        candidate = _candidate(data, self._model)
        items = _parts(candidate, self._model) if candidate is not None else []
        chunks = [self._chunk(item) for item in items]
        reason = candidate.get("finishReason") if candidate is not None else None
        if reason is not None:
            if not isinstance(reason, str):
                raise MalformedResponse("'finishReason' is not a string", model=self._model)
            self._finished = True
            finish = _finish(reason, self._calls > 0)
            chunks = _attach(chunks, finish_reason=finish, usage=self._usage)
        elif self._finished and usage is not None:
            chunks = _attach(chunks, usage=usage)
        return self._with_model(chunks, data.get("modelVersion"))

    def _chunk(self, item: str | Call) -> StreamChunk:
        if isinstance(item, str):
            return StreamChunk(text=item)
        index = self._calls
        self._calls += 1
        delta = ToolCallDelta(
            index=index, id=item.id or f"call_{index}", name=item.name, arguments=item.arguments
        )
        return StreamChunk(tool_call=delta)

    def _with_model(self, chunks: list[StreamChunk], version: Any) -> list[StreamChunk]:
        """Name the served model once, when it first differs from what we last said."""
        if chunks and isinstance(version, str) and version and version != self._reported_model:
            self._reported_model = version
            chunks[0] = replace(chunks[0], model=version)
        return chunks


def _thinks(event: SSEEvent) -> bool:
    """Whether an event that decoded to no chunk begins the answer: a thought (the model is
    answering, at length maybe; failover is no longer possible from here)."""
    return '"thought"' in event.data


def _attach(chunks: list[StreamChunk], **fields: Any) -> list[StreamChunk]:
    if not chunks:
        return [StreamChunk(**fields)]
    return [*chunks[:-1], replace(chunks[-1], **fields)]


class GeminiClientCodec:
    """Client side: our Request → ``generateContent`` call; Gemini answers → our types."""

    provider_kind = PROVIDER_KIND
    wire_format = "gemini"

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        """A request a Gemini client sent (the gateway's Gemini front) goes on as it came: its
        bytes unchanged (the model is named in the path, not the body), the answer relayed."""
        method = "streamGenerateContent" if request.stream else "generateContent"
        name = urllib.parse.quote(model.removeprefix("models/"), safe="-._~")
        source = request.source
        relayed = source is not None and source.format == self.wire_format
        return HttpCall(
            path=f"/v1beta/models/{name}:{method}",
            body={} if relayed else _encode_request(request, model),
            headers={"x-goog-api-key": api_key} if api_key else {},
            query={"alt": "sse"} if request.stream else {},
            content=(source.raw or _json.dumps(source.body)) if relayed and source else None,
            relay=relay_for(b"", starts=_thinks, secret=api_key) if relayed else None,
        )

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        """No end-user id, and no way to ask for one tool call at a time."""
        missing = []
        if request.user is not None:
            missing.append(Untranslatable("user", "user"))
        if request.parallel_tool_calls is False and request.tools:
            missing.append(Untranslatable("parallel_tool_calls", "parallel_tool_calls"))
        return (*missing, *_lost_media(request))

    def parse_response(self, body: bytes, model: str) -> Response:
        return _decode_response(load_json(body, model=model), model)

    def stream_decoder(self, model: str) -> _GeminiStreamDecoder:
        return _GeminiStreamDecoder(model)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        return _mapped_error(status, headers, _error_object(body), model)
