"""OTLP trace payloads encoded by hand from the router's frozen events and our light spans.

Why: with every request traced, the SDK path cost more CPU than the rest of the gateway
together (measured with py-spy under ``wrk -c10``, 2026-12-06: 0.60 ms per request against
0.23 ms without a collector; the exporter's ``encode_spans`` alone 0.17 ms, building a protobuf
object per span, attribute and value, then the SDK's span objects 0.1 ms). Here a span is
written straight into protobuf wire bytes: the parts that repeat (resource, scope, an
attempt's shared attribute set, a model's span name, low-cardinality key/value pairs) are
encoded once and reused, the rest is a few varints and ``struct.pack`` calls.

What comes out is what the SDK's ``encode_spans`` would produce for the same spans: same
fields, same values, fields in field-number order, defaults left out as protobuf leaves them
out (an unset status is still an empty ``status`` message, as the SDK always sets one). A test
decodes both payloads and compares them (``tests/test_telemetry_fast_spans.py``).

Field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``common/v1/common.proto`` (OTLP 1.x, stable).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from random import getrandbits
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from controller.events import AttemptEvent, RouteEvent, RouteOutcome
from controller.telemetry import names

__all__ = [
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_SERVER",
    "STATUS_ERROR",
    "STATUS_OK",
    "BatchFrame",
    "encode_attempt",
    "encode_attributes",
    "encode_plain_span",
    "encode_route",
    "encode_span",
]

# Span.SpanKind (the proto's numbering, not the API enum's)
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_OK, STATUS_ERROR = 1, 2  # Status.StatusCode
_NS = 1_000_000_000
_CANCELLED = RouteOutcome.CANCELLED.value
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_D = struct.Struct("<d")
_SMALL = tuple(bytes((i,)) for i in range(128))
_MASK64 = (1 << 64) - 1

# Span field tags (field << 3 | wire type)
_T_TRACE_ID = b"\x0a\x10"  # 1, bytes, always 16 long
_T_SPAN_ID = b"\x12\x08"  # 2, bytes, 8 long
_T_TRACE_STATE = b"\x1a"  # 3
_T_PARENT = b"\x22\x08"  # 4, 8 long
_T_NAME = b"\x2a"  # 5
_T_KIND = b"\x30"  # 6, varint
_T_START = b"\x39"  # 7, fixed64
_T_END = b"\x41"  # 8, fixed64
_T_ATTR = b"\x4a"  # 9
_T_DROPPED_ATTRS = b"\x50"  # 10
_T_EVENT = b"\x5a"  # 11
_T_DROPPED_EVENTS = b"\x60"  # 12
_T_LINK = b"\x6a"  # 13
_T_DROPPED_LINKS = b"\x70"  # 14
_T_STATUS = b"\x7a"  # 15
_UNSET_STATUS = b"\x7a\x00"
# flags (16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, | IS_REMOTE for a remote parent
_FLAGS_LOCAL = b"\x85\x01" + _I.pack(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _I.pack(0x300)


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint (a negative int64 as its 10-byte form)."""
    if 0 <= value < 128:
        return _SMALL[value]
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "surrogatepass"))


# --- attributes (KeyValue / AnyValue) -----------------------------------------------------------
def any_value(value: Any) -> bytes:
    """An AnyValue message's bytes, as the SDK's ``_encode_value`` builds it."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _D.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        items = b"".join(_field(b"\x0a", any_value(v)) for v in value)
        return _field(b"\x2a", items)  # array_value { values }
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)  # kvlist_value { values }
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """A KeyValue message's bytes (without its own tag)."""
    return _text(b"\x0a", key) + _field(b"\x12", any_value(value))


_PAIRS: dict[tuple[str, bool, object], bytes] = {}
_KEYS: dict[str, bytes] = {}
_MAX_PAIRS = 4096


