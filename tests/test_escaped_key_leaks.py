"""A provider that echoes its key written with JSON escapes never shows it to a client.

The same-format route relays a provider's bytes as they came and masks the provider's key
where they quote it. A provider may write the key with escapes (``\\u0073k-...``, every
character as ``\\uXXXX``, ``\\/`` for a slash, a mix, after a lone surrogate only Python's
decoder reads): the bytes then do not hold the key, but the client's JSON decoder turns
them into it. Here a real gateway relays such answers from a provider on loopback (streams
read one event at a time, the reader's quick read of a whole event, and all at once, its
full read; whole answers) to a raw HTTP client and to the official openai and anthropic
SDKs, for OpenAI, Anthropic and Gemini providers, and across formats (decoded, encoded
again). Every event and answer that decodes to no key must come through byte for byte; the
others decode to what the provider sent with the key masked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from controller.model import Message, Request, Source, StreamChunk
from controller.providers import HttpProvider, codec_for
from controller.providers.base import Timeouts
from controller.wire._relay import Relay, escape_hints, unescaped_masked
from tests.gateway_support import LoopbackPost, tier_gateway

KEY = "sk-proj-Esc4ped/Key_0123456789abcdef"  # the provider's key (a slash in it)
SLOT = "@@KEY@@"  # where an event's JSON quotes it, replaced by one of ESCAPED
TWICE = "@@KEY2@@"  # ... in a string that is JSON itself (escaped twice: the client parses it)
ESCAPED = {
    "first character": "\\u0073" + KEY[1:],
    "every character": "".join(f"\\u{ord(c):04x}" for c in KEY),
    "slash": KEY.replace("/", "\\/"),
    "mixed, upper-case hex": "sk-pr\\u006fj-Esc4ped\\/\\u004Bey_01234\\u00356789abcdef",
    "after a lone surrogate": "\\ud800\\u0073" + KEY[1:],
}
LIMITS = Timeouts(connect=2.0, first_token=5.0, idle=2.0, total=10.0, terminator_grace=0.2)
USER: Any = [{"role": "user", "content": "say it"}]


def test_the_escapes_decode_to_the_key() -> None:
    for written in ESCAPED.values():
        assert KEY in json.loads(f'"{written}"')
        assert KEY.encode() not in written.encode()


def test_the_hints_of_a_key() -> None:
    """An ASCII key's escapes are \\u00XX (and \\/ for a slash): text with newlines, quotes
    or another script's characters escaped holds no hint."""
    assert escape_hints(KEY) == (b"\\/", b"\\u00")
    assert escape_hints("sk-plain-key-0123") == (b"\\u00",)
    assert b"\\u4F" in escape_hints("k\u4f60" * 6)  # another script's key: both cases
    assert b"\\ud8" in escape_hints("k\U0001f600" * 6)  # beyond U+FFFF: its high surrogate
    for written in ESCAPED.values():
        assert any(hint in written.encode() for hint in escape_hints(KEY))
    assert escape_hints("\uabcd" * 12) == (b"\\uAB", b"\\uAb", b"\\uaB", b"\\uab")


def test_a_key_of_other_characters_is_masked_beside_a_lone_surrogate() -> None:
    """orjson will not write a lone surrogate; the standard library writes it escaped, and
    the key's own characters with it: they are looked for as the key is written plainly."""
    key = "cl\u00e9-secr\u00e8te-\u4f60\U0001f600-0123"
    written = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in key)
    masked = unescaped_masked(f'{{"a":"\\ud800 {written}","b":"\u00e9"}}', key)
    assert masked is not None
    assert json.loads(masked) == {"a": "\ud800 ***", "b": "\u00e9"}
    assert masked.isascii()


