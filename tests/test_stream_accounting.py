"""How cut requests are counted, and how long a flowing stream may run.

A client that leaves (mid-stream, or while its request waits for a provider) ends the request
as ``cancelled``: ``failed`` keeps meaning the gateway could not serve, and the fault-rate
queries of the dashboard and the alert rules leave such attempts out as the tripwire does.

A stream is bounded by ``timeouts.total`` (and by the request's deadline) only until its first
chunk; after it by ``idle`` and ``stream_total``. A stream cut at ``stream_total`` ends with an
in-stream error but is not counted against the provider. The long streams come from a real
OpenAI-format server on loopback that sends one word every ``GAP`` seconds; no clock can be
faked there (the limits are the adapter's asyncio timeouts), so the limits are small instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller._clock import FakeClock
from controller._errors import (
    AllProvidersFailed,
    CallerError,
    ConfigError,
    DeadlineExceeded,
    ProviderError,
    ProviderTimeout,
    StreamInterrupted,
    StreamTooLong,
)
from controller.config import parse_config
from controller.events import Outcome, RouteOutcome
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import FinishReason, Message, Request, StreamChunk, Usage
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._records import CANCELLED
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.runtime import Runtime
from controller.signals.window import SignalWindows
from controller.telemetry import names
from controller.telemetry.setup import setup_telemetry
from controller.wire.openai import OpenAIServerCodec
from tests.conftest import Recorder, drain
from tests.gateway_support import GatewayEnv, GatewayTestBackend, hello, wait_for
from tests.gateway_test_support import CHAT
from tests.gateway_test_support import env as env  # fixtures: the aliases re-export them for pytest
from tests.gateway_test_support import http as http
from tests.telemetry_support import samples

ROOT = Path(__file__).resolve().parents[1]
STREAM = Request(messages=(Message(role="user", content="hello"),), stream=True)
GAP = 0.1  # seconds between the slow server's words
# total is shorter than every healthy stream below; idle is five gaps; stream_total cuts the
# long one about halfway.
LIMITS = Timeouts(
    connect=1.0, first_token=0.3, idle=0.5, total=0.3, stream_total=1.2, terminator_grace=0.1
)
HEALTHY_WORDS = 8  # ~0.8 s: longer than total and than a short deadline, shorter than the cap
RUNAWAY_WORDS = 24  # ~2.4 s: twice stream_total


# ------------------------------------------------------------------ a long, healthy generation
class SlowStream:
    """An OpenAI-format provider on 127.0.0.1 that streams ``words`` words, ``GAP`` s apart."""

    def __init__(self, words: int) -> None:
        self._words = words
        self._codec = OpenAIServerCodec()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> SlowStream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, http: web.Request) -> web.StreamResponse:
        model, _ = self._codec.parse_request(json.loads(await http.read()), None)
        encoder = self._codec.stream_encoder(id="slow-1", model=model)
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(http)
        with contextlib.suppress(ConnectionResetError):  # the gateway cut it: nothing to do
            await out.write(encoder.start())
            for index in range(self._words):
                await out.write(encoder.encode(StreamChunk(text=f"w{index} ")))
                await asyncio.sleep(GAP)  # the provider's pace: what the limits are tested on
            done = StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(3, self._words))
            await out.write(encoder.encode(done) + encoder.end())
            await out.write_eof()
        return out


def slow_router(
    server: SlowStream, recorder: Recorder, *, limits: Timeouts = LIMITS, deadline: float = 5.0
) -> tuple[Router, SignalWindows]:
    """A real router over one HTTP adapter pointed at ``server``, with a real signal window."""
    windows = SignalWindows(clock=FakeClock())
    provider = HttpProvider(name="slow", codec=codec_for("openai"), base_url=server.url)
    tier = TierPlan(name="long", targets=(Target(provider="slow", model="m"),))
    router = Router(
        tiers={"long": tier},
        providers={"slow": provider},
        listeners=[recorder, windows],
        retry=never_retry,
        default_timeouts=limits,
        deadline=deadline,
        rng=random.Random(7),
    )
    return router, windows


@pytest.fixture
async def healthy() -> AsyncIterator[SlowStream]:
    async with SlowStream(HEALTHY_WORDS) as server:
        yield server


@pytest.fixture
async def runaway() -> AsyncIterator[SlowStream]:
    async with SlowStream(RUNAWAY_WORDS) as server:
        yield server


# ------------------------------------------------------------------ cancelled, not failed
async def test_a_client_that_reads_two_chunks_and_leaves_is_cancelled_not_failed(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.STALL_STREAM, after_chunks=2))  # then silence
    async with http.post(env.url + CHAT, json=hello(stream=True)) as answer:
        for _ in range(3):  # the role chunk and two words
            await asyncio.wait_for(answer.content.readuntil(b"\n\n"), 5.0)
    await wait_for(lambda: bool(env.recorder.routes))  # leaving the block closed the connection
    (route,) = env.recorder.routes
    assert (route.outcome, route.served_by, route.error_type) == (
        RouteOutcome.CANCELLED,
        "primary-openai",
        CANCELLED,
    )
    (attempt,) = env.recorder.attempts
    assert (attempt.outcome, attempt.error_type) == (Outcome.CANCELLED, CANCELLED)
    async with http.get(env.url + "/metrics") as got:
        requests = {
            labels["outcome"]: value
            for name, labels, value in samples(await got.read())
            if name == names.PROM_REQUESTS
        }
    assert requests == {"cancelled": 1}
    await wait_for(lambda: len(env.exporter.get_finished_spans()) >= 2)  # attempt + route
    [route_span] = [s for s in env.exporter.get_finished_spans() if s.name == names.SPAN_ROUTE]
    assert (route_span.attributes or {})[names.FAILOVER_OUTCOME] == "cancelled"
    assert_prometheus_reads_cancelled(env.recorder)


def assert_prometheus_reads_cancelled(recorder: Recorder) -> None:
    """The recorded events, through real Telemetry, as the gateway's /metrics shows them: the
    request is ``cancelled`` and the attempt's error_type is one the fault queries leave out."""
    telemetry = setup_telemetry(env={})
    try:
        for attempt in recorder.attempts:
            telemetry.listener.on_attempt(attempt)
        for route in recorder.routes:
            telemetry.listener.on_route(route)
        telemetry.listener.flush()
        found = samples(telemetry.render_prometheus())
    finally:
        telemetry.shutdown(timeout=2)
    outcomes = {labels["outcome"] for name, labels, _ in found if name == names.PROM_REQUESTS}
    assert outcomes == {"cancelled"}
    duration_count = names.PROM_OPERATION_DURATION + "_count"
    errors = {labels.get("error_type") for name, labels, _ in found if name == duration_count}
    assert errors == {CANCELLED}
    assert CANCELLED in names.NON_FAULT_ERROR_TYPES


