"""Head sampling follows the standard OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG variables."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller.telemetry.setup import Telemetry, setup_telemetry


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
