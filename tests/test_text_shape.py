"""A stream's text events taken by their shape (controller.wire._shape): the text a shape gives
is the text the decoder reads, and a read it cannot vouch for goes to the full read.

The judge is the reader itself with shapes turned off: the same reads, fed to both, must give
the same chunks, errors and states, whatever a hostile provider puts in its events (escapes,
quotes, control characters, bad UTF-8, a second key, changed members, split or joined reads).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from controller._errors import ProviderError
from controller.model import StreamChunk
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers._stream_reader import _Reader, _StreamLimits
from controller.wire._relay import relay_for
from controller.wire._shape import TextShape

KEY = "sk-shape-test-provider-key-0123456789"
OPENAI_HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m-1"}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def openai_event(text: Any, *, finish: Any = None, index: int = 0, **extra: Any) -> bytes:
    choice = {"index": index, "delta": {"content": text}, "finish_reason": finish}
    body = OPENAI_HEAD | {"choices": [choice]} | extra
    return f"data: {_compact(body)}\n\n".encode()


def anthropic_event(text: Any, *, index: int = 0) -> bytes:
    body = {"type": "content_block_delta", "index": index}
    body["delta"] = {"type": "text_delta", "text": text}
    return f"event: content_block_delta\ndata: {_compact(body)}\n\n".encode()


# ------------------------------------------------------------------------------ the shape
def test_a_shape_gives_the_text_of_an_event_like_the_one_it_was_learned_from() -> None:
    shape = TextShape.learn(openai_event("Hello"), "Hello", b'"content"', b"", limit=1 << 20)
    assert shape is not None
    assert shape.text(openai_event(" world, 你好")) == " world, 你好"
    assert shape.text(openai_event("x", finish="stop")) is None  # another member changed
    assert shape.text(openai_event("x", index=1)) is None
    assert shape.text(openai_event("")) is None  # the decoder reads no text there: full read
    assert shape.text(openai_event('say "hi"')) is None  # an escape: the full read decodes it
    assert shape.text(openai_event("tab\there")) is None
    assert shape.events == 1
    assert shape.text(openai_event("x")[:-1]) is None
    bad_utf8 = openai_event("ab").replace(b"ab", b"a\xff")
    assert shape.text(bad_utf8) is None
    assert TextShape.learn(openai_event("Hello"), "Hello", b'"content"', b"", limit=50) is not None
    small = TextShape.learn(openai_event("Hello"), "Hello", b'"content"', b"", limit=150)
    assert small is not None
    assert small.text(openai_event("x" * 200)) is None


def test_a_run_of_events_of_the_shape_is_taken_whole() -> None:
    """A relay behind reads a stream's events several at once: each must have the shape (the
    whole read is taken, or none of it), their texts joined as the reader joins a run."""
    shape = TextShape.learn(openai_event("Hello"), "Hello", b'"content"', b"", limit=200)
    assert shape is not None
    x, y, z = openai_event("x"), openai_event("y"), openai_event("zz")
    assert shape.text(x + y + z) == "xyzz"
    assert shape.events == 3
    assert len(x + y + z) > 200  # the bound is on each event, as the parser's is
    assert shape.text(x + openai_event("y" * 200)) is None  # the second over it
    assert shape.text(x + openai_event("y", index=1)) is None  # the second shaped otherwise
    assert shape.text(x + openai_event("")) is None  # the second without text
    assert shape.text(x + openai_event('y"')) is None  # the second with an escape
    assert shape.text(x + b"data: [DONE]\n\n") is None
    assert shape.text(x + y[:-1]) is None  # the second cut: the parser would hold its end
    assert shape.text(x + b"\n") is None
    # a character split over two events: neither literal is UTF-8 (joined bytes would be)
    first = openai_event("aX").replace(b"aX", "a你".encode()[:-1])
    second = openai_event("Yb").replace(b"Yb", "你".encode()[-1:] + b"b")
    assert shape.text(first + second) is None
    assert shape.events == 3  # (unchanged by reads not taken)


def test_a_named_member_may_change_with_the_text() -> None:
    learned = openai_event("Hi", usage=None, obfuscation="k2")
    shape = TextShape.learn(learned, "Hi", b'"content"', b'"obfuscation"', limit=1 << 20)
    assert shape is not None
    assert shape.text(openai_event("there", usage=None, obfuscation="Zq9xPw")) == "there"
    assert shape.text(openai_event("there", usage=None, obfuscation="")) == "there"
    assert shape.text(openai_event("there", usage=None, obfuscation='a"b')) is None
    assert shape.text(openai_event("there", usage={"total_tokens": 3}, obfuscation="x")) is None
    assert shape.text(openai_event("there", usage=None)) is None
    fixed = TextShape.learn(learned, "Hi", b'"content"', b"", limit=1 << 20)  # not named
    assert fixed is not None
    assert fixed.text(openai_event("x", usage=None, obfuscation="k3")) is None


def test_what_a_shape_is_not_learned_from() -> None:
    def learn(raw: bytes, text: str = "Hi") -> TextShape | None:
        return TextShape.learn(raw, text, b'"content"', b"", limit=1 << 20)

    assert learn(openai_event("Hi", note="a\\b")) is None  # an escape anywhere in the event
    assert learn(openai_event("Hi", content="Hi")) is None  # the key twice (last one wins)
    escaped_key = openai_event("Hi").replace(b'"Hi"}', b'"Hi","con\\u0074ent":"Hi"}')
    assert escaped_key.count(b"con\\u0074ent") == 1
    assert learn(escaped_key) is None
    assert learn(openai_event("Hi"), text="Other") is None  # not the text the decoder read
    assert learn(openai_event(None)) is None
    spaced = b'data: {"choices": [{"index": 0, "delta": {"content" : "Hi"}}]}\n\n'
    shape = learn(spaced)
    assert shape is not None
    assert shape.text(spaced.replace(b"Hi", b"Yo")) == "Yo"


def test_anthropic_text_deltas_have_a_shape() -> None:
    shape = TextShape.learn(anthropic_event("Hi"), "Hi", b'"text"', b"", limit=1 << 20)
    assert shape is not None
    assert shape.text(anthropic_event("there")) == "there"
    assert shape.text(anthropic_event("there", index=1)) is None


# ------------------------------------------------------- the reader, against itself without
class Answer:
    headers: dict[str, str] = {}


def _reader(kind: str, shapes: bool) -> _Reader:
    provider = HttpProvider(
        name="up", codec=codec_for(kind), base_url="http://127.0.0.1:9", api_key=KEY
    )
    limits = _StreamLimits.starting(time.monotonic(), Timeouts())
    relay = relay_for(b"", starts=lambda event: False, secret=KEY)
    reader = _Reader(provider, Answer(), "m-1", limits, relay)  # type: ignore[arg-type]
    if not shapes:
        reader._shape_keys = None
    return reader


def _outcome(reader: _Reader, read: bytes) -> tuple[Any, ...]:
    try:
        chunks: list[StreamChunk] | str = reader.chunks(read)
    except ProviderError as exc:
        chunks = f"{type(exc).__name__}: {exc}"
    return chunks, reader.started, reader.finished, reader.done, reader._bad.good


_ALPHABET = ["a", "b", " ", "é", "你", "😀", '"', "\\", "\n", "\t", "\x01", "\u2028", KEY[:9]]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) if rng.random() < 0.1 else "w" for _ in range(6))


def _openai_read(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.75:
        return openai_event(_text(rng), usage=None, obfuscation=rng.choice(["", "Ab3", 'q"']))
    if roll < 0.80:
        return openai_event(_text(rng))  # another shape: no usage, no padding
    if roll < 0.83:
        return openai_event(_text(rng), index=1, usage=None, obfuscation="x")
    if roll < 0.85:
        return openai_event("", finish="stop", usage=None, obfuscation="x")
    if roll < 0.87:
        return openai_event(_text(rng), usage=None, obfuscation="x", content="dup")
    if roll < 0.89:
        return openai_event(KEY, usage=None, obfuscation="x")  # the key echoed
    if roll < 0.92:
        raw = openai_event("ab", usage=None, obfuscation="x")
        return raw.replace(b"ab", rng.choice([b"a\xff", b"\xc3", b"a\x00b", b"a\\u00e9"]))
    if roll < 0.95:
        return openai_event(_text(rng), usage=None, obfuscation="x") * 2
    if roll < 0.97:
        return b"data: [DONE]\n\n"
    raw = openai_event(_text(rng), usage=None, obfuscation="x")
    return raw[: rng.randrange(1, len(raw))]  # a piece: the parser holds it


def _anthropic_read(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.7:
        return anthropic_event(_text(rng))
    if roll < 0.8:
        return anthropic_event(_text(rng), index=rng.choice([1, 2]))
    if roll < 0.85:
        return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    if roll < 0.9:
        return anthropic_event(KEY)
    raw = anthropic_event(_text(rng))
    return raw[: rng.randrange(1, len(raw))]


_STARTS = {
    "openai": [
        openai_event("", usage=None, obfuscation="s").replace(
            b'"content"', b'"role":"assistant","content"'
        )
    ],
    "anthropic": [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":'
        b'"message","role":"assistant","model":"m-1","content":[],"usage":{"input_tokens":1}}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n',
    ],
}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_the_reader_reads_the_same_with_shapes_as_without(kind: str) -> None:
    """300 seeded streams of 30 reads: each read's chunks, error and the reader's state."""
    made = _openai_read if kind == "openai" else _anthropic_read
    taken = runs = 0  # reads the shaped reader took by their shape; of several events
    for seed in range(300):
        rng = random.Random(seed)
        shaped, plain = _reader(kind, True), _reader(kind, False)
        for read in [*_STARTS[kind], *(_read(made, rng) for _ in range(30))]:
            shape = shaped._shape
            assert _outcome(shaped, read) == _outcome(plain, read), (seed, read)
            if shape is not None and shaped._shape is shape:
                taken += 1
                runs += shape.events > 1
            if plain.done:
                break
    assert taken > 300  # not a test of the fallback alone
    assert runs > 30  # nor of single events alone


def _read(made: Any, rng: random.Random) -> bytes:
    """One read: mostly one of ``made``'s, sometimes two to four of them together (a relay
    behind reads a stream's events several at once)."""
    if rng.random() < 0.8:
        return made(rng)  # type: ignore[no-any-return]
    return b"".join(made(rng) for _ in range(rng.randint(2, 4)))


