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
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from controller.config import parse_config
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


@dataclass(frozen=True, slots=True)
class Entry:
    """One timeline line. ``at`` is epoch seconds on the controller's clock (``Controller.now``)."""

    at: float
    name: str
    text: str


class Story:
    """What happened, for the timeline and the summary.

    Every entry carries the time the thing happened, never the time the demo noticed it: the
    demo stamps its own actions as it takes them, routing flips and alerts bring the times the
    controller gave them, an alert's delivery on each channel the time the runtime saw that
    channel take it (``delivered``), and "tripped" / "healthy" take the routing state's
    ``since``. All of these are on the controller's clock, so differences between them are
    exact; the 50 ms poll only decides when a line is printed (except "NOT sent": a channel's
    giving up has no recorded time). The timeline is sorted by time; alerts keep the order in
    which they were handed to the dispatcher (its sending order).
    """

    def __init__(self, *, start: float, say: Callable[[str], None]) -> None:
        self.start = start
        self.entries: list[Entry] = []
        self.say = say

    def add(self, at: float, name: str, text: str) -> None:
        self.entries.append(Entry(at, name, text))
        self.say(f"[{at - self.start:6.2f}s] {text}")

    def at(self, name: str) -> float | None:
        """When ``name`` first happened (epoch seconds), or None if it never did."""
        return min((e.at for e in self.entries if e.name == name), default=None)

    def timeline(self) -> list[Entry]:
        return sorted(self.entries, key=lambda e: e.at)  # stable: equal times keep their order

    def alerts(self) -> list[str]:
        return [e.name.removeprefix("alert:") for e in self.entries if e.name.startswith("alert:")]


class _Fresh:
    """What was added to a newest-first history (``Runtime.events`` / ``.alerts``) since last time.

    The newest item seen is remembered by identity, not by count: the history is bounded, so once
    full its length stops growing while new items keep arriving.
    """

    def __init__(self, history: Iterable[dict[str, Any]]) -> None:
        self._history = history
        self._newest: dict[str, Any] | None = None

    def __call__(self) -> list[dict[str, Any]]:
        """The new items, oldest first."""
        fresh = list(itertools.takewhile(lambda item: item is not self._newest, self._history))
        if fresh:
            self._newest = fresh[0]
        return fresh[::-1]


class Narrator:
    """Adds the runtime's routing flips and alerts to the story, each at its own recorded time,
    and what became of each alert on each channel: delivered (when the channel took it) or not
    sent (when the demo saw the channel give up).

    The delivery the summary counts is a phone channel's (Telegram, Slack) when one is set up,
    the in-process log's only when none is: a log line 5 ms after the flip says nothing about
    whether anyone was told."""

    def __init__(self, rt: Runtime, story: Story) -> None:
        self._story = story
        self._now = rt.controller.now
        self._events = _Fresh(rt.events)
        self._alerts = _Fresh(rt.alerts)
        channels = rt.dispatcher.channels
        self._channels = len(channels)
        self._counted = {c for c in channels if c != "log"} or {"log"}
        # Alerts whose every channel has not answered yet, with the channels already narrated.
        self._pending: list[tuple[dict[str, Any], set[str]]] = []

    def poll(self) -> None:
        for event in self._events():
            self._story.add(event["time"], f"flip:{event['kind']}", f"routing: {event['text']}")
        for alert in self._alerts():
            text = f"ALERT [{alert['severity']}] {alert['text']}"
            self._story.add(alert["time"], f"alert:{alert['event']}", text)
            if alert.get("sent") is not False:  # dropped at intake: its text says so
                self._pending.append((alert, set()))
        still: list[tuple[dict[str, Any], set[str]]] = []
        for alert, told in self._pending:
            self._tell(alert, told)
            if len(told) < self._channels:
                still.append((alert, told))
        self._pending = still

    def _tell(self, alert: dict[str, Any], told: set[str]) -> None:
        event = alert["event"]
        for channel, at in sorted(alert.get("delivered", {}).items(), key=lambda kv: kv[1]):
            if channel not in told:
                told.add(channel)
                name = "delivered" if channel in self._counted else "delivered-also"
                self._story.add(at, f"{name}:{event}", f"alert {event} delivered ({channel})")
        for channel in alert.get("not_sent_to", ()):
            if channel not in told:  # the time it gave up is not recorded: when it was seen
                told.add(channel)
                self._story.add(self._now(), f"lost:{event}", f"alert {event} NOT sent ({channel})")


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


