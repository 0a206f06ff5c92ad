"""JSON on the request path, through orjson.

Every routed request is decoded and encoded twice (the caller's format in and out, the
provider's format out and in); with the standard library that was about 5% of the gateway's CPU
per request, with orjson about a fifth of that (``python -m tests.bench.gateway``).

orjson differs from :mod:`json` in ways that matter here, all acceptable for HTTP bodies:
``dumps`` returns UTF-8 bytes (not ASCII-escaped text); it refuses lone surrogates and non-str
keys instead of writing them; ``loads`` reads integers beyond 64 bits as floats. Its decode errors
subclass :class:`json.JSONDecodeError`, so ``except ValueError`` still catches them.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "dumps_text", "loads"]

JSONDecodeError = orjson.JSONDecodeError


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; raises :class:`JSONDecodeError` (a ValueError) when it is not one."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Raises TypeError for what JSON cannot hold."""
    return orjson.dumps(value)


def dumps_text(value: Any) -> str:
    """:func:`dumps` as text (for SSE lines and JSON-in-a-string fields)."""
    return orjson.dumps(value).decode()
