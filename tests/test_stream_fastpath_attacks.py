"""The same-format stream's fast paths attacked for correctness (issue 17 item 3, issue 16).

The hot path reads most events by shortcuts: the SSE parser takes a read of one whole
single-line event (or a name line and a data line) without its scanning loop, and a decoder's
``quick`` reads a text-only event in one step, the relay then forwarding the event's own bytes.
Whatever the input, the shortcuts must give what the full reading gives, and the client must get
the provider's bytes. Here: every stream of a corpus of odd but valid framings (CRLF, ``data:``
without a blank, several data lines, comments, ``id``/``retry`` fields, a name after the data,
multi-byte characters) fed whole, split at every position and a byte at a time, against a
reference reading line by line; each quick read against the full read on a copy of the decoder
(state unchanged, same chunk), including JSON only one of the two parsers takes; a provider's
stream read relayed (quick) and decoded (full) by the real client over loopback; and the
official SDKs through the gateway, comparing the bytes the client got with those the provider
sent, and what a continuation was told was delivered with what the client had read.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from controller._errors import ProviderError, ResponseTooLarge
from controller.events import AttemptReason, Outcome
from controller.model import Message, Request, Source, StreamChunk
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.routing._continue import MAX_DELIVERED
from controller.wire._anthropic_client import _StreamDecoder as AnthropicDecoder
from controller.wire._base import SSEEvent
from controller.wire._openai_client import OpenAIStreamDecoder
from controller.wire._relay import relay_for
from controller.wire._sse import SSEParser
from tests.conftest import Recorder
from tests.gateway_support import LoopbackPost, tier_gateway

LIMITS = Timeouts(connect=2.0, first_token=5.0, idle=2.0, total=10.0, terminator_grace=0.2)
USER: Any = [{"role": "user", "content": "count"}]
PROVIDER_KEY = "sk-provider-key-for-tests"

# ---------------------------------------------------------------- a reference reading


def reference(stream: bytes) -> list[tuple[str, str, bytes]]:
    """(data, name, bytes) of each event, read line by line as the module documents it: a
    line ends with LF or CRLF, a blank line ends an event, an event with neither data nor a
    name is none (its bytes, like blank lines between events, are not an event's)."""
    events: list[tuple[str, str, bytes]] = []
    data: list[str] = []
    name, start, at = "", -1, 0
    while (end := stream.find(b"\n", at)) >= 0:
        line = stream[at:end].rstrip(b"\r")
        if not line:
            if data or name:
                events.append(("\n".join(data), name, stream[start : end + 1]))
            data, name, start = [], "", -1
        else:
            start = at if start < 0 else start
            field, _, value = line.decode("utf-8", "replace").partition(":")
            value = value.removeprefix(" ")
            if line.startswith(b":"):
                pass
            elif field == "data":
                data.append(value)
            elif field == "event":
                name = value
        at = end + 1
    return events


def parsed(pieces: list[bytes], **limits: int) -> list[tuple[str, str, bytes]]:
    parser = SSEParser(**limits)
    return [(e.data, e.event, e.raw) for piece in pieces for e in parser.feed(piece)]


TEXT = '{"choices":[{"index":0,"delta":{"content":"h\\u00e9 \u00e9\u6f22\U0001f600"}}]}'
CORPUS = {
    "usual": f"data: {TEXT}\n\ndata: {TEXT}\n\ndata: [DONE]\n\n",
    "no blank after the colon": f"data:{TEXT}\n\ndata:[DONE]\n\n",
    "crlf (Gemini's framing)": f"data: {TEXT}\r\n\r\ndata: {TEXT}\r\n\r\n",
    "mixed line ends": f"data: {TEXT}\r\n\ndata: {TEXT}\n\r\n",
    "named": 'event: content_block_delta\ndata: {"a":1}\n\nevent:ping\ndata:{}\n\n',
    "named, crlf": 'event: content_block_delta\r\ndata: {"a":1}\r\n\r\n',
    "name after the data": 'data: {"a":1}\nevent: message_delta\n\n',
    "several data lines": 'data: {"a":\ndata: 1}\n\ndata:\ndata: x\ndata:\n\n',
    "empty data": "data:\n\ndata: \n\ndata\n\n",
    "comments": ': ping\n\ndata: {"a":1}\n: inside\ndata: 2\n\n:\n\n',
    "id and retry": 'id: 7\ndata: {"a":1}\n\nretry: 10\n\nid: 8\r\nevent: x\r\ndata: y\r\n\r\n',
    "a name alone": "event: lonely\n\n",
    "blank lines around": '\n\r\n\ndata: {"a":1}\n\n\n\n\r\n\r\ndata: 2\n\n\n',
    "unknown fields": "foo: bar\ndata: 1\nbaz\n\n",
    "invalid utf-8": "data: \udcff\udcfe x\n\n",  # lone bytes (surrogateescape below)
    "a bom (a field of its own name)": "\ufeffdata: skipped\n\ndata: 1\n\n",
}


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_split_of_a_stream_reads_as_the_reference_does(name: str) -> None:
    """Whole, in two pieces split at every position (inside a character, between CR and LF),
    a byte at a time and in three pieces: the same events with the same bytes."""
    stream = _bytes(CORPUS[name])
    expected = reference(stream)
    assert parsed([stream]) == expected
    assert parsed([stream[i : i + 1] for i in range(len(stream))]) == expected
    for cut in range(1, len(stream)):
        assert parsed([stream[:cut], stream[cut:]]) == expected, cut
    rng = random.Random(name)
    for _ in range(200):
        a, b = sorted(rng.sample(range(1, len(stream)), 2))
        assert parsed([stream[:a], stream[a:b], stream[b:]]) == expected, (a, b)


def test_random_framings_read_as_the_reference_does() -> None:
    """Seeded random streams of lines (no lone CR, which the module does not read as a line
    end), each split at every position."""
    lines = [
        b"data: x\n",
        b"data:y\r\n",
        b"data:\n",
        b"data\n",
        b"event: e\n",
        b"event:f\r\n",
        b": c\n",
        b"id: 1\n",
        b"retry: 5\n",
        b"\n",
        b"\r\n",
        b"data: \xc3\xa9\xe6\xbc\xa2\r\n",
        b'data: {"a":1}\n\n',
        b"x: y\n",
    ]
    rng = random.Random(17)
    for _ in range(300):
        stream = b"".join(rng.choice(lines) for _ in range(rng.randint(1, 9)))
        expected = reference(stream)
        for cut in range(len(stream) + 1):
            assert parsed([stream[:cut], stream[cut:]]) == expected, (stream, cut)


def test_a_lone_cr_between_events_does_not_hold_back_every_event_after_it() -> None:
    """A CR that is not a CRLF's first half where an event would begin: the events after it
    still come (the module reads a lone CR as no line end, so it is part of the next line; the
    stream is not held until the event bound)."""
    for stream in (
        b"data: a\n\n\r\r\ndata: b\n\ndata: c\n\n",
        b"data: a\n\n\rdata: b\n\ndata: c\n\n",
        b"\r\r\ndata: b\n\ndata: c\n\n",
    ):
        for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
            events = parsed(pieces)
            assert [data for data, _, _ in events][-1:] == ["c"], (stream, events)
            assert events[-1][2] == b"data: c\n\n"


@pytest.mark.parametrize(
    "event",
    [
        b"data: " + b"x" * 300 + b"\n\n",  # one line: the parser's shortcut
        b"event: content_block_delta\ndata: " + b"x" * 300 + b"\n\n",  # name + data shortcut
        b"data: " + b"x" * 150 + b"\ndata: " + b"y" * 150 + b"\n\n",  # the full reading
        b"data: " + b"x" * 300 + b"\r\n\r\n",
    ],
)
def test_an_event_over_the_bound_is_refused_however_it_is_split(event: bytes) -> None:
    """An event of 300 bytes against a 200-byte bound, after a good one: refused at every
    split (nothing of it returned), while the same event within a 400-byte bound is read."""
    good = b"data: ok\n\n"
    stream = good + event
    for cut in range(1, len(stream)):
        parser, events = SSEParser(max_event_bytes=200), []
        refused = None
        for piece in (stream[:cut], stream[cut:], b"data: after\n\n"):
            try:
                events += parser.feed(piece)
            except ResponseTooLarge as exc:
                refused = exc
                break
        assert refused is not None, cut
        assert [e.raw for e in events] in ([], [good]), cut
        assert parsed([stream[:cut], stream[cut:]], max_event_bytes=400) == reference(stream)


def test_data_lines_past_the_bound_are_refused_whole_or_a_line_at_a_time() -> None:
    flood = b"data: a\r\n" * 12
    for pieces in ([flood + b"\r\n"], [b"data: a\r\n"] * 12, [flood[:50], flood[50:] + b"\n"]):
        with pytest.raises(ResponseTooLarge):
            parsed(pieces, max_lines=10)
    assert len(parsed([b"data: a\r\n" * 10 + b"\r\n"], max_lines=10)) == 1


# ---------------------------------------------------------------- quick read against full read


def _openai_decoder() -> OpenAIStreamDecoder:
    decoder = OpenAIStreamDecoder(model="m-0")
    first = {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "a"}}]}
    assert decoder.feed(SSEEvent(json.dumps(first)))  # the model seen: the quick read is on
    return decoder


