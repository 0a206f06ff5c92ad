"""Telemetry export: private providers, OTLP/HTTP when configured, a Prometheus ``/metrics`` view.

Why it is shaped this way:

* Each :class:`Telemetry` owns its TracerProvider and MeterProvider and never installs them as
  the global ones, so tests and several gateways in one process never collide.
* OTLP export is on only when the standard ``OTEL_EXPORTER_OTLP_*`` variables ask for it. A dead,
  refusing or black-holed collector must never slow a request: spans go through a batch
  processor (its own thread), metrics through a periodic reader (its own thread), every export
  has a short timeout, and :meth:`Telemetry.shutdown` is bounded by its own deadline.
* Lost telemetry is counted, not raised: ``failover.telemetry.dropped{signal}`` counts spans and
  metric points that failed to export or overflowed the span queue (the "telemetry is being
  dropped" alert watches it), and a failure is logged once per burst, not once per batch
  (the exporter wrappers live in :mod:`controller.telemetry._export`).
* What the environment asks for (endpoints, headers, sampler, resource, timeouts) is read in
  :mod:`controller.telemetry._setup_env`; the span and metric pipelines are built in
  :mod:`controller.telemetry._setup_exporters`. This module is the public face: the
  :class:`Telemetry` object and :func:`setup_telemetry`, which assembles it.
* The Prometheus reader renders into a private ``CollectorRegistry`` per Telemetry, so two
  instances each expose only their own metrics.

Endpoints and headers can carry credentials; they are never logged or shown in a repr.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler
from opentelemetry.trace import NoOpTracer, Tracer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from controller.telemetry import names
from controller.telemetry._export import DropTally, Gate
from controller.telemetry._hot import HotMetrics, HotPrometheusReader
from controller.telemetry._light import LightTracer
from controller.telemetry._metrics import METRIC_UNITS
from controller.telemetry._setup_env import SDK_SPANS_VARIABLE as SDK_SPANS_VARIABLE
from controller.telemetry._setup_env import (
    Signal,
    export_timeout_from,
    otlp_endpoint,
    resource_from,
    sampler_from,
    sdk_spans_wanted,
)
from controller.telemetry._setup_exporters import (
    SCOPE,
    Light,
    light_spans,
    otlp_metrics,
    otlp_spans,
    quiet_exporter_logs,
    tracer_provider,
)
from controller.telemetry._spans import SdkSpans
from controller.telemetry._tail import TailSampler, TailSamplingProcessor
from controller.telemetry.otel import PresetIdGenerator, TelemetryListener

__all__ = ["PROMETHEUS_CONTENT_TYPE", "Signal", "Telemetry", "otlp_endpoint", "setup_telemetry"]

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text exposition format 0.0.4
_SIGNALS: tuple[Signal, ...] = ("traces", "metrics")
_TALLY: Mapping[Signal, str] = {"traces": "spans", "metrics": "metrics"}  # the dropped{signal}


# --- the Telemetry object -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class _Parts:
    service_name: str
    tracer_provider: TracerProvider
    ids: PresetIdGenerator
    meter_provider: MeterProvider
    registry: CollectorRegistry | None
    hot: HotMetrics | None
    otlp_readers: tuple[MetricReader, ...]
    gates: tuple[Gate, ...]
    tallies: tuple[DropTally, ...]
    exporting: frozenset[Signal]
    sampler: Sampler  # what the tracer provider samples with
    tracing: bool  # some span processor keeps spans (OTLP export or an in-process reader)
    light: Light | None  # the light span path (OTLP export only), or None: the SDK's
    tail: TailSamplingProcessor | None  # the tail sampler on the SDK path


class Telemetry:
    """One process's (or one gateway's) tracer, meter, listener and exporters.

    Build it with :func:`setup_telemetry`. The control plane makes its own instruments from
    :attr:`meter`, using ``controller.telemetry.names`` for names and ``METRIC_UNITS`` for units
    (the unit is part of the Prometheus name).
    """

    prometheus_content_type: ClassVar[str] = PROMETHEUS_CONTENT_TYPE

    def __init__(self, parts: _Parts, *, capture_content: bool) -> None:
        self._parts = parts
        self._meter = parts.meter_provider.get_meter(SCOPE)
        if parts.light is not None:
            self._listener = TelemetryListener(
                tracer=NoOpTracer(), meter=self._meter, hot=parts.hot, spans=parts.light.spans
            )
            self._tracer: Tracer = LightTracer(
                sampler=parts.sampler, on_end=self._listener.on_span_end
            )
        else:
            # With nowhere to send spans, the API's no-op tracer: building spans nobody keeps
            # (even unsampled ones: ids, sampler, attributes, context) costs every request.
            self._tracer = (
                parts.tracer_provider.get_tracer(SCOPE) if parts.tracing else NoOpTracer()
            )
            tail = parts.tail
            spans = None
            if tail is not None:
                spans = SdkSpans(
                    tracer=self._tracer,
                    ids=parts.ids,
                    capture_content=capture_content,
                    ended=tail.decide,
                )
            self._listener = TelemetryListener(
                tracer=self._tracer,
                meter=self._meter,
                capture_content=capture_content,
                ids=parts.ids,
                hot=parts.hot,
                spans=spans,
            )
            if tail is not None:
                tail.defer = self._listener.on_span_end
        self._closed = False
        self._meter.create_observable_counter(
            names.METRIC_TELEMETRY_DROPPED,
            callbacks=[self._observe_dropped],
            unit=METRIC_UNITS[names.METRIC_TELEMETRY_DROPPED],
            description="Spans and metric points lost on the way to the OTLP collector.",
        )

    def __repr__(self) -> str:
        exporting = ",".join(sorted(self._parts.exporting)) or "none"
        return f"Telemetry(service={self._parts.service_name!r}, otlp={exporting})"

    @property
    def tracer(self) -> Tracer:
        return self._tracer

    @property
    def meter(self) -> Meter:
        return self._meter

    @property
    def listener(self) -> TelemetryListener:
        return self._listener

    def sample_root(self, trace_id: int) -> bool:
        """Whether the sampler keeps a trace that starts with no parent span, decided as it will
        decide for that trace's root span (a router that starts a trace itself uses this, so
        the attempt spans it reports follow their route span)."""
        if not self._parts.tracing:
            return False
        result = self._parts.sampler.should_sample(None, trace_id, names.SPAN_ROUTE)
        return result.decision is Decision.RECORD_AND_SAMPLE

    @property
    def tail_sampler(self) -> TailSampler[object] | None:
        """The tail sampler (``telemetry.sampling.healthy_share`` below 1), or None."""
        if self._parts.light is not None:
            return self._parts.light.spans.sampler  # type: ignore[return-value]
        tail = self._parts.tail
        return None if tail is None else tail.sampler  # type: ignore[return-value]

    @property
    def light_spans(self) -> bool:
        """Whether spans take the light path (own encoding) rather than the SDK's."""
        return self._parts.light is not None

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded at all (OTLP trace export or an added span processor)."""
        return self._parts.tracing

    @property
    def exporting(self) -> frozenset[Signal]:
        """The signals sent over OTLP (empty when no collector is configured)."""
        return self._parts.exporting

    @property
    def dropped(self) -> Mapping[str, int]:
        """Items lost so far per signal (``spans``, ``metrics``): the dropped counter's values.
        Spans the tail sampler had to let go (too many traces waiting) count as lost spans."""
        return MappingProxyType({t.signal: self._lost(t) for t in self._parts.tallies})

    def _lost(self, tally: DropTally) -> int:
        tail = self.tail_sampler
        extra = tail.dropped if tail is not None and tally.signal == "spans" else 0
        return tally.total + extra

    def render_prometheus(self) -> bytes:
        """This instance's metrics in the Prometheus text format 0.0.4 (empty if disabled)."""
        registry = self._parts.registry
        return b"" if registry is None else generate_latest(registry)

    def force_flush(self, *, timeout: float = 5.0) -> bool:
        """Push pending spans and metrics to OTLP now; True if it finished within ``timeout``."""
        jobs: list[Callable[[], object]] = [self._parts.tracer_provider.force_flush]
        light = self._parts.light
        if light is not None:
            jobs.append(lambda: light.batcher.force_flush(timeout))
        jobs.extend(reader.force_flush for reader in self._parts.otlp_readers)
        return _run_bounded(jobs, timeout)

    def shutdown(self, *, timeout: float = 5.0) -> bool:
        """Flush and stop exporters, returning within about ``timeout`` seconds even when the
        collector is dead or never answers. True if everything finished in time; whatever was
        still unsent is then dropped (and counted)."""
        if self._closed:
            return True
        self._closed = True
        millis = max(timeout, 0.0) * 1000
        self._listener.flush()
        jobs: list[Callable[[], object]] = [
            self._parts.tracer_provider.shutdown,
            lambda: self._parts.meter_provider.shutdown(timeout_millis=millis),
        ]
        light = self._parts.light
        if light is not None:
            jobs.append(lambda: light.batcher.shutdown(timeout))
        done = _run_bounded(jobs, timeout)
        if light is not None and done:
            for gate in self._parts.gates:
                gate.close()
        if not done:
            if light is not None:
                light.batcher.abandon()
            for gate in self._parts.gates:
                gate.abandon()
            log.warning("telemetry: shutdown took longer than %.1fs; unsent data dropped", timeout)
        return done

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        lost = [
            Observation(self._lost(t), {names.ATTR_SIGNAL: t.signal}) for t in self._parts.tallies
        ]
        # events the listener's queue had to drop (a loop too busy to drain it)
        lost.append(Observation(self._listener.dropped_events, {names.ATTR_SIGNAL: "events"}))
        return lost


