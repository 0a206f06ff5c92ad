"""Mid-stream continuation: what a stream cut after it reached the client is continued with.

A stream that has delivered text and is then cut (the connection drops, it falls silent past
``idle``, it ends without its terminator, or the provider sends an in-stream error) is continued
on the next target while the request's deadline allows, so the client gets the whole answer
instead of an error. Two ways, chosen per target:

* **prefill**: the request again, with an assistant turn holding exactly the text delivered;
  the target writes on from there. Anthropic and most OpenAI-compatible servers do this
  (``prefill`` per provider in the config; OpenAI's own API and Gemini do not, and Anthropic
  refuses it with extended thinking or structured output). The API refuses a prefill that
  ends in whitespace, so that is trimmed and the continuation's leading whitespace matched to
  what was trimmed.
* **restart**: the request as it came; its answer is relayed only from where it extends the
  text delivered. One that does not begin with that text ends the stream with the clean
  in-stream error, as a cut without continuation does.

A target of the client's own format gets the client's body (a prefill appended to its turns),
so nothing the client sent is lost, and its answer is read like any other: the continuation's
chunks go on without ``raw``, to be encoded in the client's format. A target of another format
gets the translation, so a request holding anything a translation would lose is continued only
on targets of its own format.

Only text is continued: a stream that has delivered any part of a tool call (arguments cut
mid-way cannot be spliced, and a whole call cannot be taken back) ends with the error.
Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from controller._errors import ProviderError
from controller._redact import mask
from controller.model import Message, Request, StreamChunk
from controller.wire._reasoning import NONE

__all__ = [
    "MAX_DELIVERED",
    "Delivered",
    "Diverged",
    "Overlap",
    "continuation_request",
    "one_answer",
    "prefills",
    "unrelayed",
]


class Diverged(ProviderError):
    """A restarted answer that does not begin with the text already delivered: not the
    provider's fault (a model need not say the same twice), so not counted as one."""

    error_type = "continuation_diverged"


# The most text a stream keeps to be continued with, in characters: 8x the longest answers
# models give (128k tokens, about 0.5 M characters). Past it the text is let go and the stream
# is not continued, so a provider streaming text until stream_total cannot make the gateway
# hold all it relayed.
MAX_DELIVERED = 4 * 1024 * 1024


class Delivered:
    """What a stream has delivered to the client so far, as far as continuing it goes: its
    text in pieces (joined only when a continuation asks; let go past :data:`MAX_DELIVERED`
    characters, ``size``), whether a tool call or the finish went out. Filled by the routed
    stream as each chunk goes on (inline there: it is on every chunk's way)."""

    __slots__ = ("finished", "parts", "size", "tools")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0  # characters of text delivered
        self.tools = False  # some part of a tool call went out
        self.finished = False  # the answer's finish reason went out

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""


def one_answer(request: Request) -> bool:
    """Whether the client asked for one answer (not OpenAI's ``n`` or Gemini's
    ``candidateCount`` of several): the text delivered is then the answer's."""
    source = request.source
    if source is None:
        return True
    body = source.body
    if source.format == "openai":
        return body.get("n") in (None, 1)
    config = body.get("generationConfig") if source.format == "gemini" else None
    return not isinstance(config, dict) or config.get("candidateCount") in (None, 1)


def prefills(request: Request, wire_format: str, takes_prefill: bool) -> bool:
    """Whether a target of ``wire_format`` (``takes_prefill`` from its provider's config) can
    continue ``request`` from a prefill."""
    if not takes_prefill or request.response_format is not None or wire_format not in _PREFILL:
        return False  # (OpenAI's Responses API takes no prefill)
    thinking = request.reasoning is not None and request.reasoning.effort != NONE
    return not (thinking and wire_format == "anthropic")