def _anthropic_decoder() -> AnthropicDecoder:
    decoder = AnthropicDecoder(model="m-0")
    start = {"type": "message_start", "message": {"model": "m-1", "usage": {"input_tokens": 1}}}
    text_block = {"type": "text", "text": ""}
    tool_block = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    block = {"type": "content_block_start", "index": 0, "content_block": text_block}
    tool = {"type": "content_block_start", "index": 1, "content_block": tool_block}
    decoder.feed(SSEEvent(json.dumps(start), "message_start"))
    decoder.feed(SSEEvent(json.dumps(block), "content_block_start"))
    decoder.feed(SSEEvent(json.dumps(tool), "content_block_start"))
    decoder.feed(SSEEvent(_DELTA, "content_block_delta"))  # the served model stamped on it
    return decoder


def _outcome(decoder: Any, event: SSEEvent) -> tuple[str, Any]:
    try:
        return "chunks", decoder.feed(event)
    except ProviderError as exc:
        return "error", type(exc).__name__


def _agrees(decoder: Any, event: SSEEvent) -> str | None:
    """What the quick read of ``event`` gave, after checking it against the full read."""
    text: str | None = decoder.quick(event)
    if text is None:
        return None
    full = copy.deepcopy(decoder)
    state = copy.deepcopy(vars(decoder)) if hasattr(decoder, "__dict__") else None
    outcome = _outcome(full, event)
    expected = [StreamChunk(text=text)] if text else []
    assert outcome == ("chunks", expected), (event, text, outcome)
    if state is not None:
        assert vars(full) == state, event  # the full read changed nothing the quick one skips
    return text