def _run_bounded(jobs: Sequence[Callable[[], object]], timeout: float) -> bool:
    """Run ``jobs`` on daemon threads and wait at most ``timeout`` seconds for all of them.

    The SDK's flush and shutdown calls can block on a stuck export for longer than we want a
    caller (the gateway's shutdown, a test) to wait; daemon threads let us stop waiting.
    """
    pending = len(jobs)
    done = threading.Condition()

    def run(job: Callable[[], object]) -> None:
        nonlocal pending
        try:
            job()
        except Exception:  # flushing telemetry must never raise into the application
            log.exception("telemetry: flush or shutdown failed")
        finally:
            with done:
                pending -= 1
                done.notify_all()

    for job in jobs:
        threading.Thread(target=run, args=(job,), name="telemetry-flush", daemon=True).start()
    with done:
        return done.wait_for(lambda: pending == 0, timeout=max(timeout, 0.0))


# --- assembly -----------------------------------------------------------------------------------
def setup_telemetry(
    *,
    service_name: str = "llm-failover",
    capture_content: bool = False,
    prometheus: bool = True,
    env: Mapping[str, str] = os.environ,
    export_timeout: float = 2.0,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    healthy_share: float | None = None,
) -> Telemetry:
    """Build a :class:`Telemetry` with providers of its own (the global ones are left alone).

    ``span_processors`` / ``metric_readers`` add in-process readers (e.g. OTel's in-memory ones
    in tests) next to whatever the environment configures. Extra metric readers get the SDK's
    own histograms (they cannot see the in-place ones of :mod:`controller.telemetry._hot`), so
    they cost what the SDK costs per measurement.

    When spans go to the OTLP collector and nowhere else, they take the light path (the light
    tracer, encoded by hand, :mod:`controller.telemetry._pipeline`), unless one of the SDK's
    span limit variables is set or ``FAILOVER_TELEMETRY_SDK_SPANS=true`` asks for the SDK's.
    ``healthy_share`` (``telemetry.sampling.healthy_share``) turns on the tail sampler
    (:mod:`controller.telemetry._tail`): every trace with trouble, that share of the rest.
    """
    resource = resource_from(env, service_name)
    hot = None if metric_readers else HotMetrics(resource=resource, scope=SCOPE)
    tallies = {signal: DropTally(signal=_TALLY[signal]) for signal in _SIGNALS}
    urls = {signal: otlp_endpoint(env, signal=signal) for signal in _SIGNALS}
    processors, gates, readers = list(span_processors), list[Gate](), list(metric_readers)
    if any(urls.values()):
        quiet_exporter_logs()
    tail_share = healthy_share if healthy_share is not None and healthy_share < 1.0 else None
    light: Light | None = None
    if traces_url := urls["traces"]:
        timeout = export_timeout_from(env, "traces", export_timeout)
        if not processors and not sdk_spans_wanted(env):
            light, gate = light_spans(
                traces_url, env, timeout, tallies["traces"], resource, capture_content, tail_share
            )
        else:
            processor, gate = otlp_spans(traces_url, env, timeout, tallies["traces"])
            processors.append(processor)
        gates.append(gate)
    otlp_readers: tuple[MetricReader, ...] = ()
    if metrics_url := urls["metrics"]:
        timeout = export_timeout_from(env, "metrics", export_timeout)
        reader, gate = otlp_metrics(metrics_url, env, timeout, tallies["metrics"], hot)
        otlp_readers = (reader,)
        gates.append(gate)
    registry = CollectorRegistry() if prometheus else None
    if registry is not None:
        if hot is not None:
            readers.append(HotPrometheusReader(hot, scope_info_enabled=False, registry=registry))
        else:
            readers.append(PrometheusMetricReader(scope_info_enabled=False, registry=registry))
    meter_provider = MeterProvider(
        metric_readers=[*readers, *otlp_readers],
        resource=resource,
        shutdown_on_exit=False,
        # Measurements are recorded after the request, from the listener's drain, so the
        # current span then is not the one that made them: exemplars would name wrong traces.
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    ids = PresetIdGenerator()
    sampler = sampler_from(env) if processors or light is not None else ALWAYS_OFF
    tail = None
    if processors and tail_share is not None:
        tail = TailSamplingProcessor(processors, healthy_share=tail_share)
        processors = [tail]
    parts = _Parts(
        service_name=service_name,
        tracer_provider=tracer_provider(resource, processors, ids, sampler),
        ids=ids,
        meter_provider=meter_provider,
        registry=registry,
        hot=hot,
        otlp_readers=otlp_readers,
        gates=tuple(gates),
        tallies=tuple(tallies.values()),
        exporting=frozenset(signal for signal, url in urls.items() if url),
        sampler=sampler,
        tracing=bool(processors) or light is not None,
        light=light,
        tail=tail,
    )
    return Telemetry(parts, capture_content=capture_content)