def test_unescaped_masked_masks_every_string_and_member_name() -> None:
    data = '{{"a":"x {} y","{}":[1,"{}"],"n":"\\u00e9\\n"}}'.format(*tuple(ESCAPED.values())[:3])
    masked = unescaped_masked(data, KEY)
    assert masked is not None
    assert json.loads(masked) == {"a": "x *** y", "***": [1, "***"], "n": "é\n"}
    assert unescaped_masked('{"a":"\\u00e9 \\/ no key"}', KEY) is None
    assert unescaped_masked("not json \\u0073k", KEY) is None
    lone = unescaped_masked('{{"a":"{}"}}'.format(ESCAPED["after a lone surrogate"]), KEY)
    assert lone is not None
    assert json.loads(lone) == {"a": "\ud800***"}
    assert lone.isascii()


def test_a_relay_without_a_key_changes_nothing() -> None:
    relay = Relay(b"")
    body = ('{{"a":"{}"}}'.format(ESCAPED["first character"])).encode()
    assert relay.whole(body) is body
    assert relay.hints == ()


# ---------------------------------------------------------------- the provider on loopback


class Provider(LoopbackPost):
    """A provider on 127.0.0.1 answering a stream with ``events`` (each written on its own,
    or all in one write) and a whole answer with ``body``."""

    def __init__(self, events: list[bytes], body: bytes = b"{}", *, together: bool) -> None:
        self.events, self.body, self.together = events, body, together

    async def _answer(self, http: web.Request) -> web.StreamResponse:
        body = await http.json()
        if not (body.get("stream") or "stream" in http.path):
            return web.Response(body=self.body, content_type="application/json")
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(http)
        try:
            for piece in [b"".join(self.events)] if self.together else self.events:
                await out.write(piece)
                for _ in range(5):  # the reader takes this event before the next is sent
                    await asyncio.sleep(0)
            await out.write_eof()
        except ConnectionResetError:
            pass
        return out


def _adapter(url: str, kind: str) -> HttpProvider:
    base = url + "/v1" if kind in ("openai", "responses") else url
    codec = codec_for("openai", api="responses") if kind == "responses" else codec_for(kind)
    return HttpProvider(name=f"echo-{kind}", codec=codec, base_url=base, api_key=KEY)


@asynccontextmanager
async def _gateway(
    kind: str, events: list[bytes], body: bytes = b"{}", *, together: bool = False
) -> AsyncIterator[str]:
    async with (
        asyncio.timeout(20),
        Provider(events, body, together=together) as up,
        tier_gateway(_adapter(up.url, kind), limits=LIMITS) as (url, _),
    ):
        yield url


def _written(template: str, escaped: str) -> bytes:
    return template.replace(SLOT, escaped).replace(TWICE, escaped.replace("\\", "\\\\")).encode()


def _masked(value: Any) -> Any:
    """``value`` (decoded JSON) with the key masked in every string and member name."""
    if isinstance(value, str):
        return value.replace(KEY, "***")
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {_masked(k): _masked(v) for k, v in value.items()}
    return value


def _decoded(event: bytes) -> tuple[list[bytes], Any]:
    """An SSE event's other lines and its data, decoded as a Python client decodes it."""
    lines = event.replace(b"\r\n", b"\n").split(b"\n")
    data = b"\n".join(
        line.removeprefix(b"data:").lstrip(b" ") for line in lines if line[:5] == b"data:"
    )
    others = [line for line in lines if line[:5] != b"data:"]
    try:
        return others, json.loads(data)
    except ValueError:
        return others, data.decode("utf-8", "replace")