_CHOICE = '{"index":0,"delta":{"content":"x"},"finish_reason":null}'
OPENAI_EVENTS = [
    '{"choices":[' + _CHOICE + "]}",
    '{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}',  # text + finish
    '{"choices":[' + _CHOICE + '],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    '{"choices":[' + _CHOICE + '],"usage":null,"error":null}',
    '{"choices":[' + _CHOICE + '],"error":{"message":"overloaded"}}',
    '{"choices":[' + _CHOICE + '],"error":{}}',
    '{"choices":[' + _CHOICE + "," + _CHOICE.replace('"index":0', '"index":1') + "]}",
    '{"choices":[{"index":1,"delta":{"content":"x"}}]}',
    '{"choices":[{"index":false,"delta":{"content":"x"}}]}',
    '{"choices":[{"index":0.0,"delta":{"content":"x"}}]}',
    '{"choices":[{"index":"0","delta":{"content":"x"}}]}',
    '{"choices":[{"delta":{"content":"x"}}]}',
    '{"choices":[{"index":0,"delta":null}]}',
    '{"choices":[{"index":0,"delta":{"content":null}}]}',
    '{"choices":[{"index":0,"delta":{"content":5}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x","tool_calls":[]}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x","tool_calls":null}}]}',
    '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}',
    '{"choices":[{"index":0,"delta":"x"}]}',
    '{"choices":["x"]}',
    '{"choices":{"0":' + _CHOICE + "}}",
    '{"choices":[' + _CHOICE + '],"x":NaN}',  # only Python's parser takes it
    '{"choices":[' + _CHOICE + '],"x":Infinity}',
    '{"choices":[{"index":0,"delta":{"content":"\\ud800"}}]}',  # a lone surrogate
    '{"choices":[' + _CHOICE + '],"x":123456789012345678901234567890}',
    '{"choices":[{"index":18446744073709551616,"delta":{"content":"x"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x"}}],"choices":[]}',  # a duplicate key
    '{"choices":[],"choices":[' + _CHOICE + "]}",
    '{"choices":[{"index":0,"delta":{"content":"x","content":"y"}}]}',
    ' {"choices":[' + _CHOICE + "]} ",
    '\x0c{"choices":[' + _CHOICE + "]}",
    '{"choices":[' + _CHOICE + "]}\n",
    "[DONE]",
    "",
    "[" + _CHOICE + "]",
]


@pytest.mark.parametrize("data", OPENAI_EVENTS)
@pytest.mark.parametrize("name", ["", "message", "error"])
def test_openai_quick_read_agrees_with_the_full_read(data: str, name: str) -> None:
    _agrees(_openai_decoder(), SSEEvent(data, name))


def _naming(model: str, data: str) -> str:
    """``data`` with a ``model`` member first, when it is an object."""
    return '{"model":"' + model + '",' + data[1:] if data.startswith("{") else data


_FIRST_EVENTS = [
    variant
    for data in OPENAI_EVENTS
    for variant in (data, _naming("m-0", data), _naming("m-1", data), _naming("m-00", data))
] + ['{"model":null,"choices":[' + _CHOICE + "]}", '{"model":5,"choices":[' + _CHOICE + "]}"]


def test_openai_quick_read_of_a_first_event_agrees_with_the_full_read() -> None:
    """Before the served model is seen, the quick read takes only an event that names the
    requested model, and leaves the decoder as the full read of the same event does (the
    model seen once a text came); any other it declines, changing nothing."""
    taken = 0
    for data in _FIRST_EVENTS:
        for name in ("", "message", "error"):
            event = SSEEvent(data, name)
            quick, full = OpenAIStreamDecoder(model="m-0"), OpenAIStreamDecoder(model="m-0")
            text = quick.quick(event)
            if text is None:
                assert vars(quick) == vars(OpenAIStreamDecoder(model="m-0")), event
                continue
            taken += 1
            assert _outcome(full, event) == ("chunks", [StreamChunk(text=text)] if text else [])
            assert vars(quick) == vars(full), event
    assert taken >= 9, taken  # the plain text events that name m-0, under two names each


def test_openai_first_text_read_quick_only_for_the_requested_model() -> None:
    decoder = OpenAIStreamDecoder(model="m-0")
    role = '{"model":"m-0","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
    assert decoder.quick(SSEEvent(role)) == ""  # nothing yet: the model stays to be seen
    assert decoder.quick(SSEEvent(_naming("m-1", '{"choices":[' + _CHOICE + "]}"))) is None
    assert decoder.quick(SSEEvent(_naming("m-0", '{"choices":[' + _CHOICE + "]}"))) == "x"
    assert decoder.quick(SSEEvent('{"choices":[' + _CHOICE + "]}")) == "x"  # seen: any after
    other = OpenAIStreamDecoder(model="m-0")
    served = _naming("m-1", '{"choices":[' + _CHOICE + "]}")
    assert other.feed(SSEEvent(served)) == [StreamChunk(text="x", model="m-1")]  # reported


def test_openai_quick_read_declines_before_the_model_and_after_the_end() -> None:
    fresh = OpenAIStreamDecoder(model="m-0")
    assert fresh.quick(SSEEvent('{"choices":[' + _CHOICE + "]}")) is None
    done = _openai_decoder()
    done.feed(SSEEvent("[DONE]"))
    assert done.quick(SSEEvent('{"choices":[' + _CHOICE + "]}")) is None


