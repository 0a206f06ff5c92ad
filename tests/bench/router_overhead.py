"""Benchmark: router + adapter overhead per call against the fake provider over loopback.

    python -m tests.bench.router_overhead [--calls 3000] [--json]

Four ways of making the same non-streaming call, interleaved in blocks so drift hits all alike:

* ``direct``    — the adapter alone (HttpProvider.complete): the floor;
* ``router``    — through the Router, telemetry off (no-op tracer, no listeners);
* ``router+otel`` — through the Router with the full telemetry listener (a recording SDK tracer
  with a batch span processor, the metric instruments, a Prometheus reader);
* ``router+otel+signals`` — as above plus the controller's signal windows.

Reports p50/p99 per call and the overhead over ``direct``, at each provider latency asked for
(the fake runs in its own process, as a real provider would), plus the telemetry CPU per event
measured in isolation. Telemetry builds spans and metrics after the request has yielded, so the
latency columns show what a caller waits for and the CPU line what it costs in throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from controller._clock import SystemClock
from controller.events import AttemptEvent, AttemptReason, Outcome
from controller.model import Message, Request, Usage
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.routing.plan import Target, TierPlan
from controller.routing.router import Router
from controller.signals.window import SignalWindows
from controller.telemetry.setup import setup_telemetry

REQUEST = Request(messages=(Message(role="user", content="benchmark me"),), max_tokens=16)
Call = Callable[[], Awaitable[object]]


class NullExporter(SpanExporter):
    """Accepts spans and drops them: the processing cost without a network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(calls: dict[str, Call], total: int, block: int = 100) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, total // block)):
        for name, call in calls.items():
            for _ in range(block):
                start = time.perf_counter_ns()
                await call()
                samples[name].append((time.perf_counter_ns() - start) / 1000.0)
                # One loop iteration between requests, as when the next one arrives over the
                # network: deferred telemetry runs here for every variant alike.
                await asyncio.sleep(0)
    return samples


def listener_cost(events: int = 20_000) -> float:
    """µs of CPU per AttemptEvent in the telemetry listener, enqueue + drain (spans + metrics).

    This work runs after the request has yielded, but it is real CPU: it bounds throughput."""
    telemetry = setup_telemetry(span_processors=[BatchSpanProcessor(NullExporter())], env={})
    event = AttemptEvent(
        request_id="r",
        tier="frontier",
        provider="primary",
        provider_kind="openai",
        model="m",
        attempt=1,
        reason=AttemptReason.PRIMARY,
        stream=False,
        start=1.0,
        end=1.01,
        start_wall=time.time(),
        outcome=Outcome.SUCCESS,
        response_model="m",
        usage=Usage(input_tokens=5, output_tokens=9),
        server_address="127.0.0.1",
        server_port=8000,
        trace_id=0x1234,
        parent_span_id=0x5678,
    )
    listener = telemetry.listener
    start = time.perf_counter()
    for _ in range(events):
        listener.on_attempt(event)  # no running loop here: processed at once
    elapsed = time.perf_counter() - start
    telemetry.shutdown(timeout=2.0)
    return elapsed / events * 1e6


@contextlib.contextmanager
def fake_process(latency_ms: float) -> Iterator[str]:
    """The fake provider in its own process, as a real provider would be: the router's deferred
    work can then overlap the wait for the answer instead of delaying the fake's own handling."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "controller.providers.fake", "--name", "bench"),
            *("--latency-ms", str(latency_ms)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.rsplit(" ", 1)[-1].strip() + "/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def run(total: int, base_url: str) -> dict[str, object]:
    timeouts = Timeouts(total=10.0)

    def adapter() -> HttpProvider:
        return HttpProvider(name="primary", codec=codec_for("openai"), base_url=base_url)

    tier = {"t": TierPlan(name="t", targets=(Target(provider="primary", model="m"),))}
    direct = adapter()
    plain = Router(tiers=tier, providers={"primary": adapter()}, default_timeouts=timeouts)
    telemetry = setup_telemetry(span_processors=[BatchSpanProcessor(NullExporter())], env={})
    traced = Router(
        tiers=tier,
        providers={"primary": adapter()},
        default_timeouts=timeouts,
        listeners=[telemetry.listener],
    )
    windows = SignalWindows(clock=SystemClock())
    full = Router(
        tiers=tier,
        providers={"primary": adapter()},
        default_timeouts=timeouts,
        listeners=[telemetry.listener, windows],
    )
    calls: dict[str, Call] = {
        "direct": lambda: direct.complete(REQUEST, "m", timeouts),
        "router": lambda: plain.complete(REQUEST, tier="t"),
        "router+otel": lambda: traced.complete(REQUEST, tier="t"),
        "router+otel+signals": lambda: full.complete(REQUEST, tier="t"),
    }
    await measure(calls, 400)  # warm up connections and code paths
    samples = await measure(calls, total)
    for closer in (direct.close(), plain.aclose(), traced.aclose(), full.aclose()):
        await closer
    telemetry.shutdown(timeout=2.0)
    base = statistics.median(samples["direct"])
    rows = {
        name: {
            "p50_us": round(statistics.median(values), 1),
            "p99_us": round(percentile(values, 0.99), 1),
            "overhead_p50_us": round(statistics.median(values) - base, 1),
        }
        for name, values in samples.items()
    }
    return {"calls_per_variant": total, "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per variant (bounded)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="*",
        default=[0.0, 2.0],
        help="provider answer delays to measure at (0 = instant loopback fake)",
    )
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for latency in args.latency_ms:
        with fake_process(latency) as base_url:
            result[f"provider_latency_{latency:g}ms"] = asyncio.run(
                run(min(args.calls, 50_000), base_url)
            )
    result["listener_us_per_event"] = listener_cost()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, table in result.items():
        if not isinstance(table, dict):
            continue
        print(f"\n{key} ({table['calls_per_variant']} calls per variant)")
        print(f"{'variant':22} {'p50 µs':>9} {'p99 µs':>9} {'+p50 µs':>9}")
        for name, row in table["results"].items():
            p50, p99, extra = row["p50_us"], row["p99_us"], row["overhead_p50_us"]
            print(f"{name:22} {p50:9.1f} {p99:9.1f} {extra:9.1f}")
    cost = result["listener_us_per_event"]
    print(f"\ntelemetry CPU per attempt event (deferred, off the request path): {cost:.1f} µs")


if __name__ == "__main__":
    main()
