"""Benchmark: outage → routing flip → phone alert, over repeated drills at steady traffic.

    python -m tests.bench.detection [--drills 10] [--rates 10 100] [--json]
                                    [--outages error_503 hang slow] [--hedge p95]
                                    [--continuation 10]

Per rate, one in-process :class:`~controller.runtime.Runtime` (real router, signal windows,
controller loop, dispatcher, Telegram sender) serves open-loop traffic at that rate. The two
providers are fake providers in their own processes; the Telegram Bot API is the loopback fake
of ``tests/fakes_chat.py``. Each drill:

1. steady traffic for ``--steady`` seconds (plus a random 0-250 ms, so outages start at every
   phase of the controller's tick);
2. onset: ``POST /_fake/fault`` to the primary's process, one of the ``--outages``:
   ``error_503`` (every request answered 503), ``hang`` (requests accepted, never answered),
   ``slow`` (every answer 10x the fake's usual latency);
3. flip: the routing state shows the primary ``tripped`` (the tick's own timestamp, taken from
   the state document; a 5 ms poll bounds it from above);
4. alert: the fake Telegram receives the ``sendMessage`` of the trip;
5. the fault is cleared and the drill waits for the primary to be ``healthy`` again (and for the
   "recovered" alert, so the next trip is not folded into its grouping window).

Detection latency = flip - onset; alert latency = alert - flip. Client-visible errors are the
requests of the steady traffic that failed during the drills (the backup is healthy: expect 0).
Also per outage: the latency of the requests sent between onset and the fault's clearing, and
the attempts (probes aside) that still reached the primary after the flip. A slow primary that
still answers is not tripped (see the README): its row shows what the tail cost, and with
``--hedge`` what hedging saved.

The tripwire runs with its defaults (tick 0.25 s, window 30 s, min_requests 10, threshold 0.5,
consecutive 5) and the notify defaults (grouping window 2 s, unless ``--group-window``). Only the
way *back* is shortened, so ten drills per rate fit in a few minutes: see ``SHORTENED``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from controller.config import load_config
from controller.control.config import StallConfig, TripwireConfig
from controller.control.state import HealthState
from controller.notify.config import NotifyConfig
from controller.runtime import Runtime
from tests.bench import continuation
from tests.bench._drill_support import (
    REQUEST,
    FaultLog,
    fake_process,
    set_fault,
    summary,
)
from tests.fakes_chat import FakeTelegram
from tests.traffic import Traffic, through_router

TIER = "frontier"
POLL = 0.005
TRIP_TIMEOUT = 10.0  # seconds: a trip that takes longer is reported as missed
RECOVERY_TIMEOUT = 30.0
ALERT_SLACK = 10.0  # seconds beyond the grouping window before an alert counts as lost

# Timings of the way back, shortened from their defaults (detection does not depend on them).
SHORTENED: dict[str, float] = {
    "cooloff_seconds": 1.0,  # default 15
    "cooloff_multiplier": 1.0,  # default 2: ten trips in a row would grow the cool-off to hours
    "probe_interval_seconds": 0.2,  # default 2
    "failback_step_seconds": 0.5,  # default 10
}

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}/v1", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  {tier}:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
{hedge}routing: {{deadline_seconds: 10}}
controller: {controller}
notify: {{group_window_seconds: {group_window}}}
state: {{path: "{state}"}}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    drills: int
    rates: tuple[float, ...]
    steady: float
    group_window: float
    latency_ms: float
    seed: int
    outages: tuple[str, ...] = ("error_503",)
    hedge: str | None = None
    hedge_per_second: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Drill:
    """One drill's timings in seconds (None: that step did not happen within its bound)."""

    outage: str
    detection: float | None
    detection_polled: float | None
    faults_needed: float | None  # onset → the fault that completed the consecutive run
    alert: float | None
    recovery: float | None  # fault cleared → healthy again
    errors: int
    fault_post: float  # how long the POST that started the outage took
    took: tuple[float, ...]  # the requests sent during the outage, that were served
    after_flip: int  # attempts (not probes) that started on the primary after the flip


@dataclass(slots=True, kw_only=True)
class Rig:
    """What one rate's drills act on."""

    rt: Runtime
    tg: FakeTelegram
    session: aiohttp.ClientSession
    primary: str
    traffic: Traffic
    rate: float  # of the traffic, requests per second
    faults: FaultLog
    offset: float  # controller.now() - time.monotonic(): turns state timestamps into monotonic
    settings: Settings


