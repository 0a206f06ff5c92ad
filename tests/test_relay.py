"""The same-format route's body surgery (controller.wire._relay): the client's bytes go on
unchanged except the model value, and what cannot be changed in place is encoded again."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

import pytest

from controller._errors import MalformedResponse, ResponseTooLarge
from controller.model import FinishReason, Request, Source, StreamChunk, ToolCallDelta, Usage
from controller.wire._base import SSEEvent
from controller.wire._openai_client import OpenAIClientCodec, read_answer
from controller.wire._relay import Relay, relay_for, relayed_body, with_model
from controller.wire._sse import SSEParser


def source(raw: bytes) -> Source:
    return Source(format="openai", body=json.loads(raw), raw=raw)


def test_only_the_model_value_changes_byte_for_byte() -> None:
    raw = b'{ "messages" : [{"role":"user","content":"h\\u00e9"}],\n  "model" : "gpt-x", "z":1.50}'
    assert relayed_body(source(raw), "real-model") == raw.replace(
        b'"model" : "gpt-x"', b'"model":"real-model"'
    )


def test_the_same_model_leaves_the_body_untouched() -> None:
    raw = b'{"model":"gpt-x","messages":[]}'
    assert with_model(raw, "gpt-x", "gpt-x") is raw


def test_a_nested_model_member_is_not_touched() -> None:
    raw = b'{"metadata":{"model":"other"},"model":"gpt-x","messages":[]}'
    assert (
        with_model(raw, "gpt-x", "real")
        == b'{"metadata":{"model":"other"},"model":"real","messages":[]}'
    )


def test_model_text_inside_a_string_is_not_a_member() -> None:
    raw = b'{"messages":[{"content":"say \\"model\\":\\"gpt-x\\""}],"model":"gpt-x"}'
    assert with_model(raw, "gpt-x", "real") == raw.replace(b'"model":"gpt-x"}', b'"model":"real"}')


def test_an_ambiguous_or_escaped_model_is_encoded_again() -> None:
    twice = b'{"model":"gpt-x","tools":[{"model":"gpt-x"}]}'
    assert with_model(twice, "gpt-x", "real") is None
    body = relayed_body(source(twice), "real")
    assert json.loads(body) == {"model": "real", "tools": [{"model": "gpt-x"}]}
    escaped = b'{"model":"gpt-\\u0078"}'
    assert with_model(escaped, "gpt-x", "real") is None
    assert json.loads(relayed_body(source(escaped), "real")) == {"model": "real"}


def test_members_for_the_gateway_s_accounting_go_first() -> None:
    raw = b'{"model":"m","stream":true}'
    extra = {"stream_options": {"include_usage": True}}
    assert relayed_body(source(raw), "real", extra) == (
        b'{"stream_options":{"include_usage":true},"model":"real","stream":true}'
    )
    present = b'{"model":"m","stream":true,"stream_options":{"include_usage":false}}'
    body = json.loads(relayed_body(source(present), "real", extra))
    assert body == {"model": "real", "stream": True, "stream_options": {"include_usage": True}}


def test_events_are_framed_again_line_for_line() -> None:
    relay = Relay(b"data: [DONE]\n\n")
    event = SSEEvent(data='{"a":1}\n{"b":2}', event="custom")
    assert relay.event(event, []) == b'event: custom\ndata: {"a":1}\ndata: {"b":2}\n\n'


def test_parsed_events_go_on_as_they_came_whatever_the_pieces() -> None:
    """The events' own bytes are relayed (CRLF, no blank after the colon, an id line, a
    comment inside an event): fed whole or a byte at a time, the parser keeps each one's
    bytes; only a comment or an id alone between events is not an event."""
    stream = (
        b'event: a\r\ndata:{"x":1}\r\nid: 7\r\n\r\n: ping\n\n'
        b'data: {"y":2}\n: note\ndata: {"z":3}\n\n\n\ndata: [DONE]\n\n'
    )
    relay = Relay(b"data: [DONE]\n\n", secret="sk-provider-123")
    for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        parser = SSEParser()
        events = [event for piece in pieces for event in parser.feed(piece)]
        assert [(e.event, e.data) for e in events] == [
            ("a", '{"x":1}'),
            ("", '{"y":2}\n{"z":3}'),
            ("", "[DONE]"),
        ]
        relayed = b"".join(relay.event(event, []) for event in events)
        assert relayed == stream.replace(b": ping\n\n", b"").replace(b"\n\n\n\n", b"\n\n")


def test_an_event_over_the_limits_is_refused_even_when_it_comes_whole() -> None:
    with pytest.raises(ResponseTooLarge, match="stream event over"):
        SSEParser(max_event_bytes=100).feed(b"data: " + b"x" * 200 + b"\n\n")
    with pytest.raises(ResponseTooLarge, match="stream event over"):
        SSEParser(max_lines=3).feed(b"data: a\n" * 5 + b"\n")
    (fits,) = SSEParser(max_event_bytes=100).feed(b"data: " + b"x" * 90 + b"\n\n")
    assert fits.data == "x" * 90


def test_an_event_quoting_the_key_is_framed_again_masked() -> None:
    relay = Relay(b"", secret="sk-provider-123")
    (event,) = SSEParser().feed(b'data:{"error":"sk-provider-123"}\r\n\r\n')
    assert relay.event(event, []) == b'data: {"error":"***"}\n\n'


def test_the_usage_only_event_the_client_did_not_ask_for_is_held_back() -> None:
    relay = Relay(b"data: [DONE]\n\n", drop_usage_only=True)
    usage = SSEEvent(data='{"choices":[],"usage":{"prompt_tokens":1}}')
    assert relay.event(usage, [StreamChunk(usage=Usage(1, 2))]) == b""
    text = SSEEvent(data='{"choices":[{"delta":{"content":"x"}}]}')
    assert relay.event(text, [StreamChunk(text="x")]) != b""
    # an event without chunks (Azure's prompt filter results, choices: []) still goes
    assert relay.event(SSEEvent(data='{"choices":[]}'), []) != b""


def test_echo_model_renames_the_answer_and_message_start() -> None:
    relay = Relay(b"", echo_model="asked")
    assert json.loads(relay.whole(b'{"id":"x","model":"served"}')) == {"id": "x", "model": "asked"}
    start = SSEEvent(
        data='{"type":"message_start","message":{"model":"served"}}', event="message_start"
    )
    framed = relay.event(start, [])
    data = framed.decode().split("data: ", 1)[1]
    assert json.loads(data)["message"]["model"] == "asked"
    # A Responses stream names the model in the response object its events carry.
    created = SSEEvent(
        data='{"type":"response.created","response":{"id":"r","model":"served"}}',
        event="response.created",
    )
    data = relay.event(created, []).decode().split("data: ", 1)[1]
    assert json.loads(data)["response"] == {"id": "r", "model": "asked"}


def test_an_escaped_top_model_never_moves_the_splice_to_a_nested_one() -> None:
    """The top-level value written with an escape, the same value nested plainly: the one
    found is nested, so the splice is refused and the body encoded again."""
    raw = (
        b'{"model":"claude\\u002dplain",'
        b'"messages":[{"content":[{"input":{"model":"claude-plain"}}]}]}'
    )
    assert with_model(raw, "claude-plain", "real") is None
    body = json.loads(relayed_body(source(raw), "real"))
    assert body["model"] == "real"
    assert body["messages"][0]["content"][0]["input"] == {"model": "claude-plain"}


def test_the_provider_key_is_masked_in_relayed_events_and_bodies() -> None:
    relay = Relay(b"", secret="sk-provider-123")
    event = SSEEvent(data='{"error":{"message":"bad key sk-provider-123"}}')
    assert b"sk-provider-123" not in relay.event(event, [])
    assert relay.whole(b'{"x":"sk-provider-123"}') == b'{"x":"***"}'


def test_a_short_key_is_no_secret_and_is_left_alone() -> None:
    relay = relay_for(b"", starts=lambda event: False, secret="ollama")
    assert (
        relay.whole(b'{"error":"run: ollama pull llama3"}')
        == b'{"error":"run: ollama pull llama3"}'
    )


# ------------------------------------------------ the light reader of a whole same-format answer

_GOOD_ANSWERS = [
    {
        "id": "chatcmpl-1",
        "model": "gpt-real-2025",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    },
    {  # a tool call, finish_reason null (some compatible servers), no usage, no id
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": None,
            }
        ]
    },
    {"choices": [{"message": {"refusal": "no"}, "finish_reason": "content_filter"}]},
]
_MALFORMED_ANSWERS = [
    b"not json",
    b"[]",
    b'{"choices": []}',
    b'{"choices": [{"finish_reason": "stop"}]}',
    b'{"choices": [{"message": {"content": 3}}]}',
    b'{"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}',
    b'{"choices": [{"message": {}, "finish_reason": "sleepy"}]}',
    b'{"choices": [{"message": {}}], "usage": {"prompt_tokens": "7"}}',
    b'{"choices": [{"message": {}}], "id": 5}',
]


@pytest.mark.parametrize("answer", _GOOD_ANSWERS)
def test_the_light_reader_reads_what_the_full_parse_does_but_the_message(answer: Any) -> None:
    body = json.dumps(answer).encode()
    full = OpenAIClientCodec().parse_response(body, "asked")
    assert read_answer(body, "asked") == (full.id, full.model, full.finish_reason, full.usage)


@pytest.mark.parametrize("body", _MALFORMED_ANSWERS)
def test_the_light_reader_refuses_what_the_full_parse_refuses(body: bytes) -> None:
    """A malformed answer still fails over on the same-format route."""
    with pytest.raises(MalformedResponse):
        OpenAIClientCodec().parse_response(body, "asked")
    with pytest.raises(MalformedResponse):
        read_answer(body, "asked")


def test_only_a_request_left_undecoded_gets_its_answer_read_lightly() -> None:
    """A decoded request may be recording content (capture), which needs the answer's message."""
    raw = b'{"model":"m","messages":[]}'
    decoded = Request(messages=(), source=source(raw))
    undecoded = replace(decoded, source=replace(source(raw), full=lambda: decoded))
    codec = OpenAIClientCodec()
    assert codec.build(decoded, "real", None).relay.read is None  # type: ignore[union-attr]
    assert codec.build(undecoded, "real", None).relay.read is read_answer  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model":"gpt-x","messages":[]}', b'{"model":"real","messages":[]}'),
        (b'{"a":1,\n "model"\t:\r "gpt-x" }', b'{"a":1,\n "model":"real" }'),
        (b'{"model":"gpt-xy"}', None),  # another value that starts the same
        (b'{"x":"model","y":"gpt-x"}', None),  # "model" as a value, not a key
        (b'["model"]', None),
        (b'{"model":"gpt-\\u0078"}', None),  # written with an escape
        (b'{"model":"gpt-x\\""}', None),
    ],
)
def test_a_model_member_found_once_is_spliced_without_an_expression(
    raw: bytes, expected: bytes | None
) -> None:
    assert with_model(raw, "gpt-x", "real") == expected