_DELTA = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}'
ANTHROPIC_EVENTS = [
    ("content_block_delta", _DELTA),
    ("", _DELTA),
    ("message_delta", _DELTA),
    ("content_block_delta", _DELTA.replace('"index":0', '"index":1')),  # the tool block
    ("content_block_delta", _DELTA.replace('"index":0', '"index":2')),  # not open
    ("content_block_delta", _DELTA.replace('"index":0', '"index":false')),
    ("content_block_delta", _DELTA.replace('"index":0', '"index":0.0')),
    ("content_block_delta", _DELTA.replace('"text":"x"', '"text":""')),
    ("content_block_delta", _DELTA.replace('"text":"x"', '"text":5')),
    ("content_block_delta", _DELTA.replace("text_delta", "thinking_delta")),
    ("content_block_delta", _DELTA.replace('"type":"content_block_delta"', '"type":"ping"')),
    ("content_block_delta", _DELTA.replace("}}", '},"x":NaN}')),
    ("content_block_delta", _DELTA.replace('"text":"x"', '"text":"\\udfff"')),
    ("content_block_delta", _DELTA.replace('"index":0', '"index":0,"index":1')),
    ("content_block_delta", _DELTA.replace('"index":0', '"index":1,"index":0')),
    ("content_block_delta", '{"type":"error","error":{"type":"overloaded_error"}}'),
    ("error", '{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'),
    ("content_block_delta", "[" + _DELTA + "]"),
    ("content_block_delta", "not json"),
]


@pytest.mark.parametrize(("name", "data"), ANTHROPIC_EVENTS)
def test_anthropic_quick_read_agrees_with_the_full_read(name: str, data: str) -> None:
    _agrees(_anthropic_decoder(), SSEEvent(data, name))


def test_anthropic_quick_read_declines_while_the_served_model_waits_and_after_the_stop() -> None:
    decoder = AnthropicDecoder(model="m-0")
    start = {"type": "message_start", "message": {"model": "m-1", "usage": {"input_tokens": 1}}}
    decoder.feed(SSEEvent(json.dumps(start), "message_start"))
    block = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    decoder.feed(SSEEvent(block, "content_block_start"))
    assert decoder.quick(SSEEvent(_DELTA, "content_block_delta")) is None  # the model to stamp
    stopped = _anthropic_decoder()
    stopped.feed(SSEEvent('{"type":"message_stop"}', "message_stop"))
    assert stopped.quick(SSEEvent(_DELTA, "content_block_delta")) is None


def test_random_events_read_quick_first_as_in_full() -> None:
    """Seeded random OpenAI chunks of odd field values, each read quick-first against the full
    read on a copy of the decoder, the decoder then fed in full (its state moving on)."""
    rng = random.Random(3)
    odd: list[Any] = [None, 0, 1, True, False, 0.0, "", "x", "0", [], {}, 2**70]

    def pick(*usual: Any) -> Any:
        return rng.choice(odd) if rng.random() < 0.15 else rng.choice(usual)

    hits = 0
    for _ in range(400):
        decoder = _openai_decoder()
        for _ in range(6):
            delta = {"content": pick("Bon", "", " jour")}
            if rng.random() < 0.2:
                delta["tool_calls"] = pick([{"index": 0, "function": {"arguments": "{"}}])
            choice = {"index": pick(0, 0, 1), "delta": pick(delta, delta, delta)}
            choice["finish_reason"] = pick(None, None, None, None, "stop")
            body: dict[str, Any] = {"model": "m-1", "choices": [choice]}
            if rng.random() < 0.1:
                body["usage"] = pick({"prompt_tokens": 1, "completion_tokens": 2})
            if rng.random() < 0.1:
                body["choices"].append(dict(choice, index=1))
            event = SSEEvent(json.dumps(body), rng.choice(["", "", "", "message"]))
            hits += bool(_agrees(decoder, event))
            if _outcome(decoder, event)[0] == "error":
                break
    assert hits > 50, hits  # the quick read was exercised (92 times with this seed)


# ---------------------------------------------------------------- the provider's client, both ways


class Scripted(LoopbackPost):
    """A provider on 127.0.0.1 that answers every POST with ``pieces`` (each written and
    drained on its own) and keeps the bodies it was sent."""

    def __init__(self, pieces: list[bytes] | None = None) -> None:
        self.pieces = pieces or []
        self.bodies: list[Any] = []

    async def _answer(self, http: web.Request) -> web.StreamResponse:
        self.bodies.append(await http.json())
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(http)
        try:
            for piece in self.pieces:
                await out.write(piece)
                for _ in range(5):  # the reader takes this piece before the next is sent
                    await asyncio.sleep(0)
            await out.write_eof()
        except ConnectionResetError:
            pass  # the client had all it needed (its finish and terminator) and went
        return out


def pieces_of(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def _provider(url: str, kind: str, name: str = "up", prefill: bool = False) -> HttpProvider:
    codec = codec_for("openai", api="responses") if kind == "responses" else codec_for(kind)
    return HttpProvider(
        name=name,
        codec=codec,
        base_url=url + "/v1" if kind.startswith("openai") or kind == "responses" else url,
        api_key=PROVIDER_KEY,
        takes_prefill=prefill,
    )


def _facts(chunks: list[StreamChunk]) -> list[tuple[Any, ...]]:
    """What a chunk says, without its events' bytes: text merged, as a client reads it."""
    out: list[tuple[Any, ...]] = []
    for c in chunks:
        if c.text and c.tool_call is None and c.finish_reason is None and c.usage is None:
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + c.text)
                continue
            out.append(("text", c.text))
        elif c.text or c.tool_call or c.finish_reason or c.usage:
            out.append(("other", c.text, c.tool_call, c.finish_reason, c.usage))
    return out