def write_config(path: Path, *, primary: str, backup: str, settings: Settings) -> None:
    controller = json.dumps(SHORTENED)  # JSON is YAML: a flow mapping
    hedge = ""
    if settings.hedge is not None:
        after = settings.hedge if settings.hedge.startswith("p") else float(settings.hedge)
        block = json.dumps({"after": after, "per_second": settings.hedge_per_second})
        hedge = f"    hedge: {block}\n"
    path.write_text(
        CONFIG.format(
            primary=primary,
            backup=backup,
            tier=TIER,
            controller=controller,
            group_window=settings.group_window,
            state=path.parent / "state.json",
            hedge=hedge,
        )
    )


def _fault(outage: str, settings: Settings) -> tuple[str, dict[str, float]]:
    """The fake's fault for an outage kind (``slow``: 10x its usual latency)."""
    if outage == "slow":
        return "slow_first_token", {"delay": 10 * max(settings.latency_ms, 1.0) / 1000}
    return outage, {}


# --------------------------------------------------------------------------------- waiting


async def wait_state(rig: Rig, state: HealthState, within: float) -> float | None:
    """Monotonic time the poll first saw the primary in ``state``; None after ``within``."""
    deadline = time.monotonic() + within
    for _ in range(int(within / POLL) + 1):  # bounded in count and time
        if rig.rt.holder.current.status("primary").state is state:
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL)
    return None


def telegram_messages(tg: FakeTelegram) -> list[tuple[float, str]]:
    return [
        (r.received_at, str(r.body.get("text", "")).lower())
        for r in tg.requests
        if r.path.endswith("/sendMessage")
    ]


async def wait_alert(rig: Rig, *, after: int, word: str) -> float | None:
    """Arrival time of the first message past index ``after`` that mentions ``word``."""
    within = rig.settings.group_window + ALERT_SLACK
    deadline = time.monotonic() + within
    for _ in range(int(within / POLL) + 1):  # bounded in count and time
        for at, text in telegram_messages(rig.tg)[after:]:
            if word in text and "primary" in text:
                return at
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL)
    return None


# --------------------------------------------------------------------------------- one drill


async def drill(rig: Rig, rng: random.Random, outage: str) -> Drill:
    begin = time.monotonic()
    await asyncio.sleep(rig.settings.steady + rng.uniform(0.0, 0.25))
    sent_before = len(telegram_messages(rig.tg))
    onset = time.monotonic()
    mode, fault = _fault(outage, rig.settings)
    await set_fault(rig.session, rig.primary, mode, **fault)
    posted = time.monotonic()
    polled = await wait_state(rig, HealthState.TRIPPED, TRIP_TIMEOUT)
    flip = None
    if polled is not None:
        flip = rig.rt.holder.current.status("primary").since - rig.offset
    alert = await wait_alert(rig, after=sent_before, word="tripped") if flip else None
    await set_fault(rig.session, rig.primary, None)
    cleared = time.monotonic()
    healthy = await wait_state(rig, HealthState.HEALTHY, RECOVERY_TIMEOUT)
    if healthy is not None:
        await wait_alert(rig, after=sent_before + 1, word="recovered")
    nth = rig.faults.nth_after(onset, TripwireConfig().consecutive_failures)
    return Drill(
        outage=outage,
        detection=None if flip is None else flip - onset,
        detection_polled=None if polled is None else polled - onset,
        faults_needed=None if nth is None else nth - onset,
        alert=None if alert is None or flip is None else alert - flip,
        recovery=None if healthy is None else healthy - cleared,
        errors=sum(1 for at, _ in rig.traffic.errors if at >= begin),
        fault_post=posted - onset,
        took=tuple(rig.traffic.latencies(onset, cleared)),
        after_flip=0 if flip is None else rig.faults.tried_between(flip, cleared),
    )


# --------------------------------------------------------------------------------- one rate


async def run_rate(
    settings: Settings, rate: float, fakes: tuple[str, str], workdir: Path
) -> dict[str, Any]:
    path = workdir / f"failover-{rate:g}.yaml"
    write_config(path, primary=fakes[0], backup=fakes[1], settings=settings)
    rng = random.Random(settings.seed)
    async with FakeTelegram() as tg, aiohttp.ClientSession() as session:
        env = {
            "PRIMARY_KEY": "sk-bench-primary",
            "BACKUP_KEY": "sk-bench-backup",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_CHAT_ID": "111",
            "TELEGRAM_API_BASE_URL": tg.base_url,
        }
        rt = Runtime(load_config(path), config_path=path, env=env)
        await rt.start()
        try:
            rig = _rig(rt, tg, session, fakes[0], rate, settings)
            drills = await _drive(rig, rng)
        finally:
            await rt.stop(grace=2.0)
    return _report(rate, drills, rig.traffic, settings)