async def _watch(narrator: Narrator, stop: asyncio.Event) -> None:
    """Print routing flips and alerts soon after they happen (their times are their own)."""
    while not stop.is_set():
        narrator.poll()
        await asyncio.sleep(0.05)
    narrator.poll()  # what happened since the last look


async def _wait_state(
    rt: Runtime, state: HealthState, limit: float, *, after: float
) -> float | None:
    """When primary entered ``state`` (at or after ``after``), once it has; None after ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = rt.holder.current.status("primary")
        if status.state is state and status.since >= after:
            return status.since
        await asyncio.sleep(0.05)
    return None


async def run_demo(*, out: TextIO = sys.stdout, quiet: bool = False) -> dict[str, Any]:
    """Run the demo; returns the summary. Progress goes to ``out`` unless ``quiet``."""

    def say(line: str) -> None:
        if not quiet:
            print(line, file=out, flush=True)

    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="failover-demo-") as tmp:
        async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
            text = DEMO_CONFIG.format(
                primary=primary.url("openai"),
                backup=backup.url("anthropic"),
                state=Path(tmp) / "state.json",
            )
            rt = Runtime(parse_config(text, source="demo"), env=dict(os.environ))
            story = Story(start=rt.controller.now(), say=say)
            await rt.start()
            app = create_app(rt, settings=GatewaySettings())
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
                say(f"gateway on {server.url} (OpenAI + Anthropic formats), controller running")
                say("tier frontier: primary (OpenAI format) -> backup (Anthropic format)")
                await _drive(rt, server.url, primary, story, tally)
            await rt.stop(grace=2.0)
    return _summary(story, tally)


async def _drive(rt: Runtime, url: str, primary: FakeProvider, story: Story, tally: Tally) -> None:
    now = rt.controller.now  # the clock the controller stamps flips, states and alerts with
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(url, tally, stop))
    watch = asyncio.create_task(_watch(Narrator(rt, story), stop))
    story.add(now(), "traffic", f"client traffic: {RPS:.0f} requests/s through the gateway")
    await asyncio.sleep(HEALTHY_SECONDS)
    primary.set_fault(FaultMode.ERROR_503)
    outage = now()
    story.add(outage, "outage", "primary is DOWN (answers 503 to everything)")
    tripped = await _wait_state(rt, HealthState.TRIPPED, 10.0, after=outage)
    if tripped is not None:
        story.add(tripped, "tripped", "traffic now goes to backup")
    await asyncio.sleep(OUTAGE_SECONDS)
    primary.clear_fault()
    back = now()
    story.add(back, "back", "primary is back up")
    if tripped is not None:  # never tripped: nothing to recover from
        healthy = await _wait_state(rt, HealthState.HEALTHY, RECOVERY_LIMIT, after=back)
        if healthy is not None:
            story.add(healthy, "healthy", "primary healthy again: full traffic restored")
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(traffic, watch)
    story.say(f"served by: {dict(tally.served)}; client-visible errors: {len(tally.errors)}")


def _summary(story: Story, tally: Tally) -> dict[str, Any]:
    def since(a: str, b: str) -> float | None:
        start, end = story.at(a), story.at(b)
        return round(end - start, 3) if start is not None and end is not None else None

    return {
        "requests": tally.sent,
        "served": sum(tally.served.values()),
        "served_by": dict(tally.served),
        "client_errors": len(tally.errors),
        "error_samples": tally.errors[:3],
        "tripped": story.at("tripped") is not None,
        "detection_seconds": since("outage", "flip:trip"),
        "alert_seconds_after_flip": since("flip:trip", "delivered:provider_tripped"),
        "recovered": story.at("healthy") is not None,
        "recovery_seconds": since("back", "healthy"),
        "alerts": story.alerts(),
        "timeline": [
            {"t": round(e.at - story.start, 3), "event": e.text} for e in story.timeline()
        ],
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
        ("alert (flip -> delivered)", _secs(summary["alert_seconds_after_flip"])),
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
