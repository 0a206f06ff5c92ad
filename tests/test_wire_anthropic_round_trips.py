"""The Anthropic Messages codec: round trips of responses and streams.

What our server side renders (``render_response`` and the stream encoder) must decode back to the
same model through the client side, and must also validate against the official ``anthropic``
SDK's ``Message`` and stream-event models, its own accumulator included, because that SDK is
pointed at our gateway.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SDKMessage

from controller._errors import MalformedResponse
from controller.model import (
    FinishReason,
    Message,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    assemble,
)
from tests.wire_anthropic_support import CLIENT, EVENT_ADAPTER, MODEL, SERVER, _decode, _events

# ---------------------------------------------------- round trips: responses and streams


def _response(**changes: Any) -> Response:
    values: dict[str, Any] = {
        "id": "msg_01",
        "model": MODEL,
        "message": Message(
            role="assistant",
            content="Let me look.",
            tool_calls=(
                ToolCall(id="toolu_1", name="get_weather", arguments='{"location": "Paris"}'),
                ToolCall(id="toolu_2", name="get_time", arguments='{"tz": "Europe/Paris"}'),
            ),
        ),
        "finish_reason": FinishReason.TOOL_CALLS,
        "usage": Usage(120, 33),
        "provider": "anthropic",
    }
    values.update(changes)
    return Response(**values)


@pytest.mark.parametrize(
    "response",
    [
        _response(),
        _response(
            message=Message(role="assistant", content="Done."), finish_reason=FinishReason.STOP
        ),
        _response(
            message=Message(role="assistant", content="cut"), finish_reason=FinishReason.LENGTH
        ),
        _response(message=Message(role="assistant"), finish_reason=FinishReason.CONTENT_FILTER),
    ],
)
def test_render_response_round_trips_and_matches_the_sdk_model(response: Response) -> None:
    rendered = SERVER.render_response(response)
    SDKMessage.model_validate(rendered)  # what the official SDK will parse from our gateway
    body = json.dumps(rendered).encode()
    assert CLIENT.parse_response(body, "ignored") == response


def _chunks_for(response: Response) -> list[StreamChunk]:
    chunks = [StreamChunk(text="Let "), StreamChunk(text="me look.")]
    for index, call in enumerate(response.message.tool_calls):
        chunks.append(StreamChunk(tool_call=ToolCallDelta(index=index, id=call.id, name=call.name)))
        half = len(call.arguments) // 2
        chunks.append(
            StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[:half]))
        )
        chunks.append(
            StreamChunk(tool_call=ToolCallDelta(index=index, arguments=call.arguments[half:]))
        )
    chunks.append(StreamChunk(finish_reason=response.finish_reason, usage=response.usage))
    return chunks


def _encode_stream(chunks: list[StreamChunk], *, model: str = MODEL) -> bytes:
    encoder = SERVER.stream_encoder(id="msg_01", model=model)
    return encoder.start() + b"".join(encoder.encode(c) for c in chunks) + encoder.end()


def test_stream_round_trip_gives_back_the_same_chunks() -> None:
    chunks = _chunks_for(_response())
    decoder = CLIENT.stream_decoder(MODEL)
    decoded = _decode(_encode_stream(chunks), decoder)
    assert decoded == [replace(chunks[0], model=MODEL), *chunks[1:]]
    assert decoder.done is True
    assert assemble(decoded, id="msg_01", model=MODEL, provider="anthropic") == _response()


def test_encoded_stream_is_a_valid_sdk_event_sequence() -> None:
    """Every event parses as the SDK's RawMessageStreamEvent and the SDK's own accumulator
    rebuilds the message, as ``client.messages.stream(...)`` would against our gateway."""
    raw = _encode_stream(_chunks_for(_response()))
    names = []
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in _events(raw):
        parsed = EVENT_ADAPTER.validate_json(event.data)
        assert parsed.type == event.event
        names.append(event.event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert snapshot is not None
    final = snapshot.to_dict()
    assert final["stop_reason"] == "tool_use"
    assert snapshot.usage.input_tokens == 120
    assert snapshot.usage.output_tokens == 33
    assert final["content"] == SERVER.render_response(_response())["content"]


def test_usage_arriving_after_the_finish_chunk_still_reaches_message_delta() -> None:
    """OpenAI sends usage in a separate chunk after the finish reason."""
    chunks = [
        StreamChunk(text="hi"),
        StreamChunk(finish_reason=FinishReason.STOP),
        StreamChunk(usage=Usage(4, 2)),
    ]
    decoded = _decode(_encode_stream(chunks))
    assert decoded[-1] == StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(4, 2))
    assert len([c for c in decoded if c.finish_reason]) == 1


def test_stream_without_usage_reports_zero_usage_at_end() -> None:
    decoded = _decode(
        _encode_stream([StreamChunk(text="x"), StreamChunk(finish_reason=FinishReason.LENGTH)])
    )
    assert decoded[-1] == StreamChunk(finish_reason=FinishReason.LENGTH, usage=Usage(0, 0))


def test_encoder_refuses_a_tool_call_resumed_after_another_block() -> None:
    encoder = SERVER.stream_encoder(id="m", model=MODEL)
    encoder.start()
    encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=0, id="a", name="f")))
    encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=1, id="b", name="g")))
    with pytest.raises(MalformedResponse):
        encoder.encode(StreamChunk(tool_call=ToolCallDelta(index=0, arguments="{}")))
