"""JSON on the request path: orjson, with the standard library behind it for what orjson refuses.

Every routed request is decoded and encoded twice (the caller's format in and out, the
provider's format out and in); with the standard library that was about 5% of the gateway's CPU
per request, with orjson about a fifth of that (``python -m tests.bench.instructions``).

orjson is stricter than :mod:`json`: it will not write more than 254 levels of nesting or a lone
surrogate, and will not read a lone ``\\ud800`` escape or a number too large for a float. Such
documents are rare, but a request or a provider answer that the standard library handled must
not turn into a 500 or a "malformed response" that counts against the provider, so each function
falls back on :mod:`json` when orjson refuses (costing nothing on the common path).

What neither can handle raises ValueError to read (:class:`json.JSONDecodeError` as :mod:`json`
raises it, or a plain one past either parser's nesting limit) and TypeError / ValueError to
write. ``dumps`` output is UTF-8 from orjson, ASCII-escaped from the fallback: both valid JSON.
One difference remains: orjson reads an integer beyond 64 bits as a float rather than refusing
it, so such a number loses precision (as it would in JavaScript).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_sorted", "dumps_text", "loads"]


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; raises ValueError (:class:`json.JSONDecodeError` mostly) when it is
    not one, including one nested too deeply for either parser."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        text = bytes(data) if isinstance(data, bytearray | memoryview) else data
        try:
            return json.loads(text)  # the stdlib's verdict (and its error message) stands
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact JSON as bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # nesting past orjson's limit, a lone surrogate, or not JSON at all
        return json.dumps(value, separators=(",", ":")).encode()


def dumps_sorted(value: Any) -> bytes:
    """:func:`dumps` with object keys sorted (a canonical form, for keys and hashes); what is not
    JSON (a dataclass's enum, a mapping proxy) is written as its ``str``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode()


def dumps_text(value: Any) -> str:
    """:func:`dumps` as text (for SSE lines and JSON-in-a-string fields)."""
    return dumps(value).decode()
