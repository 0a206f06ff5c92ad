"""Mid-stream continuation at its seams: what the fake providers cannot script (a restart whose
last event carries text and the finish together, as Gemini's do; a stream that sends its
terminator without a finish) is played by a scripted SSE server on loopback."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from controller._redact import hold
from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.model import FinishReason, Message, Origin, Request, StreamChunk
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._continue import Diverged, Overlap, continuation_request, prefills
from tests.conftest import Recorder
from tests.gateway_support import LoopbackPost, tier_gateway, wait_for

REPLY = "One two three four five six seven eight nine ten."
LIMITS = Timeouts(connect=2.0, first_token=5.0, idle=0.5, total=10.0, terminator_grace=0.1)
USER: Any = [{"role": "user", "content": "count to ten"}]


class Scripted(LoopbackPost):
    """An SSE server on 127.0.0.1 that answers every POST with ``events`` (data lines)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.bodies: list[Any] = []

    async def _answer(self, http: web.Request) -> web.StreamResponse:
        self.bodies.append(await http.json())
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(http)
        for data in self.events:
            name, _, data = data.rpartition("\0")  # "name\0data": a named event
            named = f"event: {name}\n" if name else ""
            await out.write(f"{named}data: {data}\n\n".encode())
        await out.write_eof()
        return out


def _openai_event(text: str | None, finish: str | None = None) -> str:
    delta = {"content": text} if text is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m-1"}
    return json.dumps({**chunk, "choices": [choice]})


def _gemini_event(text: str, finish: str | None = None) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish is not None:
        candidate["finishReason"] = finish
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 10, "totalTokenCount": 13}
    return json.dumps({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "m-2"})


def _provider(name: str, url: str, kind: str, prefill: bool) -> HttpProvider:
    return HttpProvider(
        name=name,
        codec=codec_for(kind),
        base_url=url + "/v1" if kind.startswith("openai") else url,
        api_key="sk-test-not-a-secret",
        takes_prefill=prefill,
    )


def gateway(
    first: HttpProvider, second: HttpProvider
) -> AbstractAsyncContextManager[tuple[str, Recorder]]:
    """A gateway whose tier ``t`` has ``first`` (model m-1) then ``second`` (m-2)."""
    return tier_gateway(first, second, limits=LIMITS)


