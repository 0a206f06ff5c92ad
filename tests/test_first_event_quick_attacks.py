"""The OpenAI decoder's quick read of a stream's first text event (01dc67a) attacked.

Before the served model is seen, a quick read (``quick``, ``quick_data``) takes an event that
names exactly the requested model, and its text marks the model seen, as the full read's
``_stamp_model`` does. Whatever the stream, the chunks and the served model reported must be
those of the full read: here sequences of first events read the reader's way (quick first,
then ``feed``), by ``feed`` alone and from their bytes, against what the full read gives
(written out by hand); and streams read by the real provider client over loopback, relayed
as they came, with the model renamed (``echo_model``) and decoded for another format.

Each case names the plausible wrong variant it catches (each was tried, and failed here):
marking the model seen on an empty text (a role chunk), comparing names loosely (case,
blanks), taking an event that names no model, forgetting to mark the model seen, and taking
the requested model's name when that is empty (the full read never marks an empty name seen;
``tiers.*.targets[].model`` may be "").
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller._errors import ProviderError
from controller.model import FinishReason, Message, Request, Source, StreamChunk, Usage
from controller.wire._base import SSEEvent
from controller.wire._openai_client import OpenAIStreamDecoder
from tests.test_stream_fastpath_attacks import LIMITS, USER, Scripted, _provider

_UNNAMED = object()


def _event(model: Any = _UNNAMED, text: Any = "x", index: Any = 0, **extra: Any) -> str:
    """An OpenAI chunk of choice ``index``'s ``text`` (a role chunk when None), naming
    ``model`` (or no model)."""
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk"}
    if model is not _UNNAMED:
        body["model"] = model
    delta = {"content": text} if text is not None else {"role": "assistant"}
    body["choices"] = [{"index": index, "delta": delta, "finish_reason": None}]
    return json.dumps(body | extra, ensure_ascii=False)


def _finish(model: Any, index: int = 0) -> str:
    choice = {"index": index, "delta": {}, "finish_reason": "stop"}
    return json.dumps({"id": "c1", "model": model, "choices": [choice]})


def _quick_first(decoder: OpenAIStreamDecoder, data: str) -> list[StreamChunk]:
    """What the reader makes of ``data`` on a relayed stream: its quick read's text if any,
    else the decoder's full read (``_StreamReader.chunks``)."""
    text = decoder.quick(SSEEvent(data))
    return [StreamChunk(text=text)] if text else decoder.feed(SSEEvent(data))


def _from_bytes(decoder: OpenAIStreamDecoder, data: str) -> list[StreamChunk]:
    """The same from the event's bytes (a read of one whole event: ``quick_data``)."""
    text = decoder.quick_data(b"", data.encode())
    return [StreamChunk(text=text)] if text else decoder.feed(SSEEvent(data))


def _fed(decoder: OpenAIStreamDecoder, data: str) -> list[StreamChunk]:
    return decoder.feed(SSEEvent(data))


def _x(model: str | None = None) -> list[StreamChunk]:
    return [StreamChunk(text="x", model=model)]


# (requested model, the stream's events, what the full read gives for each event)
SEQUENCES: dict[str, tuple[str, list[str], list[list[StreamChunk]]]] = {
    # marking the model seen on an empty text (a role chunk that names it) hides the served one
    "role chunk names it, the text another": (
        "m-0",
        [_event("m-0", None), _event("m-0", ""), _event("m-1"), _event("m-2")],
        [[], [], _x("m-1"), _x()],
    ),
    # a loose comparison (case, blanks, a zero-width space) would hide the served name
    "another case": ("m-0", [_event("M-0"), _event("m-1")], [_x("M-0"), _x()]),
    "a blank before": ("m-0", [_event(" m-0"), _event("m-1")], [_x(" m-0"), _x()]),
    "a blank after": ("m-0", [_event("m-0 "), _event("m-1")], [_x("m-0 "), _x()]),
    "a zero-width space": ("m-0", [_event("m-0\u200b"), _event("m-1")], [_x("m-0\u200b"), _x()]),
    "a prefix of it": ("m-0", [_event("m-"), _event("m-1")], [_x("m-"), _x()]),
    # taking an event that names no model (or null, or not a string) as the requested one
    "no model, then another": ("m-0", [_event(), _event(), _event("m-1")], [_x(), _x(), _x("m-1")]),
    "null, then another": ("m-0", [_event(None), _event("m-1")], [_x(), _x("m-1")]),
    "a number, then another": ("m-0", [_event(5), _event("m-1")], [_x(), _x("m-1")]),
    "empty, then another": ("m-0", [_event(""), _event("m-1")], [_x(), _x("m-1")]),
    # forgetting to mark the model seen would report a later name the full read ignores
    "the requested, then another": ("m-0", [_event("m-0"), _event("m-1")], [_x(), _x()]),
    "written with an escape": (
        "m-0",
        [_event("m-0").replace('"m-0"', '"m\\u002d0"'), _event("m-1")],
        [_x(), _x()],
    ),
    # an empty requested model: the full read never marks an empty name seen
    "none requested, the stream names none": ("", [_event(""), _event("s-1")], [_x(), _x("s-1")]),
    "none requested, then a name": (
        "",
        [_event(), _event("s-1"), _event()],
        [_x(), _x("s-1"), _x()],
    ),
    # what is not text only goes to the full read, first event or not
    "the requested, with usage": (
        "m-0",
        [_event("m-0", usage={"prompt_tokens": 1, "completion_tokens": 2}), _event("m-1")],
        [
            [
                StreamChunk(text="x"),
                StreamChunk(usage=Usage(1, 2, 0)),
            ],
            _x(),
        ],
    ),
    "the requested, with padding": (
        "m-0",
        [_event("m-0", obfuscation="pAd"), _event("m-1", obfuscation="q")],
        [_x(), _x()],
    ),
    # usage on the finish rides on it (StreamChunk.adding), a usage-only event is its own chunk
    "the requested, then the finish with usage": (
        "m-0",
        [
            _event("m-0"),
            _finish("m-0")[:-1] + ',"usage":{"prompt_tokens":3,"completion_tokens":4}}',
            '{"model":"m-0","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6}}',
        ],
        [
            _x(),
            [StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(3, 4, 0))],
            [StreamChunk(usage=Usage(5, 6, 0))],
        ],
    ),
    # n > 1: the first event is choice 1's; choice 0's finish waits for choice 1's
    "several choices": (
        "m-0",
        [
            _event("m-0", index=1),
            _event("m-0"),
            _finish("m-0"),
            _event("m-0", index=1),
            _finish("m-0", 1),
        ],
        [[], _x(), [], [], [StreamChunk(finish_reason=FinishReason.STOP)]],
    ),
}


