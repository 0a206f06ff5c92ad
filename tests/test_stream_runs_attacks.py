"""The relayed stream's text runs, its quick chunk maker and the SSE parser's sliced read,
attacked (d9fb9bb, 83e69d1, f928046).

A read's text events one after another go on as one chunk (their texts joined, their bytes
joined); a relayed text chunk is built by :func:`controller._frozen.quick_maker`; the usual
``event: X\\ndata: Y\\n\\n`` read is sliced by :meth:`SSEParser.whole`. Whatever the reads, every
chunk must still say what its bytes say (the text a continuation is told was delivered, the
text the answer cache keeps, are the chunks' texts), finish, usage and held events keep their
own chunks, and the provider's key never reaches the client or another provider. Over real HTTP
on 127.0.0.1: the real provider client against a scripted provider, and a real gateway read by
the official SDKs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller._errors import ProviderError
from controller._frozen import quick_init, quick_maker
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import Message, Request, Source, StreamChunk, relayed_text
from controller.providers import HttpProvider, codec_for
from controller.routing.plan import Degrade, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import AnswerCache, Router
from controller.wire._sse import SSEParser
from tests.conftest import Recorder
from tests.gateway_support import GatewayTestBackend
from tests.test_stream_fastpath_attacks import (
    ANTHROPIC_START,
    LIMITS,
    PROVIDER_KEY,
    USER,
    Scripted,
    _anthropic_event,
    _openai_chunk,
    _provider,
    _text_delta,
    gateway,
    reference,
)

BACKUP_KEY = "sk-backup-key-for-run-tests-0123"

# ---------------------------------------------------------------- streams


def _oa(text: str, finish: str | None = None) -> bytes:
    return f"data: {_openai_chunk({'content': text}, finish)}\n\n".encode()


OPENAI_ROLE = f"data: {_openai_chunk({'role': 'assistant', 'content': ''})}\n\n".encode()
OPENAI_END = (
    _oa("", "stop")
    + b'data: {"id":"c1","model":"m-1","choices":[],'
    + b'"usage":{"prompt_tokens":3,"completion_tokens":9}}\n\n'
    + b"data: [DONE]\n\n"
)
OPENAI_BODY: dict[str, Any] = {
    "model": "m",
    "stream": True,
    "messages": USER,
    "stream_options": {"include_usage": True},
}


def _an(text: str) -> bytes:
    return _anthropic_event("content_block_delta", **_text_delta(text)).encode()


ANTHROPIC_END = (
    _anthropic_event("content_block_stop", index=0)
    + _anthropic_event(
        "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 9}
    )
    + _anthropic_event("message_stop")
).encode()
ANTHROPIC_BODY: dict[str, Any] = {"model": "m", "max_tokens": 64, "stream": True, "messages": USER}

# Held events, then runs of text broken by everything that is not only text: a comment, a
# CRLF-framed text event, an event that quotes the provider's key, an unparseable event (skipped,
# not relayed), a keep-alive or ping; then the finish, the usage and the terminator.
OPENAI_MIXED = (
    OPENAI_ROLE
    + _oa("Un")
    + _oa(" deux")
    + b": keep-alive\n\n"
    + _oa(" trois").replace(b"\n", b"\r\n")
    + _oa(f" {PROVIDER_KEY} ")
    + _oa("quatre")
    + b"data: {not json\n\n"
    + _oa(" cinq")
    + _oa(" é漢😀")
    + b"data: \n\n"
    + _oa(" six")
    + OPENAI_END
)
ANTHROPIC_MIXED = (
    ANTHROPIC_START.encode()
    + _an("Un")
    + _an(" deux")
    + _anthropic_event("ping").encode()
    + _an(" trois").replace(b"\n", b"\r\n")
    + _an(f" {PROVIDER_KEY} ").replace(b"event: ", b"event:")
    + _an("quatre")
    + b"event: content_block_delta\ndata: {not json\n\n"
    + _an(" cinq")
    + _an(" é漢😀")
    + _an(" six")
    + ANTHROPIC_END
)
MIXED_TEXT = f"Un deux trois {PROVIDER_KEY} quatre cinq é漢😀 six"


def _client_text(kind: str, raw: bytes) -> str:
    """The text a client reads from relayed events ``raw`` (read as the SSE module documents)."""
    out = []
    for data, _, _ in reference(raw):
        try:
            body = json.loads(data)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if kind == "openai":
            choices = body.get("choices") or [{}]
            out.append((choices[0].get("delta") or {}).get("content") or "")
        elif body.get("type") == "content_block_delta" and body["delta"]["type"] == "text_delta":
            out.append(body["delta"]["text"])
    return "".join(out)


async def _read(
    provider: HttpProvider, kind: str, body: dict[str, Any], *, own: bool = True
) -> tuple[list[StreamChunk], ProviderError | None]:
    """The chunks the real provider client gives (relayed when ``own``), and its error."""
    raw = json.dumps(body).encode()
    source = Source(format=kind, body=body, raw=raw) if own else None
    request = Request(messages=(Message(role="user", content="count"),), stream=True, source=source)
    chunks: list[StreamChunk] = []
    try:
        async for chunk in provider.stream(request, "m-1", LIMITS):
            chunks.append(chunk)  # noqa: PERF401 - kept when the stream fails
    except ProviderError as exc:
        return chunks, exc
    return chunks, None


def _check_chunks(kind: str, chunks: list[StreamChunk]) -> None:
    """Each relayed chunk says what its bytes say: its text is the text a client reads from
    them; a chunk that ends, counts or calls carries no run of text with it."""
    for chunk in chunks:
        assert chunk.raw is not None
        assert chunk.text == _client_text(kind, chunk.raw), chunk
        if chunk.finish_reason is not None or chunk.usage is not None:
            assert _client_text(kind, chunk.raw) == chunk.text
        assert PROVIDER_KEY.encode() not in chunk.raw


# ---------------------------------------------------------------- the provider's client


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_every_split_gives_chunks_that_say_what_their_bytes_say(kind: str) -> None:
    """The mixed stream in two reads cut at every position, whole, one event a read, a byte
    a read and in three reads cut at random: relayed, every chunk's text is what a client reads
    from its bytes (the key masked in both), the texts joined are the decoded stream's, the
    finish and usage come once, after the last text, on chunks of their own; the bytes are the
    stream's events less the unparseable one, the one quoting the key framed again."""
    stream, body = (
        (OPENAI_MIXED, OPENAI_BODY) if kind == "openai" else (ANTHROPIC_MIXED, ANTHROPIC_BODY)
    )
    bad = b"data: {not json\n\n" if kind == "openai" else b"event: content_block_delta\ndata: {not"
    splits = [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]
    splits += [[stream], [e[2] for e in reference(stream)], [bytes([b]) for b in stream]]
    rng = random.Random(kind)
    for _ in range(100):
        a, b = sorted(rng.sample(range(1, len(stream)), 2))
        splits.append([stream[:a], stream[a:b], stream[b:]])
    expected = b""
    for data, name, raw in reference(stream):
        if raw.startswith(bad):
            continue
        if PROVIDER_KEY.encode() in raw:
            head = f"event: {name}\n" if name else ""
            raw = f"{head}data: {data.replace(PROVIDER_KEY, '***')}\n\n".encode()
        expected += raw
    async with Scripted() as up:
        provider = _provider(up.url, kind)
        up.pieces = [stream]
        decoded, error = await _read(provider, kind, body, own=False)
        assert error is None
        assert "".join(c.text for c in decoded) == MIXED_TEXT.replace(PROVIDER_KEY, "***")
        for pieces in splits:
            up.pieces = pieces
            chunks, error = await _read(provider, kind, body)
            assert error is None, (pieces, error)
            _check_chunks(kind, chunks)
            said = "".join(c.text for c in chunks)
            assert said == MIXED_TEXT.replace(PROVIDER_KEY, "***"), pieces
            ends = [i for i, c in enumerate(chunks) if c.finish_reason is not None]
            texts = [i for i, c in enumerate(chunks) if c.text]
            assert len(ends) == 1
            assert ends[0] > texts[-1]
            assert [c.usage.output_tokens for c in chunks if c.usage] == [9]
            assert b"".join(c.raw or b"" for c in chunks) == expected, pieces
        await provider.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_run_before_an_error_goes_first_and_the_error_after(kind: str) -> None:
    """Text events, then an in-stream error, then more text, all in one read: the run's chunk
    comes (its bytes and text), then the error; nothing after it."""
    if kind == "openai":
        error = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
        stream = OPENAI_ROLE + _oa("Un") + _oa(" deux") + _oa(" trois") + error + _oa(" no")
        body = OPENAI_BODY
    else:
        error = _anthropic_event(
            "error", error={"type": "overloaded_error", "message": "Overloaded"}
        ).encode()
        stream = ANTHROPIC_START.encode() + _an("Un") + _an(" deux") + _an(" trois")
        stream += error + _an(" no")
        body = ANTHROPIC_BODY
    async with Scripted([stream]) as up:
        provider = _provider(up.url, kind)
        chunks, failure = await _read(provider, kind, body)
        await provider.close()
    assert failure is not None
    assert [c.text for c in chunks] == ["Un", " deux trois"]  # held + first, then the run
    _check_chunks(kind, chunks)
    assert b"".join(c.raw or b"" for c in chunks) == stream[: stream.index(error)]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_the_first_text_quoting_the_key_goes_with_the_held_events_masked(kind: str) -> None:
    """The first text event (the held ones go with it) quotes the provider's key, then a run
    does: in one read and an event a read, the chunks' text and bytes hold the key masked."""
    if kind == "openai":
        head, body, end = OPENAI_ROLE, OPENAI_BODY, OPENAI_END
        texts = [_oa(f"{PROVIDER_KEY} un"), _oa(" deux"), _oa(f" {PROVIDER_KEY}")]
    else:
        head, body, end = ANTHROPIC_START.encode(), ANTHROPIC_BODY, ANTHROPIC_END
        texts = [_an(f"{PROVIDER_KEY} un"), _an(" deux"), _an(f" {PROVIDER_KEY}")]
    stream = head + b"".join(texts) + end
    async with Scripted() as up:
        provider = _provider(up.url, kind)
        for pieces in ([stream], [e[2] for e in reference(stream)]):
            up.pieces = pieces
            chunks, failure = await _read(provider, kind, body)
            assert failure is None
            _check_chunks(kind, chunks)
            assert "".join(c.text for c in chunks) == "*** un deux ***"
            assert chunks[0].raw is not None
            assert chunks[0].raw.startswith(head)
        await provider.close()