def _rig(
    rt: Runtime,
    tg: FakeTelegram,
    session: aiohttp.ClientSession,
    primary: str,
    rate: float,
    settings: Settings,
) -> Rig:
    faults = FaultLog("primary")
    rt.router.listeners.add(faults)
    return Rig(
        rt=rt,
        tg=tg,
        session=session,
        primary=primary,
        # open loop: a slow failover shows up as latency and errors, not as fewer calls
        traffic=Traffic(through_router(rt.router, REQUEST, tier=TIER), catch_up=True),
        rate=rate,
        faults=faults,
        offset=rt.controller.now() - time.monotonic(),
        settings=settings,
    )


async def _drive(rig: Rig, rng: random.Random) -> list[Drill]:
    """Traffic for the whole run (bounded by the worst case of every drill), drills in turn."""
    per_drill = rig.settings.steady + TRIP_TIMEOUT + RECOVERY_TIMEOUT
    per_drill += 2 * (rig.settings.group_window + ALERT_SLACK) + 1.0
    count = rig.settings.drills * len(rig.settings.outages)
    load = asyncio.create_task(rig.traffic.run(rate=rig.rate, max_seconds=2.0 + count * per_drill))
    try:
        await asyncio.sleep(2.0)  # warm up connections; fill the window with successes
        drills = [
            await drill(rig, rng, outage)
            for outage in rig.settings.outages
            for _ in range(rig.settings.drills)
        ]
    finally:
        rig.traffic.stop.set()
        await load
    return drills


def _report(
    rate: float, drills: list[Drill], traffic: Traffic, settings: Settings
) -> dict[str, Any]:
    return {
        "rate_rps": rate,
        "requests": traffic.sent,
        "served": traffic.served_by(),
        "late_sends": traffic.late_starts,
        "outages": [
            _outage(outage, [d for d in drills if d.outage == outage])
            for outage in settings.outages
        ],
    }


def _outage(outage: str, drills: list[Drill]) -> dict[str, Any]:
    def values(name: str) -> list[float]:
        found = (getattr(d, name) for d in drills)
        return [v for v in found if v is not None]

    return {
        "outage": outage,
        "drills": len(drills),
        "detection": summary(values("detection")),
        "detection_polled": summary(values("detection_polled")),
        "faults_needed": summary(values("faults_needed")),
        "alert_after_flip": summary(values("alert")),
        "recovery": summary(values("recovery")),
        "missed_trips": sum(1 for d in drills if d.detection is None),
        "missed_alerts": sum(1 for d in drills if d.alert is None),
        "client_errors": sum(d.errors for d in drills),
        "latency_during": summary([t for d in drills for t in d.took]),
        "attempts_after_flip": sum(d.after_flip for d in drills),
        "per_drill": [{**asdict(d), "took": summary(list(d.took))} for d in drills],
    }


# --------------------------------------------------------------------------------- output


