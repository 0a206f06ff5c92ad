"""Server-sent events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

The parser holds what a provider sends until an event is whole, so it bounds it: an event's
bytes (``max_event_bytes``, which also bounds a line still waiting for its newline) and its
number of lines (``max_lines``). Past either, :class:`~controller._errors.ResponseTooLarge`.

Scanning is linear and done in C: an event ends at a blank line (``\n\n`` or ``\n\r\n``), found
by one regular-expression search over bytes not searched before, and its lines are read only
then, once. Lines piling up without the blank line (a flood of ``data:`` lines, one endless
line) are counted and measured by ``bytes`` methods, not read one by one in Python. Each event
keeps its bytes as they came (:attr:`SSEEvent.raw`, its blank line included), so the
same-format route relays them unchanged. A line ends with LF or CRLF (a lone CR does not end
one: no provider sends that).
"""

from __future__ import annotations

import re
from typing import Any

from controller import _json
from controller._errors import ResponseTooLarge
from controller.wire._base import SSEEvent

__all__ = ["MAX_EVENT_BYTES", "MAX_EVENT_LINES", "SSEParser", "frame", "sse"]

MAX_EVENT_BYTES = 8 * 1024 * 1024  # of one event (a Gemini chunk with an image: ~3 MiB)
MAX_EVENT_LINES = 10_000  # data lines (or blank-less lines of any kind) in one event

_END = re.compile(rb"\n\r?\n")  # the end of an event's last line, then the blank line
_BLANKS = re.compile(rb"(?:\r?\n)+")  # blank lines where an event would begin