def attribute(key: str, value: Any, tag: bytes = _T_ATTR) -> bytes:
    """One attribute as a tagged KeyValue field. Strings and booleans (low cardinality here:
    providers, models, reasons, outcomes) come from a bounded cache keyed by type too, since
    ``True == 1`` in a dict; numbers are written each time behind a cached key."""
    kind = type(value)
    if kind is bool or (kind is str and len(value) <= 256):
        cache_key = (key, kind is bool, value)
        found = _PAIRS.get(cache_key)
        if found is None:
            if len(_PAIRS) >= _MAX_PAIRS:
                _PAIRS.clear()
            found = _PAIRS[cache_key] = _field(_T_ATTR, key_value(key, value))
        return found if tag == _T_ATTR else tag + found[1:]
    prefix = _KEYS.get(key)
    if prefix is None:
        if len(_KEYS) >= _MAX_PAIRS:
            _KEYS.clear()
        prefix = _KEYS[key] = _text(b"\x0a", key)
    return _field(tag, prefix + _field(b"\x12", any_value(value)))


def encode_attributes(attributes: Mapping[str, Any] | None, tag: bytes = _T_ATTR) -> bytes:
    if not attributes:
        return b""
    if tag == _T_ATTR and len(attributes) <= _BLOCK_KEYS:
        # A span's whole attribute set is often one seen before (the SERVER span's method,
        # route, scheme, host, status): one lookup instead of one per attribute. The types
        # are part of the key, since ``True == 1``.
        items = tuple(attributes.items())
        key = (items, tuple(map(type, attributes.values())))
        found = _BLOCKS.get(key)
        if found is None:
            found = b"".join([attribute(k, v) for k, v in items])
            if len(found) <= _BLOCK_BYTES:
                if len(_BLOCKS) >= _MAX_BLOCKS:
                    _BLOCKS.clear()
                _BLOCKS[key] = found
        return found
    return b"".join([attribute(k, v, tag) for k, v in attributes.items()])


_BLOCKS: dict[tuple[tuple[tuple[str, Any], ...], tuple[type, ...]], bytes] = {}
_MAX_BLOCKS = 1024
_BLOCK_KEYS = 32
_BLOCK_BYTES = 1024


# --- spans --------------------------------------------------------------------------------------
def _status(code: int, message: str | None) -> bytes:
    """Status: message (2), code (3); the SDK always sets one, even UNSET."""
    if code == 0:
        return _UNSET_STATUS
    body = (_text(b"\x12", message) if message else b"") + b"\x18" + _SMALL[code]
    return _field(_T_STATUS, body)


def _head(trace_id: int, span_id: int, parent_id: int, name: bytes, kind: int) -> bytes:
    """trace id, span id, (no trace state), parent id, name, kind: fields 1-6."""
    head = _T_TRACE_ID + trace_id.to_bytes(16, "big") + _T_SPAN_ID + span_id.to_bytes(8, "big")
    if parent_id:
        head += _T_PARENT + parent_id.to_bytes(8, "big")
    return head + name + _T_KIND + _SMALL[kind]