def test_a_chunk_relaying_events_keeps_every_other_field() -> None:
    chunk = StreamChunk(
        text="t",
        tool_call=ToolCallDelta(index=1, id="c", name="f", arguments="{}"),
        finish_reason=FinishReason.TOOL_CALLS,
        usage=Usage(1, 2),
        model="m",
        raw=b"old",
        headers=(("x-request-id", "r"),),
    )
    assert {f.name for f in fields(StreamChunk)} == {
        "text",
        "tool_call",
        "finish_reason",
        "usage",
        "model",
        "raw",
        "headers",
    }  # a new field: set it above, and in StreamChunk.relaying
    assert chunk.relaying(b"new") == replace(chunk, raw=b"new")


def test_a_lone_cr_between_events_holds_nothing_back() -> None:
    """A lone CR ends no line: it begins the next event's first line, and the events after it
    still come (a CR last in a read waits: it may be a CRLF's first half)."""
    for stream in (
        b"data: a\n\n\r\r\ndata: b\n\ndata: c\n\n",
        b"data: a\n\n\rdata: b\n\ndata: c\n\n",
    ):
        for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
            parser = SSEParser()
            events = [event for piece in pieces for event in parser.feed(piece)]
            assert (events[0].data, events[-1].data) == ("a", "c"), events


def test_a_terminator_is_known_however_the_provider_framed_it() -> None:
    """The relay holds back a terminator that comes before the finish: the events' own bytes
    go on now, so it is recognized in any framing of it."""
    from controller.wire._anthropic_server import _StreamEncoder as AnthropicEncoder
    from controller.wire._openai_server import OpenAIStreamEncoder as OpenAIEncoder

    for raw in (b"data: [DONE]\n\n", b"data:[DONE]\r\n\r\n", b"data:  [DONE]\n\n"):
        assert OpenAIEncoder.terminates(raw), raw
    assert not OpenAIEncoder.terminates(b'data: {"x":"[DONE]"}\n\n')
    for raw in (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        b'event:message_stop\r\ndata:{"type":"message_stop"}\r\n\r\n',
        b'data: {"type":"message_stop"}\nevent: message_stop\n\n',
        b'data: {"type":"message_stop"}\n\n',
    ):
        assert AnthropicEncoder.terminates(raw), raw
    assert not AnthropicEncoder.terminates(b'event: ping\ndata: {"type":"message_stop"}\n\n')
