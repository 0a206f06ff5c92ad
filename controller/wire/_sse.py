"""Server-sent events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

The parser holds what a provider sends until an event is whole, so it bounds it: an event's data
(``max_event_bytes``, which also bounds a line still waiting for its newline) and its number of
lines (``max_lines``). Past either, :class:`~controller._errors.ResponseTooLarge`. Scanning is
linear: each byte is searched for a newline once, however long the line it belongs to.
"""

from __future__ import annotations

from typing import Any

from controller import _json
from controller._errors import ResponseTooLarge
from controller.wire._base import SSEEvent

__all__ = ["MAX_EVENT_BYTES", "MAX_EVENT_LINES", "SSEParser", "frame", "sse"]

MAX_EVENT_BYTES = 8 * 1024 * 1024  # of one event's lines (a Gemini chunk with an image: ~3 MiB)
MAX_EVENT_LINES = 10_000  # data lines (or blank-less lines of any kind) in one event


class SSEParser:
    """Incremental parser: feed raw bytes, get complete events. Handles CRLF and split lines."""

    __slots__ = (
        "_broken",
        "_buffer",
        "_data",
        "_event",
        "_lines",
        "_max_bytes",
        "_max_lines",
        "_size",
    )

    def __init__(
        self, *, max_event_bytes: int = MAX_EVENT_BYTES, max_lines: int = MAX_EVENT_LINES
    ) -> None:
        self._buffer = bytearray()  # the start of a line whose newline has not come
        self._data: list[str] = []
        self._event = ""
        self._size = 0  # bytes of the event's lines so far
        self._lines = 0  # lines of the event so far
        self._max_bytes = max_event_bytes
        self._max_lines = max_lines
        self._broken: ResponseTooLarge | None = None  # a limit broken after whole events

    def feed(self, raw: bytes) -> list[SSEEvent]:
        """The events ``raw`` completes. A limit broken after some of them raises at the next
        call: those events were whole, and the stream goes on to its end from them."""
        if self._broken is not None:
            raise self._broken
        events: list[SSEEvent] = []
        try:
            self._scan(raw, events)
        except ResponseTooLarge as exc:
            if not events:
                raise
            self._broken = exc
        return events

    def _scan(self, raw: bytes, events: list[SSEEvent]) -> None:
        buffer = self._buffer
        data: bytes | bytearray = raw  # the usual case: nothing held, the lines read in place
        held = len(buffer)  # held bytes hold no newline: only the new ones are searched
        if held:
            buffer += raw
            data = buffer
        start = 0
        newline = data.find(b"\n", held)
        while newline >= 0:
            event = self._line(data[start:newline])
            if event is not None:
                events.append(event)
            start = newline + 1
            newline = data.find(b"\n", start)
        if held:
            del buffer[:start]
        elif start < len(raw):
            buffer += raw[start:]
        if self._size + len(buffer) > self._max_bytes:
            self._too_large()

    def _line(self, raw: bytes | bytearray) -> SSEEvent | None:
        raw = raw.rstrip(b"\r")
        if not raw:
            return self._dispatch()
        self._size += len(raw)
        self._lines += 1
        if self._size > self._max_bytes or self._lines > self._max_lines:
            self._too_large()
        if raw.startswith(b":"):
            return None
        line = raw.decode("utf-8", errors="replace")
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        self._size = self._lines = 0
        if not self._data and not self._event:
            return None
        event = SSEEvent(data="\n".join(self._data), event=self._event)
        self._data, self._event = [], ""
        return event

    def _too_large(self) -> None:
        """Drop what is held (the memory goes at once) and refuse the rest of the stream."""
        self._buffer.clear()
        self._data, self._size, self._lines = [], 0, 0
        raise ResponseTooLarge(
            f"a stream event over {self._max_bytes} bytes or {self._max_lines} lines"
        )


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
