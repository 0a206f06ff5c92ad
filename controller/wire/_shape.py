"""The shape of a stream's text events: the bytes around the text, learned from one event read
in full and recognised in the next, so that a stream's usual read is taken without parsing its
JSON again.

A provider sends its text events alike apart from the text (an OpenAI chunk repeats its id,
model and ``"finish_reason":null`` around each piece; Anthropic's ``text_delta`` only changes
its ``text``). Once one such read (an SSE event whole, see
:meth:`SSEParser.whole <controller.wire._sse.SSEParser.whole>`) has been decoded to a text,
:meth:`TextShape.learn` keeps the bytes before the text's string literal (``head``) and after
it (``tail``); a later read that is ``head`` + a plain literal + ``tail`` is the same JSON
document with another text, and :meth:`TextShape.text` gives that text without ``orjson`` and
the decoder's reads (the reader's work on such a read: 1.05 us instead of 2.3 us in-process,
on the path of every relayed chunk; README "Streams on one core").

Exact, not a guess: the learned event holds no backslash at all (so every quote in it is a
string's bound, no key is written with escapes) and the text's key once (``"content"``,
``"text"``); a text taken from a shape is a *plain* literal: no quote, no backslash, no control
character (what JSON forbids raw), valid UTF-8, not empty. The document is then the learned one
with only that value changed, which the decoder would read the same way, if its state has not
changed since: the caller forgets the shape whenever an event is read otherwise. One other
member may change too when named (``vary``: OpenAI's ``obfuscation``, random padding on every
chunk), under the same rules; the decoders do not read it.
"""

from __future__ import annotations

import re

__all__ = ["TextShape"]

_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')  # a JSON string's body that needs no decoding
_COLON = re.compile(rb'[ \t]*:[ \t]*"')  # between a key and its string value


class TextShape:
    """The bytes of a text event around its text (and around one varying member)."""

    __slots__ = ("_head", "_limit", "_tail", "_until", "_vary_end")

    def __init__(self, head: bytes, tail: bytes, vary_end: bytes | None, limit: int) -> None:
        self._head = head
        self._tail = tail  # after the text's literal (its closing quote first), or up to the
        self._vary_end = vary_end  # varying value; then what follows that value, if it varies
        self._until = len(tail)
        self._limit = limit  # the longest read taken (the parser's bound on an event)

    @classmethod
    def learn(
        cls, raw: bytes, text: str, key: bytes, vary: bytes, *, limit: int
    ) -> TextShape | None:
        """The shape of ``raw``, a whole event the decoder read as ``text`` (not empty), its
        text the value of ``key`` (the key's quoted bytes); ``vary`` (quoted too, or b"") the
        one other member whose value may change. None when ``raw`` cannot be a shape."""
        if raw.find(b"\\") >= 0 or raw.count(key) != 1:
            return None
        start = _value(raw, raw.find(key) + len(key))
        if start < 0:
            return None
        end = _PLAIN.match(raw, start).end()  # type: ignore[union-attr]  # matches "" at least
        if raw[end : end + 1] != b'"' or raw[start:end].decode() != text:
            return None
        tail, vary_end = raw[end:], None
        if vary and tail.count(vary) == 1:
            at = _value(tail, tail.find(vary) + len(vary))
            if at >= 0:
                stop = _PLAIN.match(tail, at).end()  # type: ignore[union-attr]
                if tail[stop : stop + 1] != b'"':
                    return None
                tail, vary_end = tail[:at], tail[stop:]
        return cls(raw[:start], tail, vary_end, limit)

    def text(self, raw: bytes) -> str | None:
        """The text of ``raw`` when it has this shape; None when it has not (read it in full)."""
        head = self._head
        if not raw.startswith(head) or len(raw) > self._limit:
            return None
        start = len(head)
        end = _PLAIN.match(raw, start).end()  # type: ignore[union-attr]
        if end == start or not raw.startswith(self._tail, end):
            return None
        after = end + self._until
        vary_end = self._vary_end
        if vary_end is None:
            if after != len(raw):
                return None
        else:
            stop = _PLAIN.match(raw, after).end()  # type: ignore[union-attr]
            if len(raw) - stop != len(vary_end) or not raw.endswith(vary_end):
                return None
        try:
            return raw[start:end].decode()
        except UnicodeDecodeError:
            return None


def _value(raw: bytes, after_key: int) -> int:
    """Where the string value of the key ending at ``after_key`` starts; -1 if it has none."""
    colon = _COLON.match(raw, after_key)
    return -1 if colon is None else colon.end()
