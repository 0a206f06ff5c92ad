"""Head sampling follows the standard OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG variables."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller.model import Message, Request
from controller.providers.fake import FakeProvider
from controller.routing.plan import Target, TierPlan
from controller.routing.router import Router
from controller.telemetry import names
from controller.telemetry.setup import Telemetry, setup_telemetry
from tests.conftest import adapter

HELLO = Request(messages=(Message(role="user", content="hello"),))


def traced(env: dict[str, str]) -> tuple[Telemetry, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(env=env, span_processors=[SimpleSpanProcessor(spans)])
    return telemetry, spans


def kept(env: dict[str, str], roots: int = 200) -> int:
    """How many of ``roots`` root spans were recorded and exported."""
    telemetry, spans = traced(env)
    for _ in range(roots):
        with telemetry.tracer.start_as_current_span("request"):
            pass
    telemetry.shutdown()
    return len(spans.get_finished_spans())


def test_every_trace_is_kept_by_default() -> None:
    assert kept({}) == 200


@pytest.mark.parametrize(
    ("sampler", "arg", "expected"),
    [
        ("always_off", "", 0),
        ("parentbased_always_off", "", 0),
        ("traceidratio", "0", 0),
        ("parentbased_traceidratio", "0", 0),
        ("parentbased_traceidratio", "1", 200),
        ("ALWAYS_ON", "", 200),
    ],
)
def test_the_standard_samplers_are_honoured(sampler: str, arg: str, expected: int) -> None:
    assert kept({"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg}) == expected


def test_a_ratio_keeps_about_that_share() -> None:
    share = kept({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, 2000)
    assert 300 < share < 700  # 500 expected; trace ids are random


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
            "OTEL_TRACES_SAMPLER_ARG='lots'",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG='1.5'",
        ),
    ],
)
def test_a_bad_value_is_logged_and_every_trace_kept(
    env: dict[str, str], warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.telemetry.setup"):
        assert kept(env) == 200
    assert warning in caplog.text


def router_for(primary: FakeProvider, telemetry: Telemetry) -> Router:
    provider = adapter(primary, "openai", "primary")
    tier = TierPlan(name="t", targets=(Target(provider="primary", model="m"),))
    return Router(
        tiers={"t": tier},
        providers={"primary": provider},
        listeners=[telemetry.listener],
        sample_root=telemetry.sample_root,
    )


async def routed_spans(
    primary: FakeProvider, env: dict[str, str], requests: int
) -> dict[str, list[ReadableSpan]]:
    """Spans of ``requests`` calls a router starts itself (no current span, as for probes)."""
    telemetry, spans = traced(env)
    router = router_for(primary, telemetry)
    for _ in range(requests):
        await router.complete(HELLO, tier="t")
    await router.aclose()
    telemetry.listener.flush()
    telemetry.shutdown()
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


async def test_a_trace_the_router_starts_is_dropped_whole(primary: FakeProvider) -> None:
    assert await routed_spans(primary, {"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 10) == {}


async def test_attempt_spans_follow_their_route_span_under_a_ratio(primary: FakeProvider) -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    found = await routed_spans(primary, env, 60)
    routes = found.get(names.SPAN_ROUTE, [])
    attempts = [s for name, kept in found.items() if name != names.SPAN_ROUTE for s in kept]
    assert 0 < len(routes) < 60  # some traces kept, some not
    assert len(attempts) == len(routes)  # one attempt each, kept exactly with its route
    kept_routes = {(r.context.trace_id, r.context.span_id) for r in routes if r.context}
    assert {(a.context.trace_id, a.parent.span_id) for a in attempts if a.context and a.parent} == (
        kept_routes
    )