async def test_a_run_then_the_end_of_the_body_without_a_finish_fails_after_the_run() -> None:
    stream = OPENAI_ROLE + _oa("Un") + _oa(" deux") + _oa(" trois")
    async with Scripted([stream[:-30], stream[-30:]]) as up:
        provider = _provider(up.url, "openai")
        chunks, failure = await _read(provider, "openai", OPENAI_BODY)
        await provider.close()
    assert failure is not None
    assert "".join(c.text for c in chunks) == "Un deux trois"
    assert b"".join(c.raw or b"" for c in chunks) == stream


# ---------------------------------------------------------------- through the gateway, the SDKs


def _keyed(url: str, kind: str, name: str, key: str, *, prefill: bool = False) -> HttpProvider:
    return HttpProvider(
        name=name,
        codec=codec_for(kind),
        base_url=url + "/v1" if kind.startswith("openai") else url,
        api_key=key,
        takes_prefill=prefill,
    )


async def test_a_continuation_that_echoes_its_provider_s_key_does_not_pass_it_on() -> None:
    """A stream cut after a run of text, continued on a provider of the same format that
    quotes its own key: the continuation goes to the client encoded from its chunks' text, which
    must hold the key masked as the relayed bytes do (the openai SDK reads ``***``)."""
    cut = OPENAI_ROLE + _oa("One") + _oa(" two")
    rest = _oa(f" three {BACKUP_KEY} four") + _oa(".", "stop") + b"data: [DONE]\n\n"
    async with (
        Scripted([cut]) as first,
        Scripted([rest]) as second,
        gateway(
            _keyed(first.url, "openai_compatible", "first", PROVIDER_KEY),
            _keyed(second.url, "openai_compatible", "second", BACKUP_KEY, prefill=True),
        ) as (url, recorder),
    ):
        async with aiohttp.ClientSession() as http:
            answer = await http.post(
                f"{url}/v1/chat/completions", json=OPENAI_BODY | {"model": "t"}
            )
            raw = await answer.read()
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
            stream = await c.chat.completions.create(model="t", messages=USER, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert BACKUP_KEY.encode() not in raw
    assert text == "One two three *** four."
    assert second.bodies[-1]["messages"][-1] == {"role": "assistant", "content": "One two"}
    assert recorder.attempts[-1].reason.value == "continuation"


async def test_a_run_quoting_the_key_then_a_cut_is_continued_in_the_open_block() -> None:
    """Anthropic: the start held, then a run that quotes the provider's key, then the
    connection ends: the next provider is told the text the client read (the key masked), the
    SDK's message holds one text block, that text and the rest, and never the key."""
    cut = ANTHROPIC_START.encode() + _an("One") + _an(f" {PROVIDER_KEY}") + _an(" two")
    rest = (ANTHROPIC_START.encode() + _an(" three.")) + ANTHROPIC_END
    async with (
        Scripted([cut[:200], cut[200:]]) as first,
        Scripted([rest]) as second,
        gateway(
            _provider(first.url, "anthropic", "first"),
            _keyed(second.url, "anthropic", "second", BACKUP_KEY, prefill=True),
        ) as (url, recorder),
    ):
        async with aiohttp.ClientSession() as http:
            answer = await http.post(f"{url}/v1/messages", json=ANTHROPIC_BODY | {"model": "t"})
            raw = await answer.read()
        async with (
            anthropic.AsyncAnthropic(base_url=url, api_key="sk-c", max_retries=0) as client,
            client.messages.stream(model="t", max_tokens=9, messages=USER) as stream,
        ):
            message = await stream.get_final_message()
    assert PROVIDER_KEY.encode() not in raw
    delivered = "One *** two"
    assert second.bodies[-1]["messages"][-1] == {"role": "assistant", "content": delivered}
    assert [(b.type, b.text) for b in message.content if b.type == "text"] == [
        ("text", delivered + " three.")
    ]
    assert message.stop_reason == "end_turn"
    assert recorder.attempts[-1].reason.value == "continuation"


async def test_a_run_after_a_thinking_block_then_a_cut_goes_on_in_the_text_block() -> None:
    """Anthropic: a thinking block (it starts the answer), a text block whose deltas come in
    runs, then the connection ends: the encoder has followed the blocks through the runs'
    bytes, the continuation goes on in the text block (index 1), the SDK's message holds the
    thinking and one text block."""
    thinking = (
        _anthropic_event(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        )
        + _anthropic_event(
            "content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}
        )
        + _anthropic_event(
            "content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s"}
        )
        + _anthropic_event("content_block_stop", index=0)
        + _anthropic_event(
            "content_block_start", index=1, content_block={"type": "text", "text": ""}
        )
    ).encode()
    start = ANTHROPIC_START.encode().split(b"event: content_block_start")[0]

    def delta(text: str) -> bytes:
        event = _anthropic_event(
            "content_block_delta", index=1, delta={"type": "text_delta", "text": text}
        )
        return event.encode()

    cut = start + thinking + delta("One") + delta(" two") + delta(" three")
    rest = ANTHROPIC_START.encode() + _an(" four.") + ANTHROPIC_END
    async with (
        Scripted([cut[: len(start + thinking) + 20], cut[len(start + thinking) + 20 :]]) as a,
        Scripted([rest]) as b,
        gateway(
            _provider(a.url, "anthropic", "first"),
            _provider(b.url, "anthropic", "second", prefill=True),
        ) as (url, recorder),
        anthropic.AsyncAnthropic(base_url=url, api_key="sk-c", max_retries=0) as client,
        client.messages.stream(model="t", max_tokens=9, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].type == "text"
    assert message.content[1].text == "One two three four."
    assert b.bodies[-1]["messages"][-1] == {"role": "assistant", "content": "One two three"}
    assert recorder.attempts[-1].reason.value == "continuation"


def _anthropic_answer(text: str, arguments: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m-1",
            "content": [
                {"type": "text", "text": text},
                {"type": "tool_use", "id": "toolu_1", "name": "save", "input": arguments},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    ).encode()


async def test_a_provider_of_another_format_quoting_its_key_never_gets_it_to_the_client() -> None:
    """An OpenAI client served by an Anthropic provider that quotes its own key, in its text
    and in a tool call's arguments, streamed (in runs and a read an event) and whole: the
    client's answer is encoded from the chunks or the message, which hold the key masked."""
    stream = (
        ANTHROPIC_START.encode()
        + _an("Un")
        + _an(f" {PROVIDER_KEY} deux")
        + _an(f" {PROVIDER_KEY}")
        + ANTHROPIC_END
    )
    tool = {"key": PROVIDER_KEY}
    async with (
        Scripted([stream[:300], stream[300:]]) as up,
        gateway(_provider(up.url, "anthropic")) as (url, _),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as client,
    ):
        answer = await client.chat.completions.create(model="t", messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])
        up.pieces = [_anthropic_answer(f"the key: {PROVIDER_KEY}", tool)]
        whole = await client.chat.completions.create(model="t", messages=USER)
    assert text == "Un *** deux ***"
    message = whole.choices[0].message
    assert message.content == "the key: ***"
    assert message.tool_calls is not None
    (call,) = message.tool_calls
    assert call.type == "function"
    assert PROVIDER_KEY not in call.function.arguments
    assert json.loads(call.function.arguments) == {"key": "***"}


@asynccontextmanager
async def _cached_gateway(
    *providers: HttpProvider, settings: GatewaySettings | None = None
) -> AsyncIterator[tuple[str, Router]]:
    """A real gateway whose tier ``t`` (its answers cached for the ladder) has ``providers``."""
    targets = tuple(Target(provider=p.name, model=f"m-{n}") for n, p in enumerate(providers, 1))
    router = Router(
        tiers={"t": TierPlan(name="t", targets=targets, degrade=Degrade(cache=True))},
        providers={p.name: p for p in providers},
        listeners=[Recorder()],
        retry=never_retry,
        default_timeouts=LIMITS,
        deadline=20.0,
        rng=random.Random(7),
        cache=AnswerCache(),
    )
    backend = GatewayTestBackend(
        router=router,
        tracer=TracerProvider().get_tracer("runs"),
        meter=MeterProvider().get_meter("runs"),
        recorder=Recorder(),
    )
    app = create_app(backend, settings=settings or GatewaySettings())
    async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
        yield server.url, router
    await router.aclose()


async def test_a_streamed_answer_that_quoted_the_key_is_served_from_the_cache_masked() -> None:
    """A cache-enabled tier's stream whose runs quote the provider's key is kept for the
    ladder; served from the cache once the provider fails, the answer never holds the key
    (the client that was served it live read ``***``)."""
    stream = OPENAI_ROLE + _oa("Un") + _oa(f" {PROVIDER_KEY}") + _oa(" deux") + OPENAI_END
    async with (
        Scripted([stream]) as up,
        _cached_gateway(_provider(up.url, "openai")) as (url, router),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as client,
    ):

        async def ask() -> str:
            answer = await client.chat.completions.create(
                model="t", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            return "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])

        assert await ask() == "Un *** deux"
        up.pieces = [b": nothing more\n\n"]  # the provider fails: the cache rung answers
        assert await ask() == "Un *** deux"
        assert router.cache is not None
        assert len(router.cache) == 1


@pytest.mark.parametrize("per_event", [False, True])
async def test_echoing_the_requested_model_renames_every_event_of_a_run(per_event: bool) -> None:
    """With echo_requested_model, each event of a run (or of a read an event: the shortest
    path must not send it as it came) is framed again with the client's model name; the text
    is whole, a quoted key masked, and the SDK reads the name the client sent."""
    stream = OPENAI_ROLE + _oa("Un") + _oa(f" {PROVIDER_KEY}") + _oa(" trois") + OPENAI_END
    first = len(OPENAI_ROLE + _oa("Un"))
    pieces = [e[2] for e in reference(stream)] if per_event else [stream[:first], stream[first:]]
    settings = GatewaySettings(echo_requested_model=True)
    async with (
        Scripted(pieces) as up,
        _cached_gateway(_provider(up.url, "openai"), settings=settings) as (url, _),
    ):
        async with aiohttp.ClientSession() as http:
            answer = await http.post(
                f"{url}/v1/chat/completions", json=OPENAI_BODY | {"model": "t"}
            )
            raw = await answer.read()
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
            chunks = [
                ch
                async for ch in await c.chat.completions.create(
                    model="t", messages=USER, stream=True, stream_options={"include_usage": True}
                )
            ]
    assert b'"m-1"' not in raw
    assert PROVIDER_KEY.encode() not in raw
    assert {ch.model for ch in chunks} == {"t"}
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == (
        "Un *** trois"
    )


# ---------------------------------------------------------------- the quick chunk maker


def test_a_made_chunk_is_the_class_s_own_in_every_way() -> None:
    made, built = relayed_text("é漢", b"data: x\n\n"), StreamChunk(text="é漢", raw=b"data: x\n\n")
    assert type(made) is StreamChunk
    assert (made == built, hash(made) == hash(built), repr(made) == repr(built)) == (True,) * 3
    for again in (
        pickle.loads(pickle.dumps(made)),
        copy.copy(made),
        copy.deepcopy(made),
        dataclasses.replace(made),
    ):
        assert again == built
        assert type(again) is StreamChunk
    assert dataclasses.asdict(made) == dataclasses.asdict(built)
    assert dataclasses.replace(made, text="x") == StreamChunk(text="x", raw=b"data: x\n\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.raw = b""  # type: ignore[misc]
    for chunk in (made, built):  # (CPython 3.11's frozen slots classes: a TypeError, alike)
        with pytest.raises((AttributeError, TypeError)):
            chunk.other = 1  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Derived:
    """A record whose ``__post_init__`` fills a field from another."""

    a: int = 0
    twice: int = 0
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "twice", self.a * 2)


@dataclass(frozen=True, slots=True)
class _Named:
    """Fields named as the generated code's own names might be."""

    self: int = 0
    _new: int = 1
    _twin: int = 2
    _frozen: int = 3
    _default0: int = 4


def _made_or_refused(cls: type, names: tuple[str, ...], values: tuple[Any, ...]) -> None:
    """quick_maker either refuses ``cls`` or builds what the class builds."""
    try:
        make: Any = quick_maker(cls, *names)
    except TypeError:
        return
    assert make(*values) == cls(**dict(zip(names, values, strict=True)))


def test_quick_maker_never_builds_what_the_class_would_not() -> None:
    _made_or_refused(_Derived, ("a",), (21,))
    for name in ("self", "_new", "_twin", "_frozen", "_default0"):
        _made_or_refused(_Named, (name,), (42,))
    _made_or_refused(_Named, ("self", "_new", "_twin", "_frozen"), (5, 6, 7, 8))


def test_quick_init_builds_what_the_dataclass_builds_whatever_its_fields_are_named() -> None:
    """The same generated code, in quick_init: a field named as one of its own names (here
    ``_MISSING``, before the fix a factory's default left as the MISSING sentinel) or ``self``
    (before, a SyntaxError where the dataclass takes it) builds what the dataclass builds."""

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Shadowing:
        _MISSING: int = 0
        items: list[int] = field(default_factory=list)

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Selfish:
        self: int = 0
        _set: int = 1
        _twin: int = 2

    cases: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
        (Shadowing, (), {}),
        (Shadowing, (3,), {"items": [4]}),
        (Selfish, (5, 6, 7), {}),
        (Selfish, (), {"self": 8}),
    ]
    for cls, args, kwargs in cases:
        quick, slow = object.__new__(cls), object.__new__(cls)
        cls.__init__(quick, *args, **kwargs)
        cls.__dataclass_init__(slow, *args, **kwargs)
        assert quick == slow, (quick, slow)
    assert Shadowing().items == []


@dataclass(frozen=True, slots=True)
class _Record:
    a: int
    items: list[int] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)