@pytest.mark.parametrize("case", list(SEQUENCES))
@pytest.mark.parametrize("read", [_quick_first, _from_bytes, _fed])
def test_first_events_read_as_the_full_read_reads_them(case: str, read: Any) -> None:
    model, events, expected = SEQUENCES[case]
    decoder = OpenAIStreamDecoder(model=model)
    assert [read(decoder, data) for data in events] == expected


def test_a_declined_first_event_changes_nothing() -> None:
    """A quick read that declines (the full read will take the event) leaves the decoder as
    it was: another model named, none, or an empty requested one."""
    for model, data in [("m-0", _event("m-1")), ("m-0", _event()), ("", _event(""))]:
        decoder = OpenAIStreamDecoder(model=model)
        before = dict(vars(decoder))
        assert decoder.quick(SSEEvent(data)) is None
        assert decoder.quick_data(b"", data.encode()) is None
        assert vars(decoder) == before


# ---------------------------------------------------------------- the provider's client


def _stream(*events: str) -> bytes:
    return b"".join(f"data: {e}\n\n".encode() for e in (*events, "[DONE]"))


async def _read(
    stream: bytes, model: str, *, relayed: bool, echo: str | None = None
) -> tuple[list[StreamChunk], str | None]:
    """``stream`` read by the real client for a request of ``model``: relayed (the client's
    format is the provider's; its model renamed to ``echo`` if given) or decoded. Each event
    comes in a read of its own where the loop allows (the reader's one-event shortcut)."""
    body = {"model": "alias", "stream": True, "messages": USER}
    raw = json.dumps(body).encode()
    source = Source(format="openai", body=body, raw=raw, echo_model=echo) if relayed else None
    request = Request(messages=(Message(role="user", content="count"),), stream=True, source=source)
    chunks: list[StreamChunk] = []
    error = None
    async with Scripted(pieces=[piece + b"\n\n" for piece in stream.split(b"\n\n")[:-1]]) as up:
        provider = _provider(up.url, "openai")
        try:
            async for chunk in provider.stream(request, model, LIMITS):
                chunks.append(chunk)  # noqa: PERF401 - kept when the stream fails
        except ProviderError as exc:
            error = exc.message
        await provider.close()
    return chunks, error


def _said(chunks: list[StreamChunk]) -> tuple[str, list[str], Any]:
    """The text, the served model names reported, and the finish."""
    models = [c.model for c in chunks if c.model]
    return (
        "".join(c.text for c in chunks),
        models,
        [c.finish_reason for c in chunks if c.finish_reason],
    )


STREAMS = {
    "the requested model first": ("m-0", [_event("m-0", "a"), _event("m-0", "b")], []),
    "the requested, then another": ("m-0", [_event("m-0", "a"), _event("m-1", "b")], []),
    "another model first": ("m-0", [_event("m-1", "a"), _event("m-1", "b")], ["m-1"]),
    "role chunk, then another": (
        "m-0",
        [_event("m-0", None), _event("m-1", "a"), _event("m-1", "b")],
        ["m-1"],
    ),
    "none named, then another": ("m-0", [_event(text="a"), _event("m-1", "b")], ["m-1"]),
    "none requested, an empty name": ("", [_event("", "a"), _event("s-1", "b")], ["s-1"]),
}


@pytest.mark.parametrize("case", list(STREAMS))
async def test_a_stream_reports_the_served_model_relayed_echoed_and_decoded(case: str) -> None:
    """The same text and served model, relayed as it came (the first event read from its
    bytes, its shape learned), relayed with the model renamed, and decoded; the relayed
    bytes those the provider sent (renamed: every model the alias)."""
    model, events, served = STREAMS[case]
    stream = _stream(*events, _finish(json.loads(events[-1]).get("model")))
    expected = ("ab", served, ["stop"])
    chunks, error = await _read(stream, model, relayed=True)
    assert error is None
    assert _said(chunks) == expected
    assert b"".join(c.raw or b"" for c in chunks) == stream
    echoed, error = await _read(stream, model, relayed=True, echo="alias")
    assert error is None
    assert _said(echoed) == expected
    sent = b"".join(c.raw or b"" for c in echoed).split(b"\n\n")[:-2]  # (no [DONE], no end)
    assert {json.loads(event[6:]).get("model", "alias") for event in sent} == {"alias"}
    decoded, error = await _read(stream, model, relayed=False)
    assert error is None
    assert _said(decoded) == expected