def continuation_request(
    request: Request, delivered: str, prefill: bool, *, own: bool
) -> tuple[Request, str]:
    """The request a continuation sends, and the text its answer must first repeat before
    what it adds goes on. ``own``: the target speaks the client's format and gets the client's
    body (``request`` as the gateway received it); else ``request`` is the decoded one. A
    secret the gateway holds (a provider's key a provider echoed, say) is masked in the prefill,
    as the relay masks it for the client: it never goes on to another provider."""
    source = request.source
    if own and source is not None and source.format not in _PREFILL:
        prefill = False  # no turn in the client's body to hold one
    trimmed = delivered.rstrip() if prefill else ""
    if not trimmed:  # a restart (or nothing to prefill): the request as it came
        return (request if own else replace(request, source=None)), delivered
    pending = delivered[len(trimmed) :]
    kept = mask(trimmed)
    if own and source is not None:
        turns_at, turn = _PREFILL[source.format]
        body = dict(source.body)
        body[turns_at] = [*body.get(turns_at, ()), turn(kept)]
        return replace(request, source=replace(source, body=body, raw=b"")), pending
    turn_ = Message(role="assistant", content=kept)
    return replace(request, source=None, messages=(*request.messages, turn_)), pending


# Per wire format: where a body's turns are, and an assistant turn holding some text.
_PREFILL: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "openai": ("messages", lambda text: {"role": "assistant", "content": text}),
    "anthropic": ("messages", lambda text: {"role": "assistant", "content": text}),
    "gemini": ("contents", lambda text: {"role": "model", "parts": [{"text": text}]}),
}


class Overlap:
    """Takes a continuation's text and gives back only what extends the delivered text.

    ``pending`` is what the continuation must repeat first. With a prefill that is only the
    whitespace trimmed off it, and a continuation that starts without it is taken as it comes
    (the whitespace is there already); a restart must repeat it all, or it has diverged.

    A target may take the prefill as an earlier turn and answer again from the start (vLLM
    does without ``continue_final_message``): a prefilled continuation's text is held while
    it could be the ``delivered`` text's first :data:`_SNIFF` characters again, and one that
    says them again is read as a restart from there.
    """

    __slots__ = ("_delivered", "_held", "_lenient", "_pending", "_sniff")

    def __init__(self, pending: str, *, prefilled: bool, delivered: str = "") -> None:
        self._pending = pending
        self._lenient = prefilled
        self._delivered = delivered
        self._sniff = delivered.lstrip()[:_SNIFF] if prefilled else ""
        self._held = ""

    def take(self, chunk: StreamChunk) -> StreamChunk | None:
        """``chunk`` as it goes on (its text trimmed to what is new), or None when nothing of
        it is new. Raises :class:`Diverged` when a restart says something else."""
        if self._sniff:
            sniffed = self._sniffed(chunk)
            if sniffed is None:
                return None
            chunk = sniffed
        pending = self._pending
        if not pending:
            return chunk
        text = chunk.text  # a chunk's text comes first, even where it also ends the answer
        if self._lenient:
            eaten = min(len(text) - len(text.lstrip()), len(pending))
            text = text[eaten:]
            self._pending = "" if text else pending[eaten:]
        else:
            shared = min(len(text), len(pending))
            if text[:shared] != pending[:shared]:
                raise Diverged("the restarted answer does not begin with the text delivered")
            text, self._pending = text[shared:], pending[shared:]
        ends = chunk.tool_call is not None or chunk.finish_reason is not None
        if ends and self._pending:
            if not self._lenient:
                raise Diverged("the continuation ended, or called a tool, before repeating it")
            self._pending = ""
        if not text and chunk.usage is None and not ends:
            return None
        return replace(chunk, text=text, raw=None)

    def _sniffed(self, chunk: StreamChunk) -> StreamChunk | None:
        """None while the prefilled continuation may be saying the answer again from its start
        (its text held); then ``chunk`` with the held text, the stream read as a restart if
        it was."""
        held = self._held + chunk.text
        said, probe = held.lstrip(), self._sniff
        ends = chunk.tool_call is not None or chunk.finish_reason is not None
        if not ends and len(said) < len(probe) and probe.startswith(said):
            self._held = held
            return None
        self._sniff = self._held = ""
        if said.startswith(probe):  # the answer again: its start must be the delivered text
            self._pending, self._lenient = self._delivered, False
        return replace(chunk, text=held) if held != chunk.text else chunk


_SNIFF = 32  # characters of the delivered text whose repetition marks a restart


def unrelayed(chunk: StreamChunk) -> StreamChunk:
    """A continuation's chunk as it goes on: encoded in the client's format, never its own
    events (they would begin a second answer in the middle of the first)."""
    return chunk if chunk.raw is None else replace(chunk, raw=None, headers=())