async def _openai_stream(url: str) -> tuple[str, str | None]:
    """(text, finish reason) as the openai SDK reads a stream (it stops at ``[DONE]``)."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-client", max_retries=0) as c:
        stream = await c.chat.completions.create(model="t", messages=USER, stream=True)
        text, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


# ------------------------------------------------------------------- the seam, in pieces
def test_a_restart_whose_last_chunk_also_finishes_is_taken_whole() -> None:
    """Gemini puts its last text and the finish in one chunk: a restart that repeats the
    delivered text in it has not diverged."""
    overlap = Overlap("One two three", prefilled=False)
    assert overlap.take(StreamChunk(text="One")) is None
    last = StreamChunk(text=" two three four.", finish_reason=FinishReason.STOP)
    assert overlap.take(last) == StreamChunk(text=" four.", finish_reason=FinishReason.STOP)
    short = Overlap("One two three", prefilled=False)
    with pytest.raises(Diverged):  # it ended before repeating all of it
        short.take(StreamChunk(text="One two", finish_reason=FinishReason.STOP))


def test_a_prefilled_continuation_whose_only_chunk_finishes_loses_its_leading_space() -> None:
    overlap = Overlap(" ", prefilled=True)
    taken = overlap.take(StreamChunk(text=" three.", finish_reason=FinishReason.STOP))
    assert taken == StreamChunk(text="three.", finish_reason=FinishReason.STOP)


# ------------------------------------------------------------------- over HTTP
async def test_a_gemini_restart_that_finishes_in_its_last_chunk_continues_the_answer() -> None:
    """An OpenAI client cut after four words; the Gemini target (no prefill: a restart)
    answers in two chunks, the second with the finish: the client gets the answer once."""
    events = [_gemini_event("One two"), _gemini_event(REPLY[len("One two") :], "STOP")]
    async with FakeProvider(name="first", reply=REPLY) as fake, Scripted(events) as scripted:
        first = _provider("first", fake.url("root"), "openai_compatible", True)
        second = _provider("second", scripted.url, "gemini", False)
        async with gateway(first, second) as (url, recorder):
            fake.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=4))
            assert await _openai_stream(url) == (REPLY, "stop")
    last = recorder.attempts[-1]
    assert (last.provider, last.reason, last.outcome) == (
        "second",
        AttemptReason.CONTINUATION,
        Outcome.SUCCESS,
    )


async def test_a_terminator_without_a_finish_never_reaches_the_client_as_the_end() -> None:
    """An OpenAI-format provider that sends ``[DONE]`` before any finish reason has cut the
    answer: the client must not get that ``[DONE]`` (the SDK stops reading there, with the
    text so far as if it were whole), but the continuation and then the end."""
    events = [_openai_event("One"), _openai_event(" two"), _openai_event(" three"), "[DONE]"]
    async with Scripted(events) as scripted, FakeProvider(name="second", reply=REPLY) as fake:
        first = _provider("first", scripted.url, "openai_compatible", True)
        second = _provider("second", fake.url("root"), "openai_compatible", True)
        async with gateway(first, second) as (url, recorder):
            assert await _openai_stream(url) == (REPLY, "stop")
    cut, more = recorder.attempts[-2:]
    assert (cut.provider, cut.outcome) == ("first", Outcome.FAULT)
    assert (more.provider, more.reason) == ("second", AttemptReason.CONTINUATION)


def test_a_prefilled_target_that_starts_the_answer_again_is_taken_as_a_restart() -> None:
    """A server that does not continue a trailing assistant turn (vLLM without
    ``continue_final_message``) answers from the start: that is caught by its first words and
    only what is new goes on, never the delivered text twice."""
    overlap = Overlap("", prefilled=True, delivered="One two three four")
    assert overlap.take(StreamChunk(text="One")) is None  # maybe the start again: held
    assert overlap.take(StreamChunk(text=" two three")) is None
    assert overlap.take(StreamChunk(text=" four five")) == StreamChunk(text=" five")
    genuine = Overlap("", prefilled=True, delivered="One two three four")
    assert genuine.take(StreamChunk(text=" five")) == StreamChunk(text=" five")
    late = Overlap(" ", prefilled=True, delivered="One two three four ")
    assert late.take(StreamChunk(text="One")) is None
    assert late.take(StreamChunk(text=" things")) == StreamChunk(text="One things")


async def test_a_prefill_the_server_ignores_never_repeats_the_answer_over_http() -> None:
    events = [_openai_event(word if i == 0 else " " + word) for i, word in enumerate(REPLY.split())]
    events += [_openai_event(None, "stop"), "[DONE]"]
    async with FakeProvider(name="first", reply=REPLY) as fake, Scripted(events) as scripted:
        first = _provider("first", fake.url("root"), "openai_compatible", True)
        second = _provider("second", scripted.url, "openai_compatible", True)
        async with gateway(first, second) as (url, _):
            fake.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=4))
            assert await _openai_stream(url) == (REPLY, "stop")
        assert scripted.bodies[-1]["messages"][-1] == {
            "role": "assistant",
            "content": "One two three four",
        }


def _anthropic_events(*, text: list[str]) -> list[str]:
    """A thinking block (index 0), then a text block (index 1) saying ``text``, then nothing
    (the body ends: a cut)."""
    usage = {"input_tokens": 3, "output_tokens": 1}
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant"}
    message["model"] = "m-1"
    message |= {"content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    thinking = {"type": "thinking", "thinking": "", "signature": ""}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": thinking},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Count."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "c2ln"},
        },
    ]
    if text:
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            },
        ]
        events += [
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": t}}
            for t in text
        ]
    return [f"{e['type']}\0{json.dumps(e)}" for e in events]


@pytest.mark.parametrize("text", [["One", " two"], []], ids=["in-text", "in-thinking"])
async def test_an_anthropic_stream_cut_after_a_thinking_block_goes_on_at_the_right_index(
    text: list[str],
) -> None:
    async with (
        Scripted(_anthropic_events(text=text)) as scripted,
        FakeProvider(name="second", reply=REPLY) as fake,
    ):
        first = _provider("first", scripted.url, "anthropic", True)
        second = _provider("second", fake.url("root"), "anthropic", True)
        async with (
            gateway(first, second) as (url, recorder),
            anthropic.AsyncAnthropic(base_url=url, api_key="sk-client", max_retries=0) as client,
            client.messages.stream(model="t", max_tokens=64, messages=USER) as stream,
        ):
            message = await stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert recorder.attempts[-1].reason is AttemptReason.CONTINUATION


async def test_an_anthropic_message_stop_without_a_finish_never_reaches_the_client() -> None:
    stop = '{"type": "message_stop"}'
    events = [*_anthropic_events(text=["One", " two"]), f"message_stop\0{stop}"]
    async with (
        Scripted(events) as scripted,
        FakeProvider(name="second", reply=REPLY) as fake,
    ):
        first = _provider("first", scripted.url, "anthropic", True)
        second = _provider("second", fake.url("root"), "anthropic", True)
        async with (
            gateway(first, second) as (url, _),
            anthropic.AsyncAnthropic(base_url=url, api_key="sk-client", max_retries=0) as client,
            client.messages.stream(model="t", max_tokens=64, messages=USER) as stream,
        ):
            message = await stream.get_final_message()
    assert message.content[1].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


async def test_a_client_that_leaves_during_a_continuation_ends_it_cancelled() -> None:
    """The continuation waits on a target that does not answer; the client goes: the waiting
    attempt and the request end cancelled (not failed), nothing is left waiting."""
    async with (
        FakeProvider(name="first", reply=REPLY) as a,
        FakeProvider(name="second", reply=REPLY) as b,
    ):
        first = _provider("first", a.url("root"), "openai_compatible", True)
        second = _provider("second", b.url("root"), "openai_compatible", True)
        async with gateway(first, second) as (url, recorder):
            a.set_fault(Fault(mode=FaultMode.CUT_STREAM, after_chunks=3))
            b.set_fault(FaultMode.HANG)
            body = {"model": "t", "messages": USER, "stream": True}
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{url}/v1/chat/completions", json=body) as answer,
            ):
                await answer.content.readuntil(b"three")
                await wait_for(lambda: b.requests == 1)
            await wait_for(lambda: bool(recorder.routes))
            outcomes = [(e.provider, e.reason, e.outcome) for e in recorder.attempts]
            assert outcomes == [
                ("first", AttemptReason.PRIMARY, Outcome.FAULT),
                ("second", AttemptReason.CONTINUATION, Outcome.CANCELLED),
            ]
            assert recorder.routes[-1].outcome is RouteOutcome.CANCELLED


def test_a_responses_target_is_never_asked_to_continue_a_prefill() -> None:
    """The Responses API has no assistant prefill (and the client's own Responses body no turn
    to append one to): even with ``prefill: true`` set on its provider, it restarts."""
    hello = Request(messages=(Message(role="user", content="hi"),))
    assert prefills(hello, "responses", True) is False
    assert prefills(hello, "openai", True) is True
    body = {"model": "m", "input": "count to ten", "stream": True}
    origin = Origin(raw=json.dumps(body).encode(), headers={}, echo_model=False)
    asked = Request(messages=(), stream=True, source=origin.source("responses", body, "m"))
    again, pending = continuation_request(asked, "One two", True, own=True)  # was a KeyError
    assert (again, pending) == (asked, "One two")  # the request as it came: a restart


def test_a_held_secret_in_the_delivered_text_never_reaches_the_next_provider() -> None:
    """A provider that echoed its own key mid-answer had it masked on the way to the client;
    the prefill that asks the next provider for the rest masks it too (decoded and own-format
    bodies alike), while what the answer must repeat is unchanged."""
    secret = "sk-provider-a-0123456789abcdef"
    hold(secret)
    delivered = f"Your key is {secret} and more  "
    hello = Request(messages=(Message(role="user", content="hi"),), stream=True)
    again, pending = continuation_request(hello, delivered, True, own=False)
    assert again.messages[-1] == Message(role="assistant", content="Your key is *** and more")
    assert pending == "  "
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    origin = Origin(raw=json.dumps(body).encode(), headers={}, echo_model=False)
    asked = Request(messages=(), stream=True, source=origin.source("anthropic", body, "m"))
    own, _ = continuation_request(asked, delivered, True, own=True)
    assert own.source is not None
    assert secret not in json.dumps(own.source.body)
    assert own.source.body["messages"][-1]["content"] == "Your key is *** and more"