def _deep(value: Any) -> Any:
    """``value`` (decoded JSON) with every string that is itself a JSON object or array
    decoded too (tool arguments, a JSON answer's text: what a client parses again)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return _deep(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, list):
        return [_deep(v) for v in value]
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    return value


def _quotes(value: Any) -> bool:
    return KEY in json.dumps(_deep(value), ensure_ascii=False)


def _leaks(raw: bytes) -> bool:
    """Whether ``raw`` (what a client got) shows the key: in its bytes, once decoded, or
    once a string in it that is JSON is decoded again."""
    if KEY.encode() in raw:
        return True
    for event in raw.split(b"\n\n"):
        _, data = _decoded(event)
        if _quotes(data):
            return True
    try:
        return _quotes(json.loads(raw))
    except ValueError:
        return False


def assert_relayed(sent: list[bytes], got: bytes) -> None:
    """``got`` is ``sent`` event for event: the same bytes where an event decodes to no key;
    the same lines and the same data with the key masked where it does (a string that is
    JSON compared decoded: it is written again compactly)."""
    assert not _leaks(got)
    events = [e for piece in sent for e in piece.split(b"\n\n") if e]
    received = [e for e in got.split(b"\n\n") if e]
    assert len(received) == len(events), (received, events)
    for mine, theirs in zip(events, received, strict=True):
        others, data = _decoded(mine)
        if not _quotes(data) and KEY.encode() not in mine:
            assert theirs == mine
        else:
            named = [line.replace(KEY.encode(), b"***") for line in others]
            their_lines, their_data = _decoded(theirs)
            assert (their_lines, _deep(their_data)) == (named, _masked(_deep(data)))


async def _raw(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.read()


# ---------------------------------------------------------------- OpenAI


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    """An OpenAI chunk event's line (``extra``: more top-level members)."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m-1"}
    return "data: " + json.dumps(body | {"choices": [choice]} | extra, ensure_ascii=False)


