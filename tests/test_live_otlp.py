"""Telemetry through a real collector: gateway → rotel (OTLP/HTTP) → an OTLP sink in the test.

The gateway is the real Runtime behind a GatewayServer with two FakeProviders; the client is the
official openai SDK; the collector is ``rotel`` (PyPI), started here on loopback. What the sink
decodes is what a tracing backend would store, so the GenAI attributes, the span tree and the
metric names are checked on the wire, not in memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from controller.config import load_config
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from controller.telemetry import names
from tests.live_support import OtlpSink, Rotel, attributes, wait_until

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
aliases: {{gpt-4o: frontier}}
routing:
  deadline_seconds: 10
  retry: {{max_tries_per_provider: 1}}
controller: {{tick_seconds: 0.1}}
state: {{path: "{state}"}}
"""

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@dataclass
class Stack:
    sink: OtlpSink
    rotel: Rotel
    runtime: Runtime
    gateway: GatewayServer
    primary: FakeProvider
    backup: FakeProvider
    client: openai.AsyncOpenAI


@pytest.fixture
async def stack(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> AsyncIterator[Stack]:
    path = tmp_path / "failover.yaml"
    path.write_text(
        CONFIG.format(
            primary=primary.url("openai"),
            backup=backup.url("anthropic"),
            state=tmp_path / "state.json",
        )
    )
    async with OtlpSink() as sink:
        rotel = await Rotel.start(workdir=tmp_path, export_to=sink.url)
        env = {
            "PRIMARY_KEY": "sk-primary-secret",
            "BACKUP_KEY": "sk-backup-secret",
            "OTEL_EXPORTER_OTLP_ENDPOINT": rotel.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }
        runtime = Runtime(load_config(path), config_path=path, env=env)
        await runtime.start()
        app = create_app(runtime, settings=GatewaySettings())
        try:
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as gateway:
                client = openai.AsyncOpenAI(
                    base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10.0
                )
                async with client:
                    yield Stack(sink, rotel, runtime, gateway, primary, backup, client)
        finally:
            await runtime.stop(grace=1.0)
            await rotel.process.stop()


async def _chat(client: openai.AsyncOpenAI) -> str:
    answer = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    return answer.choices[0].message.content or ""


def _trace(sink: OtlpSink, trace_id: bytes) -> list[Any]:
    return [s for s in sink.spans() if s.trace_id == trace_id]


def _failover_trace(sink: OtlpSink) -> list[Any] | None:
    """The spans of the first trace with a failed attempt, once its route span has arrived."""
    failed = [
        s
        for s in sink.spans()
        if s.kind == Span.SPAN_KIND_CLIENT and attributes(s).get(names.ERROR_TYPE)
    ]
    for attempt in failed:
        spans = _trace(sink, attempt.trace_id)
        if any(s.name == names.SPAN_ROUTE for s in spans) and len(spans) >= 3:
            return spans
    return None


async def test_failover_spans_and_metrics_reach_the_sink_through_rotel(stack: Stack) -> None:
    assert (await _chat(stack.client)).startswith("Hello from primary")
    stack.primary.set_fault(FaultMode.ERROR_503)
    assert (await _chat(stack.client)).startswith("Hello from backup")

    async def arrived() -> list[Any] | None:
        return _failover_trace(stack.sink)

    spans = await wait_until(arrived, within=15, what="the failover trace at the sink")
    route = next(s for s in spans if s.name == names.SPAN_ROUTE)
    attempts = sorted(
        (s for s in spans if s.kind == Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert route.kind == Span.SPAN_KIND_INTERNAL
    assert [s.name for s in attempts] == ["chat big", "chat alt"]
    assert all(s.parent_span_id == route.span_id for s in attempts)
    failed, served = (attributes(s) for s in attempts)
    assert failed[names.GEN_AI_OPERATION_NAME] == "chat"
    assert failed[names.GEN_AI_PROVIDER_NAME] == "openai"
    assert failed[names.GEN_AI_REQUEST_MODEL] == "big"
    assert failed[names.SERVER_ADDRESS] == "127.0.0.1"
    assert failed[names.SERVER_PORT] == stack.primary.port
    assert failed[names.ERROR_TYPE] == "overloaded"
    assert attempts[0].status.code == Status.STATUS_CODE_ERROR
    assert served[names.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert served[names.GEN_AI_REQUEST_MODEL] == "alt"
    assert served[names.SERVER_PORT] == stack.backup.port
    assert names.ERROR_TYPE not in served
    assert attempts[1].status.code != Status.STATUS_CODE_ERROR
    assert attributes(route)[names.FAILOVER_SERVED_BY] == "backup"
    # the gateway's SERVER span is the route span's parent: one trace from HTTP to provider
    server = [s for s in spans if s.span_id == route.parent_span_id]
    assert [s.kind for s in server] == [Span.SPAN_KIND_SERVER]

    wanted = {
        names.METRIC_OPERATION_DURATION,
        names.METRIC_TOKEN_USAGE,
        names.METRIC_REQUESTS,
        names.METRIC_FAILOVERS,
        names.METRIC_PROVIDER_STATE,
    }

    async def metrics() -> set[str] | None:
        return wanted if wanted <= stack.sink.metric_names() else None

    await wait_until(metrics, within=10, what=f"metrics {sorted(wanted)} at the sink")
    for body in (str(stack.sink.traces), str(stack.sink.metrics)):
        assert "sk-primary-secret" not in body
        assert "sk-backup-secret" not in body


async def test_requests_stay_fast_with_the_collector_gone(stack: Stack) -> None:
    assert (await _chat(stack.client)).startswith("Hello from primary")
    await stack.rotel.process.stop()
    slowest = 0.0
    for _ in range(20):
        start = time.monotonic()
        assert (await _chat(stack.client)).startswith("Hello from primary")
        slowest = max(slowest, time.monotonic() - start)
    assert slowest < 0.5, f"a request took {slowest:.2f}s with the collector down"

    async def dropped() -> int | None:
        return stack.runtime.telemetry.dropped["spans"] or None

    # the loss is counted (the FailoverTelemetryDropped alert reads this counter)
    assert await wait_until(dropped, within=10, what="dropped spans to be counted") > 0
    start = time.monotonic()
    stack.runtime.telemetry.shutdown(timeout=1.0)  # what Runtime.stop does last
    assert time.monotonic() - start < 2.0  # shutdown stays bounded with the collector gone
