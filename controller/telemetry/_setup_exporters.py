"""Where telemetry goes: the OTLP span and metric pipelines and the SDK's tracer provider.

Spans take the light path (:mod:`controller.telemetry._pipeline`, sent by
:mod:`controller.telemetry._send`) or the SDK's batch processor; metrics a periodic reader. Each
is wrapped to count what it drops (:mod:`controller.telemetry._export`) and hands back the
:class:`Gate` that closes or abandons it at shutdown. :mod:`controller.telemetry.setup` picks
and assembles them from what :mod:`controller.telemetry._setup_env` reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from controller.telemetry._export import (
    Backlog,
    CountingBatchSpanProcessor,
    CountingMetricExporter,
    CountingSpanExporter,
    DropTally,
    Gate,
)
from controller.telemetry._hot import HotMetrics
from controller.telemetry._otlp import BatchFrame
from controller.telemetry._pipeline import OtlpSpans, SpanBatcher
from controller.telemetry._send import HttpSender
from controller.telemetry._setup_env import (
    CREDENTIAL_PROVIDER,
    env_int,
    exporter_options,
    proxied,
)
from controller.telemetry.otel import PresetIdGenerator

SCOPE = "controller"  # the instrumentation scope of every span and metric


@dataclass(frozen=True, slots=True, kw_only=True)
class Light:
    batcher: SpanBatcher
    spans: OtlpSpans


def tracer_provider(
    resource: Resource,
    processors: Sequence[SpanProcessor],
    ids: PresetIdGenerator,
    sampler: Sampler,
) -> TracerProvider:
    """``ids`` lets route spans be created with the ids the router assigned."""
    provider = TracerProvider(
        resource=resource, sampler=sampler, shutdown_on_exit=False, id_generator=ids
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def quiet_exporter_logs() -> None:
    """The OTLP exporter logs a WARNING and an ERROR for every failed batch (about once a second
    while the collector is down); our drop tally logs once per burst and counts everything, so
    the exporter's own loggers are raised to CRITICAL unless the user configured them."""
    for name in ("opentelemetry.exporter.otlp.proto.http", "opentelemetry.exporter.otlp"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)


def otlp_spans(
    url: str, env: Mapping[str, str], timeout: float, tally: DropTally
) -> tuple[SpanProcessor, Gate]:
    queue = env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    backlog = Backlog(capacity=queue)
    inner = OTLPSpanExporter(endpoint=url, **exporter_options(env, "traces", timeout))
    exporter = CountingSpanExporter(inner, tally=tally, backlog=backlog)
    processor = CountingBatchSpanProcessor(
        exporter,
        tally=tally,
        backlog=backlog,
        max_queue_size=queue,
        schedule_delay_millis=env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000),
        max_export_batch_size=min(env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), queue),
        export_timeout_millis=timeout * 1000,
    )
    return processor, exporter.gate


def otlp_metrics(
    url: str, env: Mapping[str, str], timeout: float, tally: DropTally, hot: HotMetrics | None
) -> tuple[MetricReader, Gate]:
    inner = OTLPMetricExporter(endpoint=url, **exporter_options(env, "metrics", timeout))
    exporter = CountingMetricExporter(inner, tally=tally, hot=hot)
    reader = PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=env_int(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000),
        export_timeout_millis=timeout * 1000,
    )
    return reader, exporter.gate


def light_spans(
    url: str,
    env: Mapping[str, str],
    timeout: float,
    tally: DropTally,
    resource: Resource,
    capture_content: bool,
    healthy_share: float | None,
) -> tuple[Light, Gate]:
    """The batcher and sink of the light path, and what sends its batches: the lean sender
    (:mod:`controller.telemetry._send`), or the SDK exporter's own HTTP client where only that
    behaves as the SDK does (a proxy for the collector, an SDK credential provider)."""
    options = exporter_options(env, "traces", timeout)
    send: Callable[[bytes], bool]
    if proxied(url) or env.get(CREDENTIAL_PROVIDER, "").strip():
        exporter = OTLPSpanExporter(endpoint=url, **options)
        client = exporter._client  # the SDK's OTLP/HTTP client: export(bytes) -> result

        def send(body: bytes) -> bool:
            return bool(client.export(body).success)

        close: Callable[[], object] = exporter.shutdown
    else:
        sender = HttpSender(url, **options)
        send, close = sender, sender.close
    queue = env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    batcher = SpanBatcher(
        frame=BatchFrame(resource, InstrumentationScope(SCOPE)),
        send=send,
        tally=tally,
        max_queue=queue,
        max_batch=min(env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), queue),
        delay=env_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
    )
    spans = OtlpSpans(batcher=batcher, capture_content=capture_content, healthy_share=healthy_share)
    return Light(batcher=batcher, spans=spans), Gate(close)