async def test_a_stream_whose_events_never_repeat_their_shape_stops_being_learned() -> None:
    reader = _reader("openai", True)
    reader.chunks(_STARTS["openai"][0])
    for n in range(20):
        reader.chunks(openai_event("x", usage=None, created_by=n))  # a member that changes
    assert reader._shape_keys is None
    assert reader._shape is None
    assert reader.chunks(openai_event("y", usage=None, created_by=99))[0].text == "y"


async def test_the_reader_takes_a_read_by_its_shape() -> None:
    reader = _reader("openai", True)
    reader.chunks(_STARTS["openai"][0])  # held until the first text
    reader.chunks(openai_event("zero", usage=None, obfuscation="a"))  # goes with the held one
    held_first = reader._shape
    reader.chunks(openai_event("one", usage=None, obfuscation="a"))  # read whole: learned
    assert held_first is None
    assert reader._shape is not None
    raw = openai_event("two", usage=None, obfuscation="bcd")
    assert reader.chunks(raw) == [StreamChunk(text="two", raw=raw)]
    assert reader._shape_misses == 0


def _shape_of(reader: _Reader) -> TextShape | None:
    return reader._shape


async def test_a_reader_behind_learns_the_shape_from_a_run_of_text_events() -> None:
    """A relay that falls behind reads a stream's events several at once, and might never read
    one alone again until it has caught up: the last event of a run of text events (read
    quick, the parser holding nothing after) teaches the shape as a read of it alone would."""

    def event(text: str) -> bytes:
        return openai_event(text, usage=None, obfuscation="pad")

    reader = _reader("openai", True)
    reader.chunks(_STARTS["openai"][0])
    reader.chunks(event("a") + event("b"))  # the first goes with the held start: in full
    assert _shape_of(reader) is None
    run = event("c") + event("d") + event("e")
    assert reader.chunks(run) == [StreamChunk(text="cde", raw=run)]  # in full, learned
    shape = reader._shape
    assert shape is not None
    later = event("f") + event("g")
    assert reader.chunks(later) == [StreamChunk(text="fg", raw=later)]
    assert reader._shape is shape  # taken by the shape
    assert shape.events == 2
    # not learned from a run that ends in part of an event (the parser holds it), that holds
    # another kind of event, or that quotes the key (the relay masks it)
    for read in (
        event("f") + event("g")[:40],
        event("h") + openai_event("", finish="stop", usage=None, obfuscation="pad"),
        event("i") + event(KEY),
    ):
        fresh = _reader("openai", True)
        fresh.chunks(_STARTS["openai"][0])
        fresh.chunks(read)
        assert fresh._shape is None, read
