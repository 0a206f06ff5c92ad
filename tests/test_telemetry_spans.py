"""Telemetry: attempt spans (one CLIENT span per attempt, GenAI attributes, the failover chain)
and which spans carry an ERROR status.

Everything is read back from real backends: here OTel's in-memory span exporter behind a real
TelemetryListener (the harness in tests/telemetry_support.py). Data-plane metrics, Prometheus
names and OTLP export that never blocks are pinned by the other test_telemetry_* files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from controller.events import AttemptReason, Listeners, Outcome, RouteOutcome
from controller.gateway import GatewaySettings, create_app
from controller.telemetry import names
from tests.gateway_support import gateway_env
from tests.telemetry_support import (
    BASE,
    FAILED,
    WALL,
    Harness,
    attempt,
    make_harness,
    only_span,
    route,
)
from tests.telemetry_support import otel as otel  # a fixture: the alias re-exports it for pytest


# --- spans --------------------------------------------------------------------------------------
def test_successful_attempt_is_one_client_span_with_genai_attributes(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)

    span = only_span(otel)
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        names.GEN_AI_REQUEST_STREAM: False,
        names.GEN_AI_USAGE_INPUT_TOKENS: 120,
        names.GEN_AI_USAGE_OUTPUT_TOKENS: 30,
        names.SERVER_ADDRESS: "127.0.0.1",
        names.SERVER_PORT: 8443,
        names.FAILOVER_PROVIDER: "openai-primary",
        names.FAILOVER_ATTEMPT: 1,
        names.FAILOVER_REASON: "primary",
        names.FAILOVER_TIER: "frontier",
    }


def test_span_times_come_from_the_event(otel: Harness) -> None:
    otel.listener.on_attempt(BASE)

    span = only_span(otel)
    assert span.start_time == int(WALL * 1e9)
    assert span.end_time == int(WALL * 1e9) + 750_000_000


def test_streaming_attempt_records_time_to_first_chunk(otel: Harness) -> None:
    otel.listener.on_attempt(attempt(stream=True, time_to_first_chunk=0.25))

    attrs = only_span(otel).attributes or {}
    assert attrs[names.GEN_AI_REQUEST_STREAM] is True
    assert attrs[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.25


def test_failed_attempt_has_error_status_and_type_but_no_secret(otel: Harness) -> None:
    otel.listener.on_attempt(FAILED)

    span = only_span(otel)
    attrs = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "rate_limited (HTTP 429)"
    assert attrs[names.ERROR_TYPE] == "rate_limited"
    assert names.GEN_AI_RESPONSE_MODEL not in attrs
    assert names.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert "SECRET" not in repr(attrs) + str(span.status.description) + span.to_json()


def test_failure_without_error_type_falls_back_to_other(otel: Harness) -> None:
    otel.listener.on_attempt(attempt(outcome=Outcome.CANCELLED, usage=None))

    span = only_span(otel)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[names.ERROR_TYPE] == "_OTHER"


# A client that leaves is no error of the gateway's or the provider's: span-metrics error rates
# count ERROR spans, so a cut keeps error.type=cancelled as an attribute and leaves the status.
@pytest.mark.parametrize(
    ("outcome", "error_type", "status"),
    [
        (Outcome.CANCELLED, "cancelled", StatusCode.UNSET),  # the client left mid-attempt
        (Outcome.CANCELLED, "stream_too_long", StatusCode.ERROR),  # our cap cut the answer
        (Outcome.CALLER_ERROR, "bad_request", StatusCode.ERROR),
    ],
)
def test_only_an_attempt_its_client_left_keeps_an_unset_status(
    otel: Harness, outcome: Outcome, error_type: str, status: StatusCode
) -> None:
    otel.listener.on_attempt(attempt(outcome=outcome, error_type=error_type, usage=None))

    span = only_span(otel)
    assert span.status.status_code is status
    assert (span.attributes or {})[names.ERROR_TYPE] == error_type


@pytest.mark.parametrize(
    ("outcome", "served_by", "error_type", "status"),
    [
        (RouteOutcome.CANCELLED, "openai-primary", "cancelled", StatusCode.UNSET),  # mid-stream
        (RouteOutcome.CANCELLED, None, "cancelled", StatusCode.UNSET),  # while it waited
        (RouteOutcome.FAILED, None, "rate_limited", StatusCode.ERROR),
        (RouteOutcome.FAILED, "openai-primary", "stream_too_long", StatusCode.ERROR),
        (RouteOutcome.DEGRADED, "anthropic-backup", None, StatusCode.UNSET),
    ],
)
def test_a_route_span_is_an_error_only_when_the_route_failed(
    otel: Harness,
    outcome: RouteOutcome,
    served_by: str | None,
    error_type: str | None,
    status: StatusCode,
) -> None:
    otel.listener.on_route(route(outcome=outcome, served_by=served_by, error_type=error_type))

    span = only_span(otel)
    attrs = dict(span.attributes or {})
    assert span.name == names.SPAN_ROUTE
    assert span.status.status_code is status
    assert attrs[names.FAILOVER_OUTCOME] == outcome.value
    assert attrs.get(names.ERROR_TYPE) == error_type
    if status is StatusCode.ERROR:
        assert span.status.description == error_type


def test_a_route_span_names_the_front_and_the_rung_that_served(otel: Harness) -> None:
    otel.listener.on_route(route(outcome=RouteOutcome.DEGRADED, degraded="cache", front="gemini"))
    attrs = dict(only_span(otel).attributes or {})
    assert (attrs[names.FAILOVER_DEGRADED], attrs[names.FAILOVER_FRONT]) == ("cache", "gemini")
    otel.spans.clear()
    otel.listener.on_route(route())  # a request made in code, served by its own tier
    attrs = dict(only_span(otel).attributes or {})
    assert names.FAILOVER_DEGRADED not in attrs
    assert names.FAILOVER_FRONT not in attrs


def test_failover_chain_is_children_of_the_route_span(otel: Harness) -> None:
    tracer = otel.tracer_provider.get_tracer("router")
    listeners = Listeners([otel.listener])
    with tracer.start_as_current_span(names.SPAN_ROUTE) as route_span:
        ctx = route_span.get_span_context()
        ids: dict[str, Any] = {"trace_id": ctx.trace_id, "parent_span_id": ctx.span_id}
        listeners.attempt(dataclasses.replace(FAILED, **ids))
        listeners.attempt(
            attempt(
                attempt=2,
                provider="anthropic-backup",
                provider_kind="anthropic",
                model="claude-sonnet",
                reason=AttemptReason.FAILOVER,
                failover_from="openai-primary",
                failover_cause="rate_limited",
                **ids,
            )
        )

    first, second, parent = otel.finished()
    assert parent.name == names.SPAN_ROUTE
    assert [first.name, second.name] == ["chat gpt-4o", "chat claude-sonnet"]
    for child in (first, second):
        assert child.parent is not None
        assert child.parent.span_id == ctx.span_id
        assert child.context is not None
        assert child.context.trace_id == ctx.trace_id
    assert (second.attributes or {})[names.FAILOVER_REASON] == "failover"
    assert (second.attributes or {})[names.FAILOVER_ATTEMPT] == 2
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


def test_no_parent_when_tracing_was_off_even_inside_another_span(otel: Harness) -> None:
    with otel.tracer_provider.get_tracer("x").start_as_current_span("unrelated") as outer:
        otel.listener.on_attempt(BASE)
    attempt_span = otel.finished()[0]
    assert attempt_span.parent is None
    assert attempt_span.context is not None
    assert attempt_span.context.trace_id != outer.get_span_context().trace_id


def test_content_is_not_recorded_unless_opted_in() -> None:
    event = attempt(input_messages='[{"role":"user"}]', output_messages='[{"role":"assistant"}]')
    default, opted_in = make_harness(), make_harness(capture_content=True)

    default.listener.on_attempt(event)
    opted_in.listener.on_attempt(event)
    opted_in.listener.on_attempt(BASE)  # opted in, but the event carries no content

    assert names.GEN_AI_INPUT_MESSAGES not in (only_span(default).attributes or {})
    assert names.GEN_AI_OUTPUT_MESSAGES not in (only_span(default).attributes or {})
    with_content, without = opted_in.finished()
    assert (with_content.attributes or {})[names.GEN_AI_INPUT_MESSAGES] == '[{"role":"user"}]'
    assert (with_content.attributes or {})[names.GEN_AI_OUTPUT_MESSAGES] == (
        '[{"role":"assistant"}]'
    )
    assert names.GEN_AI_INPUT_MESSAGES not in (without.attributes or {})


# --- the gateway's SERVER span ------------------------------------------------------------------
async def test_the_front_starts_its_server_spans_in_route_wrappers() -> None:
    """Issue 17: the front's SERVER span starts in a wrapper around each route's handler, not
    in an aiohttp middleware (aiohttp looks the middleware chain up and calls it through a
    ``functools.partial`` on every request, and the middleware looked the route's template up
    again). Requests refused before any provider is asked still get their span, named by the
    route's template: a missing key (401), a wrong method (405), an unknown path (404)."""
    settings = GatewaySettings(api_keys=("client-key",))
    async with gateway_env(settings=settings) as env, aiohttp.ClientSession() as http:
        assert not create_app(env.backend, settings=settings).middlewares
        asked = [
            ("POST", "/v1/chat/completions", 401),
            ("GET", "/v1/chat/completions", 405),
            ("GET", "/no/such/path", 404),
            ("GET", "/healthz", 200),
        ]
        for method, path, status in asked:
            async with http.request(method, env.url + path) as reply:
                assert reply.status == status
        spans = {s.name: s for s in env.exporter.get_finished_spans()}
    expected = {
        "POST /v1/chat/completions": ("/v1/chat/completions", 401),
        "GET /v1/chat/completions": ("/v1/chat/completions", 405),
        "GET /{unknown}": ("/no/such/path", 404),
        "GET /healthz": ("/healthz", 200),
    }
    for name, (path, status) in expected.items():
        span = spans[name]
        assert span.kind is SpanKind.SERVER
        attributes = dict(span.attributes or {})
        assert attributes["url.path"] == path
        assert attributes["http.response.status_code"] == status