async def test_a_client_that_leaves_while_its_request_waits_is_cancelled(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    env.primary.set_fault(Fault(mode=FaultMode.HANG))
    call = asyncio.ensure_future(http.post(env.url + CHAT, json=hello()))
    await wait_for(lambda: env.primary.requests == 1)
    call.cancel()  # the client gives up: its connection closes, the handler is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await wait_for(lambda: bool(env.recorder.routes))
    (route,) = env.recorder.routes
    assert (route.outcome, route.served_by, route.error_type) == (
        RouteOutcome.CANCELLED,
        None,
        CANCELLED,
    )
    assert env.recorder.attempts[-1].outcome is Outcome.CANCELLED
    assert_prometheus_reads_cancelled(env.recorder)


@pytest.mark.parametrize("source", ["alerts/rules.yml", "dashboards/failover.json"])
def test_fault_queries_leave_out_exactly_the_non_fault_error_types(source: str) -> None:
    """Every ``error_type!~"..."`` in the fault-rate queries names what the tripwire does not
    count, no more and no less; and that list is what the error tree says is not a fault. Each
    fault rate divides as the tripwire does, by successes + faults: its denominator leaves out
    the same error types (on every series it reads) and keeps the successes."""
    text = (ROOT / source).read_text()
    if source.endswith(".yml"):
        groups = yaml.safe_load(text)["groups"]
        exprs = [r["expr"] for g in groups for r in g["rules"]]
        candidates = _inlined_records(groups)
    else:
        exprs = [t["expr"] for p in json.loads(text)["panels"] for t in p.get("targets", [])]
        candidates = exprs
    excluded = [m for e in exprs for m in re.findall(_EXCLUDED, e)]
    assert excluded, f"{source}: no fault-rate query found"
    for regex in excluded:
        assert set(regex.split("|")) == set(names.NON_FAULT_ERROR_TYPES), source
    tree = [c for c in _classes(ProviderError)[1:] if c.__module__ == ProviderError.__module__]
    not_faults = {c.error_type for c in tree if not c.counts_as_fault} | {CANCELLED}
    assert _error_types(CallerError) | {StreamTooLong.error_type} <= not_faults
    assert set(names.NON_FAULT_ERROR_TYPES) == not_faults
    ratios = [r for e in candidates if _FAULTS in e and (r := _split_ratio(e)) is not None]
    assert ratios, f"{source}: no fault-rate ratio found"
    for numerator, denominator in ratios:
        assert _FAULTS in numerator, source
        assert _FAULTS not in denominator, f"{source}: the denominator must keep the successes"
        selectors = re.findall(r"\{[^}]*\}", denominator)
        assert selectors, source
        assert all(re.search(_EXCLUDED, s) for s in selectors), f"{source}: {denominator}"


_EXCLUDED = r'error_type!~"([^"]*)"'
_FAULTS = 'error_type!=""'  # the numerator's mark: attempts that failed at all


def _inlined_records(groups: list[dict[str, Any]]) -> list[str]:
    """Every recording rule's expression, with the records it reads written out in full."""
    inlined: dict[str, str] = {}
    for rule in (r for g in groups for r in g["rules"] if "record" in r):
        expr = rule["expr"]
        for name, body in inlined.items():
            expr = re.sub(rf"(?<![\w:]){re.escape(name)}(?![\w:])", f"({body})", expr)
        inlined[rule["record"]] = expr
    return list(inlined.values())


def _split_ratio(expr: str) -> tuple[str, str] | None:
    """``(numerator, denominator)`` when ``expr`` is a division at its top level, else None."""
    depth, quoted = 0, False
    for index, char in enumerate(expr):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and char == "/":
            return expr[:index], expr[index + 1 :]
    return None


def _error_types(cls: type[CallerError]) -> set[str]:
    """The error_type of ``cls`` and of every subclass of it."""
    return {cls.error_type}.union(*(_error_types(c) for c in cls.__subclasses__()))


def _classes(cls: type[ProviderError]) -> list[type[ProviderError]]:
    """``cls`` and every subclass of it, ``cls`` first."""
    return [cls, *(c for sub in cls.__subclasses__() for c in _classes(sub))]


# ------------------------------------------------------------------ a stream longer than total
@pytest.mark.parametrize(
    ("total", "deadline"),
    [(0.3, 5.0), (5.0, 0.3)],
    ids=["provider-total-0.3s", "request-deadline-0.3s"],
)
async def test_a_healthy_stream_outlives_total_and_the_deadline(
    healthy: SlowStream, recorder: Recorder, total: float, deadline: float
) -> None:
    limits = Timeouts(
        connect=1.0, first_token=5.0, idle=0.5, total=total, stream_total=1.2, terminator_grace=0.1
    )
    router, windows = slow_router(healthy, recorder, limits=limits, deadline=deadline)
    began = time.monotonic()
    stream = await router.stream(STREAM, tier="long")
    chunks = [c async for c in stream]
    took = time.monotonic() - began
    await router.aclose()
    assert "".join(c.text for c in chunks) == "".join(f"w{i} " for i in range(HEALTHY_WORDS))
    assert [c.finish_reason for c in chunks if c.finish_reason] == [FinishReason.STOP]
    assert took > min(total, deadline) + 0.2  # it really ran past the shorter limit
    assert recorder.attempts[-1].outcome is Outcome.SUCCESS
    assert recorder.routes[-1].outcome is RouteOutcome.SERVED
    assert windows.snapshot().provider("slow").faults == 0


async def test_a_stream_past_stream_total_is_cut_without_counting_a_fault(
    runaway: SlowStream, recorder: Recorder
) -> None:
    router, windows = slow_router(runaway, recorder)
    began = time.monotonic()
    stream = await router.stream(STREAM, tier="long")
    chunks: list[StreamChunk] = []
    with pytest.raises(StreamInterrupted) as caught:
        await drain(stream, chunks)
    took = time.monotonic() - began
    await router.aclose()
    assert LIMITS.stream_total - 0.05 <= took < LIMITS.stream_total + 0.6
    assert 3 < len(chunks) < RUNAWAY_WORDS
    assert all(c.finish_reason is None for c in chunks)  # never a truncated "complete" answer
    assert isinstance(caught.value.cause, StreamTooLong)
    assert "stream_total" in caught.value.cause.message
    attempt, route = recorder.attempts[-1], recorder.routes[-1]
    assert (attempt.outcome, attempt.error_type) == (Outcome.CANCELLED, "stream_too_long")
    assert (route.outcome, route.error_type) == (RouteOutcome.FAILED, "stream_too_long")
    signals = windows.snapshot().provider("slow")
    assert (signals.faults, signals.cancelled) == (0, 1)


async def test_an_sdk_reading_a_stream_cut_at_stream_total_raises(runaway: SlowStream) -> None:
    recorder = Recorder()
    router, _ = slow_router(runaway, recorder)
    backend = GatewayTestBackend(
        router=router,
        tracer=TracerProvider().get_tracer("tests"),
        meter=MeterProvider().get_meter("tests"),
        recorder=recorder,
    )
    texts: list[str] = []
    async with GatewayServer(
        create_app(backend, settings=GatewaySettings()), host="127.0.0.1", port=0, grace=1.0
    ) as server:
        base = f"{server.url}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as oai:
            stream = await oai.chat.completions.create(
                model="long", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            with pytest.raises(openai.APIError, match="stream_total"):
                await _read_texts(stream, texts)
    await router.aclose()
    assert 3 < len("".join(texts).split()) < RUNAWAY_WORDS


async def _read_texts(stream: openai.AsyncStream[Any], into: list[str]) -> None:
    """Collect an OpenAI SDK stream's text deltas into ``into`` (kept when it then raises)."""
    async for chunk in stream:
        into.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - kept on failure


# ------------------------------------------------------------------ what still bounds a stream
async def test_total_still_bounds_the_wait_for_the_first_chunk(primary: FakeProvider) -> None:
    primary.set_fault(Fault(mode=FaultMode.SLOW_FIRST_TOKEN, delay=2.0))
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=primary.url("openai"))
    began = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await drain(provider.stream(STREAM, "m", Timeouts(first_token=5.0, total=0.3)), [])
    await provider.close()
    assert caught.value.phase == "total"
    assert time.monotonic() - began < 1.5


async def test_the_deadline_still_bounds_the_wait_for_the_first_chunk(
    primary: FakeProvider, recorder: Recorder
) -> None:
    primary.set_fault(Fault(mode=FaultMode.SLOW_FIRST_TOKEN, delay=2.0))
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url=primary.url("openai"))
    router = Router(
        tiers={"t": TierPlan(name="t", targets=(Target(provider="p", model="m"),))},
        providers={"p": provider},
        listeners=[recorder],
        retry=never_retry,
        deadline=0.3,
    )
    began = time.monotonic()
    with pytest.raises((AllProvidersFailed, DeadlineExceeded)):
        await router.stream(STREAM, tier="t")
    await router.aclose()
    assert time.monotonic() - began < 1.5
    assert recorder.attempts[-1].error_type == "timeout"  # waiting too long is a fault
    assert recorder.routes[-1].outcome is RouteOutcome.FAILED


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (1000.0, Timeouts()),
        (
            2.0,
            Timeouts(connect=2.0, first_token=2.0, idle=30.0, total=2.0, stream_total=600.0),
        ),
        (-1.0, Timeouts(connect=0.0, pool=0.0, first_token=0.0, total=0.0)),
    ],
)
def test_the_deadline_cuts_the_waits_for_an_answer_not_a_flowing_stream(
    remaining: float, expected: Timeouts
) -> None:
    assert Timeouts().bounded(remaining) == expected


