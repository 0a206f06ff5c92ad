"""Text events read together are relayed together (issue 17 item 3): a relayed stream's read
that holds several text events one after another becomes one chunk, their texts joined and
their bytes joined as they came, so a gateway that falls behind writes what it read in one go
as the floor does, instead of one write per event. Everything else keeps its own chunk: the
finish, usage, a tool call, events held before the first token; the client's bytes do not
change. Over real HTTP with the real provider client (a scripted provider on 127.0.0.1)."""

from __future__ import annotations

import json
from typing import Any

from controller.model import Message, Request, Source, StreamChunk
from tests.test_stream_fastpath_attacks import (
    ANTHROPIC_START,
    LIMITS,
    USER,
    Scripted,
    _anthropic_event,
    _openai_chunk,
    _provider,
)


async def _relayed(kind: str, pieces: list[bytes], body: dict[str, Any]) -> list[StreamChunk]:
    """The chunks the real provider client gives a same-format request whose answer comes in
    ``pieces`` (each written on its own)."""
    raw = json.dumps(body).encode()
    request = Request(
        messages=(Message(role="user", content="count"),),
        stream=True,
        source=Source(format=kind, body=body, raw=raw),
    )
    async with Scripted(pieces) as up:
        provider = _provider(up.url, kind)
        return [chunk async for chunk in provider.stream(request, "m-1", LIMITS)]


def _sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


OPENAI_OPEN = _sse(_openai_chunk({"role": "assistant", "content": ""}))
OPENAI_WORDS = [_sse(_openai_chunk({"content": word})) for word in ("One", " two", " three")]
OPENAI_END = (
    _sse(_openai_chunk({}, "stop"))
    + _sse(
        '{"id":"c1","model":"m-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    )
    + b"data: [DONE]\n\n"
)
OPENAI_BODY = {"model": "m", "stream": True, "messages": USER}
OPENAI_BODY["stream_options"] = {"include_usage": True}


async def test_text_events_in_one_read_are_one_chunk_with_their_bytes_as_they_came() -> None:
    words = b"".join(OPENAI_WORDS)
    chunks = await _relayed(
        "openai", [OPENAI_OPEN + OPENAI_WORDS[0], words, OPENAI_END], OPENAI_BODY
    )
    texts = [(c.text, c.raw) for c in chunks if c.text]
    assert texts[0] == ("One", OPENAI_OPEN + OPENAI_WORDS[0])  # held role chunk goes with it
    assert texts[1] == ("One two three", words)  # the second read: three events, one chunk
    assert len(texts) == 2
    finish = [c for c in chunks if c.finish_reason is not None]
    assert len(finish) == 1
    assert not finish[0].text  # the finish keeps its own chunk
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage
    assert usage[-1].output_tokens == 4
    relayed = b"".join(c.raw or b"" for c in chunks)
    assert relayed == OPENAI_OPEN + OPENAI_WORDS[0] + words + OPENAI_END


async def test_a_run_ends_at_the_first_event_that_is_not_only_text() -> None:
    whole = OPENAI_OPEN + b"".join(OPENAI_WORDS) + OPENAI_END  # all of it in one read
    chunks = await _relayed("openai", [whole], OPENAI_BODY)
    assert [c.text for c in chunks if c.text] == ["One", " two three"]  # first: held + own
    ordered = [("text" if c.text else "finish" if c.finish_reason else "other") for c in chunks]
    assert ordered.index("finish") > max(i for i, kind in enumerate(ordered) if kind == "text")
    assert b"".join(c.raw or b"" for c in chunks) == whole


ANTHROPIC_BODY = {"model": "m", "max_tokens": 64, "stream": True, "messages": USER}


def _delta(text: str) -> bytes:
    event = _anthropic_event(
        "content_block_delta", index=0, delta={"type": "text_delta", "text": text}
    )
    return event.encode()


async def test_anthropic_text_deltas_in_one_read_are_one_chunk() -> None:
    start = ANTHROPIC_START.encode()  # message_start, then the text block opened
    deltas = _delta("Bon") + _delta("jour é") + _delta(" 漢😀")
    end = (
        _anthropic_event("content_block_stop", index=0)
        + _anthropic_event(
            "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}
        )
        + _anthropic_event("message_stop")
    ).encode()
    first = _delta("A")
    chunks = await _relayed("anthropic", [start + first, deltas, end], ANTHROPIC_BODY)
    texts = [(c.text, c.raw) for c in chunks if c.text]
    assert texts == [("A", start + first), ("Bonjour é 漢😀", deltas)]
    assert b"".join(c.raw or b"" for c in chunks) == start + first + deltas + end
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
