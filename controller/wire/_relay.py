"""The same-format route: a client's body sent on as it came, the answer relayed as it came.

When the client's wire format is the provider's, nothing is decoded and re-encoded on the way
out: the body goes upstream byte for byte, except the ``model`` value (spliced in place) and
what the gateway's own accounting needs (OpenAI's ``stream_options.include_usage``, whose extra
usage-only event is then kept from a client that did not ask for it). Unknown fields, vendor
betas and fields newer than this code pass without a release of ours.

The answer goes back as it came too: a whole body unchanged, a stream event by event, each
event's bytes as the provider sent them (framed again from its data only where its model is
renamed or it quotes the provider's key, literally or written with JSON escapes, which a
client's decoder turns into the key: :func:`escape_hints`, :func:`unescaped_masked`). The
stream decoder still reads every event, for what telemetry and failover need (first chunk,
usage, finish reason, in-stream errors, cuts). A whole answer to a request the gateway did not
decode either (see ``gateway._chat``) is read by the codec's light reader
(:attr:`Relay.read`): checked as the full parse checks it, but only its id, model, finish reason
and usage are taken out; its message is not built (:data:`UNREAD`), the client reads it from
the bytes relayed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from controller import _json
from controller._redact import MASK, MIN_SECRET, as_secret  # the one registry of both
from controller.model import FinishReason, Message, Source, StreamChunk, Usage
from controller.wire._base import SSEEvent
from controller.wire._sse import frame

__all__ = [
    "MASK",
    "MIN_SECRET",
    "UNREAD",
    "AnswerFacts",
    "Relay",
    "answer_headers",
    "escape_hints",
    "hinted",
    "relay_for",
    "relayed_body",
    "unescaped_masked",
    "with_model",
]

# The message of a whole answer relayed without being decoded: what it says is in its bytes.
UNREAD = Message(role="assistant")
# What a light reader takes out of a whole answer: its id, model, finish reason and usage.
AnswerFacts = tuple[str, str, FinishReason, Usage]


@dataclass(frozen=True, slots=True)
class Relay:
    """How one same-format answer is relayed. ``terminator`` is sent when a stream that carried
    its finish reason ends without one (the provider's grace ran out). ``starts`` tells whether
    an event that decoded to no chunk (thinking, a server tool's block, a compatible server's
    ``reasoning_content``) begins the answer: events before that are held back (failover is
    still possible), and a long thinking must not read as a provider that does not answer.
    The provider's key (``secret``) never reaches the client, even when a provider echoes it.
    ``read`` is the codec's light reader of a whole answer (body, model), set when the request
    was not decoded (so no content capture needs the answer's message)."""

    terminator: bytes
    drop_usage_only: bool = False  # the gateway asked for usage the client did not ask for
    echo_model: str | None = None  # the model name to answer with instead of the served one
    starts: Callable[[SSEEvent], bool] = field(default=lambda event: False, repr=False)
    secret: str | None = field(default=None, repr=False)
    read: Callable[[bytes, str], AnswerFacts] | None = field(default=None, repr=False)
    key: bytes = field(init=False, repr=False, compare=False)  # the secret, as bytes (or b"")
    # What bytes that quote the key with escapes must hold (escape_hints; () without a key).
    hints: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _text_hints: tuple[str, ...] = field(init=False, repr=False, compare=False)  # (as text)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.secret.encode() if self.secret else b"")
        hints = escape_hints(self.secret) if self.secret else ()
        object.__setattr__(self, "hints", hints)
        object.__setattr__(self, "_text_hints", tuple(hint.decode() for hint in hints))

    def quotes(self, raw: bytes, data: str | bytes) -> bool:
        """Whether the event whose bytes are ``raw`` and data ``data`` quotes the provider's
        key: in its bytes, or written with escapes (a ``find`` or two: see escape_hints)."""
        key = self.key
        if not key:
            return False
        if raw.find(key) >= 0:
            return True
        return hinted(raw, self.hints) and unescaped_masked(data, self.secret or "") is not None

    def event(self, event: SSEEvent, chunks: list[StreamChunk]) -> bytes:
        """The bytes to forward for one stream event (``chunks``: what it decoded to): the
        event as it came, unless its model is to be renamed or it quotes the provider's key
        (then framed again from its name and data, changed: the key masked in either)."""
        if self.drop_usage_only and chunks and chunks[0].usage is not None and _usage_only(chunks):
            return b""
        raw = event.raw
        if raw and self.echo_model is None and not (self.key and self.quotes(raw, event.data)):
            return raw
        data = event.data
        if self.echo_model is not None and '"model"' in data:
            data = _renamed(data, self.echo_model)
        if self.secret:
            if self.secret in data:
                data = data.replace(self.secret, MASK)
            if any(data.find(hint) >= 0 for hint in self._text_hints):
                data = unescaped_masked(data, self.secret) or data
        name = event.event.replace(self.secret, MASK) if self.secret else event.event
        if not name and "\n" not in data:  # most events: one data line, no name
            return b"data: " + data.encode() + b"\n\n"
        return frame(SSEEvent(data=data, event=name))

    def plain(self, raw: bytes) -> bool:
        """Whether the event whose bytes are ``raw`` goes to the client as it came (what
        :meth:`event` does with an event that decoded to text): no model to rename, no key
        (in its bytes, or with escapes in its data: ``raw`` one whole event of one data line)."""
        if self.echo_model is not None or not self.key:
            return self.echo_model is None
        return not self.quotes(raw, _data_line(raw))

    def whole(self, body: bytes) -> bytes:
        """A whole answer's body, as it goes to the client: the key masked in it, written
        literally or with escapes (then the body is written again, its key masked)."""
        if self.echo_model is not None:
            body = _renamed(body.decode("utf-8", "replace"), self.echo_model).encode()
        key = self.key
        if not key:
            return body
        if key in body:
            body = body.replace(key, MASK.encode())
        if hinted(body, self.hints):
            masked = unescaped_masked(body, self.secret or "")
            if masked is not None:
                return masked.encode()
        return body


# The provider's answer headers a client may read, relayed on the same-format route: the
# request id (for the vendor's support) and the rate-limit state (Claude Code shows it). Not
# the organization or project names, which are the gateway's account, not the client's.
_ANSWER_HEADER = re.compile(
    r"(?:x-)?request-id$|openai-processing-ms$|(?:anthropic|x)-ratelimit-", re.IGNORECASE
)
_MAX_ANSWER_HEADERS = 32
_FIRST = frozenset("aAoOrRxX")  # the first letters of those names: most headers stop there


def answer_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The headers of a provider's answer that go on to the client (see the list above)."""
    wanted = _ANSWER_HEADER.match
    kept = [(n, v) for n, v in headers.items() if n[:1] in _FIRST and wanted(n)]
    return tuple(kept[:_MAX_ANSWER_HEADERS])


@functools.lru_cache(maxsize=128)  # one per codec and setting; echo_model is the client's name
def relay_for(
    terminator: bytes,
    *,
    drop_usage_only: bool = False,
    echo_model: str | None = None,
    starts: Callable[[SSEEvent], bool],
    secret: str | None,
    read: Callable[[bytes, str], AnswerFacts] | None = None,
) -> Relay:
    """The :class:`Relay` for these settings, made once (its construction was a measurable
    part of a same-format request)."""
    return Relay(
        terminator,
        drop_usage_only=drop_usage_only,
        echo_model=echo_model,
        starts=starts,
        secret=as_secret(secret),
        read=read,
    )


@functools.lru_cache(maxsize=64)  # one per provider key
def escape_hints(secret: str) -> tuple[bytes, ...]:
    """What JSON that quotes ``secret`` with escapes holds, whichever way it is written.

    A decoded string quotes the key while the bytes do not only when one of the key's
    characters was written as an escape: ``\\uXXXX`` (any character: its first two hex
    digits, in either case; a character beyond U+FFFF as a surrogate pair, ``\\ud8``..
    ``\\udb``) or a short one (``\\/``, ``\\"``, ``\\\\``, ``\\n``, ...) for the few
    characters that have one. For the usual key (ASCII, no slash) that is the one hint
    ``\\u00``: text with newlines or quotes in it (``\\n``, ``\\"``) holds no hint and
    costs one ``find``; text of other scripts escaped (``\\u4f60``) holds none either."""
    shorts = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r"}
    shorts["\t"] = "t"
    hints: set[bytes] = set()
    for char in secret:
        if char in shorts:
            hints.add(b"\\" + shorts[char].encode())
        code = ord(char)
        if code > 0xFFFF:
            code = 0xD800 + ((code - 0x10000) >> 10)  # its high surrogate
        high = f"{code:04x}"[:2]
        for first in {high[0], high[0].upper()}:
            for second in {high[1], high[1].upper()}:
                hints.add(b"\\u" + (first + second).encode())
    return tuple(sorted(hints))


def hinted(data: bytes, hints: tuple[bytes, ...]) -> bool:
    """Whether ``data`` holds one of ``hints`` (:func:`escape_hints`): it may quote the key
    with escapes (then see :func:`unescaped_masked`); if not, it cannot."""
    for hint in hints:  # noqa: SIM110 - no generator built on the path of every event
        if data.find(hint) >= 0:
            return True
    return False


def unescaped_masked(data: str | bytes, secret: str, *, depth: int = 2) -> str | None:
    """``data`` (a JSON document) written again with ``secret`` masked where a string of it
    (a value or a member's name) quotes it once decoded, escapes and all, or where a string
    value is itself a JSON document that does (tool arguments, a JSON answer's text: a client
    parses them again), ``depth`` levels down; None when none does, or ``data`` is not JSON
    (a client's decoder reads no key from it either: what the standard library refuses,
    every JSON decoder refuses)."""
    try:
        value = _json.loads(data)
    except (ValueError, RecursionError):
        return None
    needle = json.dumps(secret, ensure_ascii=False)[1:-1]  # the key as compact JSON writes it
    text = _plainly(value)
    if text is None:
        return None
    if needle not in text:
        if not depth or "\\\\" not in text:  # no string holds a backslash: none is escaped JSON
            return None
        try:
            value, found = _nested_masked(value, secret, depth - 1)
        except RecursionError:
            return None
        text = _plainly(value) if found else None
        if text is None:
            return None
    masked = text.replace(needle, MASK)
    try:
        masked.encode()
    except UnicodeEncodeError:  # a lone surrogate: written with escapes, ASCII
        return json.dumps(json.loads(masked), separators=(",", ":"))
    return masked


def _plainly(value: Any) -> str | None:
    """``value`` as compact JSON, every character written as itself but for quotes,
    backslashes and control characters (a lone surrogate too: not UTF-8 then)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate, or nested past orjson's limit
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None


def _nested_masked(value: Any, secret: str, depth: int) -> tuple[Any, bool]:
    """``value`` with every string value that is a JSON document quoting ``secret`` (see
    :func:`unescaped_masked`) replaced by that document masked; and whether any was."""
    if isinstance(value, str):
        if "\\" in value:
            inner = unescaped_masked(value, secret, depth=depth)
            if inner is not None:
                return inner, True
        return value, False
    if isinstance(value, list):
        pairs = [_nested_masked(item, secret, depth) for item in value]
        return [item for item, _ in pairs], any(found for _, found in pairs)
    if isinstance(value, dict):
        members = {key: _nested_masked(item, secret, depth) for key, item in value.items()}
        if not any(found for _, found in members.values()):
            return value, False
        return {key: item for key, (item, _) in members.items()}, True
    return value, False


def _data_line(raw: bytes) -> bytes:
    """The data of ``raw``, one whole event whose last line is its one data line."""
    start = raw.rfind(b"\ndata:", 0, len(raw) - 2) + 1
    line = raw[start:].rstrip(b"\r\n").removeprefix(b"data:")
    return line[1:] if line.startswith(b" ") else line


def _usage_only(chunks: list[StreamChunk]) -> bool:
    if len(chunks) != 1:
        return False
    chunk = chunks[0]
    return (
        chunk.usage is not None
        and not chunk.text
        and chunk.tool_call is None
        and chunk.finish_reason is None
    )


def _renamed(data: str, model: str) -> str:
    """``data`` with the ``model`` of its object set to ``model``: its own, or that of the
    object it carries (Anthropic's ``message_start`` ``message``, a Responses stream's
    ``response``)."""
    try:
        parsed = _json.loads(data)
    except ValueError:
        return data  # not JSON: the decoder has judged it already
    if isinstance(parsed, dict):
        for target in (parsed, parsed.get("message"), parsed.get("response")):
            if isinstance(target, dict) and "model" in target:
                target["model"] = model
                return _json.dumps_text(parsed)
    return data


def relayed_body(
    source: Source, model: str, extra: dict[str, Any] | None = None, drop: str | None = None
) -> bytes:
    """The client's body with ``model`` set (and ``extra`` top-level members added, e.g.
    ``stream_options``; the ``drop`` member taken out), changed nowhere else when that can be
    done in place; otherwise encoded again from the parsed body (same members, same order,
    same values)."""
    spliced = None
    if source.raw and drop is None:
        spliced = with_model(source.raw, source.body.get("model"), model)
    if spliced is not None and extra:
        spliced = None if any(key in source.body for key in extra) else _prepend(spliced, extra)
    if spliced is not None:
        return spliced
    body = {key: value for key, value in source.body.items() if key != drop}
    body["model"] = model
    return _json.dumps(body | (extra or {}))


def with_model(raw: bytes, old: Any, new: str) -> bytes | None:
    """``raw`` with the value of its top-level ``"model": old`` member replaced by ``new``, or
    None when that member cannot be found for certain (written with escapes, or the same
    member and value also appear nested somewhere)."""
    if not isinstance(old, str):
        return None
    if old == new:
        return raw
    if raw.count(b'"model"') == 1:  # the usual case: found without a regular expression
        return _spliced_once(raw, _json.dumps(old), _json.dumps(new))
    # After "{", "," or a blank, a quote opens a key (the body parsed as JSON, so no string is
    # open there): the match is a real member, top-level unless the same one is nested too.
    pattern = rb'(?<=[{,\s])"model"\s*:\s*' + re.escape(_json.dumps(old))
    found = list(re.finditer(pattern, raw))
    if len(found) != 1:
        return None
    start, end = found[0].span()
    spliced = raw[:start] + b'"model":' + _json.dumps(new) + raw[end:]
    if raw.count(b'"model"') > 1:  # the one found may be nested (the top one written escaped)
        parsed = _json.loads(spliced)
        if not isinstance(parsed, dict) or parsed.get("model") != new:
            return None
    return spliced


_BLANKS = b" \t\n\r"  # JSON's whitespace (the body parsed as JSON: there is no other)


def _spliced_once(raw: bytes, old: bytes, new: bytes) -> bytes | None:
    """:func:`with_model` where ``"model"`` occurs once in ``raw``: the same match (a key after
    ``{``, ``,`` or a blank, then ``:`` and the old value, blanks allowed around the colon)."""
    start = raw.find(b'"model"')
    if start < 1 or raw[start - 1] not in b"{," + _BLANKS:
        return None
    at, end = start + 7, len(raw)
    while at < end and raw[at] in _BLANKS:
        at += 1
    if raw[at : at + 1] != b":":
        return None
    at += 1
    while at < end and raw[at] in _BLANKS:
        at += 1
    if not raw.startswith(old, at):
        return None
    return raw[:start] + b'"model":' + new + raw[at + len(old) :]


def _prepend(raw: bytes, members: dict[str, Any]) -> bytes | None:
    """``raw`` (a JSON object) with ``members`` (none of them in it) added first."""
    opening = raw.find(b"{")
    if opening < 0 or raw[:opening].strip():
        return None
    inner = _json.dumps(members)[1:-1]
    rest = raw[opening + 1 :]
    separator = b"" if rest.lstrip().startswith(b"}") else b","
    return raw[: opening + 1] + inner + separator + rest