def test_quick_maker_makes_each_factory_s_default_afresh_and_the_object_frozen() -> None:
    make = quick_maker(_Record, "a")
    one, two = make(1), make(1)
    assert one == two == _Record(1)
    assert one.items is not two.items
    assert one.tags is not two.tags
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(one)) == one
    assert copy.deepcopy(one) == one
    assert dataclasses.replace(one, a=2) == _Record(2)


# ---------------------------------------------------------------- the sliced name-and-data read


def test_the_sliced_name_and_data_read_agrees_with_the_parser_on_random_events() -> None:
    """Seeded random ``event:``/``data:`` pairs, blanks and CRs anywhere around the values:
    whole() reads what feed() reads (the slice only where it is the same), or declines."""
    rng = random.Random(928046)
    pieces = [b"", b" ", b"  ", b"\r", b" \r", b"\r\r", b"x", b" x ", b"\xc3\xa9", b"\t"]
    sliced = 0
    for _ in range(5000):
        name = rng.choice(pieces) + rng.choice([b"content_block_delta", b"", b"a"])
        name += rng.choice(pieces)
        data = rng.choice(pieces) + rng.choice([b'{"a":1}', b"", b"1"]) + rng.choice(pieces)
        raw = b"event:" + name + b"\ndata:" + data + b"\n" + rng.choice([b"\n", b"\r\n"])
        parser = SSEParser()
        whole = parser.whole(raw)
        events = parser.feed(raw)
        if whole is None:
            continue
        sliced += 1
        assert len(events) == 1, raw
        assert whole[0].decode("utf-8", "replace") == events[0].event, raw
        assert whole[1].decode("utf-8", "replace") == events[0].data, raw
    assert sliced > 1000, sliced
