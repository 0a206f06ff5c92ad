"""The light span path sends what the SDK's would: both payloads decoded and compared.

Two :class:`Telemetry` instances get the same spans: one on the SDK's path (tracer provider,
batch processor, ``encode_spans``; chosen by ``FAILOVER_TELEMETRY_SDK_SPANS=true``), one on the
light path (light tracer, hand-written protobuf). Each exports over real OTLP/HTTP on loopback
to its own sink; the two decoded ``ExportTraceServiceRequest`` messages must be equal once the
random ids are replaced by their order of appearance (the same structure: which span is whose
parent, which spans share a trace). The same comparison is made after both went through the
real ``rotel`` collector.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.model import Usage
from controller.telemetry import names
from controller.telemetry._setup_env import export_timeout_from
from controller.telemetry.setup import Telemetry, setup_telemetry
from tests.live_support import OtlpSink, Rotel, wait_until
from tests.telemetry_support import BASE, FAILED, WALL, attempt, route

NS = 1_000_000_000


class Sink(ThreadingHTTPServer):
    """An OTLP/HTTP receiver keeping each traces request decoded, and the headers it came with."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers_seen: list[dict[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


class _Handler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            self.server.requests.append(ExportTraceServiceRequest.FromString(body))
            self.server.headers_seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def sinks() -> Iterator[tuple[Sink, Sink]]:
    servers = (Sink(), Sink())
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server, thread in zip(servers, threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join()


def traced(sink: Sink, *, sdk: bool, **env: str) -> Telemetry:
    variables = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint + "/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # sent on flush only: one request each
        **env,
    }
    if sdk:
        variables["FAILOVER_TELEMETRY_SDK_SPANS"] = "true"
    telemetry = setup_telemetry(env=variables, capture_content=True, export_timeout=5.0)
    assert telemetry.light_spans is not sdk
    return telemetry


def play(telemetry: Telemetry, error: Exception) -> None:
    """One request with everything a span can carry: a SERVER span (set attributes, events, a
    link, an exception, ERROR status) over a plain child span and a route with a failed, a
    cancelled and a streamed attempt, then a route the router started itself, and a span with
    a link and an OK status."""
    tracer = telemetry.tracer
    start = int(WALL * NS)
    with tracer.start_as_current_span(
        "POST /v1/chat/completions",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "server.port": 8080, "url.path": "/v1/x"},
        start_time=start,
        end_on_exit=False,
        record_exception=False,
    ) as server:
        context = server.get_span_context()
        trace_id, route_id = context.trace_id, 0xABCDEF
        ids = {"trace_id": trace_id, "parent_span_id": route_id}
        listener = telemetry.listener
        listener.on_attempt(dataclasses.replace(FAILED, trace_id=trace_id, parent_span_id=route_id))
        listener.on_attempt(attempt(outcome=Outcome.CANCELLED, error_type="cancelled", **ids))
        listener.on_attempt(
            attempt(
                attempt=3,
                reason=AttemptReason.HEDGE,
                stream=True,
                time_to_first_chunk=0.125,
                usage=Usage(input_tokens=0, output_tokens=2**40),
                input_messages='[{"role": "user", "content": "héllo"}]',
                output_messages="[]",
                **ids,
            )
        )
        listener.on_route(
            route(
                trace_id=trace_id,
                span_id=route_id,
                parent_span_id=context.span_id,
                outcome=RouteOutcome.DEGRADED,
                attempts=3,
                panic=True,
                stream=True,
                skipped=("backup: image",),
                dropped=("cache_control",),
                degraded="tier",
                front="gemini",
            )
        )
        with tracer.start_as_current_span(
            "decode",
            attributes={"bytes": 512, "format": "openai"},
            start_time=start + 1,
            end_on_exit=False,
        ) as child:  # a plain span: no events, links or trace state
            child.set_status(StatusCode.ERROR, "bad json")
            child.end(end_time=start + 2)
        server.set_attribute("http.response.status_code", 502)
        server.set_attribute("url.path", "/v1/y")  # set again: moves to the end, as in the SDK
        server.set_attributes(
            {"ratio": 0.5, "negative": -7, "flags": [True, False], "raw": b"\x00"}
        )
        server.add_event("retrying", {"attempt": 2, "tags": ("a", "b")}, timestamp=start + 5)
        server.add_link(context, {"why": "self"})
        server.record_exception(error, timestamp=start + 6)
        server.set_status(Status(StatusCode.ERROR, "upstream failed"))
        server.end(end_time=start + 9 * NS)
    telemetry.listener.on_route(
        route(trace_id=0x5EED, span_id=0xF00D, outcome=RouteOutcome.FAILED, error_type="timeout")
    )
    plain = tracer.start_span("plain", links=[Link(context)], start_time=start)
    plain.set_status(StatusCode.OK)
    plain.set_status(StatusCode.ERROR)  # ignored after OK, as the SDK ignores it
    plain.end(end_time=start + 1)


