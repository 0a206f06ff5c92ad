"""Router + telemetry end to end over loopback: spans and metrics read back in memory."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from controller.model import Message, Request
from controller.providers import Timeouts
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing.plan import Target, TierPlan
from controller.routing.router import Router
from controller.telemetry import names
from controller.telemetry.setup import Telemetry, setup_telemetry
from tests.conftest import adapter

HELLO = Request(messages=(Message(role="user", content="hello"),))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> Iterator[Telemetry]:
    t = setup_telemetry(
        span_processors=[SimpleSpanProcessor(spans)], metric_readers=[reader], env={}
    )
    yield t
    t.shutdown(timeout=2.0)


def routed(primary: FakeProvider, backup: FakeProvider, telemetry: Telemetry) -> Router:
    p, b = adapter(primary, "openai", "primary"), adapter(backup, "anthropic", "backup")
    targets = (Target(provider="primary", model="big"), Target(provider="backup", model="alt"))
    return Router(
        tiers={"frontier": TierPlan(name="frontier", targets=targets)},
        providers={"primary": p, "backup": b},
        listeners=[telemetry.listener],
        default_timeouts=Timeouts(first_token=0.5, idle=0.5, total=1.0),
        rng=random.Random(1),
    )


def by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def points(data: MetricsData | None, name: str) -> list[dict[str, object]]:
    assert data is not None
    found: list[dict[str, object]] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [dict(p.attributes or {}) for p in metric.data.data_points]
    return found


async def test_failover_chain_as_spans(
    primary: FakeProvider,
    backup: FakeProvider,
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
) -> None:
    router = routed(primary, backup, telemetry)
    primary.set_fault(FaultMode.ERROR_500)
    with telemetry.tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER):
        response = await router.complete(HELLO, tier="frontier")
    await asyncio.sleep(0)  # the drain runs once the request has yielded
    telemetry.listener.flush()
    await router.aclose()
    assert response.provider == "backup"
    found = by_name(spans)
    (server,) = found["POST /v1/chat/completions"]
    (route,) = found[names.SPAN_ROUTE]
    attempts = found["chat big"] + found["chat alt"]
    assert route.kind is SpanKind.INTERNAL
    assert route.parent is not None
    assert route.parent.span_id == server.context.span_id
    assert route.context.trace_id == server.context.trace_id
    assert route.attributes is not None
    assert route.attributes[names.FAILOVER_OUTCOME] == "degraded"
    assert route.attributes[names.FAILOVER_SERVED_BY] == "backup"
    assert route.attributes[names.FAILOVER_ATTEMPTS] == len(attempts)
    for span in attempts:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == route.context.span_id
    failed = [s for s in attempts if s.status.status_code is StatusCode.ERROR]
    (served,) = [s for s in attempts if s.status.status_code is not StatusCode.ERROR]
    assert failed
    for span in failed:
        assert span.attributes is not None
        assert span.attributes[names.ERROR_TYPE] == "overloaded"
        assert span.attributes[names.GEN_AI_PROVIDER_NAME] == "openai"
    attrs = served.attributes
    assert attrs is not None
    assert attrs[names.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[names.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[names.GEN_AI_REQUEST_MODEL] == "alt"
    assert attrs[names.GEN_AI_RESPONSE_MODEL] == "alt"
    assert attrs[names.FAILOVER_REASON] == "failover"
    assert attrs[names.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[names.SERVER_PORT] == backup.port
    assert int(str(attrs[names.GEN_AI_USAGE_OUTPUT_TOKENS])) > 0
    assert names.GEN_AI_INPUT_MESSAGES not in attrs  # content only on opt-in


async def test_failover_metrics(
    primary: FakeProvider,
    backup: FakeProvider,
    telemetry: Telemetry,
    reader: InMemoryMetricReader,
) -> None:
    router = routed(primary, backup, telemetry)
    primary.set_fault(FaultMode.AUTH)
    await router.complete(HELLO, tier="frontier")
    primary.clear_fault()
    await router.complete(HELLO, tier="frontier")
    telemetry.listener.flush()
    await router.aclose()
    data = reader.get_metrics_data()
    (failover,) = points(data, names.METRIC_FAILOVERS)
    assert failover == {"from": "primary", "to": "backup", "reason": "auth"}
    requests = points(data, names.METRIC_REQUESTS)
    assert {
        "tier": "frontier",
        "outcome": "degraded",
        "served_by": "backup",
        "front": "none",
    } in requests
    assert {
        "tier": "frontier",
        "outcome": "served",
        "served_by": "primary",
        "front": "none",
    } in requests
    durations = points(data, names.METRIC_OPERATION_DURATION)
    errors = [d for d in durations if d.get(names.ERROR_TYPE) == "auth"]
    assert errors
    assert errors[0][names.FAILOVER_PROVIDER] == "primary"
    text = telemetry.render_prometheus().decode()
    assert 'failover_failovers_total{from="primary",reason="auth",to="backup"}' in text
