"""Google Gemini ``generateContent`` as a pure codec, both directions (no I/O).

Why this is more than a field rename:

* Gemini keys tool results by function *name*, our model by call *id*. Encoding looks the name
  up from the assistant turn that made the call; decoding pairs results to calls by id when
  Gemini sends one, else by name in order, and invents stable ids (``call_<n>``) where it sends
  none (responses too).
* Arguments are JSON *objects* on this wire and JSON *text* in our model: they are parsed on the
  way out and re-serialised compactly (key order kept) on the way in, so compact text
  round-trips byte for byte and other spellings of the same object come back compact.
* A response that calls functions still says ``finishReason: STOP``; our model says TOOL_CALLS.
* Streams have no terminator: every ``data:`` event is a whole response chunk, ``done`` never
  turns true, and completeness is judged (by the transport) from a finishReason having been seen.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

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

__all__ = ["PROVIDER_KIND", "GeminiClientCodec", "GeminiServerCodec", "parse_path"]

PROVIDER_KIND = "gcp.gemini"

_PATH = re.compile(r"^/v1(?:beta)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
)
_TO_GEMINI_FINISH = {
    FinishReason.STOP: "STOP",
    FinishReason.TOOL_CALLS: "STOP",
    FinishReason.LENGTH: "MAX_TOKENS",
    FinishReason.CONTENT_FILTER: "SAFETY",
}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_FROM_MODE: dict[str, ToolChoice | None] = {
    "AUTO": "auto",
    "NONE": "none",
    "VALIDATED": "auto",
    "MODE_UNSPECIFIED": None,
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CONTEXT_TOO_LONG = re.compile(r"input token count.*exceeds the maximum", re.I | re.S)
_CONTEXT_MESSAGE = "The input token count exceeds the maximum number of tokens allowed"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DOMAIN = "generativelanguage.googleapis.com"
#: ErrorInfo reason we render for ContentFiltered: real Gemini reports a blocked prompt in a 200
#: body (promptFeedback), which an error status cannot carry, so the type travels in the details.
_FILTER_REASON = "CONTENT_FILTERED"


class _Call(NamedTuple):
    id: str | None
    name: str
    arguments: str


class _Result(NamedTuple):
    id: str | None
    name: str
    response: dict[str, Any]


def parse_path(path: str) -> tuple[str, bool] | None:
    """``(model, stream)`` for ``/v1beta/models/{model}:(stream)GenerateContent``, else None."""
    match = _PATH.match(path.split("?", 1)[0])
    if match is None:
        return None
    return urllib.parse.unquote(match.group(1)), match.group(2) == "streamGenerateContent"


# --------------------------------------------------------------------------- shared helpers


def _args_text(args: Any) -> str:
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)


def _args_object(text: str, *, where: str, error: type[ProviderError]) -> dict[str, Any]:
    """Arguments text → the object Gemini requires; ``error`` names ``where`` if it is not one."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise error(f"{where}: arguments are not a JSON object")
    return value


def _model_parts(message: Message, *, where: str, error: type[ProviderError]) -> list[Any]:
    parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    for j, call in enumerate(message.tool_calls):
        args = _args_object(call.arguments, where=f"{where}.tool_calls[{j}]", error=error)
        function: dict[str, Any] = {"name": call.name, "args": args}
        if call.id:
            function["id"] = call.id
        parts.append({"functionCall": function})
    return parts or [{"text": ""}]


def _usage_metadata(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.total_tokens,
    }


# --------------------------------------------------------------------------- client: encode