async def _both_ways(
    kind: str, stream: bytes, body: dict[str, Any], splits: list[list[bytes]] | None = None
) -> tuple[Any, Any, list[bytes]]:
    """``stream`` read by the real provider client relayed (quick reads on) and decoded (full
    reads only), in each of ``splits`` (pieces of 7 and 64 bytes, and whole, unless given):
    what each said (facts, and the error it ended with), and the bytes each relayed."""
    relayed_ones, decoded_ones, relayed = [], [], []
    if splits is None:  # (an event a read: the reader's one-line shortcut)
        splits = [pieces_of(stream, size) for size in (7, 64, len(stream))]
        splits.append(re.findall(rb".*?(?:\n\r?\n|$)", stream, re.DOTALL)[:-1] or [stream])
    raw = json.dumps(body).encode()
    request = Request(messages=(Message(role="user", content="count"),), stream=True)
    own = Request(
        messages=request.messages, stream=True, source=Source(format=kind, body=body, raw=raw)
    )
    async with Scripted() as up:
        provider = _provider(up.url, kind)
        for pieces in splits:
            up.pieces = pieces
            for asked in (own, request):
                chunks: list[StreamChunk] = []
                error = None
                try:
                    async for chunk in provider.stream(asked, "m-1", LIMITS):
                        chunks.append(chunk)  # noqa: PERF401 - kept when the stream fails
                except ProviderError as exc:
                    error = (type(exc).__name__, exc.message)
                said = (_facts(chunks), error)
                if asked is own:
                    relayed_ones.append(said)
                    relayed.append(b"".join(c.raw or b"" for c in chunks))
                else:
                    decoded_ones.append(said)
        await provider.close()
    return relayed_ones, decoded_ones, relayed


def _openai_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "model": "m-1", "choices": [choice], **extra}
    return json.dumps(body, ensure_ascii=False)


_SPLIT = _openai_chunk({"content": " a"})
OPENAI_ODD = (
    f"data: {_openai_chunk({'role': 'assistant', 'content': ''})}\n\n"
    f"data:{_openai_chunk({'content': 'Bon'})}\n\n"
    f"id: 3\r\ndata: {_openai_chunk({'content': 'jour é漢😀'})}\r\n\r\n"
    ": keep-alive comment inside\n"
    f"data: {_SPLIT[:29]}\ndata: {_SPLIT[29:]}\n\n"  # JSON over two data lines
    f"data: {_openai_chunk({'content': '!'}, 'stop')}\n\n"
    'data: {"id":"c1","model":"m-1","choices":[],'
    '"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    "data: [DONE]\n\n"
).encode()


async def test_an_odd_openai_stream_reads_the_same_relayed_and_decoded() -> None:
    body = {"model": "m", "stream": True, "messages": USER}
    body["stream_options"] = {"include_usage": True}  # (else its usage event is kept back)
    relayed, decoded, raw = await _both_ways("openai", OPENAI_ODD, body)
    assert relayed == decoded
    facts, error = relayed[0]
    assert error is None
    assert facts[0] == ("text", "Bonjour é漢😀 a!")
    assert set(raw) == {OPENAI_ODD}  # every event's bytes, as they came


def _anthropic_event(kind: str, **fields: Any) -> str:
    data = json.dumps({"type": kind, **fields}, ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n"


ANTHROPIC_START = _anthropic_event(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    },
) + _anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""})


def _text_delta(text: str) -> dict[str, Any]:
    return {"index": 0, "delta": {"type": "text_delta", "text": text}}


ANTHROPIC_ODD = (
    ANTHROPIC_START
    + _anthropic_event("content_block_delta", **_text_delta("Bon"))
    + _anthropic_event("content_block_delta", **_text_delta("jour é漢😀")).replace(
        "event: ", "event:"
    )
    + "data: "
    + json.dumps({"type": "content_block_delta", **_text_delta(" a")}, ensure_ascii=False)
    + "\nevent: content_block_delta\n\n"  # the name after the data
    + _anthropic_event("content_block_delta", **_text_delta("!")).replace("\n", "\r\n")
    + _anthropic_event("ping")
    + _anthropic_event("content_block_stop", index=0)
    + _anthropic_event(
        "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 9}
    )
    + _anthropic_event("message_stop")
).encode()


async def test_an_odd_anthropic_stream_reads_the_same_relayed_and_decoded() -> None:
    body = {"model": "m", "max_tokens": 9, "stream": True, "messages": USER}
    relayed, decoded, raw = await _both_ways("anthropic", ANTHROPIC_ODD, body)
    assert relayed == decoded
    facts, error = relayed[0]
    assert error is None
    assert facts[0] == ("text", "Bonjour é漢😀 a!")
    assert facts[-1][3:] != (None, None)  # the finish and its usage
    assert set(raw) == {ANTHROPIC_ODD}


async def test_an_anthropic_error_mid_stream_ends_both_readings_alike() -> None:
    stream = (
        ANTHROPIC_START
        + _anthropic_event("content_block_delta", **_text_delta("Bon"))
        + _anthropic_event(
            "error", error={"type": "overloaded_error", "message": "Overloaded"}
        ).replace("event: error\n", "event:error\r\n")
        + _anthropic_event("content_block_delta", **_text_delta("never"))
    ).encode()
    body = {"model": "m", "max_tokens": 9, "stream": True, "messages": USER}
    relayed, decoded, _ = await _both_ways("anthropic", stream, body)
    assert relayed == decoded
    facts, error = relayed[0]
    assert facts == [("text", "Bon")]
    assert error is not None
    assert "Overloaded" in error[1]
    assert decoded[1:] == decoded[:-1]  # however it was split


