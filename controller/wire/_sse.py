"""Server-sent events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

from __future__ import annotations

from typing import Any

from controller import _json
from controller.wire._base import SSEEvent


class SSEParser:
    """Incremental parser: feed raw bytes, get complete events. Handles CRLF and split lines."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, raw: bytes) -> list[SSEEvent]:
        self._buffer += raw
        events: list[SSEEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return events
            line = self._buffer[:newline].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buffer = self._buffer[newline + 1 :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(data="\n".join(self._data), event=self._event)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


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
