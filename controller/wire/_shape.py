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

    __slots__ = ("_head", "_limit", "_tail", "_until", "_vary_end", "events")

    def __init__(self, head: bytes, tail: bytes, vary_end: bytes | None, limit: int) -> None:
        self._head = head
        self._tail = tail  # after the text's literal (its closing quote first), or up to the
        self._vary_end = vary_end  # varying value; then what follows that value, if it varies
        self._until = len(tail)
        self._limit = limit  # the longest event taken (the parser's bound on an event)
        self.events = 0  # in the last read taken

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
        if raw[end : end + 1] != b'"':
            return None
        try:  # (bytes that are not UTF-8 were read with replacement characters: no shape)
            if raw[start:end].decode() != text:
                return None
        except UnicodeDecodeError:
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
        """The text of ``raw`` when it is an event of this shape, or several back to back
        (their texts joined, as the reader joins a run of text events read together: a relay
        that falls behind reads a stream's events several at a time, and must not then spend
        more per event); None when it is not (read it in full). :attr:`events` is then how
        many events it was."""
        head = self._head
        if not raw.startswith(head):
            return None
        start = len(head)
        end = _PLAIN.match(raw, start).end()  # type: ignore[union-attr]
        if end == start or not raw.startswith(self._tail, end):
            return None
        after = end + self._until
        vary_end = self._vary_end
        if vary_end is not None:
            after = _PLAIN.match(raw, after).end()  # type: ignore[union-attr]
            if not raw.startswith(vary_end, after):
                return None
            after += len(vary_end)
        if after > self._limit:
            return None
        try:
            text = raw[start:end].decode()
        except UnicodeDecodeError:
            return None
        if after == len(raw):  # (one event: a stream's usual read)
            self.events = 1
            return text
        return self._more(raw, after, text)

    def _more(self, raw: bytes, at: int, first: str) -> str | None:
        """The joined texts of ``raw`` from ``at`` on, after the first event's ``first``, when
        every event in it has this shape; None otherwise. (The checks of :meth:`text`, for each
        event: that method keeps its own copy for one event, on the path of every chunk.)"""
        head, tail, until, vary_end = self._head, self._tail, self._until, self._vary_end
        texts = [first]
        size = len(raw)
        while at < size:
            if not raw.startswith(head, at):
                return None
            start = at + len(head)
            end = _PLAIN.match(raw, start).end()  # type: ignore[union-attr]
            if end == start or not raw.startswith(tail, end):
                return None
            after = end + until
            if vary_end is not None:
                after = _PLAIN.match(raw, after).end()  # type: ignore[union-attr]
                if not raw.startswith(vary_end, after):
                    return None
                after += len(vary_end)
            if after - at > self._limit:
                return None
            try:
                texts.append(raw[start:end].decode())
            except UnicodeDecodeError:
                return None
            at = after
        self.events = len(texts)
        return "".join(texts)


def _value(raw: bytes, after_key: int) -> int:
    """Where the string value of the key ending at ``after_key`` starts; -1 if it has none."""
    colon = _COLON.match(raw, after_key)
    return -1 if colon is None else colon.end()
