"""The codec seam between the project's types and each provider's wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from controller._errors import ProviderError
from controller._frozen import quick_init
from controller.model import Request, Response, StreamChunk, Untranslatable

if TYPE_CHECKING:
    from controller.wire._relay import Relay


@quick_init
@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event. ``event`` is empty when the stream names none. ``raw`` is the
    event as it came, its blank line included, when it was parsed from a stream (the
    same-format route relays those bytes); an event built otherwise has none."""

    data: str
    event: str = ""
    raw: bytes = field(default=b"", repr=False, compare=False)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class HttpCall:
    """What a client codec asks the transport to send. ``path`` is appended to the base URL.

    ``content``, when set, is the body already encoded (the client's own, on the same-format
    route) and ``body`` is not sent; ``relay`` then says how the answer goes back as it came.
    """

    path: str
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # carries API keys
    query: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = field(default=None, repr=False)
    relay: Relay | None = None


class StreamDecoder(Protocol):
    """Turns a provider's stream events into chunks. Stateful: one per stream.

    A decoder may also offer ``quick(event) -> str | None``: the text of an event that carries
    a piece of text and nothing else, read in one step without changing its state (None for
    any other event, which :meth:`feed` reads). The same-format route reads each event with it
    first, and builds the chunk with the event's bytes at once (most of a stream's events)."""

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        """Decode one event. Raises MalformedResponse for an unparseable event and the mapped
        ProviderError for an in-stream error event."""
        ...

    @property
    def done(self) -> bool:
        """True once the format's explicit terminator was seen (e.g. ``[DONE]``,
        ``message_stop``). Formats without one (Gemini) never set it."""
        ...


class ClientCodec(Protocol):
    """Client side of one wire format."""

    #: ``gen_ai.provider.name`` for this format, e.g. ``openai``, ``anthropic``, ``gcp.gemini``.
    provider_kind: str
    #: The wire format, as :attr:`controller.model.Source.format` names it: ``openai``,
    #: ``anthropic``, ``gemini`` (an OpenAI-compatible server speaks ``openai``).
    wire_format: str

    def build(self, request: Request, model: str, api_key: str | None) -> HttpCall:
        """The HTTP call for ``request`` on ``model``; streaming when ``request.stream``. A
        request whose :attr:`~controller.model.Request.source` is in this format goes on as
        the client sent it (:mod:`controller.wire._relay`)."""
        ...

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        """What of ``request`` (decoded from another format) this format cannot express, e.g.
        a ``seed`` for Anthropic: the router skips such a provider for that request."""
        ...

    def parse_response(self, body: bytes, model: str) -> Response:
        """Decode a 2xx non-streaming body. Raises MalformedResponse if it is not valid."""
        ...

    def stream_decoder(self, model: str) -> StreamDecoder: ...

    def error_from(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str
    ) -> ProviderError:
        """Map a non-2xx answer into the error tree (429 → RateLimited with retry_after, ...)."""
        ...


@runtime_checkable
class TokenCountCodec(Protocol):
    """A client codec whose API can count a request's input tokens (Anthropic's does)."""

    def build_count(self, request: Request, model: str, api_key: str | None) -> HttpCall: ...

    def parse_count(self, body: bytes, model: str) -> int:
        """The count from a 2xx answer. Raises MalformedResponse if it holds none."""
        ...


class StreamEncoder(Protocol):
    """Server side of a stream: our chunks → the format's SSE bytes. One per stream."""

    def start(self) -> bytes:
        """Bytes before the first chunk (Anthropic ``message_start``); may be empty."""
        ...

    def encode(self, chunk: StreamChunk) -> bytes: ...

    def end(self) -> bytes:
        """The format's terminator (``data: [DONE]``, ``message_stop``); may be empty."""
        ...

    def error(self, err: ProviderError) -> bytes:
        """An in-stream error event in the format's own shape."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """A stream encoder that can take over a stream relayed in its format as the provider
    sent it, to encode a continuation of it (:mod:`controller.routing._continue`)."""

    def resume(self) -> bytes:
        """What to send before the first continued chunk (e.g. closing an open block)."""
        ...


class ServerCodec(Protocol):
    """Server side of one wire format (used by the fake provider and the gateway)."""

    def parse_request(self, body: Any, path_model: str | None = None) -> tuple[str, Request]:
        """Decode a request body into (requested model, Request). ``path_model`` is the model
        named in the URL path (Gemini). Raises BadRequest naming the offending field."""
        ...

    def render_response(self, response: Response) -> dict[str, Any]: ...

    def stream_encoder(self, *, id: str, model: str) -> StreamEncoder: ...

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(HTTP status, body, extra headers such as Retry-After) for ``err``."""
        ...
