"""OpenAI Chat Completions pieces both directions share: the tool-error prefix, tool-call
rendering and the error body (read by the client, written by the server)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ModelNotFound,
    ProviderError,
    RateLimited,
)
from controller.model import ImagePart, Part, ToolCall
from controller.wire._common import Notes, error_for_status, parse_retry_after, status_for
from controller.wire._media import parse_data_url

__all__ = [
    "CHOICES",
    "TOOL_ERROR_PREFIX",
    "ErrorFields",
    "error_body",
    "image_part",
    "invalid",
    "openai_error",
    "optional",
    "required",
    "stream_usage_requested",
    "tool_call_out",
    "typed",
    "unsupported_value",
]

TOOL_ERROR_PREFIX = "[tool error] "
CHOICES = ("auto", "none", "required")
# An in-stream error has no HTTP status: infer the one the same error would have had, from its
# code first, then its type (OpenAI's rate-limit type is "requests" or "tokens").
_STREAM_STATUS = {
    "context_length_exceeded": 400,
    "content_filter": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "requests": 429,
    "tokens": 429,
}
# How the real API's request-validation messages begin, naming the parameter they are about:
# "Invalid 'messages': empty array...", "Invalid type for 'messages[0].role'...", "Missing
# required parameter: 'model'." Our server side words its refusals the same way.
_NAMED_PARAM = re.compile(
    r"(?:Invalid (?:type for |value for )?|Missing required parameter: )'([^']+)'"
)


def stream_usage_requested(body: Any) -> bool:
    """Whether a client asked for the usage-only chunk (``stream_options.include_usage``).

    The real API sends that chunk (with empty ``choices``) only on request, and client code that
    reads ``chunk.choices[0]`` breaks on it otherwise: pass the answer to ``stream_encoder``.
    """
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


def tool_call_out(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


# ---------------------------------------------------------------- errors (both sides)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorFields:
    """What an error body says: ``{"error": {message, type, param, code}}`` or a compatible
    server's variant (Ollama's ``{"error": "text"}``, FastAPI's ``{"detail": ...}``)."""

    message: str
    type: Any = None
    code: Any = None
    inner: Any = None  # Azure's innererror.code

    @classmethod
    def of(cls, data: Any, status: int | None) -> ErrorFields:
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


def _param_named(message: str) -> str | None:
    """The ``param`` of a request-validation error, read back from its message. The error tree
    has no field for it, and the gateway rebuilds a caller's error from its class and message
    (with the status it answers), so the message, which names the parameter first in the real
    API's wording, is what carries it. Other messages (an upstream's own words) give None."""
    named = _NAMED_PARAM.match(message)
    return named.group(1) if named else None


def error_body(err: ProviderError) -> dict[str, Any]:
    kind, code, param = "server_error", None, None
    if isinstance(err, ContextTooLong):
        kind, code, param = "invalid_request_error", "context_length_exceeded", "messages"
    elif isinstance(err, ContentFiltered):
        kind, code = "invalid_request_error", "content_filter"
    elif isinstance(err, BadRequest):
        kind, param = "invalid_request_error", _param_named(err.message)
    elif isinstance(err, ModelNotFound):  # the real API's words for a model it does not have
        kind, code = "invalid_request_error", "model_not_found"
    elif isinstance(err, RateLimited):
        kind, code = "requests", "rate_limit_exceeded"
    elif isinstance(err, AuthFailed) and status_for(err) == 403:
        kind = "permission_error"
    elif isinstance(err, AuthFailed):
        kind, code = "invalid_request_error", "invalid_api_key"
    return {"error": {"message": err.message, "type": kind, "param": param, "code": code}}


# --- a client's request checked as OpenAI's APIs check it (Chat Completions and Responses) ---
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_TYPE_NAMES |= {list: "an array", dict: "an object", type(None): "null"}


def invalid(message: str) -> BadRequest:
    return BadRequest(message, status=400)


def typed(value: Any, kinds: tuple[type, ...], path: str) -> Any:
    """``value`` if it has one of ``kinds``, else a 400 worded like the real API's."""
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return value
    expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    raise invalid(f"Invalid type for '{path}': expected {expected}, but got {got} instead.")


def required(obj: dict[str, Any], key: str, kinds: tuple[type, ...], path: str = "") -> Any:
    full = f"{path}.{key}" if path else key
    if obj.get(key) is None:
        raise invalid(f"Missing required parameter: '{full}'.")
    return typed(obj[key], kinds, full)


def optional(obj: dict[str, Any], key: str, kinds: tuple[type, ...], path: str = "") -> Any:
    value = obj.get(key)
    return None if value is None else typed(value, kinds, f"{path}.{key}" if path else key)


def unsupported_value(value: Any, path: str, supported: str) -> BadRequest:
    """The 400 for a value the API does not take (the value shown clipped: it is the client's)."""
    shown = repr(value)[:60]
    return invalid(f"Invalid value for '{path}': {shown}. Supported values are: {supported}.")


def image_part(holder: dict[str, Any], key: str, where: str, path: str, notes: Notes) -> list[Part]:
    """An image named by the URL in ``holder[key]`` (``where`` is ``holder``'s path): a base64
    data URL or a URL. A ``detail`` other than ``auto`` is noted (only OpenAI has it), and so is
    a data URL not in base64 (``;utf8,<svg...``), at ``path``."""
    url: str = required(holder, key, (str,), where)
    if optional(holder, "detail", (str,), where) not in (None, "auto"):
        notes.add("image_detail", f"{where}.detail")
    if not url.startswith("data:"):
        return [ImagePart(url=url)]
    inline = parse_data_url(url)
    if inline is None:
        notes.add("image", path)
        return []
    return [ImagePart(media_type=inline[0], data=inline[1])]


def openai_error(
    status: int, headers: Mapping[str, str], body: bytes, model: str, provider: str
) -> ProviderError:
    """A non-2xx answer of OpenAI's APIs (Chat Completions, Responses) as the error it means."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # an HTML page from a proxy, say
        data = body.decode("utf-8", errors="replace").strip()[:300] or None
    fields = ErrorFields.of(data, status)
    retry_after = parse_retry_after(headers)
    err = error_for_status(status, fields.message, model=model, retry_after=retry_after)
    return fields.refine(err, provider=provider)