async def run(settings: Settings, command: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        async with (
            fake_process("primary", latency_ms=settings.latency_ms) as primary,
            fake_process("backup", latency_ms=settings.latency_ms) as backup,
        ):
            results = [
                await run_rate(settings, rate, (primary, backup), Path(tmp))
                for rate in settings.rates
            ]
    return {
        "command": command,
        "settings": asdict(settings),
        "controller": {**_defaults_used(), "shortened": SHORTENED},
        "notify_group_window_seconds": settings.group_window,
        "hedge": settings.hedge,
        "results": results,
    }


def _defaults_used() -> dict[str, float]:
    cfg = TripwireConfig()
    return {
        "tick_seconds": cfg.tick_seconds,
        "window_seconds": cfg.window_seconds,
        "min_requests": cfg.min_requests,
        "error_rate_threshold": cfg.error_rate_threshold,
        "consecutive_failures": cfg.consecutive_failures,
        "probe_successes": cfg.probe_successes,
    }


def _cell(stats: dict[str, float]) -> str:
    return f"{stats['p50_ms']:>7.0f} {stats['p99_ms']:>7.0f} {stats['max_ms']:>7.0f}"


def print_table(report: dict[str, Any]) -> None:
    print(f"command: {report['command']}")
    print(f"controller defaults: {report['controller']}")
    print(f"notify group_window_seconds: {report['notify_group_window_seconds']:g}")
    print(
        "shortened for the benchmark (way back only): "
        + ", ".join(f"{k}={v:g}" for k, v in SHORTENED.items())
    )
    print()
    head = f"{'rps':>5} {'outage':>9} {'drills':>6} | {'detection ms p50/p99/max':^23} | "
    head += f"{'alert after flip ms':^23} | {'latency during ms':^23} | "
    head += f"{'recovery ms':^23} | errors | after flip"
    print(head)
    print("-" * len(head))
    for rate in report["results"]:
        for row in rate["outages"]:
            print(
                f"{rate['rate_rps']:>5g} {row['outage']:>9} {row['drills']:>6} | "
                f"{_cell(row['detection'])} | {_cell(row['alert_after_flip'])} | "
                f"{_cell(row['latency_during'])} | {_cell(row['recovery'])} | "
                f"{row['client_errors']:>6} | {row['attempts_after_flip']:>10}"
            )
    print()
    for rate in report["results"]:
        missed = ", ".join(
            f"{row['outage']}: tripped in {row['drills'] - row['missed_trips']} of "
            f"{row['drills']} drills, alerts missed {row['missed_alerts']}"
            for row in rate["outages"]
        )
        print(
            f"{rate['rate_rps']:g} rps: {rate['requests']} requests, served {rate['served']}, "
            f"late sends {rate['late_sends']}; {missed}"
        )
    print()
    for line in verdicts(report):
        print(line)


def verdicts(report: dict[str, Any]) -> list[str]:
    """The targets: an error outage detected <= 1 s p50 at 10 rps, alert <= 1 s after the flip;
    a hang: no client errors, p99 during it <= the learned limit + normal p99, no attempt on
    the primary after the flip."""
    lines = []
    for rate in report["results"]:
        for row in rate["outages"]:
            lines += _verdict(rate["rate_rps"], row)
    return lines


def _verdict(rate: float, row: dict[str, Any]) -> list[str]:
    def line(ok: bool, text: str) -> str:
        return f"{'MET ' if ok else 'MISS'} {row['outage']} at {rate:g} rps: {text}"

    lines = []
    det = row["detection"]["p50_ms"]
    if row["outage"] == "error_503" and rate <= 10:
        lines.append(line(det <= 1000, f"detection p50 {det:.0f} ms"))
    if row["outage"] != "slow":
        worst = row["alert_after_flip"]["max_ms"]
        ok = worst <= 1000 and row["missed_alerts"] == 0
        lines.append(line(ok, f"alert after flip max {worst:.0f} ms"))
    if row["outage"] == "hang":
        bound = StallConfig().floor_seconds * 1000 + 1000  # this fake's limit is the floor
        p99 = row["latency_during"]["p99_ms"]
        lines.append(line(p99 <= bound, f"p99 during {p99:.0f} ms (bound {bound:.0f} ms)"))
        lines.append(line(row["attempts_after_flip"] == 0, "no attempt on it after the flip"))
    lines.append(line(row["client_errors"] == 0, f"{row['client_errors']} client errors"))
    return lines


def parse(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drills", type=int, default=10, help="drills per rate (1..100)")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument("--steady", type=float, default=2.0, help="seconds of steady traffic")
    parser.add_argument(
        "--group-window",
        type=float,
        default=NotifyConfig().group_window_seconds,
        help="notify.group_window_seconds (default: the config default)",
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="fake provider latency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--outages",
        nargs="+",
        choices=["error_503", "hang", "slow"],
        default=["error_503", "hang", "slow"],
    )
    parser.add_argument("--hedge", help="tier hedge wait: seconds or p50/p90/p95/p99 (off)")
    parser.add_argument("--hedge-per-second", type=float, default=5.0, help="hedge budget")
    parser.add_argument(
        "--continuation",
        type=int,
        default=0,
        help="also N drills of a stream cut and stalled mid-answer (tests.bench.continuation)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--log-level", default="ERROR", help="controller logs (default ERROR)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    settings = Settings(
        drills=max(1, min(args.drills, 100)),
        rates=tuple(r for r in args.rates if 0 < r <= 1000),
        steady=max(0.5, min(args.steady, 60.0)),
        group_window=max(0.0, min(args.group_window, 30.0)),
        latency_ms=max(0.0, min(args.latency_ms, 5000.0)),
        seed=args.seed,
        outages=tuple(args.outages),
        hedge=args.hedge,
        hedge_per_second=max(0.1, min(args.hedge_per_second, 1000.0)),
    )
    return settings, args


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings, options = parse(args)
    command = shlex.join(["python", "-m", "tests.bench.detection", *args])
    report = asyncio.run(run(settings, command))
    if options.continuation > 0:
        drills = min(options.continuation, 100)
        report["continuation"] = asyncio.run(
            continuation.run(drills, continuation.FAULTS, after=20, pace_ms=20.0, idle=2.0)
        )
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(report, indent=2))
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        if "continuation" in report:
            continuation.print_table(report["continuation"])


if __name__ == "__main__":
    main()