def _openai_stream(where: str) -> list[str]:
    """An OpenAI stream whose event ``where`` quotes the key (at SLOT); escapes elsewhere."""
    call = {"index": 0, "id": "call_1", "type": "function"}
    quoting = {
        "text": _chunk({"content": f"your key is {SLOT} ok"}),
        "tool arguments": _chunk(
            {"tool_calls": [call | {"function": {"name": "f", "arguments": f'{{"k":"{SLOT}"}}'}}]}
        ),
        "tool arguments, escaped twice": _chunk(
            {"tool_calls": [call | {"function": {"name": "f", "arguments": f'{{"k":"{TWICE}"}}'}}]}
        ),
        "the id": _chunk({"content": " ok"}).replace('"c1"', f'"{SLOT}"'),
        "a member's name": _chunk({"content": " ok"}).replace('"created"', f'"{SLOT}":1,"created"'),
    }[where]
    return [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": 'Hello "there"\n'}),  # escapes, no key: as it came
        _chunk({"content": "caf\u00e9 \\u00e9"}).replace("café", "caf\\u00e9"),
        quoting,
        _chunk({"content": "bye"}),
        _chunk({}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        "data: [DONE]",
    ]


def _events(templates: list[str], escaped: str) -> list[bytes]:
    return [_written(t, escaped) + b"\n\n" for t in templates]


OPENAI_ASK = {
    "model": "t",
    "messages": USER,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
@pytest.mark.parametrize(
    "where",
    ["text", "tool arguments", "tool arguments, escaped twice", "the id", "a member's name"],
)
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_an_openai_stream_never_shows_the_escaped_key(
    how: str, where: str, together: bool
) -> None:
    events = _events(_openai_stream(where), ESCAPED[how])
    async with _gateway("openai", events, together=together) as url:
        got = await _raw(f"{url}/v1/chat/completions", OPENAI_ASK)
    assert_relayed(events, got)


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_the_openai_sdk_reads_the_key_masked(how: str) -> None:
    events = _events(_openai_stream("text"), ESCAPED[how])
    calls = _events(_openai_stream("tool arguments"), ESCAPED[how])
    async with _gateway("openai", events) as url:
        text = await _openai_sdk_text(url)
    lone = "\ud800" if "surrogate" in how else ""
    assert text == f'Hello "there"\ncafé \\u00e9your key is {lone}*** okbye'
    async with _gateway("openai", calls) as url:
        arguments = await _openai_sdk_arguments(url)
    assert arguments == f'{{"k":"{lone}***"}}'
    twice = _events(_openai_stream("tool arguments, escaped twice"), ESCAPED[how])
    async with _gateway("openai", twice) as url:
        arguments = await _openai_sdk_arguments(url)
    assert json.loads(arguments) == {"k": f"{lone}***"}  # what the client parses them to


async def _openai_sdk_text(url: str) -> str:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
        stream = await c.chat.completions.create(model="t", messages=USER, stream=True)
        return "".join([k.choices[0].delta.content or "" async for k in stream if k.choices])


async def _openai_sdk_arguments(url: str) -> str:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
        stream = await c.chat.completions.create(model="t", messages=USER, stream=True)
        calls = [
            c
            for k in [k async for k in stream if k.choices]
            for c in k.choices[0].delta.tool_calls or []
        ]
        return "".join(c.function.arguments or "" for c in calls if c.function)


async def test_an_openai_error_event_never_shows_the_escaped_key() -> None:
    error = f'data: {{"error":{{"message":"bad key {SLOT}","type":"server_error"}}}}'
    stream = _openai_stream("text")
    events = _events([*stream[:3], error, *stream[4:]], ESCAPED["every character"])
    async with _gateway("openai", events) as url:
        got = await _raw(f"{url}/v1/chat/completions", OPENAI_ASK)
    assert not _leaks(got)
    assert got.startswith(b"".join(events[:3]))  # what came before it, as it came


OPENAI_ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"key {SLOT} and caf\u00e9\n"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
    indent=1,
)


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_whole_openai_answer_never_shows_the_escaped_key(how: str) -> None:
    body = _written(OPENAI_ANSWER, ESCAPED[how])
    async with _gateway("openai", [], body) as url:
        got = await _raw(f"{url}/v1/chat/completions", {"model": "t", "messages": USER})
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
            answer = await c.chat.completions.create(model="t", messages=USER)
    assert not _leaks(got)
    assert json.loads(got) == _masked(json.loads(body))
    lone = "\ud800" if "surrogate" in how else ""
    assert answer.choices[0].message.content == f"key {lone}*** and café\n"


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_whole_openai_tool_arguments_never_show_the_key_escaped_twice(how: str) -> None:
    """A whole answer's tool call whose arguments (a JSON string the client parses) quote
    the key with escapes of their own: the arguments are written again, the key masked."""
    answer = json.loads(OPENAI_ANSWER)
    call: dict[str, Any] = {"id": "call_1", "type": "function"}
    call["function"] = {"name": "f", "arguments": f'{{"k": "{TWICE}", "n": 1}}'}
    answer["choices"][0]["message"] |= {"content": None, "tool_calls": [call]}
    body = _written(json.dumps(answer), ESCAPED[how])
    async with _gateway("openai", [], body) as url:
        got = await _raw(f"{url}/v1/chat/completions", {"model": "t", "messages": USER})
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
            parsed = await c.chat.completions.create(model="t", messages=USER)
    assert not _leaks(got)
    assert _deep(json.loads(got)) == _masked(_deep(json.loads(body)))
    calls = parsed.choices[0].message.tool_calls or []
    lone = "\ud800" if "surrogate" in how else ""
    assert [json.loads(c.function.arguments) for c in calls] == [{"k": f"{lone}***", "n": 1}]  # type: ignore[union-attr]


async def test_a_whole_answer_that_quotes_no_key_comes_as_it_came() -> None:
    body = OPENAI_ANSWER.replace(SLOT, "\\u00e9\\/\\n \\u0073k-proj-other").encode()
    async with _gateway("openai", [], body) as url:
        got = await _raw(f"{url}/v1/chat/completions", {"model": "t", "messages": USER})
    assert got == body


# ---------------------------------------------------------------- Anthropic


def _anthropic(kind: str, **fields: Any) -> str:
    data = json.dumps({"type": kind, **fields}, ensure_ascii=False)
    return f"event: {kind}\ndata: {data}"


def _anthropic_stream(where: str) -> list[str]:
    start: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    text = {"type": "text", "text": ""}
    tool = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}

    def delta(index: int, **kind: Any) -> str:
        return _anthropic("content_block_delta", index=index, delta=kind)

    quoting = {
        "text": delta(0, type="text_delta", text=f"your key is {SLOT} ok"),
        "tool arguments": delta(1, type="input_json_delta", partial_json=f'{{"k": "{SLOT}"}}'),
        "tool arguments, escaped twice": delta(
            1, type="input_json_delta", partial_json=f'{{"k": "{TWICE}"}}'
        ),
        "a member's name": _anthropic("ping", **{SLOT: 1}),
        # a name is not decoded (SSE): the key in it plainly, escaped in the data's type
        "the event's name": f"event: x-{KEY}\ndata: " + json.dumps({"type": f"x-{SLOT}"}),
        "an error": _anthropic(
            "error", error={"type": "overloaded_error", "message": f"bad key {SLOT}"}
        ),
    }[where]
    return [
        _anthropic("message_start", message=start),
        _anthropic("content_block_start", index=0, content_block=text),
        delta(0, type="text_delta", text='Hello "there"\n'),
        quoting
        if where in ("text", "a member's name", "the event's name", "an error")
        else delta(0, type="text_delta", text="!"),
        _anthropic("content_block_stop", index=0),
        _anthropic("content_block_start", index=1, content_block=tool),
        quoting
        if where.startswith("tool arguments")
        else delta(1, type="input_json_delta", partial_json='{"k": 1}'),
        _anthropic("content_block_stop", index=1),
        _anthropic("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 9}),
        _anthropic("message_stop"),
    ]


ANTHROPIC_ASK = {"model": "t", "max_tokens": 64, "messages": USER, "stream": True}


@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
@pytest.mark.parametrize(
    "where",
    [
        "text",
        "tool arguments",
        "tool arguments, escaped twice",
        "a member's name",
        "the event's name",
    ],
)
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_an_anthropic_stream_never_shows_the_escaped_key(
    how: str, where: str, together: bool
) -> None:
    events = _events(_anthropic_stream(where), ESCAPED[how])
    async with _gateway("anthropic", events, together=together) as url:
        got = await _raw(f"{url}/v1/messages", ANTHROPIC_ASK, {"x-api-key": "sk-c"})
    if where == "the event's name" and "surrogate" in how:  # its type is not its name: the
        assert not _leaks(got)  # stream fails there (a malformed provider), nothing shown
        return
    assert_relayed(events, got)


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_the_anthropic_sdk_reads_the_key_masked(how: str) -> None:
    lone = "\ud800" if "surrogate" in how else ""
    cases: list[tuple[str, Any]] = [("text", f'Hello "there"\nyour key is {lone}*** ok')]
    if not lone:  # (the SDK cannot encode a lone surrogate's partial JSON, key or not)
        cases.append(("tool arguments", {"k": "***"}))
        cases.append(("tool arguments, escaped twice", {"k": "***"}))  # (the SDK parses it)
    for where, expected in cases:
        events = _events(_anthropic_stream(where), ESCAPED[how])
        async with (
            _gateway("anthropic", events) as url,
            anthropic.AsyncAnthropic(base_url=url, api_key="sk-c", max_retries=0) as client,
            client.messages.stream(model="t", max_tokens=64, messages=USER) as stream,
        ):
            message = await stream.get_final_message()
        said = message.content[0].text if where == "text" else message.content[1].input  # type: ignore[union-attr]
        assert said == expected


async def test_an_anthropic_error_event_never_shows_the_escaped_key() -> None:
    events = _events(_anthropic_stream("an error"), ESCAPED["mixed, upper-case hex"])
    async with _gateway("anthropic", events) as url:
        got = await _raw(f"{url}/v1/messages", ANTHROPIC_ASK, {"x-api-key": "sk-c"})
    assert not _leaks(got)
    assert b"Hello" in got  # the stream had started: the text before the error came


ANTHROPIC_ANSWER = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": f"key {SLOT} and caf\u00e9\n"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
)


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_whole_anthropic_answer_never_shows_the_escaped_key(how: str) -> None:
    body = _written(ANTHROPIC_ANSWER, ESCAPED[how])
    async with _gateway("anthropic", [], body) as url:
        got = await _raw(
            f"{url}/v1/messages", ANTHROPIC_ASK | {"stream": False}, {"x-api-key": "k"}
        )
        async with anthropic.AsyncAnthropic(base_url=url, api_key="sk-c", max_retries=0) as c:
            answer = await c.messages.create(model="t", max_tokens=64, messages=USER)
    assert not _leaks(got)
    assert json.loads(got) == _masked(json.loads(body))
    lone = "\ud800" if "surrogate" in how else ""
    assert answer.content[0].text == f"key {lone}*** and café\n"  # type: ignore[union-attr]


