"""The front formats the gateway speaks, and how any failure becomes an answer in them.

A client is always answered in its own wire format, whichever provider served (or failed) its
request: an OpenAI SDK gets ``{"error": {...}}`` bodies and ``data: [DONE]``, an Anthropic SDK
gets ``{"type": "error", ...}`` and ``message_stop``. The official SDKs pick their typed
exception from the HTTP status, so the status is chosen with care (see :func:`public_error`):

=====================================================  ======================================
what happened                                          status
=====================================================  ======================================
the provider refused the request (400, context, filter)  400, with the provider's reason
every provider failed; the last one rate-limited us    429 (+ Retry-After when it was given)
... the last one timed out                             504
... the last one rejected our key (upstream 401/403)   502: the *gateway* is misconfigured,
                                                       the client's own key is fine
... the last one was overloaded, unreachable, garbled  503
=====================================================  ======================================

Every answer also says whether to retry, in the header the official SDKs obey
(``x-should-retry``, read by the ``openai`` and ``anthropic`` SDKs before their own rules): a
final 4xx (bad key, bad request, unknown model or URL, wrong method, body too large) says
``false``, so a client does not retry what cannot succeed; the gateway's own 429 and 503 say
``true`` with a ``Retry-After`` in whole seconds: the last provider's for a 429 that had one, else
the controller's estimate (:meth:`~controller.gateway.backend.GatewayBackend.retry_after`), else
:data:`DEFAULT_RETRY_AFTER`. Other 5xx keep the SDKs' own rules.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from controller import _json
from controller._errors import (
    AllProvidersFailed,
    AuthFailed,
    BadRequest,
    CallerError,
    DeadlineExceeded,
    FailoverError,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderFault,
    ProviderTimeout,
    RateLimited,
    StreamInterrupted,
)
from controller.model import Origin, Request, Response
from controller.wire._base import StreamEncoder
from controller.wire.anthropic import RELAYED_HEADERS, AnthropicServerCodec
from controller.wire.gemini import GeminiServerCodec
from controller.wire.openai import OpenAIServerCodec, stream_usage_requested
from controller.wire.responses import ResponsesServerCodec

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "GEMINI",
    "HEADER_SHOULD_RETRY",
    "AnthropicFront",
    "Front",
    "GeminiFront",
    "OpenAIFront",
    "ResponsesFront",
    "error_response",
    "front_for_path",
    "front_for_request",
    "method_not_allowed",
    "providers_tried",
    "public_error",
    "unknown_url",
    "wants_retry_estimate",
]

HEADER_PROVIDER = "x-failover-provider"
HEADER_MODEL = "x-failover-model"
HEADER_SHOULD_RETRY = "x-should-retry"
DEFAULT_RETRY_AFTER = 1  # seconds, in a 429/503 when nothing better is known
_RETRY_STATUSES = frozenset({429, 503})  # the gateway's own "try again later" answers
_FINAL = {HEADER_SHOULD_RETRY: "false"}
_OPENAI_ROOT = "/v1/chat/completions"
_ANTHROPIC_ROOT = "/v1/messages"
_RESPONSES_ROOT = "/v1/responses"
_GEMINI_ROOT = "/v1beta/"
_MAX_ECHO = 200  # longest client-supplied text (a model name) repeated back in an error


class Front(Protocol):
    """One front format: its codec plus what the codec cannot say on its own."""

    name: str
    id_prefix: str  # of the ids minted for streamed answers
    relayed_headers: tuple[str, ...]  # the client's headers a provider of its format gets

    def parse(self, body: Any, origin: Origin) -> tuple[str, Request]: ...

    def peek(self, body: Any) -> tuple[str, bool]: ...

    def render(self, response: Response) -> dict[str, Any]: ...

    def encoder(self, *, id: str, model: str, body: Any) -> StreamEncoder: ...

    def error(self, err: ProviderError, *, retry_after: float | None = None) -> web.Response:
        """``err`` as this format's error answer (see :func:`error_response`)."""
        ...

    def model_not_found(self, model: str, known: Sequence[str]) -> web.Response: ...