# ------------------------------------------------------------------ the config key
CONFIG = """\
providers:
  a:
    kind: openai
    timeouts: {timeouts}
tiers:
  t:
    targets: [{{provider: a, model: m}}]
"""


def test_stream_total_is_configured_per_provider_and_reaches_the_limits() -> None:
    default = parse_config(CONFIG.format(timeouts="{}")).providers["a"].timeouts
    assert default.limits() == Timeouts()
    assert default.limits().stream_total == 600.0
    text = CONFIG.format(timeouts="{total: 60, stream_total: 1800}")
    limits = parse_config(text).providers["a"].timeouts.limits()
    assert (limits.total, limits.stream_total) == (60.0, 1800.0)


async def test_the_runtime_gives_the_router_the_configured_stream_total(tmp_path: Path) -> None:
    text = CONFIG.format(timeouts="{stream_total: 1800}")
    text += f"state: {{path: {tmp_path / 'state.json'}}}\n"
    runtime = Runtime(parse_config(text), env={})  # what `failover serve` builds
    try:
        assert runtime.router.timeouts_for("a").stream_total == 1800.0
    finally:
        await runtime.stop(grace=0.5)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_stream_total_must_be_positive(value: str) -> None:
    text = CONFIG.format(timeouts=f"{{stream_total: {value}}}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.yaml")
    key = "f.yaml:4: providers.a.timeouts.stream_total: "
    assert str(caught.value) == key + "Input should be greater than 0"