def _encode_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our turns → Gemini contents; consecutive tool results share one ``user`` content."""
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    previous_was_tool = False
    for i, msg in enumerate(messages):
        if msg.role == "tool":
            part = _encode_result(msg, names, where=f"messages[{i}]")
            if previous_was_tool:
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        elif msg.role == "assistant":
            names.update((call.id, call.name) for call in msg.tool_calls)
            parts = _model_parts(msg, where=f"messages[{i}]", error=BadRequest)
            contents.append({"role": "model", "parts": parts})
        else:
            contents.append({"role": "user", "parts": [{"text": msg.content}]})
        previous_was_tool = msg.role == "tool"
    return contents


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
    if tool.parameters != _EMPTY_SCHEMA:
        decl["parameters"] = tool.parameters
    return decl


def _encode_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    mode = _MODES.get(choice)
    config: dict[str, Any] = {"mode": mode or "ANY"}
    if mode is None:
        config["allowedFunctionNames"] = [choice]
    return {"functionCallingConfig": config}


def _encode_request(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _encode_contents(request.messages)}
    if request.system is not None:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_encode_tool(t) for t in request.tools]}]
    if request.tool_choice is not None:
        body["toolConfig"] = _encode_tool_choice(request.tool_choice)
    settings = (
        ("maxOutputTokens", request.max_tokens),
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("stopSequences", list(request.stop) or None),
    )
    config = {key: value for key, value in settings if value is not None}
    if config:
        body["generationConfig"] = config
    return body


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
    return Usage(counts[0], counts[1] + counts[2])


def _parts(candidate: dict[str, Any], model: str) -> list[str | _Call]:
    """The text deltas and whole function calls of a candidate, in order; thoughts skipped."""
    content = candidate.get("content")
    if content is None:
        return []
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise MalformedResponse("candidate content: 'parts' is not a list", model=model)
    items: list[str | _Call] = []
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


def _response_call(call: Any, model: str) -> _Call:
    name = require(call, "name", str, what="functionCall", model=model)
    args = call.get("args", {})
    if not isinstance(args, dict):
        raise MalformedResponse("functionCall: 'args' is not an object", model=model)
    given = call.get("id")
    return _Call(given if isinstance(given, str) and given else None, name, _args_text(args))


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
    calls = [item for item in items if isinstance(item, _Call)]
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
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
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
    for detail in _details(error, _RETRY_INFO):
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
    reasons = {d.get("reason") for d in _details(error, _ERROR_INFO)}
    if "API_KEY_INVALID" in reasons:  # Gemini answers a bad key with 400, not 401
        return AuthFailed(text, model=model, status=status)
    if _FILTER_REASON in reasons:
        return ContentFiltered(text, model=model, status=status)
    # Gemini has no error code for context overflow: it is a plain INVALID_ARGUMENT that only its
    # message tells apart. This edge is the one place allowed to read it; past here, types rule.
    if error.get("status") == "INVALID_ARGUMENT" and _CONTEXT_TOO_LONG.search(text):
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
        data = load_json(event.data, what="stream event", model=self._model)
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

    def _chunk(self, item: str | _Call) -> StreamChunk:
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


def _attach(chunks: list[StreamChunk], **fields: Any) -> list[StreamChunk]:
    if not chunks:
        return [StreamChunk(**fields)]
    return [*chunks[:-1], replace(chunks[-1], **fields)]


class GeminiClientCodec:
    """Client side: our Request → ``generateContent`` call; Gemini answers → our types."""

    provider_kind = PROVIDER_KIND

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        method = "streamGenerateContent" if request.stream else "generateContent"
        name = urllib.parse.quote(model.removeprefix("models/"), safe="-._~")
        return HttpCall(
            path=f"/v1beta/models/{name}:{method}",
            body=_encode_request(request),
            headers={"x-goog-api-key": api_key} if api_key else {},
            query={"alt": "sse"} if request.stream else {},
        )

    def parse_response(self, body: bytes, model: str) -> Response:
        return _decode_response(load_json(body, model=model), model)

    def stream_decoder(self, model: str) -> _GeminiStreamDecoder:
        return _GeminiStreamDecoder(model)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        return _mapped_error(status, headers, _error_object(body), model)


# --------------------------------------------------------------------------- server: requests


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
    accepted = (int, float) if kind is float else kind
    if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
        raise _invalid(path, value)
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value


def _read_part(part: Any, path: str) -> str | _Call | _Result | None:
    if not isinstance(part, dict):
        raise _invalid(path, part)
    if part.get("thought") is True:
        return None
    if "functionCall" in part:
        call = _want(part, "functionCall", dict, f"{path}.functionCall")
        name = _want(call, "name", str, f"{path}.functionCall.name", required=True)
        args = _want(call, "args", dict, f"{path}.functionCall.args") or {}
        return _Call(_want(call, "id", str, f"{path}.functionCall.id"), name, _args_text(args))
    if "functionResponse" in part:
        result = _want(part, "functionResponse", dict, f"{path}.functionResponse")
        name = _want(result, "name", str, f"{path}.functionResponse.name", required=True)
        response = _want(result, "response", dict, f"{path}.functionResponse.response") or {}
        return _Result(_want(result, "id", str, f"{path}.functionResponse.id"), name, response)
    if "text" in part:
        text: str = _want(part, "text", str, f"{path}.text", required=True)
        return text
    supported = "only text, functionCall and functionResponse parts are supported"
    raise BadRequest(f"{path}: {supported}", status=400)


def _unwrap(response: dict[str, Any]) -> tuple[str, bool]:
    """``{"content": t}`` / ``{"output": t}`` → t, ``{"error": t}`` → (t, is_error); any other
    object the caller chose is kept whole as JSON text."""
    if len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("content", "output", "error"):
            return (value if isinstance(value, str) else _args_text(value)), key == "error"
    return _args_text(response), False


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
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, part in enumerate(parts):
        item = _read_part(part, f"{path}.parts[{j}]")
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, _Call) and role == "model":
            calls.append(
                ToolCall(
                    id=ids.for_call(item.id, item.name), name=item.name, arguments=item.arguments
                )
            )
        elif isinstance(item, _Result) and role != "model":
            content, is_error = _unwrap(item.response)
            call_id = ids.for_result(item.id, item.name)
            results.append(
                Message(role="tool", content=content, tool_call_id=call_id, is_error=is_error)
            )
        elif item is not None:
            raise BadRequest(f"{path}.parts[{j}]: not allowed in a {role!r} turn", status=400)
    if role == "model":
        return [Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))]
    # User text parts are separate pieces of input, not stream deltas: keep them apart.
    if texts or not results:
        results.append(Message(role="user", content="\n".join(texts)))
    return results


def _decode_contents(data: dict[str, Any]) -> tuple[Message, ...]:
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


def _decode_system(data: dict[str, Any]) -> str | None:
    system = _want(data, "systemInstruction", dict, "systemInstruction")
    if system is None:
        return None
    parts = _want(system, "parts", list, "systemInstruction.parts", required=True)
    texts = [_read_part(p, f"systemInstruction.parts[{j}]") for j, p in enumerate(parts)]
    return "\n".join(t for t in texts if isinstance(t, str))


def _decode_tools(data: dict[str, Any]) -> tuple[ToolDefinition, ...]:
    tools: list[ToolDefinition] = []
    for i, tool in enumerate(_want(data, "tools", list, "tools") or []):
        if not isinstance(tool, dict):
            raise _invalid(f"tools[{i}]", tool)
        path = f"tools[{i}].functionDeclarations"
        for j, decl in enumerate(_want(tool, "functionDeclarations", list, path) or []):
            where = f"{path}[{j}]"
            if not isinstance(decl, dict):
                raise _invalid(where, decl)
            schema = _want(decl, "parameters", dict, f"{where}.parameters") or _want(
                decl, "parametersJsonSchema", dict, f"{where}.parametersJsonSchema"
            )
            tools.append(
                ToolDefinition(
                    name=_want(decl, "name", str, f"{where}.name", required=True),
                    description=_want(decl, "description", str, f"{where}.description") or "",
                    parameters=schema if schema is not None else dict(_EMPTY_SCHEMA),
                )
            )
    return tuple(tools)


def _decode_tool_choice(data: dict[str, Any]) -> ToolChoice | None:
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


def _decode_generation(data: dict[str, Any]) -> dict[str, Any]:
    config = _want(data, "generationConfig", dict, "generationConfig") or {}
    stop = _want(config, "stopSequences", list, "generationConfig.stopSequences") or []
    for k, item in enumerate(stop):
        if not isinstance(item, str):
            raise _invalid(f"generationConfig.stopSequences[{k}]", item)
    return {
        "max_tokens": _want(config, "maxOutputTokens", int, "generationConfig.maxOutputTokens"),
        "temperature": _want(config, "temperature", float, "generationConfig.temperature"),
        "top_p": _want(config, "topP", float, "generationConfig.topP"),
        "stop": tuple(stop),
    }


# --------------------------------------------------------------------------- server: answers


def _error_body(err: ProviderError) -> dict[str, Any]:
    status = status_for(err)
    message = err.message
    if isinstance(err, ContextTooLong) and not _CONTEXT_TOO_LONG.search(message):
        message = f"{_CONTEXT_MESSAGE}: {message}" if message else f"{_CONTEXT_MESSAGE}."
    fallback = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _GOOGLE_STATUS.get(status, fallback),
    }
    details: list[dict[str, Any]] = []
    if isinstance(err, RateLimited) and err.retry_after is not None:
        details.append({"@type": _RETRY_INFO, "retryDelay": f"{err.retry_after:g}s"})
    if isinstance(err, ContentFiltered):
        details.append({"@type": _ERROR_INFO, "reason": _FILTER_REASON, "domain": _DOMAIN})
    if details:
        error["details"] = details
    return {"error": error}


class _GeminiStreamEncoder:
    """Our chunks → Gemini SSE. Gemini sends a function call whole, so streamed argument pieces
    are buffered and the calls flushed with the finishing chunk (or at ``end()``)."""

    def __init__(self, *, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._calls: dict[int, ToolCall] = {}

    def start(self) -> bytes:
        return b""

    def encode(self, chunk: StreamChunk) -> bytes:
        self._model = chunk.model or self._model
        if chunk.tool_call is not None:
            self._buffer(chunk.tool_call)
        parts: list[dict[str, Any]] = [{"text": chunk.text}] if chunk.text else []
        if chunk.finish_reason is not None:
            parts += self._flush()
        if not parts and chunk.finish_reason is None and chunk.usage is None:
            return b""
        return self._event(parts, chunk.finish_reason, chunk.usage)

    def end(self) -> bytes:
        parts = self._flush()
        return self._event(parts, None, None) if parts else b""

    def error(self, err: ProviderError) -> bytes:
        return sse(_error_body(err))

    def _buffer(self, delta: ToolCallDelta) -> None:
        seen = self._calls.get(delta.index)
        self._calls[delta.index] = ToolCall(
            id=delta.id or (seen.id if seen else ""),
            name=delta.name or (seen.name if seen else ""),
            arguments=(seen.arguments if seen else "") + delta.arguments,
        )

    def _flush(self) -> list[dict[str, Any]]:
        calls = tuple(call for _, call in sorted(self._calls.items()))
        self._calls = {}
        if not calls:
            return []
        message = Message(role="assistant", tool_calls=calls)
        return _model_parts(message, where="stream", error=MalformedResponse)

    def _event(
        self, parts: list[dict[str, Any]], finish: FinishReason | None, usage: Usage | None
    ) -> bytes:
        body: dict[str, Any] = {}
        if parts or finish is not None:
            candidate: dict[str, Any] = {"content": {"parts": parts or [{"text": ""}]}}
            candidate["content"]["role"] = "model"
            if finish is not None:
                candidate["finishReason"] = _TO_GEMINI_FINISH[finish]
            candidate["index"] = 0
            body["candidates"] = [candidate]
        if usage is not None:
            body["usageMetadata"] = _usage_metadata(usage)
        body["modelVersion"] = self._model
        body["responseId"] = self._id
        return sse(body)


class GeminiServerCodec:
    """Server side: Gemini request bodies → our Request; our answers → Gemini's bytes."""

    def parse_request(self, body: Any, path_model: str | None = None) -> tuple[str, Request]:
        """The model comes from the URL path; the caller sets ``stream`` from the method name."""
        data = body
        if isinstance(body, bytes | str):
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("Invalid JSON payload received.", status=400) from None
        if not isinstance(data, dict):
            raise BadRequest("Invalid JSON payload received: expected an object.", status=400)
        if not path_model:
            message = "model: name it in the path, models/{model}:generateContent"
            raise BadRequest(message, status=400)
        request = Request(
            messages=_decode_contents(data),
            system=_decode_system(data),
            tools=_decode_tools(data),
            tool_choice=_decode_tool_choice(data),
            **_decode_generation(data),
        )
        return path_model, request

    def render_response(self, response: Response) -> dict[str, Any]:
        parts = _model_parts(response.message, where="message", error=MalformedResponse)
        candidate = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": _TO_GEMINI_FINISH[response.finish_reason],
            "index": 0,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": _usage_metadata(response.usage),
            "modelVersion": response.model,
            "responseId": response.id,
        }

    def stream_encoder(self, *, id: str, model: str) -> _GeminiStreamEncoder:
        return _GeminiStreamEncoder(id=id, model=model)

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        return status_for(err), _error_body(err), retry_after_headers(err)
