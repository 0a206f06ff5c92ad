"""The relayed stream's shortest path (issue 17 item 3): a read that is one whole event of one
``data`` line is read from its bytes (:meth:`SSEParser.line`, the decoder's ``quick_data``) and
relayed as it came, with no :class:`SSEEvent` built. It must read what the parser and the
decoder's full read give, decline whatever they would read otherwise, and relay what the
relay would (a model to rename or the provider's key quoted: framed again, not as it came)."""

from __future__ import annotations

from typing import Any

import pytest

from controller._errors import ResponseTooLarge
from controller.wire._base import SSEEvent
from controller.wire._relay import MASK, relay_for
from controller.wire._sse import SSEParser
from tests.test_stream_fastpath_attacks import (
    OPENAI_EVENTS,
    PROVIDER_KEY,
    USER,
    _agrees,
    _both_ways,
    _openai_chunk,
    _openai_decoder,
)

READS = [
    b'data: {"a":1}\n\n',
    b'data:{"a":1}\n\n',
    b'data:  {"a":1}\n\n',  # one blank is the field's, the other the value's
    b'data: {"a":1}\r\n\n',
    b'data: {"a":1}\r\r\n\n',
    b"data:\n\n",
    b"data: \n\n",
    b"data: x\r\n\r\n",  # a CRLF blank line: not the one-line shape, the parser reads it
    b'data: {"a":1}\n\ndata: 2\n\n',
    b'data: {"a":1}\n',
    b'data: {"a":1}',
    b'event: x\ndata: {"a":1}\n\n',
    b'datax: {"a":1}\n\n',
    b": ping\n\n",
    b"\ndata: 1\n\n",
    b"data: \xff\xfe x\n\n",
    b'data: "\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80"\n\n',
]


@pytest.mark.parametrize("raw", READS)
def test_a_read_of_one_data_line_is_read_as_the_parser_reads_it(raw: bytes) -> None:
    parser = SSEParser()
    value = parser.line(raw)
    events = parser.feed(raw)  # the line read changed nothing: the parser reads it afresh
    assert [(e.data, e.event, e.raw) for e in events] == [
        (e.data, e.event, e.raw) for e in SSEParser().feed(raw)
    ]
    if value is not None:
        assert len(events) == 1
        assert not events[0].event
        assert events[0].raw == raw
        assert value.decode("utf-8", "replace") == events[0].data


def test_the_line_read_declines_while_bytes_are_held_and_past_the_bound() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1") == []
    assert parser.line(b'data: {"a":1}\n\n') is None  # it ends the held line: not one event
    small = SSEParser(max_event_bytes=16)
    assert small.line(b"data: " + b"x" * 20 + b"\n\n") is None
    with pytest.raises(ResponseTooLarge):
        small.feed(b"data: " + b"x" * 20 + b"\n\n")


@pytest.mark.parametrize("data", OPENAI_EVENTS)
def test_openai_quick_read_of_bytes_is_the_quick_read_of_the_event(data: str) -> None:
    decoder = _openai_decoder()
    raw = data.encode("utf-8", "surrogatepass")
    assert decoder.quick_data(raw) == _agrees(decoder, SSEEvent(data))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"index":0,"delta":{"content":"\xff"}}]}',  # not UTF-8: the full read's
        b'{"choices":[{"index":0,"delta":{"content":"\xed\xa0\x80"}}]}',  # an encoded surrogate
        b'{"choices":[{"index":0,"delta":{"content":"\xc3"}}]}',  # a cut character
    ],
)
def test_openai_quick_read_of_bytes_that_are_not_utf8_declines(raw: bytes) -> None:
    assert _openai_decoder().quick_data(raw) is None


def test_openai_quick_read_of_bytes_declines_before_the_model_and_after_the_end() -> None:
    text = b'{"choices":[{"index":0,"delta":{"content":"x"}}]}'
    from controller.wire._openai_client import OpenAIStreamDecoder

    assert OpenAIStreamDecoder(model="m").quick_data(text) is None  # no model seen yet
    decoder = _openai_decoder()
    assert decoder.quick_data(text) == "x"
    decoder.feed(SSEEvent("[DONE]"))
    assert decoder.quick_data(text) is None


def test_the_relay_relays_as_it_came_only_what_it_would_not_change() -> None:
    plain = relay_for(b"", starts=lambda event: False, secret=PROVIDER_KEY)
    renamed = relay_for(b"", echo_model="mine", starts=lambda event: False, secret=None)
    raw = b'data: {"model":"m-1","choices":[]}\n\n'
    assert plain.plain(raw)
    assert not renamed.plain(raw)
    quoting = b'data: {"x":"' + PROVIDER_KEY.encode() + b'"}\n\n'
    assert not plain.plain(quoting)
    assert MASK.encode() in plain.event(SSEEvent(quoting[6:-2].decode(), raw=quoting), [])


def _stream(*texts: str) -> bytes:
    events = [_openai_chunk({"role": "assistant", "content": ""})]
    events += [_openai_chunk({"content": text}) for text in texts]
    events.append(_openai_chunk({}, "stop"))
    return "".join(f"data: {event}\n\n" for event in [*events, "[DONE]"]).encode()


def _events(stream: bytes) -> list[list[bytes]]:
    """``stream`` a read per event (the shortest path's shape), and whole."""
    return [[event + b"\n\n" for event in stream.split(b"\n\n")[:-1]], [stream]]


async def test_a_stream_read_an_event_a_read_relays_the_provider_s_bytes() -> None:
    stream = _stream("Bon", "jour é漢😀", "x" * 3000, "")
    body: dict[str, Any] = {"model": "m", "stream": True, "messages": USER}
    relayed, decoded, raw = await _both_ways("openai", stream, body, _events(stream))
    assert relayed == decoded
    assert raw == [stream, stream]


async def test_an_event_quoting_the_provider_s_key_is_masked_on_the_shortest_path() -> None:
    stream = _stream("a", f"the key is {PROVIDER_KEY}", "b")
    body: dict[str, Any] = {"model": "m", "stream": True, "messages": USER}
    relayed, decoded, raw = await _both_ways("openai", stream, body, _events(stream))
    assert relayed == decoded
    for got in raw:
        assert PROVIDER_KEY.encode() not in got
        assert MASK.encode() in got
        assert got == stream.replace(PROVIDER_KEY.encode(), MASK.encode())


async def test_an_event_that_is_not_utf8_reads_alike_relayed_and_decoded() -> None:
    stream = _stream("a").replace(b'"content": "a"', b'"content": "a\xff"')
    assert b"\xff" in stream
    body: dict[str, Any] = {"model": "m", "stream": True, "messages": USER}
    relayed, decoded, raw = await _both_ways("openai", stream, body, _events(stream))
    assert relayed == decoded
    assert raw == [stream, stream]
