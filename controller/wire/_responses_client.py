"""Client side of the OpenAI Responses API (``POST {base}/responses``), for an OpenAI provider
configured with ``api: responses`` (models offered only there, or a gateway whose clients speak
it): our Request → the request's items, the ``response`` object and its events → our types.

A Responses client's own request (the gateway's ``/v1/responses`` front) goes on as it came,
``model`` set, and its answer is relayed as it came (:mod:`controller.wire._relay`); hosted
tools, ``previous_response_id`` and encrypted reasoning then work as against OpenAI.

Translated requests are sent with ``store: false`` (nothing is left stored upstream that the
gateway would not know of). The stream has no ``[DONE]``: ``response.completed`` (or
``response.incomplete``) ends it and carries the usage; ``response.failed`` and ``error`` events
are the provider's in-stream errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller._errors import MalformedResponse, ProviderError
from controller.model import (
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Request,
    Response,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Untranslatable,
    Usage,
)
from controller.wire._base import HttpCall, SSEEvent
from controller.wire._common import load_event, load_json
from controller.wire._media import data_url
from controller.wire._openai_common import TOOL_ERROR_PREFIX, ErrorFields, openai_error
from controller.wire._reasoning import effort_for
from controller.wire._relay import relay_for, relayed_body
from controller.wire._responses_request import WIRE_FORMAT

__all__ = ["ResponsesClientCodec", "ResponsesStreamDecoder"]

_INCOMPLETE = {
    "max_output_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
}
_ENDINGS = ("response.completed", "response.incomplete")


class ResponsesClientCodec:
    """An OpenAI provider spoken to through ``/responses``."""

    wire_format = WIRE_FORMAT

    def __init__(self, *, provider_kind: str = "openai", account: Mapping[str, str] | None = None):
        self.provider_kind = provider_kind
        self._account = dict(account or {})

    def __repr__(self) -> str:
        return f"ResponsesClientCodec(provider_kind={self.provider_kind!r})"

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        headers = dict(self._account)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        source = request.source
        if source is not None and source.format == WIRE_FORMAT:
            relay = relay_for(
                b"", echo_model=source.echo_model, starts=_begins_content, secret=api_key
            )
            content = relayed_body(source, model)
            return HttpCall(
                path="/responses", body={}, headers=headers, content=content, relay=relay
            )
        return HttpCall(path="/responses", body=encode_request(request, model), headers=headers)

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return ()  # every part of our Request has a field here

    def parse_response(self, body: bytes, model: str) -> Response:
        data = load_json(body, model=model)
        if not isinstance(data, dict) or not isinstance(data.get("output"), list):
            raise MalformedResponse("response: field 'output' missing or not list", model=model)
        message = _message_in(data["output"], model)
        return Response(
            id=str(data.get("id") or ""),
            model=str(data.get("model") or model),
            message=message,
            finish_reason=_finish_in(data, bool(message.tool_calls)),
            usage=_usage_in(data.get("usage")),
            provider=self.provider_kind,
        )

    def stream_decoder(self, model: str) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder(model=model, provider=self.provider_kind)

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        return openai_error(status, headers, body, model, self.provider_kind)


# ---------------------------------------------------------------- request


def encode_request(request: Request, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": _items_out(request.messages)}
    if request.system:
        body["instructions"] = request.system
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            }
            for t in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        named = choice not in ("auto", "none", "required")
        body["tool_choice"] = {"type": "function", "name": choice} if named else choice
    if request.tools and request.parallel_tool_calls is False:
        body["parallel_tool_calls"] = False
    wanted = request.response_format
    if wanted is not None:
        spec: dict[str, Any] = {"type": "json_object"}
        if wanted.schema is not None:
            spec = {"type": "json_schema", "name": wanted.name, "schema": dict(wanted.schema)}
            if wanted.description is not None:
                spec["description"] = wanted.description
            if wanted.strict is not None:
                spec["strict"] = wanted.strict
        body["text"] = {"format": spec}
    if request.reasoning is not None:
        body["reasoning"] = {"effort": effort_for(request.reasoning)}
    optional = {
        "max_output_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "safety_identifier": request.user,
    }
    body |= {k: v for k, v in optional.items() if v is not None}
    body["store"] = False
    if request.stream:
        body["stream"] = True
    return body


def _items_out(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            output = _parts_out(message) if message.parts else message.content
            if message.is_error:
                output = TOOL_ERROR_PREFIX + message.content if isinstance(output, str) else output
            items.append(
                {"type": "function_call_output", "call_id": message.tool_call_id, "output": output}
            )
        elif message.role == "assistant":
            if message.content:
                part = {"type": "output_text", "text": message.content}
                items.append({"type": "message", "role": "assistant", "content": [part]})
            items += [
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in message.tool_calls
            ]
        else:
            content = _parts_out(message) if message.parts else message.content
            items.append({"type": "message", "role": "user", "content": content})
    return items


def _parts_out(message: Message) -> list[dict[str, Any]]:
    return [_part_out(part) for part in message.parts]


def _part_out(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url or data_url(part.media_type, part.data)
        return {"type": "input_image", "image_url": url}
    document: DocumentPart = part
    named = {"filename": document.name or "document.pdf"}
    if document.url:
        return {"type": "input_file", "file_url": document.url}
    return {"type": "input_file", "file_data": data_url(document.media_type, document.data)} | named


# ---------------------------------------------------------------- answers


def _message_in(output: list[Any], model: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in output:
        if not isinstance(item, dict):
            raise MalformedResponse("response: an output item is not an object", model=model)
        if item.get("type") == "message":
            texts += [
                str(part.get("text") or "")
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") == "output_text"
            ]
        elif item.get("type") == "function_call":
            calls.append(_call_in(item, model))
    return Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _call_in(item: dict[str, Any], model: str) -> ToolCall:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise MalformedResponse("response: a function_call without call_id or name", model=model)
    return ToolCall(id=call_id, name=name, arguments=str(item.get("arguments") or "{}"))


def _finish_in(data: dict[str, Any], has_calls: bool) -> FinishReason:
    details = data.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if data.get("status") == "incomplete" and reason in _INCOMPLETE:
        return _INCOMPLETE[str(reason)]
    return FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP


def _usage_in(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    tokens = [raw.get("input_tokens"), raw.get("output_tokens"), cached]
    counts = [t if isinstance(t, int) and not isinstance(t, bool) else 0 for t in tokens]
    return Usage(counts[0], counts[1], max(0, min(counts[2], counts[0])))


def _begins_content(event: SSEEvent) -> bool:
    """An event that decoded to no chunk but begins the answer: a reasoning item, a hosted
    tool's call, any output item (the lifecycle events before them do not)."""
    return event.event.startswith("response.") and (
        "output_item" in event.event or "reasoning" in event.event
    )


