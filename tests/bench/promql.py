"""Benchmark: what the PromQL tripwires cost the gateway's event loop.

    python -m tests.bench.promql [--rounds 300] [--rules 1 10] [--json]

A real Prometheus (Debian 2.42) on loopback scrapes a small exporter every second; the
evaluator (:class:`~controller.control._promql_eval.PromqlTripwires`, as ``failover serve`` runs
it) evaluates ``--rules`` rules per round, all at once, ``--rounds`` times back to back. Per round:
the wall time until every answer is in, and this process's CPU time (``time.process_time``: the
loop's share; Prometheus's own work is in its process and not counted). The evaluator never runs
on the request path; what it takes from the loop is what requests share it with, every
``interval_seconds`` (15 s by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from controller._clock import SystemClock
from controller.control._promql_eval import PromqlTripwires
from controller.control.promql import PromqlConfig, PromqlRule, RuleState
from tests.promql_support import GAUGE, Exporter, prometheus_sees, start_prometheus


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, rules: int, rounds: int) -> dict[str, Any]:
    cfg = PromqlConfig(
        url=url,
        timeout_seconds=5,
        rules=tuple(
            PromqlRule(name=f"r{i}", target="primary", expr=f'{GAUGE}{{provider="primary"}} > {i}')
            for i in range(rules)
        ),
    )
    wires = PromqlTripwires(cfg, url=url, clock=SystemClock())
    walls: list[float] = []
    cpus: list[float] = []
    try:
        await wires.evaluate()  # the session's first connection is not what a round costs
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            signals = await wires.evaluate()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert all(s.state is not RuleState.UNKNOWN for s in signals), signals
    finally:
        await wires.aclose()
    return {
        "rules": rules,
        "rounds": rounds,
        "wall_ms_p50": round(pct(walls, 0.5) * 1000, 2),
        "wall_ms_p99": round(pct(walls, 0.99) * 1000, 2),
        "cpu_ms_per_round_mean": round(statistics.fmean(cpus) * 1000, 3),
        "cpu_us_per_rule_mean": round(statistics.fmean(cpus) / rules * 1e6, 1),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            exporter = await stack.enter_async_context(Exporter())
            exporter.value = 5.0
            target = f"127.0.0.1:{exporter.port}"
            prom = await start_prometheus(stack, Path(tmp), session, target)
            await prometheus_sees(prom, GAUGE)
            return [await measure(prom.url, n, args.rounds) for n in args.rules]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--rules", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"{r['rules']:>3} rule(s) x {r['rounds']} rounds: wall p50 {r['wall_ms_p50']} ms, "
                f"p99 {r['wall_ms_p99']} ms; loop CPU {r['cpu_ms_per_round_mean']} ms a round "
                f"({r['cpu_us_per_rule_mean']} us a rule)"
            )