def encode_span(
    *,
    trace_id: int,
    span_id: int,
    parent_id: int,
    parent_remote: bool,
    trace_state: str,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None,
    events: Iterable[tuple[str, int, Mapping[str, Any] | None]] = (),
    links: Iterable[tuple[int, int, str, bool, Mapping[str, Any] | None]] = (),
    status_code: int = 0,
    status_message: str | None = None,
    dropped: tuple[int, int, int] = (0, 0, 0),
) -> bytes:
    """One Span message from plain values (the light tracer's spans). ``events`` are
    (name, time, attributes); ``links`` (trace id, span id, trace state, remote, attributes);
    ``dropped`` the dropped attribute, event and link counts."""
    head = _T_TRACE_ID + trace_id.to_bytes(16, "big") + _T_SPAN_ID + span_id.to_bytes(8, "big")
    if trace_state:
        head += _text(_T_TRACE_STATE, trace_state)
    if parent_id:
        head += _T_PARENT + parent_id.to_bytes(8, "big")
    parts = [
        head,
        _text(_T_NAME, name),
        _T_KIND + _SMALL[kind],
        _T_START + _Q.pack(start_ns),
        _T_END + _Q.pack(end_ns),
        encode_attributes(attributes),
    ]
    if dropped[0]:
        parts.append(_T_DROPPED_ATTRS + varint(dropped[0]))
    for event_name, time_ns, event_attrs in events:
        body = b"\x09" + _Q.pack(time_ns) + _text(b"\x12", event_name)
        parts.append(_field(_T_EVENT, body + encode_attributes(event_attrs, b"\x1a")))
    if dropped[1]:
        parts.append(_T_DROPPED_EVENTS + varint(dropped[1]))
    for link_trace, link_span, link_state, remote, link_attrs in links:
        body = b"\x0a\x10" + link_trace.to_bytes(16, "big") + b"\x12\x08"
        body += link_span.to_bytes(8, "big")
        if link_state:
            body += _text(b"\x1a", link_state)
        body += encode_attributes(link_attrs, b"\x22")
        body += b"\x35" + _I.pack(0x300 if remote else 0x100)
        parts.append(_field(_T_LINK, body))
    if dropped[2]:
        parts.append(_T_DROPPED_LINKS + varint(dropped[2]))
    parts.append(_status(status_code, status_message))
    parts.append(_FLAGS_REMOTE if parent_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def encode_plain_span(
    trace_id: int,
    span_id: int,
    parent_id: int,
    parent_remote: bool,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    status_code: int,
    status_message: str | None,
) -> bytes:
    """:func:`encode_span` for the usual span: no trace state, events, links or drops."""
    return b"".join(
        (
            _head(trace_id, span_id, parent_id, _span_name(name), kind),
            _T_START + _Q.pack(start_ns),
            _T_END + _Q.pack(end_ns),
            encode_attributes(attributes),
            _status(status_code, status_message),
            _FLAGS_REMOTE if parent_remote else _FLAGS_LOCAL,
        )
    )


_SPAN_NAMES: dict[str, bytes] = {}


def _span_name(name: str) -> bytes:
    found = _SPAN_NAMES.get(name)
    if found is None:
        if len(_SPAN_NAMES) >= _MAX_PAIRS:
            _SPAN_NAMES.clear()
        found = _SPAN_NAMES[name] = _text(_T_NAME, name)
    return found


_NAMES: dict[str, bytes] = {}


def _chat_name(model: str) -> bytes:
    found = _NAMES.get(model)
    if found is None:
        if len(_NAMES) >= _MAX_PAIRS:
            _NAMES.clear()
        found = _NAMES[model] = _text(_T_NAME, f"{names.OPERATION_CHAT} {model}")
    return found


def encode_attempt(
    event: AttemptEvent, common: bytes, error_type: str | None, *, capture_content: bool
) -> bytes:
    """The CLIENT span :class:`~controller.telemetry._spans.AttemptSpans` would build for
    ``event``; ``common`` is its shared attribute set already encoded
    (:func:`encode_attributes` of ``AttemptAttributes.common``)."""
    start_ns = int(event.start_wall * _NS)
    end_ns = start_ns + int(max(event.duration, 0.0) * _NS)
    parts = [
        _head(event.trace_id, _span_id(event), event.parent_span_id, _chat_name(event.model), 3),
        _T_START + _Q.pack(start_ns),
        _T_END + _Q.pack(end_ns),
        common,
        _attempt_block(event.stream, event.attempt, event.reason.value),
    ]
    usage = event.usage
    if usage is not None:
        parts.append(attribute(names.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens))
        parts.append(attribute(names.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens))
    if event.stream and event.time_to_first_chunk is not None:
        ttfc = event.time_to_first_chunk
        parts.append(attribute(names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc))
    if capture_content:
        if event.input_messages is not None:
            parts.append(attribute(names.GEN_AI_INPUT_MESSAGES, event.input_messages))
        if event.output_messages is not None:
            parts.append(attribute(names.GEN_AI_OUTPUT_MESSAGES, event.output_messages))
    if error_type is not None and error_type != _CANCELLED:
        status = (
            error_type
            if event.error_status is None
            else f"{error_type} (HTTP {event.error_status})"
        )
        parts.append(_status(STATUS_ERROR, status))
    else:
        parts.append(_UNSET_STATUS)
    parts.append(_FLAGS_LOCAL)
    return b"".join(parts)


_ATTEMPT_BLOCKS: dict[tuple[bool, int, str], bytes] = {}


def _attempt_block(stream: bool, attempt: int, reason: str) -> bytes:
    """stream, attempt number and reason of an attempt span, encoded once per combination."""
    key = (stream, attempt, reason)
    found = _ATTEMPT_BLOCKS.get(key)
    if found is None:
        if len(_ATTEMPT_BLOCKS) >= _MAX_BLOCKS:
            _ATTEMPT_BLOCKS.clear()
        found = _ATTEMPT_BLOCKS[key] = (
            attribute(names.GEN_AI_REQUEST_STREAM, stream)
            + attribute(names.FAILOVER_ATTEMPT, attempt)
            + attribute(names.FAILOVER_REASON, reason)
        )
    return found


_RouteKey = tuple[str, str, int, bool, bool, str | None, str | None, str, str]
_ROUTE_BLOCKS: dict[_RouteKey, bytes] = {}


def _route_block(event: RouteEvent) -> bytes:
    """A route span's attributes but the skipped/dropped lists, once per combination."""
    key = (
        event.tier,
        event.outcome.value,
        event.attempts,
        event.panic,
        event.stream,
        event.served_by,
        event.error_type,
        event.degraded,
        event.front,
    )
    found = _ROUTE_BLOCKS.get(key)
    if found is None:
        parts = [
            attribute(names.FAILOVER_TIER, event.tier),
            attribute(names.FAILOVER_OUTCOME, event.outcome.value),
            attribute(names.FAILOVER_ATTEMPTS, event.attempts),
            attribute(names.FAILOVER_PANIC, event.panic),
            attribute(names.GEN_AI_REQUEST_STREAM, event.stream),
        ]
        if event.served_by is not None:
            parts.append(attribute(names.FAILOVER_SERVED_BY, event.served_by))
        if event.error_type is not None:
            parts.append(attribute(names.ERROR_TYPE, event.error_type))
        if event.degraded:
            parts.append(attribute(names.FAILOVER_DEGRADED, event.degraded))
        if event.front:
            parts.append(attribute(names.FAILOVER_FRONT, event.front))
        if len(_ROUTE_BLOCKS) >= _MAX_BLOCKS:
            _ROUTE_BLOCKS.clear()
        found = _ROUTE_BLOCKS[key] = b"".join(parts)
    return found


def encode_route(event: RouteEvent) -> bytes:
    """The INTERNAL ``failover.route`` span :class:`~controller.telemetry._spans.RouteSpans`
    would build for ``event``."""
    start_ns = int(event.start_wall * _NS)
    end_ns = start_ns + int(max(event.end - event.start, 0.0) * _NS)
    parts = [
        _head(event.trace_id, event.span_id, event.parent_span_id, _ROUTE_NAME, KIND_INTERNAL),
        _T_START + _Q.pack(start_ns),
        _T_END + _Q.pack(end_ns),
        _route_block(event),
    ]
    if event.skipped:
        parts.append(attribute(names.FAILOVER_SKIPPED, event.skipped))
    if event.dropped:
        parts.append(attribute(names.FAILOVER_DROPPED, event.dropped))
    failed = event.outcome is RouteOutcome.FAILED
    parts.append(_status(STATUS_ERROR, event.error_type) if failed else _UNSET_STATUS)
    parts.append(_FLAGS_LOCAL)
    return b"".join(parts)


_ROUTE_NAME = _text(_T_NAME, names.SPAN_ROUTE)


def _span_id(event: AttemptEvent) -> int:
    """An attempt span's id: random, as the SDK's id generator draws it."""
    return getrandbits(64) or 1


class BatchFrame:
    """Wraps encoded spans into one ``ExportTraceServiceRequest`` of a resource and a scope,
    both encoded once (with the SDK's own encoders, so they are what the SDK sends)."""

    __slots__ = ("_resource", "_schema", "_scope")

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self._resource = _field(b"\x0a", _encode_resource(resource).SerializeToString())
        encoded_scope = _encode_instrumentation_scope(scope).SerializeToString()
        self._scope = _field(b"\x0a", encoded_scope)
        schema = scope.schema_url
        self._schema = (
            (_text(b"\x1a", schema) if schema else b""),
            (_text(b"\x1a", resource.schema_url) if resource.schema_url else b""),
        )

    def request(self, spans: Sequence[bytes]) -> bytes:
        """The request body for ``spans`` (each one Span message's bytes)."""
        body = b"".join([_T_SPAN_IN_SCOPE + varint(len(s)) + s for s in spans])
        scope_spans = _field(b"\x12", self._scope + body + self._schema[0])
        resource_spans = self._resource + scope_spans + self._schema[1]
        return _field(b"\x0a", resource_spans)


_T_SPAN_IN_SCOPE = b"\x12"  # ScopeSpans.spans (2)