def normalised(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The request with every trace and span id replaced by its order of first appearance."""
    seen: dict[bytes, bytes] = {}

    def rename(value: bytes) -> bytes:
        if not value:
            return value
        return seen.setdefault(value, len(seen).to_bytes(len(value), "big"))

    copy = ExportTraceServiceRequest()
    copy.CopyFrom(request)
    for rs in copy.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.trace_id = rename(span.trace_id)
                span.span_id = rename(span.span_id)
                span.parent_span_id = rename(span.parent_span_id)
                for link in span.links:
                    link.trace_id = rename(link.trace_id)
                    link.span_id = rename(link.span_id)
    return copy


def exported(telemetry: Telemetry, sink: Sink) -> ExportTraceServiceRequest:
    assert telemetry.force_flush(timeout=10)
    assert telemetry.shutdown(timeout=5)
    assert len(sink.requests) == 1
    return sink.requests[0]


def test_the_light_path_sends_what_the_sdk_sends(sinks: tuple[Sink, Sink]) -> None:
    error = ValueError("bad upstream")
    payloads = []
    for sink, sdk in zip(sinks, (True, False), strict=True):
        telemetry = traced(sink, sdk=sdk)
        play(telemetry, error)
        payloads.append(exported(telemetry, sink))
    sdk_payload, light_payload = payloads

    assert len(sinks[0].spans()) == 8  # 3 attempts, 2 routes, the server span, decode, plain
    assert normalised(light_payload) == normalised(sdk_payload)
    # the comparison would see a difference: the payloads are not trivially equal
    assert light_payload != sdk_payload  # the random ids differ
    names_sent = [s.name for s in sinks[1].spans()]
    assert names_sent.count("chat gpt-4o") == 3
    assert {names.SPAN_ROUTE, "POST /v1/chat/completions", "plain"} <= set(names_sent)


def test_headers_and_compression_come_from_the_standard_variables(
    sinks: tuple[Sink, Sink],
) -> None:
    sink = sinks[0]
    telemetry = traced(
        sink,
        sdk=False,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-team=payments,authorization=Bearer%20tok3n",
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
    )
    telemetry.listener.on_attempt(BASE)
    exported(telemetry, sink)
    headers = {k.lower(): v for k, v in sink.headers_seen[0].items()}
    assert headers["x-team"] == "payments"
    assert headers["authorization"] == "Bearer tok3n"
    assert headers["content-encoding"] == "gzip"
    assert [s.name for s in sink.spans()] == ["chat gpt-4o"]


def test_a_span_limit_variable_selects_the_sdk_path(sinks: tuple[Sink, Sink]) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sinks[0].endpoint + "/v1/traces",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "16",
    }
    telemetry = setup_telemetry(env=env)
    assert not telemetry.light_spans
    assert telemetry.shutdown(timeout=5)


def test_an_unsampled_parent_is_followed_and_nothing_is_sent(sinks: tuple[Sink, Sink]) -> None:
    sink = sinks[0]
    telemetry = traced(
        sink,
        sdk=False,
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
    )
    with telemetry.tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        with telemetry.tracer.start_as_current_span("child") as child:
            assert not child.is_recording()
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
    telemetry.listener.on_attempt(attempt(sampled=False, trace_id=1, parent_span_id=2))
    assert telemetry.force_flush(timeout=10)
    assert sink.requests == []
    assert telemetry.shutdown(timeout=5)


# --- through the real collector -----------------------------------------------------------------
def _sorted_spans(requests: list[ExportTraceServiceRequest]) -> list[tuple[Any, Any, Any]]:
    """(resource, scope, span) triples in an order that does not depend on batching."""
    triples = [
        (rs.resource, ss.scope, span)
        for request in requests
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]

    def key(triple: tuple[Any, Any, Any]) -> tuple[Any, ...]:
        span = triple[2]
        attributes = sorted((kv.key, kv.value.SerializeToString()) for kv in span.attributes)
        return (span.name, span.start_time_unix_nano, span.end_time_unix_nano, attributes)

    return sorted(triples, key=key)


def _renamed(triples: list[tuple[Any, Any, Any]]) -> list[tuple[bytes, bytes, bytes]]:
    """Each triple serialized, with ids replaced by their order of first appearance."""
    request = ExportTraceServiceRequest()
    for resource, scope, span in triples:
        rs = request.resource_spans.add()
        rs.resource.CopyFrom(resource)
        ss = rs.scope_spans.add()
        ss.scope.CopyFrom(scope)
        ss.spans.add().CopyFrom(span)
    renamed = normalised(request)
    return [
        (
            rs.resource.SerializeToString(),
            rs.scope_spans[0].scope.SerializeToString(),
            rs.scope_spans[0].spans[0].SerializeToString(),
        )
        for rs in renamed.resource_spans
    ]


async def test_rotel_forwards_the_light_payload_as_it_forwards_the_sdk_payload(
    tmp_path: Path,
) -> None:
    """Both payloads go through the ``rotel`` collector to a sink: the collector accepts the
    light path's bytes, and what it forwards is what it forwards for the SDK's."""
    error = ValueError("bad upstream")
    received = []
    async with OtlpSink() as sink:
        rotel = await Rotel.start(workdir=tmp_path, export_to=sink.url)
        try:
            for sdk in (True, False):
                env = {
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rotel.endpoint + "/v1/traces",
                    "OTEL_BSP_SCHEDULE_DELAY": "60000",
                }
                if sdk:
                    env["FAILOVER_TELEMETRY_SDK_SPANS"] = "true"
                telemetry = setup_telemetry(env=env, capture_content=True, export_timeout=5.0)
                await asyncio.to_thread(play, telemetry, error)
                assert await asyncio.to_thread(telemetry.shutdown, timeout=10)

                async def eight() -> list[ExportTraceServiceRequest] | None:
                    return list(sink.traces) if len(sink.spans()) >= 8 else None

                received.append(await wait_until(eight, within=15, what="8 spans via rotel"))
                sink.traces.clear()
        finally:
            await rotel.process.stop()
    sdk_spans, light_spans = (_sorted_spans(r) for r in received)
    assert len(light_spans) == 8
    assert _renamed(light_spans) == _renamed(sdk_spans)


# --- the standard variables ---------------------------------------------------------------------
def test_service_name_and_resource_attributes_come_from_the_standard_variables(
    sinks: tuple[Sink, Sink],
) -> None:
    sink = sinks[0]
    telemetry = traced(
        sink,
        sdk=False,
        OTEL_SERVICE_NAME="gw-eu",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod,team=ai%20platform",
    )
    telemetry.listener.on_attempt(BASE)
    request = exported(telemetry, sink)
    resource = {
        kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "gw-eu"
    assert resource["deployment.environment"] == "prod"
    assert resource["team"] == "ai platform"
    assert resource["telemetry.sdk.language"] == "python"


def test_another_protocol_is_logged_and_http_protobuf_sent(
    sinks: tuple[Sink, Sink], caplog: pytest.LogCaptureFixture
) -> None:
    sink = sinks[0]
    telemetry = traced(sink, sdk=False, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    telemetry.listener.on_attempt(BASE)
    assert [s.name for s in exported(telemetry, sink).resource_spans[0].scope_spans[0].spans] == [
        "chat gpt-4o"
    ]
    assert "only http/protobuf is available" in caplog.text


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, 2.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "7"}, 7.0),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "7", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0.5"}, 0.5),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, 2.0),
    ],
)
def test_the_export_timeout_follows_the_standard_variables(
    env: dict[str, str], seconds: float
) -> None:
    assert export_timeout_from(env, "traces", 2.0) == seconds
