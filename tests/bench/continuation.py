"""Benchmark: a stream cut or stalled after it reached the client, and the rest of its answer.

    python -m tests.bench.continuation [--drills 10] [--faults cut_stream stall_stream]
                                       [--after 20] [--pace-ms 20] [--idle 2] [--json]

Also run by ``python -m tests.bench.detection --continuation N``.

One in-process :class:`~controller.runtime.Runtime` (real router and providers) in front of two
fake providers in their own processes that give the same 60-word answer, one chunk per word,
``--pace-ms`` apart: ``primary`` (OpenAI-compatible) then ``backup`` (Anthropic), both taking a
prefill (their kinds' default). Each drill streams one request through the router while the
primary cuts (``cut_stream``: drops the connection) or stalls (``stall_stream``: stops sending,
the socket open) after ``--after`` chunks. Reported per fault, p50/p99/max over the drills:

* **gap**: from the last chunk before the fault to the first chunk of the continuation (for a
  stall this includes the provider's ``idle`` limit, ``--idle`` seconds here; 30 s by default);
* **rest**: from the last chunk before the fault to the end of the answer;
* whole: how many drills ended with the whole answer, word for word, once.

The tripwire is set not to trip (``min_requests`` and ``consecutive_failures`` 1000): every
drill meets the cut primary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from controller.config import load_config
from controller.model import Message, Request
from controller.runtime import Runtime
from tests.bench._drill_support import fake_process, set_fault, summary

WORDS = 60
REPLY = " ".join(f"word{i}" for i in range(1, WORDS + 1)) + "."
REQUEST = Request(messages=(Message(role="user", content="sixty words please"),), stream=True)
TIER = "frontier"
FAULTS = ("cut_stream", "stall_stream")
CONFIG = """\
providers:
  primary:
    kind: openai_compatible
    base_url: "{primary}/v1"
    auth: none
    timeouts: {{idle: {idle}}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  {tier}:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
routing: {{deadline_seconds: 60}}
controller: {{min_requests: 1000, consecutive_failures: 1000}}
state: {{path: "{state}"}}
"""


@dataclass(frozen=True, slots=True)
class Drill:
    fault: str
    gap: float | None  # None: no chunk came after the fault
    rest: float | None
    whole: bool


async def drill(rt: Runtime, fault: str, after: int) -> Drill:
    stream = await rt.router.stream(REQUEST, tier=TIER)
    times: list[float] = []
    text: list[str] = []
    try:
        async for chunk in stream:
            if chunk.text:
                times.append(time.monotonic())
                text.append(chunk.text)
    except Exception:  # reported as not whole
        return Drill(fault, None, None, whole=False)
    end = time.monotonic()
    if len(times) <= after:
        return Drill(fault, None, None, whole=False)
    last_before = times[after - 1]
    return Drill(fault, times[after] - last_before, end - last_before, "".join(text) == REPLY)


async def run(
    drills: int, faults: tuple[str, ...], *, after: int, pace_ms: float, idle: float
) -> dict[str, Any]:
    async with (
        fake_process("primary", latency_ms=0, reply=REPLY, pace_ms=pace_ms) as primary,
        fake_process("backup", latency_ms=0, reply=REPLY, pace_ms=pace_ms) as backup,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "failover.yaml"
            path.write_text(
                CONFIG.format(
                    primary=primary,
                    backup=backup,
                    tier=TIER,
                    idle=idle,
                    state=Path(tmp) / "state.json",
                )
            )
            rt = Runtime(load_config(path), config_path=path, env={"BACKUP_KEY": "sk-bench"})
            await rt.start()
            results: list[Drill] = []
            try:
                async with aiohttp.ClientSession() as session:
                    for fault in faults:
                        for _ in range(drills):
                            await set_fault(session, primary, fault, after_chunks=after, count=1)
                            results.append(await drill(rt, fault, after))
                            await set_fault(session, primary, None)
            finally:
                await rt.stop(grace=2.0)
    return _report(results, faults, drills, after, pace_ms, idle)


def _report(
    results: list[Drill], faults: tuple[str, ...], drills: int, after: int, pace: float, idle: float
) -> dict[str, Any]:
    rows = []
    for fault in faults:
        mine = [d for d in results if d.fault == fault]
        gaps = [d.gap for d in mine if d.gap is not None]
        rests = [d.rest for d in mine if d.rest is not None]
        rows.append(
            {
                "fault": fault,
                "drills": len(mine),
                "whole": sum(d.whole for d in mine),
                "gap": summary(gaps),
                "rest": summary(rests),
            }
        )
    return {
        "command": "python -m tests.bench.continuation " + shlex.join(sys.argv[1:]),
        "settings": {"drills": drills, "after": after, "pace_ms": pace, "idle_s": idle},
        "faults": rows,
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"continuation: {s['drills']} drills per fault, cut after {s['after']} of {WORDS} "
        f"chunks, {s['pace_ms']:g} ms apart; idle limit {s['idle_s']:g} s"
    )
    print(f"{'fault':>13} {'whole':>7} | {'gap ms p50/p99/max':^22} | {'rest ms p50/p99/max':^22}")
    for row in report["faults"]:
        gap, rest = row["gap"], row["rest"]
        print(
            f"{row['fault']:>13} {row['whole']:>3}/{row['drills']:<3} | {_cell(gap):^22} | "
            f"{_cell(rest):^22}"
        )


def _cell(stats: dict[str, float]) -> str:
    if not stats or stats["max_ms"] != stats["max_ms"]:  # NaN: no value at all
        return "-"
    return f"{stats['p50_ms']:.0f}/{stats['p99_ms']:.0f}/{stats['max_ms']:.0f}"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drills", type=int, default=10)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--after", type=int, default=20, help="chunks before the fault")
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--idle", type=float, default=2.0, help="the primary's idle limit, s")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    drills = max(1, min(args.drills, 100))
    after = max(1, min(args.after, WORDS - 1))
    faults = tuple(args.faults)
    report = asyncio.run(run(drills, faults, after=after, pace_ms=args.pace_ms, idle=args.idle))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
