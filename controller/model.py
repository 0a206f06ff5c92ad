"""The project's own request, response and stream types.

No vendor type crosses an adapter boundary: every wire format (OpenAI, Anthropic, Gemini, ...)
is translated into these at the edge, so a conversation started on one provider continues on
another with its tool calls intact.

A conversation is a tuple of :class:`Message`. Tool use is represented uniformly:

* an assistant turn carries ``tool_calls`` (each with an ``id``, a ``name`` and JSON ``arguments``);
* the result of a call is a ``role="tool"`` message whose ``tool_call_id`` names the call.

Formats that key results by function name (Gemini) look the name up from the calling turn.

A user turn or a tool result may hold images and documents among its text: ``Message.parts``
keeps them in order (see :class:`Message`), while ``content`` stays the turn's text.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller._frozen import quick_init, quick_maker

Role = Literal["user", "assistant", "tool"]


class FinishReason(enum.StrEnum):
    """Why the model stopped. ``ERROR`` never appears on a successful response."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolDefinition:
    """A function the model may call. ``parameters`` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A call the model asked for. ``arguments`` is the JSON text of the argument object."""

    id: str
    name: str
    arguments: str = "{}"


@quick_init
@dataclass(frozen=True, slots=True)
class TextPart:
    """A piece of text among a turn's images or documents."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePart:
    """An image: base64 ``data`` of ``media_type`` (``image/png``), or a ``url`` the provider
    fetches (``media_type`` is then "" unless the client named it)."""

    media_type: str = ""
    data: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentPart:
    """A document: base64 ``data`` of ``media_type`` (a PDF, or UTF-8 text for ``text/plain``),
    or a ``url`` the provider fetches.

    ``name`` is its file name (OpenAI requires one; a label of the bytes), ``title`` a title the
    client gave the model to see (Anthropic's ``title``); either may be empty.
    """

    media_type: str = "application/pdf"
    data: str = ""
    url: str = ""
    name: str = ""
    title: str = ""


Part = TextPart | ImagePart | DocumentPart


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One conversation turn.

    ``role="tool"`` messages carry a tool result in ``content`` and the call's ``tool_call_id``;
    ``is_error`` marks a failed tool execution.

    ``parts`` is the content of a user turn or a tool result, in order, when it holds an image or
    a document (empty otherwise); ``content`` is then the text of its text parts joined with
    newlines, for code that reads text only. :func:`parts_message` builds such a turn.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False
    parts: tuple[Part, ...] = ()


ToolChoice = Literal["auto", "none", "required"] | str
"""``auto`` / ``none`` / ``required``, or the name of one tool the model must call."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFormat:
    """Structured output: the answer's text is one JSON object, valid against ``schema`` when
    one is given (OpenAI ``json_schema``, Anthropic ``output_config.format``, Gemini
    ``responseJsonSchema``), any object when not (OpenAI ``json_object``)."""

    schema: Mapping[str, Any] | None = None
    name: str = "response"
    description: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reasoning:
    """Thinking before answering, as the client asked for it: an ``effort`` level (OpenAI's
    ``reasoning_effort``: ``none``, ``minimal``, ``low``, ``medium``, ``high``, ``xhigh``;
    Anthropic's ``output_config.effort`` adds ``max``) or a ``budget_tokens`` (Anthropic's
    thinking budget, Gemini's ``thinkingBudget``). Neither: think, as much as the model decides
    (Anthropic's adaptive thinking). Each format's codec maps one onto the other
    (:mod:`controller.wire._reasoning`)."""

    effort: str | None = None
    budget_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Untranslatable:
    """Something a client sent that only a provider of the client's own wire format honours:
    ``feature`` names its family (``image``, ``cache_control``, ``thinking``, a top-level field
    name), ``path`` where the first one was seen (``messages.0.content.1``)."""

    feature: str
    path: str


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """What the gateway saw of a client's request besides its parsed body, for the server
    codec that decodes it to put in the :class:`Source`: the body's bytes, the client's
    headers that go upstream with it, and whether answers name the model the client asked for."""

    raw: bytes = field(default=b"", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    echo_model: bool = False

    def source(
        self,
        wire_format: str,
        body: Mapping[str, Any],
        model: str,
        untranslatable: tuple[Untranslatable, ...] = (),
        full: Callable[[], Request] | None = None,
    ) -> Source:
        """The :class:`Source` of a request of ``model`` decoded from ``body``."""
        return Source(
            format=wire_format,
            body=body,
            raw=self.raw,
            headers=self.headers,
            untranslatable=untranslatable,
            echo_model=model if self.echo_model else None,
            full=full,
        )


NO_ORIGIN = Origin()


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """The client's request as it came, for a provider that speaks the client's format.

    Such a provider gets ``body`` unchanged except ``model`` (and what the gateway's own
    accounting needs), with ``headers`` (``anthropic-beta``, ``anthropic-version``); its answer
    is relayed as it came. Any other provider gets the translation in :class:`Request`, which
    cannot carry ``untranslatable``: the router skips such a provider unless every feature
    listed is one the operator allowed to drop.
    """

    format: str  # the wire format: "openai" (chat completions) or "anthropic" (messages)
    body: Mapping[str, Any] = field(repr=False)  # the parsed JSON body; never mutated
    raw: bytes = field(default=b"", repr=False)  # the body's bytes as they came
    headers: Mapping[str, str] = field(default_factory=dict)
    untranslatable: tuple[Untranslatable, ...] = ()
    echo_model: str | None = None  # answer with this model name instead of the served one
    # Set on a request not decoded yet (every provider that may serve it takes the body as
    # it came): the whole decode, made once, for whoever needs the translation after all.
    full: Callable[[], Request] | None = field(default=None, repr=False, compare=False)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A provider-neutral chat request. The router chooses the concrete model per attempt.

    ``source`` is the client's own request where the gateway decoded one (None for requests
    built in code: probes, library use).
    """

    messages: tuple[Message, ...]
    system: str | None = None
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool | None = None  # False: at most one tool call per answer
    seed: int | None = None
    user: str | None = None  # the end user's id (OpenAI ``user``, Anthropic metadata.user_id)
    reasoning: Reasoning | None = None  # None: the model's default
    source: Source | None = field(default=None, repr=False, compare=False)


@quick_init
@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # Of ``input_tokens``, those the provider read from its prompt cache (priced apart:
    # ``spend.prices...cached_input``); 0 when it said none or does not say.
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A complete answer. ``provider`` and ``model`` name what actually served it."""

    id: str
    model: str
    message: Message
    finish_reason: FinishReason
    usage: Usage = Usage()
    provider: str = ""
    raw: bytes | None = field(default=None, repr=False)  # the provider's body, same format
    headers: tuple[tuple[str, str], ...] = ()  # the provider's, relayed with ``raw``
    # Served below the tier's own providers: "tier" (its step-down), "cache" or "static".
    degraded: str = ""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A piece of a streamed tool call.

    The first delta of a call (per ``index``) carries ``id`` and ``name``; later deltas append
    ``arguments`` text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StreamChunk:
    """One decoded piece of a streamed answer.

    A stream is complete only once a chunk with ``finish_reason`` has been seen; ``usage`` may
    arrive on that chunk or on a later one.

    ``raw`` is set on every chunk of a stream relayed in the client's own format: the provider's
    events to forward as they came (possibly several, possibly none: ``b""``), the terminator
    included. A stream whose first chunk has ``raw`` None is one to encode from the other fields.
    """

    text: str = ""
    tool_call: ToolCallDelta | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str | None = None
    raw: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()  # on a relayed stream's first chunk: the provider's

    def relaying(self, raw: bytes) -> StreamChunk:
        """This chunk with ``raw`` set: built directly, at half the cost of
        ``dataclasses.replace``, as the same-format route does for every event it relays."""
        return StreamChunk(
            text=self.text,
            tool_call=self.tool_call,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            raw=raw,
            headers=self.headers,
        )

    def adding(
        self, *, usage: Usage | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> StreamChunk:
        """This chunk with ``usage`` and ``headers`` set, where given (the others kept): built
        directly, as :meth:`relaying` (once or twice a stream: its first chunk's headers, its
        finish's usage)."""
        return StreamChunk(
            text=self.text,
            tool_call=self.tool_call,
            finish_reason=self.finish_reason,
            usage=self.usage if usage is None else usage,
            model=self.model,
            raw=self.raw,
            headers=headers or self.headers,
        )


# A relayed stream's text event: StreamChunk(text=..., raw=...), built at less than half the cost
# (one per event on the same-format route).
relayed_text: Callable[[str, bytes], StreamChunk] = quick_maker(StreamChunk, "text", "raw")


def text_message(role: Role, content: str) -> Message:
    """Shorthand for a plain text turn."""
    return Message(role=role, content=content)


def parts_message(
    role: Role, parts: Sequence[Part], *, tool_call_id: str | None = None, is_error: bool = False
) -> Message:
    """A turn whose content is ``parts``: its text in ``content``, and ``parts`` kept when one
    of them is an image or a document (a text-only turn is a plain one)."""
    text = "\n".join(part.text for part in parts if isinstance(part, TextPart))
    media = any(not isinstance(part, TextPart) for part in parts)
    return Message(
        role=role,
        content=text,
        tool_call_id=tool_call_id,
        is_error=is_error,
        parts=tuple(parts) if media else (),
    )


def assemble(chunks: list[StreamChunk], *, id: str, model: str, provider: str = "") -> Response:
    """Fold a complete chunk sequence into a :class:`Response` (used by tests and the gateway)."""
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish: FinishReason | None = None
    usage = Usage()
    served_model = model
    for chunk in chunks:
        text.append(chunk.text)
        if chunk.tool_call is not None:
            slot = calls.setdefault(chunk.tool_call.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] = chunk.tool_call.id or slot["id"]
            slot["name"] = chunk.tool_call.name or slot["name"]
            slot["arguments"] += chunk.tool_call.arguments
        finish = chunk.finish_reason or finish
        usage = chunk.usage or usage
        served_model = chunk.model or served_model
    if finish is None:
        raise ValueError("stream has no finish reason: it is incomplete")
    tool_calls = tuple(
        ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
        for _, c in sorted(calls.items())
    )
    message = Message(role="assistant", content="".join(text), tool_calls=tool_calls)
    return Response(
        id=id,
        model=served_model,
        message=message,
        finish_reason=finish,
        usage=usage,
        provider=provider,
    )