class _FrontCodec(Protocol):
    """What a front asks of its server codec."""

    def parse_request(self, body: Any, *, origin: Origin = ...) -> tuple[str, Request]: ...

    def peek_request(self, body: Any) -> tuple[str, bool]: ...

    def render_response(self, response: Response) -> dict[str, Any]: ...

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]: ...


class _CodecFront:
    """A front's decoding, rendering and errors, as its server codec does them."""

    codec: _FrontCodec

    def parse(self, body: Any, origin: Origin) -> tuple[str, Request]:
        return self.codec.parse_request(body, origin=origin)

    def peek(self, body: Any) -> tuple[str, bool]:
        return self.codec.peek_request(body)

    def render(self, response: Response) -> dict[str, Any]:
        return self.codec.render_response(response)

    def error(self, err: ProviderError, *, retry_after: float | None = None) -> web.Response:
        return error_response(*self.codec.render_error(err), retry_after=retry_after)


class OpenAIFront(_CodecFront):
    """``POST /v1/chat/completions``."""

    name = "openai"
    id_prefix = "chatcmpl-"
    relayed_headers: tuple[str, ...] = ()

    codec: OpenAIServerCodec

    def __init__(self) -> None:
        self.codec = OpenAIServerCodec()

    def encoder(self, *, id: str, model: str, body: Any) -> StreamEncoder:
        """The usage-only chunk is sent only when asked for, as the real API does."""
        usage = stream_usage_requested(body)
        return self.codec.stream_encoder(id=id, model=model, include_usage=usage)

    def model_not_found(self, model: str, known: Sequence[str]) -> web.Response:
        message = f"The model '{_clip(model)}' does not exist on this gateway. {_known(known)}"
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        return web.json_response({"error": error}, status=404, headers=_FINAL)


class AnthropicFront(_CodecFront):
    """``POST /v1/messages``."""

    name = "anthropic"
    id_prefix = "msg_"
    relayed_headers: tuple[str, ...] = RELAYED_HEADERS

    codec: AnthropicServerCodec

    def __init__(self) -> None:
        self.codec = AnthropicServerCodec()

    def encoder(self, *, id: str, model: str, body: Any) -> StreamEncoder:
        return self.codec.stream_encoder(id=id, model=model)

    def model_not_found(self, model: str, known: Sequence[str]) -> web.Response:
        error = {"type": "not_found_error", "message": f"model: {_clip(model)}. {_known(known)}"}
        return web.json_response({"type": "error", "error": error}, status=404, headers=_FINAL)


class ResponsesFront(_CodecFront):
    """``POST /v1/responses``: OpenAI's Responses API (the openai SDK's ``client.responses``,
    Codex CLI). Its errors are OpenAI's ``{"error": {...}}`` bodies."""

    name = "responses"
    id_prefix = "resp_"
    relayed_headers: tuple[str, ...] = ()

    codec: ResponsesServerCodec

    def __init__(self) -> None:
        self.codec = ResponsesServerCodec()

    def encoder(self, *, id: str, model: str, body: Any) -> StreamEncoder:
        return self.codec.stream_encoder(id=id, model=model, body=body)

    def model_not_found(self, model: str, known: Sequence[str]) -> web.Response:
        return OPENAI.model_not_found(model, known)


class GeminiFront:
    """The Gemini front's codec and error shapes (the :class:`~._formats.Front` protocol)."""

    name = "gemini"
    id_prefix = ""
    relayed_headers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.codec = GeminiServerCodec(sign_calls=True)  # see GeminiServerCodec

    def parse(self, body: Any, origin: Origin) -> tuple[str, Request]:
        """A body alone names no model: :class:`GeminiEndpoint` parses with the path's."""
        return self.codec.parse_request(body, None, origin)

    def peek(self, body: Any) -> tuple[str, bool]:
        raise BadRequest("model: name it in the path, models/{model}:generateContent")

    def render(self, response: Response) -> dict[str, Any]:
        return self.codec.render_response(response)

    def encoder(self, *, id: str, model: str, body: Any) -> StreamEncoder:
        return self.codec.stream_encoder(id=id, model=model)

    def error(self, err: ProviderError, *, retry_after: float | None = None) -> web.Response:
        return error_response(*self.codec.render_error(err), retry_after=retry_after)

    def model_not_found(self, model: str, known: Sequence[str]) -> web.Response:
        names = ", ".join(sorted(known)) or "none are configured"
        error = {
            "code": 404,
            "message": f"models/{model[:200]} is not found on this gateway. Available: {names}.",
            "status": "NOT_FOUND",
        }
        return json_answer({"error": error}, status=404, headers=_FINAL)


