"""Telemetry: OTLP export — the standard endpoint variables, and export that never blocks.

Real sockets on 127.0.0.1: a closed port, a black hole that accepts but never answers, and a
tiny OTLP sink. A dead or hanging collector costs a listener call nothing, drops are counted
(and shown in the Prometheus text), shutdown is bounded, and secrets never reach logs.
"""

from __future__ import annotations

import logging
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from controller.telemetry import names
from controller.telemetry.otel import TelemetryListener
from controller.telemetry.setup import Telemetry, otlp_endpoint, setup_telemetry
from tests.telemetry_support import BASE, attempt, samples


# --- OTLP configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, None, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"},
            "http://127.0.0.1:4318/v1/traces",
            "http://127.0.0.1:4318/v1/metrics",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/t"},
            "http://127.0.0.1:9/t",
            None,
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/m",
                "OTEL_TRACES_EXPORTER": "none",
            },
            None,
            "http://127.0.0.1:9/m",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"},
            None,
            None,
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None, None),
    ],
)
def test_otlp_endpoints_follow_the_standard_variables(
    env: dict[str, str], traces: str | None, metrics: str | None
) -> None:
    assert otlp_endpoint(env, signal="traces") == traces
    assert otlp_endpoint(env, signal="metrics") == metrics


# --- OTLP against real sockets ------------------------------------------------------------------
N_EVENTS = 200
TIMEOUT = 1.0  # export timeout used in these tests (the default is 2 s)


def per_event_seconds(listener: TelemetryListener, n: int = N_EVENTS) -> float:
    """Median wall time of one on_attempt call (medians shrug off a scheduler hiccup)."""
    times = []
    for i in range(n):
        event = attempt(attempt=i + 1, trace_id=i + 1, parent_span_id=i + 1)
        t0 = time.perf_counter()
        listener.on_attempt(event)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A socket that listens (connections complete in the kernel) but never accepts or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server
    server.close()


def otlp_env(port: int, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **extra}


def dropped_in_prometheus(t: Telemetry) -> dict[str, float]:
    return {
        labels["signal"]: value
        for name, labels, value in samples(t.render_prometheus())
        if name == names.PROM_TELEMETRY_DROPPED
    }


def test_closed_collector_port_costs_nothing_per_call_and_counts_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    baseline = setup_telemetry(env={})
    dead = setup_telemetry(env=otlp_env(closed_port()), export_timeout=TIMEOUT)
    try:
        base_cost = per_event_seconds(baseline.listener)
        dead_cost = per_event_seconds(dead.listener)
        assert dead.exporting == {"traces", "metrics"}
        assert dead_cost < 5e-3, (dead_cost, base_cost)

        assert dead.force_flush(timeout=10)
        assert dead.dropped["spans"] == N_EVENTS
        assert dead.dropped["metrics"] > 0
        dead.listener.on_attempt(BASE)
        assert dead.force_flush(timeout=10)  # a second failure in the same burst
        assert dead.dropped["spans"] == N_EVENTS + 1
        exposed = dropped_in_prometheus(dead)
        assert exposed["spans"] == N_EVENTS + 1
        assert exposed["metrics"] == dead.dropped["metrics"]
    finally:
        baseline.shutdown(timeout=2)
        t0 = time.monotonic()
        dead.shutdown(timeout=3)
        assert time.monotonic() - t0 < 4.5

    ours = [r for r in caplog.records if r.name.startswith("controller.")]
    burst_starts = [r for r in ours if "spans are being dropped" in r.getMessage()]
    assert len(burst_starts) == 1


def test_black_hole_collector_never_blocks_calls_and_shutdown_is_bounded(
    black_hole: socket.socket,
) -> None:
    port = black_hole.getsockname()[1]
    baseline = setup_telemetry(env={})
    dead = setup_telemetry(env=otlp_env(port), export_timeout=TIMEOUT)
    base_cost = per_event_seconds(baseline.listener)
    baseline.shutdown(timeout=2)
    per_event_seconds(dead.listener)

    flusher = threading.Thread(target=dead.force_flush, kwargs={"timeout": 10})
    flusher.start()
    readable, _, _ = select.select([black_hole], [], [], 5.0)
    assert readable, "the exporter never connected to the black hole"
    busy_cost = per_event_seconds(dead.listener)  # an export hangs in the black hole meanwhile
    assert busy_cost < 5e-3, (busy_cost, base_cost)
    flusher.join(timeout=10)
    assert not flusher.is_alive()
    assert dead.dropped["spans"] >= N_EVENTS
    assert dropped_in_prometheus(dead)["spans"] >= N_EVENTS

    per_event_seconds(dead.listener)  # leave work queued for shutdown
    t0 = time.monotonic()
    dead.shutdown(timeout=2)
    assert time.monotonic() - t0 < 3.5


def test_full_span_queue_drops_are_counted_without_waiting(black_hole: socket.socket) -> None:
    env = otlp_env(black_hole.getsockname()[1], OTEL_BSP_MAX_QUEUE_SIZE="10")
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    try:
        cost = per_event_seconds(t.listener)
        # at most one batch of 10 is in flight and 10 wait in the queue: the rest are lost now
        assert t.dropped["spans"] >= N_EVENTS - 20
        assert cost < 5e-3
    finally:
        t.shutdown(timeout=2)


def test_secrets_in_endpoint_and_headers_never_reach_logs_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:tok3n@127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t",
    }
    caplog.set_level(logging.DEBUG)
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    t.listener.on_attempt(BASE)
    t.force_flush(timeout=10)
    t.shutdown(timeout=2)

    assert t.dropped["spans"] == 1
    text = caplog.text + repr(t)
    assert "tok3n" not in text
    assert "s3cr3t" not in text


# --- OTLP against a working sink ----------------------------------------------------------------
class _Sink(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.span_names: list[str] = []
        self.metric_posts = 0
        self.headers_seen: list[str] = []


class _SinkHandler(BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.headers_seen.append(self.headers.get("x-team", ""))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            self.server.span_names += [
                s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]
        elif self.path == "/v1/metrics":
            self.server.metric_posts += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def sink() -> Iterator[_Sink]:
    server = _Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_spans_and_metrics_reach_a_working_collector(sink: _Sink) -> None:
    port = sink.server_address[1]
    env = otlp_env(port, OTEL_EXPORTER_OTLP_HEADERS="x-team=payments")
    t = setup_telemetry(env=env, export_timeout=TIMEOUT)
    t.listener.on_attempt(BASE)
    t.listener.on_attempt(attempt(model="claude-sonnet"))

    assert t.force_flush(timeout=10)
    assert sorted(sink.span_names) == ["chat claude-sonnet", "chat gpt-4o"]
    assert sink.metric_posts >= 1
    assert set(sink.headers_seen) == {"payments"}
    assert t.dropped == {"spans": 0, "metrics": 0}
    assert t.shutdown(timeout=3)
