"""The Anthropic Messages codec: the client's stream decoder.

Golden SSE fixtures are the Streaming Messages page's examples, kept byte-for-byte (long lines
included); pins how events decode to our stream chunks, how tool-call indexes and usage are
counted, how in-stream error events map to provider errors, and that malformed event sequences
raise ``MalformedResponse``.
"""

# ruff: noqa: E501  (golden SSE fixtures stay byte-for-byte as documented, long lines included)
from __future__ import annotations

import json
from typing import Any

import pytest

from controller._errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    Overloaded,
    ProviderError,
    RateLimited,
)
from controller.model import (
    FinishReason,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    assemble,
)
from controller.wire._base import SSEEvent
from tests.wire_anthropic_support import CLIENT, MODEL, _decode

# ------------------------------------------------------------------- client: stream (golden)

GOLDEN_TEXT_STREAM = """event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", \
"type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", \
"stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, \
"usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""

# The "Streaming Messages" page's example of a streamed tool call (text block, then tool_use).
GOLDEN_TOOL_STREAM = r"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def test_golden_text_stream_decodes_to_chunks_and_sets_done() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    chunks = _decode(GOLDEN_TEXT_STREAM[: GOLDEN_TEXT_STREAM.index("event: message_stop")], decoder)
    assert chunks == [
        StreamChunk(text="Hello", model="claude-opus-4-1-20250805"),
        StreamChunk(text="!"),
        StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(25, 15)),
    ]
    assert decoder.done is False
    assert _decode('event: message_stop\ndata: {"type": "message_stop"}\n\n', decoder) == []
    assert decoder.done is True


def test_golden_tool_stream_assembles_the_documented_call() -> None:
    chunks = _decode(GOLDEN_TOOL_STREAM)
    assert chunks[2] == StreamChunk(
        tool_call=ToolCallDelta(index=0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather")
    )
    response = assemble(chunks, id="x", model=MODEL)
    assert response.message == Message(
        role="assistant",
        content="Okay, let's check the weather.",
        tool_calls=(
            ToolCall(
                id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                name="get_weather",
                arguments='{"location": "San Francisco, CA", "unit": "fahrenheit"}',
            ),
        ),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(472, 89)


def test_tool_call_index_counts_tool_blocks_only() -> None:
    """Anthropic block 3 (after text, tool, thinking) is our second tool call: index 1."""
    start = '{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}'
    events = [
        start,
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        '{"type":"content_block_start","index":1,"content_block":'
        '{"type":"tool_use","id":"a","name":"f","input":{}}}',
        '{"type":"content_block_start","index":2,"content_block":{"type":"thinking"}}',
        '{"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"x"}}',
        '{"type":"content_block_start","index":3,"content_block":'
        '{"type":"tool_use","id":"b","name":"g","input":{}}}',
        '{"type":"content_block_delta","index":3,"delta":'
        '{"type":"input_json_delta","partial_json":"{}"}}',
    ]
    decoder = CLIENT.stream_decoder(MODEL)
    chunks = [c for data in events for c in decoder.feed(SSEEvent(data=data))]
    assert [c.tool_call for c in chunks] == [
        ToolCallDelta(index=0, id="a", name="f"),
        ToolCallDelta(index=1, id="b", name="g"),
        ToolCallDelta(index=1, arguments="{}"),
    ]


def test_message_delta_input_tokens_win_over_message_start() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    decoder.feed(
        SSEEvent(
            data='{"type":"message_start","message":{"model":"m",'
            '"usage":{"input_tokens":3,"output_tokens":1}}}'
        )
    )
    chunks = decoder.feed(
        SSEEvent(
            data='{"type":"message_delta","delta":{"stop_reason":'
            '"max_tokens"},"usage":{"input_tokens":7,'
            '"cache_read_input_tokens":2,"output_tokens":9}}'
        )
    )
    assert chunks == [
        StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(9, 9, 2), model="m")
    ]


@pytest.mark.parametrize(
    ("error_type", "message", "expected"),
    [
        ("overloaded_error", "Overloaded", Overloaded),
        ("api_error", "Internal server error", Overloaded),
        ("rate_limit_error", "slow down", RateLimited),
        ("authentication_error", "invalid x-api-key", AuthFailed),
        (
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            ContextTooLong,
        ),
        ("invalid_request_error", "Output blocked by content filtering policy", ContentFiltered),
        ("invalid_request_error", "messages: roles must alternate", BadRequest),
    ],
)
def test_in_stream_error_event_raises_the_mapped_error(
    error_type: str, message: str, expected: type[ProviderError]
) -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    _decode(GOLDEN_TEXT_STREAM.split("event: content_block_start")[0], decoder)
    event = {"type": "error", "error": {"type": error_type, "message": message}}
    with pytest.raises(ProviderError) as caught:
        decoder.feed(SSEEvent(event="error", data=json.dumps(event)))
    assert type(caught.value) is expected
    assert caught.value.message == message


_START = '{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}'
_TEXT_BLOCK = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'


@pytest.mark.parametrize(
    "events",
    [
        [SSEEvent(data="{not json")],
        [SSEEvent(data='{"no_type": 1}')],
        [SSEEvent(data=_TEXT_BLOCK)],  # before message_start
        [SSEEvent(data=_START), SSEEvent(data=_START)],
        [SSEEvent(data=_START, event="content_block_start")],  # name and data disagree
        [SSEEvent(data='{"type":"message_start"}')],
        [
            SSEEvent(data=_START),
            SSEEvent(
                data='{"type":"content_block_delta","index":0,'
                '"delta":{"type":"text_delta","text":"x"}}'
            ),
        ],
        [SSEEvent(data=_START), SSEEvent(data=_TEXT_BLOCK), SSEEvent(data=_TEXT_BLOCK)],
        [
            SSEEvent(data=_START),
            SSEEvent(data=_TEXT_BLOCK),
            SSEEvent(
                data='{"type":"content_block_delta","index":0,'
                '"delta":{"type":"input_json_delta","partial_json":"{"}}'
            ),
        ],
        [
            SSEEvent(data=_START),
            SSEEvent(data=_TEXT_BLOCK),
            SSEEvent(data='{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}'),
        ],
        [SSEEvent(data=_START), SSEEvent(data='{"type":"content_block_stop","index":4}')],
        [SSEEvent(data=_START), SSEEvent(data='{"type":"message_delta","delta":{}}')],
        [
            SSEEvent(data=_START),
            SSEEvent(data='{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{}}'),
        ],
        [
            SSEEvent(data=_START),
            SSEEvent(data='{"type":"message_stop"}'),
            SSEEvent(data=_TEXT_BLOCK),
        ],
    ],
)
def test_malformed_stream_events_raise_malformed_response(events: list[SSEEvent]) -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    *valid, bad = events
    for event in valid:
        decoder.feed(event)
    with pytest.raises(MalformedResponse):
        decoder.feed(bad)


def test_unknown_event_types_are_skipped() -> None:
    decoder = CLIENT.stream_decoder(MODEL)
    decoder.feed(SSEEvent(data=_START))
    assert decoder.feed(SSEEvent(event="future_thing", data='{"type":"future_thing"}')) == []
    assert decoder.done is False


def _read_as_relayed(decoder: Any, event: SSEEvent) -> object:
    """What the same-format route makes of ``event``: the quick read first, else the full."""
    try:
        text = decoder.quick(event)
        return [StreamChunk(text=text)] if text else decoder.feed(event)
    except Exception as exc:  # the outcome compared is the error's type and words
        return (type(exc).__name__, str(exc))


def _read_in_full(decoder: Any, event: SSEEvent) -> object:
    try:
        return decoder.feed(event)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    "later",
    [
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"more"}}',
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}',
        '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"x"}}',
        '{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"x"}}',
        '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta",'
        '"partial_json":"{}"}}',
        '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"h"}}',
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}',
        '{"type":"content_block_delta","index":true,"delta":{"type":"text_delta","text":"x"}}',
        '{"type":"content_block_delta","index":0}',
        '{"type":"ping"}',
        "not json",
    ],
)
def test_the_quick_read_of_a_text_delta_gives_what_the_full_read_gives(later: str) -> None:
    """Events after a message_start (served model stamped), an open text block (0) and an
    open tool block (2): each read as the same-format route reads it (quick first) and in
    full, by two decoders that saw the same events before it."""
    usage = {"input_tokens": 5, "output_tokens": 1}
    start = {"type": "message_start", "message": {"model": "served", "usage": usage}}
    before = [
        ("message_start", json.dumps(start)),
        ("content_block_start", '{"type":"content_block_start","index":0,'
         '"content_block":{"type":"text","text":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":0,'
         '"delta":{"type":"text_delta","text":"first"}}'),
        ("content_block_start", '{"type":"content_block_start","index":2,'
         '"content_block":{"type":"tool_use","id":"t","name":"get_weather","input":{}}}'),
    ]  # fmt: skip
    relayed, full = CLIENT.stream_decoder(MODEL), CLIENT.stream_decoder(MODEL)
    for name, data in before:
        event = SSEEvent(data=data, event=name)
        outcome = _read_in_full(full, event)
        assert isinstance(outcome, list), outcome  # the stream so far is a good one
        assert _read_as_relayed(relayed, event) == outcome
    event = SSEEvent(data=later, event="content_block_delta")
    assert _read_as_relayed(relayed, event) == _read_in_full(full, event)
    assert relayed.quick(SSEEvent(data=before[2][1], event=before[2][0])) == "first"