class SSEParser:
    """Incremental parser: feed raw bytes, get complete events. Handles CRLF and split lines."""

    __slots__ = ("_broken", "_held", "_lines", "_max_bytes", "_max_lines")

    def __init__(
        self, *, max_event_bytes: int = MAX_EVENT_BYTES, max_lines: int = MAX_EVENT_LINES
    ) -> None:
        self._held = bytearray()  # an event not whole yet: its lines so far, a line's start
        self._lines = 0  # newlines in _held
        self._max_bytes = max_event_bytes
        self._max_lines = max_lines
        self._broken: ResponseTooLarge | None = None  # a limit broken after whole events

    @property
    def empty(self) -> bool:
        """Whether nothing is held: the next bytes begin an event (as :meth:`whole` needs)."""
        return not self._held and self._broken is None

    def feed(self, raw: bytes) -> list[SSEEvent]:
        """The events ``raw`` completes. A limit broken after some of them raises at the next
        call: those events were whole, and the stream goes on to its end from them."""
        if self._broken is not None:
            raise self._broken
        if not self._held:  # a stream's usual read: one event of one data line, whole
            first = raw.find(b"\n")
            whole = first == len(raw) - 2 and raw[-1] == 10 and first <= self._max_bytes
            if whole and raw.startswith(b"data:"):
                return [_one_line(raw, first)]
        events: list[SSEEvent] = []
        try:
            self._scan(raw, events)
        except ResponseTooLarge as exc:
            if not events:
                raise
            self._broken = exc
        return events

    def whole(self, raw: bytes) -> tuple[bytes, bytes] | None:
        """The name (b"" for none) and data of ``raw`` when it is, with nothing held, one whole
        event of one ``data`` line or of a name line then one data line (a stream's usual read),
        as :meth:`feed` would read them but not decoded and with no :class:`SSEEvent` built;
        None otherwise (then :meth:`feed` it). Nothing changes."""
        if self._held or self._broken is not None or not raw.endswith(b"\n"):
            return None
        first = raw.find(b"\n")
        end = len(raw) - 2
        if first == end:  # one data line (its value as _value reads it, inline: most reads)
            if first > self._max_bytes or not raw.startswith(b"data:"):
                return None
            if raw[first - 1] == 13:  # CR
                return b"", _value(raw[5:first])
            return b"", raw[6:first] if raw[5] == 32 else raw[5:first]
        if (  # a name line, one data line (Anthropic's events)
            raw.find(b"\n", first + 1) == end
            and len(raw) <= self._max_bytes
            and raw.startswith(b"event:")
            and raw[first + 1 : first + 6] == b"data:"
        ):
            if (
                raw[6] == 32
                and raw[first + 6] == 32
                and raw[first - 1] != 13
                and raw[end - 1] != 13
            ):
                return raw[7:first], raw[first + 7 : end]  # (one blank after each colon, no CR)
            return _value(raw[6:first]), _value(raw[first + 6 : end])
        return None

    def _scan(self, raw: bytes, events: list[SSEEvent]) -> None:
        held = self._held
        data: bytes | bytearray = raw  # the usual case: nothing held, the events read in place
        searched = 0  # held bytes hold no event's end: only the new ones (and the join) are
        if held:  # searched, so a line that never ends costs linear time
            searched = len(held) - 2
            held += raw
            data = held
        pos, size = 0, len(data)
        while pos < size:
            if data[pos] in b"\r\n":  # blank lines between events: nothing to dispatch
                blanks = _BLANKS.match(data, pos)
                if blanks is not None:
                    pos = blanks.end()
                    continue
                if pos + 1 == size:  # a CR last: perhaps a CRLF's first half, wait for more
                    break
                # else a lone CR, no line end: it begins the next event's first line
            end = _END.search(data, max(pos, searched))
            if end is None:
                break
            event = self._event(
                bytes(data[pos : end.end()]) if data is held else raw[pos : end.end()]
            )
            if event is not None:
                events.append(event)
            pos = end.end()
        if data is held:
            if pos:
                self._lines = held.count(b"\n", pos) if pos < size else 0
                del held[:pos]
            else:
                self._lines += raw.count(b"\n")
        elif pos < size:
            held += raw[pos:]
            self._lines = raw.count(b"\n", pos)
        if len(held) > self._max_bytes or self._lines > self._max_lines:
            self._too_large()

    def _event(self, raw: bytes) -> SSEEvent | None:
        """The event whose bytes (through its blank line) are ``raw``; None when it carries
        neither data nor a name (comments only, an ``id`` alone)."""
        first = raw.find(b"\n")
        if first == len(raw) - 2 and raw.startswith(b"data:"):  # most events: one data line
            if first > self._max_bytes:
                self._too_large()
            return _one_line(raw, first)
        if len(raw) > self._max_bytes:
            self._too_large()
        second = raw.find(b"\n", first + 1)  # Anthropic's events: a name, one data line
        if (
            second == len(raw) - 2
            and raw.startswith(b"event:")
            and raw[first + 1 : first + 6] == b"data:"
        ):
            name = _value(raw[6:first]).decode("utf-8", "replace")
            value = _value(raw[first + 6 : second]).decode("utf-8", "replace")
            return SSEEvent(value, name, raw)
        lines = raw.split(b"\n")
        if len(lines) > self._max_lines + 2:  # (the blank line, and what follows its newline)
            self._too_large()
        data: list[str] = []
        name = ""
        for line in lines:
            line = line.rstrip(b"\r")
            if not line or line.startswith(b":"):
                continue
            field, _, value = line.decode("utf-8", "replace").partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
        if not data and not name:
            return None
        return SSEEvent("\n".join(data), name, raw)

    def _too_large(self) -> None:
        """Drop what is held (the memory goes at once) and refuse the rest of the stream."""
        self._held.clear()
        self._lines = 0
        raise ResponseTooLarge(
            f"a stream event over {self._max_bytes} bytes or {self._max_lines} lines"
        )


def _one_line(raw: bytes, end: int) -> SSEEvent:
    """The event ``raw``: one ``data`` line ending at ``end``, then the blank line."""
    return SSEEvent(_value(raw[5:end]).decode("utf-8", "replace"), "", raw)


def _value(field: bytes) -> bytes:
    """A field's value (what follows its colon): one leading blank and any trailing CR off."""
    if field.endswith(b"\r"):
        field = field.rstrip(b"\r")
    return field[1:] if field.startswith(b" ") else field


def sse(data: Any, event: str = "") -> bytes:
    """Frame one event; ``data`` that is not a string is JSON-encoded compactly."""
    text = data if isinstance(data, str) else _json.dumps_text(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def frame(event: SSEEvent) -> bytes:
    """``event`` framed again as it came: its name, then each line of its data."""
    head = f"event: {event.event}\n" if event.event else ""
    lines = "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return f"{head}{lines}\n".encode()
