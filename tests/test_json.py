"""controller._json: orjson's speed without its narrower range."""

from __future__ import annotations

import json
import math

import pytest

from controller import _json


def nested(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": True}
    for _ in range(depth):
        doc = {"properties": doc}
    return doc


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}]},
        nested(300),  # past orjson's 254-level limit for writing
        {"text": "lone \ud800 surrogate"},  # orjson refuses to write it; json escapes it
    ],
    ids=["plain", "deep", "surrogate"],
)
def test_what_the_standard_library_writes_round_trips(value: object) -> None:
    encoded = _json.dumps(value)
    assert isinstance(encoded, bytes)
    assert json.loads(encoded) == value
    assert _json.loads(encoded) == value
    assert _json.dumps_text(value) == encoded.decode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": "\\ud800"}', {"a": "\ud800"}),  # a lone surrogate escape
        (b'{"n": 1e400}', {"n": math.inf}),  # overflows a float
    ],
    ids=["surrogate", "overflow"],
)
def test_what_the_standard_library_reads_is_read(raw: bytes, expected: object) -> None:
    assert _json.loads(raw) == expected
    assert _json.loads(bytearray(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"a": 1,}', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "open", "text", "trailing-comma", "binary", "too-deep"],
)
def test_what_neither_reads_raises_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError, UnicodeDecodeError or depth
        _json.loads(raw)


def test_what_is_not_json_at_all_still_raises() -> None:
    with pytest.raises(TypeError):
        _json.dumps({"when": object()})