# ---------------------------------------------------------------- Gemini


def _gemini(text: str, finish: str | None = None) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "m-1"}
    if finish is not None:
        body["usageMetadata"] = {"promptTokenCount": 3, "candidatesTokenCount": 7}
    return "data: " + json.dumps(body, ensure_ascii=False)


@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_gemini_stream_never_shows_the_escaped_key(how: str, together: bool) -> None:
    stream = [_gemini("Hello\n"), _gemini(f"your key is {SLOT}"), _gemini(" ok", "STOP")]
    events = _events(stream, ESCAPED[how])
    body = {"contents": [{"role": "user", "parts": [{"text": "say it"}]}]}
    async with _gateway("gemini", events, together=together) as url:
        path = f"{url}/v1beta/models/t:streamGenerateContent?alt=sse"
        got = await _raw(path, body, {"x-goog-api-key": "sk-c"})
    assert_relayed(events, got)


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_the_google_genai_sdk_reads_the_key_masked(how: str) -> None:
    from google import genai
    from google.genai import types

    stream = [_gemini("Hello\n"), _gemini(f"your key is {SLOT}"), _gemini(" ok", "STOP")]
    async with _gateway("gemini", _events(stream, ESCAPED[how])) as url:
        retry = types.HttpRetryOptions(attempts=1)
        options = types.HttpOptions(base_url=url, api_version="v1beta", retry_options=retry)
        client = genai.Client(api_key="sk-c", http_options=options)
        text = [
            chunk.text or ""
            async for chunk in await client.aio.models.generate_content_stream(
                model="t", contents="say it"
            )
        ]
    lone = "\ud800" if "surrogate" in how else ""
    assert "".join(text) == f"Hello\nyour key is {lone}*** ok"


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_whole_gemini_answer_never_shows_the_escaped_key(how: str) -> None:
    answer = _gemini(f"key {SLOT}", "STOP").removeprefix("data: ")
    sent = _written(answer, ESCAPED[how])
    body = {"contents": [{"role": "user", "parts": [{"text": "say it"}]}]}
    async with _gateway("gemini", [], sent) as url:
        got = await _raw(f"{url}/v1beta/models/t:generateContent", body, {"x-goog-api-key": "k"})
    assert not _leaks(got)
    assert json.loads(got) == _masked(json.loads(sent))


