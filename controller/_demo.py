"""``failover demo``: the whole story on loopback in under a minute, with no keys and no network.

Two fake providers (``primary`` speaking OpenAI's format, ``backup`` Anthropic's), the real
gateway and controller in front of them, and an OpenAI-format client driving steady traffic
through the gateway. The primary then goes down (HTTP 503s); the demo shows the tripwire
detecting it, the routing flip, the alert, the primary coming back, probing and gradual
failback, then a timeline and a summary. Alerts are printed; they are also sent to Telegram /
Slack when ``TELEGRAM_BOT_TOKEN`` + ``TELEGRAM_CHAT_ID`` / ``SLACK_WEBHOOK_URL`` are set.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from controller._config import parse_config
from controller.control.state import HealthState
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime

DEMO_CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: anthropic, base_url: "{backup}"}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: gpt-demo}}
      - {{provider: backup, model: claude-demo}}
aliases: {{gpt-4o: frontier}}
routing: {{deadline_seconds: 10}}
controller:
  window_seconds: 10
  min_requests: 10
  error_rate_threshold: 0.5
  consecutive_failures: 5
  cooloff_seconds: 3
  probe_interval_seconds: 0.5
  probe_successes: 3
  failback_steps: [0.1, 0.5, 1.0]
  failback_step_seconds: 2
notify:
  cooldown_seconds: 60
  group_window_seconds: 0
state: {{path: "{state}"}}
"""

RPS = 10.0
HEALTHY_SECONDS = 4.0
OUTAGE_SECONDS = 6.0
RECOVERY_LIMIT = 25.0


@dataclass
class Tally:
    served: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    sent: int = 0


@dataclass
class Story:
    """What happened, for the timeline and the summary."""

    start: float = field(default_factory=time.monotonic)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def at(self, name: str) -> float | None:
        return self.marks.get(name)

    def mark(self, name: str, text: str, say: Callable[[str], None]) -> None:
        now = time.monotonic() - self.start
        self.marks.setdefault(name, now)
        self.timeline.append((now, text))
        say(f"[{now:6.2f}s] {text}")