class ResponsesStreamDecoder:
    """Responses events → chunks; ``response.completed``/``incomplete`` sets :attr:`done`."""

    def __init__(self, *, model: str, provider: str = "openai") -> None:
        self._model = model
        self._provider = provider
        self._done = False
        self._calls: dict[int, int] = {}  # output_index → our tool-call index
        self._served: str | None = None  # the model response.created names, until reported

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        if self._done:
            raise MalformedResponse(
                "unexpected stream data after the response ended", model=self._model
            )
        if not event.data.strip():
            return []
        data = load_event(event.data, model=self._model)
        if not isinstance(data, dict):
            raise MalformedResponse("stream event is not an object", model=self._model)
        kind = data.get("type") or event.event
        if kind in ("error", "response.failed"):
            raise self._error(data)
        found = data.get("response")
        response: dict[str, Any] = found if isinstance(found, dict) else {}
        if kind == "response.created":
            served = response.get("model")
            self._served = served if isinstance(served, str) and served != self._model else None
        if kind == "response.output_text.delta":
            return self._stamped([StreamChunk(text=str(data.get("delta") or ""))])
        if kind == "response.output_item.added":
            return self._stamped(self._added(data))
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(data.get("output_index", -1))
            if index is None:
                raise MalformedResponse("arguments for a call never added", model=self._model)
            delta = ToolCallDelta(index=index, arguments=str(data.get("delta") or ""))
            return [StreamChunk(tool_call=delta)]
        if kind in _ENDINGS:
            self._done = True
            finish = _finish_in(response, bool(self._calls))
            return [StreamChunk(finish_reason=finish, usage=_usage_in(response.get("usage")))]
        return []

    def _added(self, data: dict[str, Any]) -> list[StreamChunk]:
        item = data.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        call = _call_in(item | {"arguments": "{}"}, self._model)
        index = len(self._calls)
        self._calls[data.get("output_index", index)] = index
        return [StreamChunk(tool_call=ToolCallDelta(index=index, id=call.id, name=call.name))]

    def _stamped(self, chunks: list[StreamChunk]) -> list[StreamChunk]:
        """The served model (when it is not the one asked for) on the first chunk."""
        if self._served is None or not chunks:
            return chunks
        first = chunks[0]
        served, self._served = self._served, None
        return [StreamChunk(text=first.text, tool_call=first.tool_call, model=served), *chunks[1:]]

    def _error(self, data: dict[str, Any]) -> ProviderError:
        response = data.get("response")
        error = response.get("error") if isinstance(response, dict) else data
        fields = ErrorFields.of({"error": error} if isinstance(error, dict) else data, None)
        return fields.stream_error(self._model, self._provider)