# ---------------------------------------------------------------- through the gateway, the SDKs


def gateway(*providers: HttpProvider) -> AbstractAsyncContextManager[tuple[str, Recorder]]:
    """A gateway whose tier ``t`` has ``providers`` in order, each serving model m-<n>."""
    return tier_gateway(*providers, limits=LIMITS)


async def _raw_answer(url: str, body: dict[str, Any]) -> bytes:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.read()


async def _openai_sdk(url: str) -> tuple[str, str | None]:
    """(text, finish reason) as the openai SDK reads a stream (it stops at ``[DONE]``)."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-client", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="t", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        text, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


async def test_the_openai_client_gets_the_provider_s_odd_bytes_as_they_came() -> None:
    async with (
        Scripted(pieces_of(OPENAI_ODD, 13)) as up,
        gateway(_provider(up.url, "openai")) as (url, _),
    ):
        body = {
            "model": "t",
            "stream": True,
            "messages": USER,
            "stream_options": {"include_usage": True},
        }
        assert await _raw_answer(f"{url}/v1/chat/completions", body) == OPENAI_ODD
        assert await _openai_sdk(url) == ("Bonjour é漢😀 a!", "stop")


async def test_the_anthropic_client_gets_the_provider_s_odd_bytes_as_they_came() -> None:
    async with (
        Scripted(pieces_of(ANTHROPIC_ODD, 13)) as up,
        gateway(_provider(up.url, "anthropic")) as (url, _),
    ):
        body = {"model": "t", "max_tokens": 9, "stream": True, "messages": USER}
        assert await _raw_answer(f"{url}/v1/messages", body) == ANTHROPIC_ODD
        async with (
            anthropic.AsyncAnthropic(base_url=url, api_key="sk-client", max_retries=0) as client,
            client.messages.stream(model="t", max_tokens=9, messages=USER) as stream,
        ):
            message = await stream.get_final_message()
    assert [b.text for b in message.content if b.type == "text"] == ["Bonjour é漢😀 a!"]
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 9)


REPLY = "One two three four five."


def _openai_events(*texts: str) -> bytes:
    return b"".join(f"data:{_openai_chunk({'content': t})}\n\n".encode() for t in texts)


async def test_an_openai_terminator_without_a_blank_before_the_finish_is_not_the_end() -> None:
    """``data:[DONE]`` (no blank after the colon) before any finish: the provider cut the
    answer; the client must not get it (the SDK would stop there, the text so far taken as
    whole), but the continuation on the next provider and then the end."""
    cut = _openai_events("One", " two") + b"data:[DONE]\n\n"
    rest = _openai_events("One two", " three four five.")
    rest += f"data: {_openai_chunk({}, 'stop')}\n\ndata: [DONE]\n\n".encode()
    async with (
        Scripted([cut]) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "openai_compatible", "first", prefill=False),
            _provider(second.url, "openai_compatible", "second", prefill=False),
        ) as (url, recorder),
    ):
        assert await _openai_sdk(url) == (REPLY, "stop")
    cut_attempt, more = recorder.attempts[-2:]
    assert (cut_attempt.provider, cut_attempt.outcome) == ("first", Outcome.FAULT)
    assert (more.provider, more.reason) == ("second", AttemptReason.CONTINUATION)


def _anthropic_stream(*texts: str, stop: str | None = "end_turn") -> bytes:
    out = ANTHROPIC_START + "".join(
        _anthropic_event("content_block_delta", **_text_delta(t)) for t in texts
    )
    if stop is not None:
        out += _anthropic_event("content_block_stop", index=0)
        out += _anthropic_event(
            "message_delta", delta={"stop_reason": stop}, usage={"output_tokens": 5}
        )
    return (out + _anthropic_event("message_stop")).encode()


async def test_an_anthropic_stop_named_without_a_blank_before_the_finish_is_not_the_end() -> None:
    """``event:message_stop`` before any stop reason: the client gets the continuation and a
    whole message, never that stop followed by more (or by nothing)."""
    cut = _anthropic_stream("One", " two", stop=None).replace(
        b"event: message_stop", b"event:message_stop"
    )
    rest = _anthropic_stream("One two", " three four five.")
    async with (
        Scripted([cut]) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "anthropic", "first"),
            _provider(second.url, "anthropic", "second"),
        ) as (url, recorder),
    ):
        body = {"model": "t", "max_tokens": 9, "stream": True, "messages": USER}
        raw = await _raw_answer(f"{url}/v1/messages", body)
    assert b"event:message_stop" not in raw, raw  # the cut's stop held back
    assert raw.count(b"event: message_stop") == 1, raw  # one end, the last event
    assert raw.rstrip().endswith(b'"message_stop"}'), raw
    assert recorder.attempts[-1].reason == AttemptReason.CONTINUATION


async def test_a_continuation_is_told_exactly_the_text_the_client_read() -> None:
    """A stream of odd framings cut mid-way (the connection ends without a finish): the
    prefill the next provider gets holds the text the client had read from the relayed events,
    and the client's whole text is that and the continuation."""
    last = f"data: {_openai_chunk({'content': '!'}, 'stop')}".encode()
    cut = OPENAI_ODD[: OPENAI_ODD.index(last)]
    rest = _openai_events(" and more.") + f"data: {_openai_chunk({}, 'stop')}\n\n".encode()
    rest += b"data: [DONE]\n\n"
    async with (
        Scripted(pieces_of(cut, 11)) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "openai_compatible", "first"),
            _provider(second.url, "openai_compatible", "second", prefill=True),
        ) as (url, _),
    ):
        text, finish = await _openai_sdk(url)
    delivered = "Bonjour é漢😀 a"
    assert second.bodies[-1]["messages"][-1] == {"role": "assistant", "content": delivered}
    assert (text, finish) == (delivered + " and more.", "stop")