OPENAI = OpenAIFront()
ANTHROPIC = AnthropicFront()
RESPONSES = ResponsesFront()
GEMINI = GeminiFront()
_ROOTS: tuple[tuple[str, Front], ...] = (
    (_OPENAI_ROOT, OPENAI),
    (_ANTHROPIC_ROOT, ANTHROPIC),
    (_RESPONSES_ROOT, RESPONSES),
)


def front_for_path(path: str) -> Front | None:
    """The format ``path`` itself decides: OpenAI's for ``/v1/chat/completions``, Anthropic's
    for ``/v1/messages``, the Responses API's for ``/v1/responses``, each with the paths under
    it, Gemini's for everything under ``/v1beta/`` and for ``/v1/models/{model}:{method}``;
    None for any other path (``/v1/models``, an unknown URL), which any SDK may call."""
    path = path.rstrip("/")
    if path.startswith(_GEMINI_ROOT) or (path.startswith("/v1/models/") and ":" in path):
        return GEMINI
    for root, front in _ROOTS:
        if path == root or path.startswith(root + "/"):
            return front
    return None


def front_for_request(request: web.Request) -> Front:
    """The format a request expects its errors in: its path's (:func:`front_for_path`) where
    the path decides, so every answer of an endpoint is in that endpoint's format. Elsewhere
    Anthropic's for a request carrying ``anthropic-version`` (which the Anthropic SDKs send on
    every call), Gemini's for one carrying ``x-goog-api-key``, else OpenAI's."""
    front = front_for_path(request.path)
    if front is not None:
        return front
    if "anthropic-version" in request.headers:
        return ANTHROPIC
    return GEMINI if "x-goog-api-key" in request.headers else OPENAI


def unknown_url(request: web.Request) -> web.Response:
    """The 404 for a path the gateway does not serve, in the caller's format (the SDKs show the
    message; aiohttp's own answer is a bare "404: Not Found" they cannot parse)."""
    message = (
        f"Unknown request URL: {_requested(request)}. This gateway serves OpenAI's "
        "POST /v1/chat/completions and POST /v1/responses, Anthropic's POST /v1/messages and "
        "Gemini's POST /v1beta/models/{model}:generateContent."
    )
    return front_for_request(request).error(BadRequest(message, status=404))


def method_not_allowed(request: web.Request, allowed: Collection[str]) -> web.Response:
    """The 405 for a served path asked with another method, in the caller's format, with the
    ``Allow`` header aiohttp would send."""
    methods = ", ".join(sorted(allowed))
    message = f"Invalid method for URL ({_requested(request)}): this URL accepts {methods}."
    response = front_for_request(request).error(BadRequest(message, status=405))
    response.headers["Allow"] = ",".join(sorted(allowed))
    return response


def _requested(request: web.Request) -> str:
    return _clip(f"{request.method} {request.path}")


def error_response(
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    retry_after: float | None = None,
) -> web.Response:
    """An error answer with the retry advice of its status (module docstring): ``headers`` may
    hold the provider's ``Retry-After`` already; ``retry_after`` is the gateway's estimate for
    a 429/503 without one."""
    return json_answer(
        body, status=status, headers=headers | _retry_advice(status, headers, retry_after)
    )


def _retry_advice(
    status: int, headers: Mapping[str, str], retry_after: float | None
) -> dict[str, str]:
    if status in _RETRY_STATUSES:
        advice = {HEADER_SHOULD_RETRY: "true"}
        if not any(name.lower() == "retry-after" for name in headers):
            seconds = DEFAULT_RETRY_AFTER if retry_after is None else math.ceil(retry_after)
            advice["Retry-After"] = str(max(DEFAULT_RETRY_AFTER, seconds))
        return advice
    if 400 <= status < 500:
        return {HEADER_SHOULD_RETRY: "false"}
    return {}