async def _traffic(url: str, tally: Tally, stop: asyncio.Event) -> None:
    """OpenAI-format chat requests through the gateway at a steady rate (bounded by ``stop``)."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Are you there?"}]}
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                    payload = await resp.json()
                    if resp.status == 200:
                        tally.served[resp.headers.get("x-failover-provider", "?")] += 1
                    else:
                        tally.errors.append(f"HTTP {resp.status}: {payload}")
            except aiohttp.ClientError as exc:
                tally.errors.append(repr(exc))

        while not stop.is_set() and tally.sent < 10_000:
            tally.sent += 1
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(1.0 / RPS)
        if pending:
            await asyncio.wait(pending, timeout=15)


async def _watch(
    rt: Runtime, story: Story, say: Callable[[str], None], stop: asyncio.Event
) -> None:
    """Narrate routing transitions and alerts as they happen."""
    seen_events = seen_alerts = 0
    while not stop.is_set():
        events, alerts = list(rt.events), list(rt.alerts)
        for event in reversed(events[: len(events) - seen_events]):
            kind = str(event.get("kind", ""))
            story.mark(f"flip:{kind}", f"routing: {event['text']}", say)
        for alert in reversed(alerts[: len(alerts) - seen_alerts]):
            story.mark(
                f"alert:{alert['event']}", f"ALERT [{alert['severity']}] {alert['text']}", say
            )
        seen_events, seen_alerts = len(events), len(alerts)
        await asyncio.sleep(0.05)


async def _wait_state(rt: Runtime, state: HealthState, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if rt.holder.current.status("primary").state is state:
            return True
        await asyncio.sleep(0.05)
    return False


async def run_demo(*, out: TextIO = sys.stdout, quiet: bool = False) -> dict[str, Any]:
    """Run the demo; returns the summary. Progress goes to ``out`` unless ``quiet``."""

    def say(line: str) -> None:
        if not quiet:
            print(line, file=out, flush=True)

    story = Story()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="failover-demo-") as tmp:
        async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
            text = DEMO_CONFIG.format(
                primary=primary.url("openai"),
                backup=backup.url("anthropic"),
                state=Path(tmp) / "state.json",
            )
            rt = Runtime(parse_config(text, source="demo"), env=dict(os.environ))
            await rt.start()
            app = create_app(rt, settings=GatewaySettings())
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
                say(f"gateway on {server.url} (OpenAI + Anthropic formats), controller running")
                say("tier frontier: primary (OpenAI format) -> backup (Anthropic format)")
                await _drive(rt, server.url, primary, story, tally, say)
            await rt.stop(grace=2.0)
    return _summary(story, tally)


async def _drive(
    rt: Runtime,
    url: str,
    primary: FakeProvider,
    story: Story,
    tally: Tally,
    say: Callable[[str], None],
) -> None:
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(url, tally, stop))
    watch = asyncio.create_task(_watch(rt, story, say, stop))
    story.mark("traffic", f"client traffic: {RPS:.0f} requests/s through the gateway", say)
    await asyncio.sleep(HEALTHY_SECONDS)
    primary.set_fault(FaultMode.ERROR_503)
    story.mark("outage", "primary is DOWN (answers 503 to everything)", say)
    if await _wait_state(rt, HealthState.TRIPPED, 10.0):
        story.mark("tripped", "traffic now goes to backup", say)
    await asyncio.sleep(OUTAGE_SECONDS)
    primary.clear_fault()
    story.mark("back", "primary is back up", say)
    if await _wait_state(rt, HealthState.HEALTHY, RECOVERY_LIMIT):
        story.mark("healthy", "primary healthy again: full traffic restored", say)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(traffic, watch)
    say(f"served by: {dict(tally.served)}; client-visible errors: {len(tally.errors)}")


def _summary(story: Story, tally: Tally) -> dict[str, Any]:
    def since(a: str, b: str) -> float | None:
        start, end = story.at(a), story.at(b)
        return round(end - start, 3) if start is not None and end is not None else None

    alerts = sorted(
        {name.removeprefix("alert:") for name in story.marks if name.startswith("alert:")}
    )
    return {
        "requests": tally.sent,
        "served": sum(tally.served.values()),
        "served_by": dict(tally.served),
        "client_errors": len(tally.errors),
        "error_samples": tally.errors[:3],
        "tripped": story.at("tripped") is not None,
        "detection_seconds": since("outage", "flip:trip"),
        "alert_seconds_after_flip": since("flip:trip", "alert:provider_tripped"),
        "recovered": story.at("healthy") is not None,
        "recovery_seconds": since("back", "healthy"),
        "alerts": alerts,
        "timeline": [{"t": round(t, 3), "event": text} for t, text in story.timeline],
    }


def print_summary(summary: dict[str, Any], out: TextIO = sys.stdout) -> None:
    print("\nTimeline", file=out)
    for row in summary["timeline"]:
        print(f"  {row['t']:7.2f}s  {row['event']}", file=out)
    print("\nSummary", file=out)
    rows = [
        ("requests sent", summary["requests"]),
        ("served", f"{summary['served']}  {summary['served_by']}"),
        ("client-visible errors", summary["client_errors"]),
        ("detection (outage -> trip)", _secs(summary["detection_seconds"])),
        ("alert raised after the flip", _secs(summary["alert_seconds_after_flip"])),
        ("recovery (back -> healthy)", _secs(summary["recovery_seconds"])),
        ("alerts", ", ".join(summary["alerts"]) or "none"),
    ]
    for name, value in rows:
        print(f"  {name:28} {value}", file=out)


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def main(*, as_json: bool) -> int:
    summary = asyncio.run(run_demo(out=sys.stderr if as_json else sys.stdout))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    ok = summary["tripped"] and summary["recovered"] and summary["client_errors"] == 0
    return 0 if ok else 1
