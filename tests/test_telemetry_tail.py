"""Tail sampling: every trace with trouble is kept, and ``healthy_share`` of the rest.

The sampler alone (ordering, the share, bounds), then the whole gateway: the real Runtime
behind a GatewayServer with two FakeProviders, the official openai SDK as client, spans over
OTLP/HTTP to a sink on loopback, a healthy share of 0. Healthy requests
leave no trace at the sink; the request that failed over leaves its whole trace (SERVER,
route, both attempts). The SDK span path (in-process processors) keeps the same traces.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from controller.config import load_config
from controller.events import AttemptReason, Outcome, RouteOutcome
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from controller.telemetry import _tail, names
from controller.telemetry._tail import TailSampler, attempt_matters, route_matters
from controller.telemetry.setup import setup_telemetry
from tests.live_support import OtlpSink
from tests.telemetry_support import BASE, attempt, route


# --- the sampler alone --------------------------------------------------------------------------
def sampler(share: float) -> tuple[TailSampler[str], list[str]]:
    kept: list[str] = []
    return TailSampler(healthy_share=share, keep=kept.append), kept


def test_a_trace_waits_for_its_root_and_is_kept_whole_when_any_span_mattered() -> None:
    tail, kept = sampler(0.0)
    tail.offer(7, "attempt", matters=True, root=False)
    tail.offer(7, "route", matters=False, root=False)
    assert kept == []  # nothing decided before the root ends
    tail.offer(7, "server", matters=False, root=True)
    assert kept == ["attempt", "route", "server"]
    tail.offer(7, "late hedge loser", matters=False, root=False)
    assert kept[-1] == "late hedge loser"  # follows the decision


def test_healthy_traces_are_kept_by_share_of_trace_ids() -> None:
    none, kept_none = sampler(0.0)
    half, kept_half = sampler(0.5)
    every, kept_every = sampler(1.0)
    for trace_id in range(1, 4001):
        low_bits = trace_id * 0x9E3779B97F4A7C15 & (2**64 - 1)  # spread over the 64-bit range
        for tail in (none, half, every):
            tail.offer(low_bits, "server", matters=False, root=True)
    assert kept_none == []
    assert len(kept_every) == 4000
    assert 1800 < len(kept_half) < 2200
    assert half.sampled_out == 4000 - len(kept_half)


def test_waiting_traces_are_bounded_and_the_loss_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tail, "MAX_PENDING", 3)
    tail, kept = sampler(1.0)
    for trace_id in range(1, 6):  # five traces whose roots never end
        tail.offer(trace_id, f"child of {trace_id}", matters=True, root=False)
    assert tail.dropped == 2  # the two oldest went
    tail.offer(5, "root of 5", matters=False, root=True)
    assert kept == ["child of 5", "root of 5"]


def test_spans_the_tail_sampler_lets_go_count_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tail, "MAX_PENDING", 1)
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(
        env={}, span_processors=[SimpleSpanProcessor(spans)], healthy_share=0.5
    )
    for trace_id in (1, 2, 3):  # attempts whose route never ends
        telemetry.listener.on_attempt(attempt(trace_id=trace_id, parent_span_id=9))
    assert telemetry.dropped["spans"] == 2
    assert b'failover_telemetry_dropped_total{signal="spans"} 2.0' in telemetry.render_prometheus()
    telemetry.shutdown()


@pytest.mark.parametrize(
    ("changes", "matters"),
    [
        ({}, False),
        ({"reason": AttemptReason.PROBE}, False),
        ({"outcome": Outcome.FAULT, "error_type": "overloaded"}, True),
        ({"outcome": Outcome.CANCELLED, "error_type": "cancelled"}, True),
        ({"reason": AttemptReason.RETRY}, True),
        ({"reason": AttemptReason.FAILOVER}, True),
        ({"reason": AttemptReason.RESCUE}, True),
        ({"reason": AttemptReason.HEDGE}, True),
        ({"reason": AttemptReason.CONTEXT_FALLBACK}, True),
    ],
)
def test_which_attempts_make_a_trace_worth_keeping(changes: dict[str, Any], matters: bool) -> None:
    assert attempt_matters(attempt(**changes)) is matters


def test_a_continuation_makes_a_trace_worth_keeping() -> None:
    continuation = getattr(AttemptReason, "CONTINUATION", None)
    if continuation is None:
        pytest.skip("this tree has no continuation attempts yet")
    assert attempt_matters(attempt(reason=continuation))


@pytest.mark.parametrize(
    ("changes", "matters"),
    [
        ({}, False),
        ({"outcome": RouteOutcome.DEGRADED, "attempts": 2}, True),
        ({"outcome": RouteOutcome.FAILED}, True),
        ({"outcome": RouteOutcome.CANCELLED}, True),
        ({"panic": True}, True),
        ({"attempts": 2}, True),
    ],
)
def test_which_routes_make_a_trace_worth_keeping(changes: dict[str, Any], matters: bool) -> None:
    assert route_matters(route(**changes)) is matters


# --- the SDK span path --------------------------------------------------------------------------
def test_the_sdk_span_path_keeps_the_same_traces() -> None:
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(
        env={}, span_processors=[SimpleSpanProcessor(spans)], healthy_share=0.0
    )
    listener = telemetry.listener
    for failing in (False, True):
        with telemetry.tracer.start_as_current_span("POST", kind=SpanKind.SERVER) as server:
            context = server.get_span_context()
            ids = {"trace_id": context.trace_id, "parent_span_id": 99}
            outcome = {"outcome": Outcome.FAULT, "error_type": "overloaded"} if failing else {}
            listener.on_attempt(dataclasses.replace(BASE, **ids, **outcome))  # type: ignore[arg-type]
            listener.on_route(
                route(trace_id=context.trace_id, span_id=99, parent_span_id=context.span_id)
            )
    kept = spans.get_finished_spans()
    assert sorted(s.name for s in kept) == ["POST", "chat gpt-4o", names.SPAN_ROUTE]
    assert len({s.context.trace_id for s in kept if s.context is not None}) == 1
    sampled = telemetry.tail_sampler
    assert sampled is not None
    assert sampled.sampled_out == 3
    telemetry.shutdown()


# --- the whole gateway ----------------------------------------------------------------------------
CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: openai, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
aliases: {{gpt-4o: frontier}}
routing:
  retry: {{max_tries_per_provider: 1}}
state: {{path: "{state}"}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def gateway(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> AsyncIterator[tuple[Runtime, openai.AsyncOpenAI, OtlpSink]]:
    path = tmp_path / "failover.yaml"
    path.write_text(
        CONFIG.format(
            primary=primary.url("openai"), backup=backup.url("openai"), state=tmp_path / "s.json"
        )
    )
    async with OtlpSink() as sink:
        env = {
            "PRIMARY_KEY": "sk-primary",
            "BACKUP_KEY": "sk-backup",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.url + "/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # sent when the test flushes
        }
        # what `telemetry.sampling.healthy_share: 0` makes the runtime build
        telemetry = setup_telemetry(env=env, healthy_share=0.0)
        runtime = Runtime(load_config(path), config_path=path, env=env, telemetry=telemetry)
        await runtime.start()
        try:
            async with GatewayServer(create_app(runtime, settings=GatewaySettings()),
                                     host="127.0.0.1", port=0, grace=1.0) as server:  # fmt: skip
                client = openai.AsyncOpenAI(
                    base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10.0
                )
                async with client:
                    yield runtime, client, sink
        finally:
            await runtime.stop(grace=1.0)


async def test_only_the_trace_that_failed_over_reaches_the_collector(
    gateway: tuple[Runtime, openai.AsyncOpenAI, OtlpSink], primary: FakeProvider
) -> None:
    runtime, client, sink = gateway
    assert runtime.telemetry.light_spans
    for _ in range(5):
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    primary.set_fault(FaultMode.ERROR_503)
    answer = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert (answer.choices[0].message.content or "").startswith("Hello from backup")

    for _ in range(10):  # let the deferred telemetry drain run
        await asyncio.sleep(0)
    runtime.telemetry.listener.flush()
    assert await asyncio.to_thread(runtime.telemetry.force_flush, timeout=10)

    spans = sink.spans()
    assert len({s.trace_id for s in spans}) == 1  # the five healthy traces were left out
    by_name = sorted(s.name for s in spans)
    assert by_name == ["POST /v1/chat/completions", "chat alt", "chat big", names.SPAN_ROUTE]
    tail = runtime.telemetry.tail_sampler
    assert tail is not None
    assert tail.sampled_out == 5 * 3