def json_answer(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response encoded with orjson (``web.json_response`` goes through stdlib json)."""
    return web.Response(
        body=_json.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def _known(names: Sequence[str]) -> str:
    if not names:
        return "No models are configured."
    return "Available models: " + ", ".join(sorted(names)) + "."


# ---------------------------------------------------------------- failure → public error


def public_error(exc: FailoverError) -> ProviderError:
    """The error to show the client for ``exc``: its class picks the status (table above) and
    its message says what was tried. Never a class the SDKs would read as the *client's* fault
    unless it was (an upstream 401 is the gateway's problem, hence 502)."""
    if isinstance(exc, CallerError):
        return _as_caller_error(exc, exc.message)
    if isinstance(exc, AllProvidersFailed | DeadlineExceeded):
        last = exc.attempts[-1] if exc.attempts else None
        deadline = isinstance(exc, DeadlineExceeded)
        return _from_last(last, _what_was_tried(exc, deadline=deadline), deadline=deadline)
    if isinstance(exc, StreamInterrupted):
        return _from_last(exc.cause, str(exc), deadline=False)
    if isinstance(exc, ProviderError):
        return _from_last(exc, str(exc), deadline=False)
    return ProviderFault(str(exc), status=500)


def wants_retry_estimate(shown: ProviderError) -> bool:
    """Whether the answer to ``shown`` (from :func:`public_error`) is a 429/503 that needs the
    gateway's own ``Retry-After``: not a 429 that carries the provider's."""
    if isinstance(shown, RateLimited) and shown.retry_after is not None:
        return False
    return shown.status in _RETRY_STATUSES


def providers_tried(exc: FailoverError) -> tuple[str, ...]:
    """The providers a failed request was tried on, each once, in order."""
    if isinstance(exc, AllProvidersFailed | DeadlineExceeded):
        names = [err.provider for err in exc.attempts]
    elif isinstance(exc, StreamInterrupted | ProviderError):
        names = [exc.provider]
    else:
        names = []
    return tuple(dict.fromkeys(name for name in names if name))


def _as_caller_error(err: CallerError, message: str) -> ProviderError:
    """The same refinement (context too long, filtered, plain) with status 400: an upstream
    404/422 says the request was wrong for that provider, which to our client is a 400."""
    cls = type(err) if isinstance(err, BadRequest) else BadRequest
    return cls(message, provider=err.provider, model=err.model, status=400)


def _from_last(last: ProviderError | None, message: str, *, deadline: bool) -> ProviderError:
    if last is None and deadline:
        return ProviderTimeout(message, phase="total")
    if last is None:  # nothing was tried: the kill switch or the state left no candidate
        return Overloaded(message, status=503)
    if isinstance(last, CallerError):
        return _as_caller_error(last, message)
    if isinstance(last, RateLimited):
        return RateLimited(message, retry_after=last.retry_after, status=429)
    if isinstance(last, ProviderTimeout):
        return ProviderTimeout(message, phase=last.phase)
    if isinstance(last, AuthFailed | ModelNotFound):  # the gateway's setup, not the caller's
        return ProviderFault(message, status=502)
    return Overloaded(message, status=503)


def _what_was_tried(exc: AllProvidersFailed | DeadlineExceeded, *, deadline: bool) -> str:
    """Each attempt and how it failed. An upstream auth error is named but not quoted: its text
    can carry a masked form of the *gateway's* provider key, which is not the client's to see."""
    if not exc.attempts:
        return str(exc)  # nothing was tried: the message says why (kill switch, empty tier)
    headline = "the request deadline passed" if deadline else "every provider failed"
    tried = "; ".join(_attempt_text(err) for err in exc.attempts)
    skipped = getattr(exc, "passed_over", ())
    also = (
        f"; passed over, as their format cannot honour the request: {'; '.join(skipped)} "
        "(translation.droppable lets them serve it without)"
        if skipped
        else ""
    )
    return f"{headline} after {len(exc.attempts)} attempt(s): {tried}{also}"


def _attempt_text(err: ProviderError) -> str:
    who = "/".join(part for part in (err.provider, err.model) if part) or "a provider"
    what = "rejected the gateway's credentials" if isinstance(err, AuthFailed) else err.message
    code = f" (HTTP {err.status})" if err.status else ""
    return f"{who}: {what}{code}"