# ---------------------------------------------------------------- OpenAI Responses


def _responses_stream() -> list[str]:
    def event(kind: str, **fields: Any) -> str:
        return f"event: {kind}\ndata: " + json.dumps({"type": kind, **fields}, ensure_ascii=False)

    def delta(number: int, text: str) -> str:
        at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
        return event("response.output_text.delta", sequence_number=number, **at, delta=text)

    response: dict[str, Any] = {"id": "resp_1", "object": "response", "created_at": 1}
    response |= {"model": "m-1", "status": "in_progress", "output": [], "tools": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress"}
    usage: dict[str, Any] = {"input_tokens": 3, "output_tokens": 7, "total_tokens": 10}
    usage |= {"input_tokens_details": {"cached_tokens": 0}}
    usage |= {"output_tokens_details": {"reasoning_tokens": 0}}
    return [
        event("response.created", sequence_number=0, response=response),
        event("response.output_item.added", sequence_number=1, output_index=0, item=item),
        delta(2, "Hello\n"),
        delta(3, f"your key is {SLOT} ok"),
        event(
            "response.completed",
            sequence_number=4,
            response=response | {"status": "completed", "usage": usage},
        ),
    ]


@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_responses_stream_never_shows_the_escaped_key(how: str, together: bool) -> None:
    events = _events(_responses_stream(), ESCAPED[how])
    ask = {"model": "t", "input": "say it", "stream": True}
    async with _gateway("responses", events, together=together) as url:
        got = await _raw(f"{url}/v1/responses", ask)
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-c", max_retries=0) as c:
            stream = await c.responses.create(model="t", input="say it", stream=True)
            text = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    assert_relayed(events, got)
    lone = "\ud800" if "surrogate" in how else ""
    assert "".join(text) == f"Hello\nyour key is {lone}*** ok"


# ---------------------------------------------------------------- across formats


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_stream_decoded_for_another_format_never_shows_the_escaped_key(how: str) -> None:
    """An OpenAI client served by an Anthropic provider: the chunks are decoded and encoded
    again, so an escaped key would reach the client written plainly."""
    events = _events(_anthropic_stream("text"), ESCAPED[how])
    async with _gateway("anthropic", events) as url:
        got = await _raw(f"{url}/v1/chat/completions", OPENAI_ASK)
        text = await _openai_sdk_text(url)
    assert not _leaks(got)
    lone = "\ud800" if "surrogate" in how else ""
    assert text == f'Hello "there"\nyour key is {lone}*** ok'


# ---------------------------------------------------------------- the chunks themselves


@pytest.mark.parametrize("echo", [None, "alias"], ids=["as it came", "renamed"])
@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("openai", "text"),
        ("openai", "tool arguments"),
        ("openai", "tool arguments, escaped twice"),
        ("openai", "the id"),
        ("anthropic", "text"),
        ("anthropic", "tool arguments"),
        ("anthropic", "tool arguments, escaped twice"),
    ],
)
@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_relayed_stream_s_chunks_hold_the_key_masked(
    how: str, kind: str, where: str, together: bool, echo: str | None
) -> None:
    """What the provider's client reads from a relayed stream: its events' bytes and the
    chunks' text and tool calls (which a continuation is told and the answer cache keeps),
    the key masked in both, also with the model renamed (every event framed again)."""
    templates = _openai_stream(where) if kind == "openai" else _anthropic_stream(where)
    events = _events(templates, ESCAPED[how])
    body = (OPENAI_ASK if kind == "openai" else ANTHROPIC_ASK) | {"model": "alias"}
    source = Source(format=kind, body=body, raw=json.dumps(body).encode(), echo_model=echo)
    said = (Message(role="user", content="say it"),)
    request = Request(messages=said, stream=True, source=source)
    chunks: list[StreamChunk] = []
    async with asyncio.timeout(20), Provider(events, together=together) as up:
        provider = _adapter(up.url, kind)
        try:
            chunks.extend([chunk async for chunk in provider.stream(request, "m-1", LIMITS)])
        finally:
            await provider.close()
    assert not _leaks(b"".join(chunk.raw or b"" for chunk in chunks))
    for chunk in chunks:
        call = chunk.tool_call
        assert KEY not in chunk.text
        assert call is None or KEY not in f"{call.id}{call.name}{call.arguments}"
    assert not _quotes("".join(c.tool_call.arguments for c in chunks if c.tool_call))
    if where in ("text", "tool arguments"):
        lone = "\ud800" if "surrogate" in how else ""
        said_all = "".join(c.text for c in chunks) + "".join(
            c.tool_call.arguments for c in chunks if c.tool_call
        )
        assert f"{lone}***" in said_all


@pytest.mark.parametrize("how", list(ESCAPED))
async def test_a_whole_answer_decoded_for_another_format_never_shows_the_escaped_key(
    how: str,
) -> None:
    """An OpenAI client answered by an Anthropic provider: the message is decoded and
    encoded again, so an escaped key would reach the client written plainly."""
    body = _written(ANTHROPIC_ANSWER, ESCAPED[how])
    async with _gateway("anthropic", [], body) as url:
        got = await _raw(f"{url}/v1/chat/completions", {"model": "t", "messages": USER})
    assert not _leaks(got)
    lone = "\ud800" if "surrogate" in how else ""
    assert json.loads(got)["choices"][0]["message"]["content"] == f"key {lone}*** and café\n"
