"""The relayed stream's shortest path (issue 17 item 3): a read that is one whole event of one
``data`` line, or of a name line and one data line (Anthropic's), is read from its bytes
(:meth:`SSEParser.whole`, the decoder's ``quick_data``) and relayed as it came, with no
:class:`SSEEvent` built. It must read what the parser and the
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
    ANTHROPIC_EVENTS,
    OPENAI_EVENTS,
    PROVIDER_KEY,
    USER,
    _agrees,
    _anthropic_decoder,
    _anthropic_event,
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
    b'event:x\r\ndata:{"a":1}\r\n\n',
    b"event: \ndata: 1\n\n",
    b"event: x\ndata: 1\r\n\r\n",
    b"event: x\ndata: 1\ndata: 2\n\n",
    b"event: x\nid: 1\n\n",
    b"data: 1\nevent: x\n\n",
    b"event: x\n\n",
    b"\n",
    b"event: x\ndata: \xff\n\n",
    b'datax: {"a":1}\n\n',
    b": ping\n\n",
    b"\ndata: 1\n\n",
    b"data: \xff\xfe x\n\n",
    b'data: "\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80"\n\n',
]


@pytest.mark.parametrize("raw", READS)
def test_a_read_of_one_whole_event_is_read_as_the_parser_reads_it(raw: bytes) -> None:
    parser = SSEParser()
    whole = parser.whole(raw)
    events = parser.feed(raw)  # the whole read changed nothing: the parser reads it afresh
    assert [(e.data, e.event, e.raw) for e in events] == [
        (e.data, e.event, e.raw) for e in SSEParser().feed(raw)
    ]
    if whole is not None:
        name, value = whole
        assert len(events) == 1
        assert events[0].raw == raw
        assert name.decode("utf-8", "replace") == events[0].event
        assert value.decode("utf-8", "replace") == events[0].data


def test_the_whole_read_declines_while_bytes_are_held_and_past_the_bound() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1") == []
    assert parser.whole(b'data: {"a":1}\n\n') is None  # it ends the held line: not one event
    for raw in (b"data: " + b"x" * 20 + b"\n\n", b"event: x\ndata: " + b"x" * 10 + b"\n\n"):
        small = SSEParser(max_event_bytes=16)
        assert small.whole(raw) is None
        with pytest.raises(ResponseTooLarge):
            small.feed(raw)


@pytest.mark.parametrize("data", OPENAI_EVENTS)
def test_openai_quick_read_of_bytes_is_the_quick_read_of_the_event(data: str) -> None:
    decoder = _openai_decoder()
    raw = data.encode("utf-8", "surrogatepass")
    assert decoder.quick_data(b"", raw) == _agrees(decoder, SSEEvent(data))
    assert decoder.quick_data(b"message", raw) is None  # the full read's, named


@pytest.mark.parametrize(("name", "data"), ANTHROPIC_EVENTS)
def test_anthropic_quick_read_of_bytes_is_the_quick_read_of_the_event(name: str, data: str) -> None:
    decoder = _anthropic_decoder()
    raw = data.encode("utf-8", "surrogatepass")
    assert decoder.quick_data(name.encode(), raw) == _agrees(decoder, SSEEvent(data, name))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"index":0,"delta":{"content":"\xff"}}]}',  # not UTF-8: the full read's
        b'{"choices":[{"index":0,"delta":{"content":"\xed\xa0\x80"}}]}',  # an encoded surrogate
        b'{"choices":[{"index":0,"delta":{"content":"\xc3"}}]}',  # a cut character
    ],
)
def test_quick_reads_of_bytes_that_are_not_utf8_decline(raw: bytes) -> None:
    assert _openai_decoder().quick_data(b"", raw) is None
    delta = raw.replace(b'{"choices":[{"index":0,"delta":{"content":', b"")[:-4]
    anthropic = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
    assert (
        _anthropic_decoder().quick_data(b"content_block_delta", anthropic + delta + b"}}") is None
    )


def test_openai_quick_read_of_bytes_declines_before_the_model_and_after_the_end() -> None:
    text = b'{"choices":[{"index":0,"delta":{"content":"x"}}]}'
    from controller.wire._openai_client import OpenAIStreamDecoder

    assert OpenAIStreamDecoder(model="m").quick_data(b"", text) is None  # no model seen yet
    decoder = _openai_decoder()
    assert decoder.quick_data(b"", text) == "x"
    decoder.feed(SSEEvent("[DONE]"))
    assert decoder.quick_data(b"", text) is None


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


def _anthropic(*texts: str) -> bytes:
    message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant", "model": "m-1"}
    message["content"] = []
    message["usage"] = {"input_tokens": 1, "output_tokens": 0}
    events = [_anthropic_event("message_start", message=message)]
    events.append(
        _anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    )
    for text in texts:
        delta = {"type": "text_delta", "text": text}
        events.append(_anthropic_event("content_block_delta", index=0, delta=delta))
    events.append(_anthropic_event("content_block_stop", index=0))
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    events.append(_anthropic_event("message_delta", delta=stop, usage={"output_tokens": 3}))
    events.append(_anthropic_event("message_stop"))
    return "".join(events).encode()


async def test_an_anthropic_stream_read_an_event_a_read_relays_the_provider_s_bytes() -> None:
    stream = _anthropic("Bon", "jour é漢😀", "x" * 3000, f"key {PROVIDER_KEY}", "!")
    stream = stream.replace(b'"text": "!"', b'"text": "!\xff"')  # an event that is not UTF-8
    body: dict[str, Any] = {"model": "m", "stream": True, "max_tokens": 9, "messages": USER}
    relayed, decoded, raw = await _both_ways("anthropic", stream, body, _events(stream))
    assert relayed == decoded
    assert raw == [stream.replace(PROVIDER_KEY.encode(), MASK.encode())] * 2