def _gemini_chunk(text: str, finish: str | None = None) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "m-1"}
    if finish is not None:  # the usage on the last chunk, as Gemini sends it
        body["usageMetadata"] = {
            "promptTokenCount": 3,
            "candidatesTokenCount": 7,
            "totalTokenCount": 10,
            "cachedContentTokenCount": 1,
        }
    return json.dumps(body, ensure_ascii=False)


GEMINI_ODD = (
    f"data: {_gemini_chunk('Bon')}\r\n\r\n"  # Gemini's own framing
    f"data: {_gemini_chunk('jour é漢😀')}\n\n"  # (google-genai reads only "data: ")
    f"data: {_gemini_chunk(' a')}\n\n"
    f"data: {_gemini_chunk('!', 'STOP')}\r\n\r\n"
).encode()


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
async def test_the_gemini_client_gets_the_provider_s_odd_bytes_as_they_came() -> None:
    from google import genai
    from google.genai import types

    async with (
        Scripted(pieces_of(GEMINI_ODD, 13)) as up,
        gateway(_provider(up.url, "gemini")) as (url, recorder),
    ):
        body = {"contents": [{"role": "user", "parts": [{"text": "count"}]}]}
        path = f"{url}/v1beta/models/t:streamGenerateContent?alt=sse"
        assert await _raw_answer(path, body) == GEMINI_ODD
        options = types.HttpOptions(
            base_url=url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        client = genai.Client(api_key="sk-client", http_options=options)
        text, usage = [], None
        async for chunk in await client.aio.models.generate_content_stream(
            model="t", contents="count"
        ):
            text.append(chunk.text or "")
            usage = chunk.usage_metadata or usage
    assert "".join(text) == "Bonjour é漢😀 a!"
    assert usage is not None
    assert usage.candidates_token_count == 7
    assert recorder.attempts[-1].usage is not None
    assert (
        recorder.attempts[-1].usage.input_tokens,
        recorder.attempts[-1].usage.output_tokens,
    ) == (
        3,
        7,
    )


def _responses_event(kind: str, **fields: Any) -> str:
    data = json.dumps({"type": kind, **fields}, ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n"


_RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m-1"}
_RESPONSE |= {"status": "in_progress", "output": [], "tool_choice": "auto", "tools": []}
_RESPONSE |= {"parallel_tool_calls": True}
_ITEM = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress"}
RESPONSES_ODD = (
    _responses_event("response.created", sequence_number=0, response=_RESPONSE)
    + _responses_event(
        "response.output_item.added",
        sequence_number=1,
        output_index=0,
        item=_ITEM | {"content": []},
    )
    + _responses_event(
        "response.output_text.delta",
        sequence_number=2,
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta="Bon",
        logprobs=[],
    )
    + _responses_event(
        "response.output_text.delta",
        sequence_number=3,
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta="jour é漢😀",
        logprobs=[],
    )
    .replace("event: ", "event:")
    .replace("\n", "\r\n")
    + _responses_event(
        "response.completed",
        sequence_number=4,
        response=_RESPONSE
        | {
            "status": "completed",
            "usage": {
                "input_tokens": 3,
                "output_tokens": 7,
                "total_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        },
    )
).encode()


async def test_the_responses_client_gets_the_provider_s_odd_bytes_as_they_came() -> None:
    async with (
        Scripted(pieces_of(RESPONSES_ODD, 13)) as up,
        gateway(_provider(up.url, "responses")) as (url, recorder),
    ):
        body = {"model": "t", "input": "count", "stream": True}
        assert await _raw_answer(f"{url}/v1/responses", body) == RESPONSES_ODD
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            stream = await client.responses.create(model="t", input="count", stream=True)
            text = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    assert "".join(text) == "Bonjour é漢😀"
    assert recorder.attempts[-1].usage is not None
    assert recorder.attempts[-1].usage.output_tokens == 7


async def test_an_odd_anthropic_stream_cut_is_continued_from_what_the_client_read() -> None:
    """The Anthropic stream of odd framings cut before its block ends: the prefill holds the
    text the client read, and its message is one text block, that text and the rest."""
    cut = ANTHROPIC_ODD[: ANTHROPIC_ODD.index(b"event: ping")]
    rest = _anthropic_stream(" more.")
    async with (
        Scripted(pieces_of(cut, 11)) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "anthropic", "first"),
            _provider(second.url, "anthropic", "second", prefill=True),
        ) as (url, recorder),
        anthropic.AsyncAnthropic(base_url=url, api_key="sk-client", max_retries=0) as client,
        client.messages.stream(model="t", max_tokens=9, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    delivered = "Bonjour é漢😀 a!"
    assert second.bodies[-1]["messages"][-1] == {"role": "assistant", "content": delivered}
    assert [(b.type, b.text) for b in message.content if b.type == "text"] == [
        ("text", delivered + " more.")
    ]
    assert message.stop_reason == "end_turn"
    assert recorder.attempts[-1].reason == AttemptReason.CONTINUATION


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_every_cut_of_a_stream_reads_alike_relayed_and_decoded(kind: str) -> None:
    """A short stream of odd framings sent in two pieces cut at every position (each read by
    the client on its own): relayed and decoded, the same chunks; relayed, the same bytes."""
    if kind == "openai":
        stream = (
            f"data: {_openai_chunk({'role': 'assistant', 'content': ''})}\n\n"
            f"data:{_openai_chunk({'content': 'é😀'})}\r\n\r\n"
            f"data: {_openai_chunk({'content': '!'}, 'stop')}\n\ndata:[DONE]\n\n"
        ).encode()
        body: dict[str, Any] = {"model": "m", "stream": True, "messages": USER}
        body["stream_options"] = {"include_usage": True}
    else:
        stream = (
            ANTHROPIC_START
            + _anthropic_event("content_block_delta", **_text_delta("é😀")).replace("\n", "\r\n")
            + _anthropic_event(
                "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2}
            )
            + _anthropic_event("message_stop").replace("event: ", "event:")
        ).encode()
        body = {"model": "m", "max_tokens": 9, "stream": True, "messages": USER}
    splits = [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]
    relayed, decoded, raw = await _both_ways(kind, stream, body, splits)
    assert relayed == decoded
    assert all(said == decoded[0] for said in decoded)
    assert decoded[0][1] is None
    assert ("text", "é😀!" if kind == "openai" else "é😀") in decoded[0][0]
    assert set(raw) == {stream}


async def test_a_block_opened_by_an_event_of_several_data_lines_is_followed_at_a_cut() -> None:
    """An Anthropic text block opened by an event whose JSON spans two ``data:`` lines (valid
    SSE: the lines are joined), its text cut mid-way and continued: the continuation goes on
    in that block, the client's message holds one text block with the whole text."""
    start = json.dumps({"type": "content_block_start", "index": 0})[:-1]
    opening = f'event: content_block_start\ndata: {start},\ndata: "content_block":'
    opening += '{"type":"text","text":""}}\n\n'
    cut = (
        ANTHROPIC_START.split("event: content_block_start")[0]
        + opening
        + _anthropic_event("content_block_delta", **_text_delta("One"))
        + _anthropic_event("content_block_delta", **_text_delta(" two"))
    ).encode()
    rest = _anthropic_stream(" three four five.")
    async with (
        Scripted([cut]) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "anthropic", "first"),
            _provider(second.url, "anthropic", "second", prefill=True),
        ) as (url, recorder),
        anthropic.AsyncAnthropic(base_url=url, api_key="sk-client", max_retries=0) as client,
        client.messages.stream(model="t", max_tokens=9, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    assert second.bodies[-1]["messages"][-1] == {"role": "assistant", "content": "One two"}
    assert [(b.type, b.text) for b in message.content if b.type == "text"] == [
        ("text", "One two three four five.")
    ]
    assert recorder.attempts[-1].reason == AttemptReason.CONTINUATION


async def test_the_provider_s_key_in_an_event_s_name_never_reaches_the_client() -> None:
    """A provider echoing its key in an event's name (the Responses and Gemini readers go by
    the data's type, not the name): the event goes on framed again, the key masked there too,
    as in its data."""
    key = PROVIDER_KEY
    echoing = RESPONSES_ODD.replace(
        b"event: response.output_text.delta", b"event: " + key.encode(), 1
    )
    async with (
        Scripted(pieces_of(echoing, 13)) as up,
        gateway(_provider(up.url, "responses")) as (url, _),
    ):
        body = {"model": "t", "input": "count", "stream": True}
        answer = await _raw_answer(f"{url}/v1/responses", body)
    assert key.encode() not in answer
    assert b'"delta":"Bon"' in answer.replace(b" ", b"")
    for raw in (f"event: {key}\ndata: 1\n\n", f"event: a {key}\r\ndata:{key}\r\n\r\n"):
        (event,) = SSEParser().feed(raw.encode())
        framed = relay_for(b"", starts=lambda event: False, secret=key).event(event, [])
        assert key.encode() not in framed
        assert framed.startswith(b"event: ")


async def test_a_stream_past_the_text_a_continuation_keeps_is_not_continued() -> None:
    """A stream's delivered text is kept to continue it, up to MAX_DELIVERED characters: a
    stream cut past that (here 4 KiB pieces of text, MAX_DELIVERED and one more) is let go,
    its text not held (a hostile provider's stream held it all until stream_total: +111 MB of
    resident memory for 114 MB relayed), and ends with the in-stream error, no continuation."""
    piece = "x" * 4096
    events = [f"data: {_openai_chunk({'role': 'assistant', 'content': ''})}\n\n"]
    events += [f"data: {_openai_chunk({'content': piece})}\n\n"] * (MAX_DELIVERED // 4096 + 1)
    rest = _openai_events(" more.") + f"data: {_openai_chunk({}, 'stop')}\n\n".encode()
    stream = "".join(events).encode()
    async with (
        Scripted(pieces_of(stream, 256 * 1024)) as first,
        Scripted([rest + b"data: [DONE]\n\n"]) as second,
        gateway(
            _provider(first.url, "openai_compatible", "first"),
            _provider(second.url, "openai_compatible", "second", prefill=True),
        ) as (url, recorder),
    ):
        with pytest.raises(openai.APIError):
            await _openai_sdk(url)
    assert second.bodies == []
    assert [a.reason for a in recorder.attempts] == [AttemptReason.PRIMARY]
