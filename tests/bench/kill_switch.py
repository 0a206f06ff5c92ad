"""Benchmark: how fast a running gateway obeys a kill-switch edit of its config file.

    python -m tests.bench.kill_switch [--flips 40] [--rate 20] [--json]

One in-process :class:`~controller.runtime.Runtime` (as ``failover serve`` builds it, with the
config watcher) serves steady traffic at ``--rate`` requests per second through its router to
two fake providers on loopback. ``--flips`` times, the file is rewritten the way
``failover kill-switch pin backup`` / ``clear`` does it (:func:`set_kill_switch`: only the
``kill_switch:`` block, in place), alternately pinning the backup and clearing the pin, at a
random moment of the watcher's poll. Measured per flip, from the write's start:

- **applied**: the runtime's current config holds the new switch (polled every 2 ms);
- **routed**: the first request sent after the write that went where the switch says.

The README promises "within a second": the watcher reads a file once it has held still for one
poll (0.25 s), so expect 0.25-0.5 s. Reported p50/p99/max; the suite's tests check only that an
edit is obeyed (with a margin a loaded machine cannot miss), this script measures how fast.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from controller.config import load_config, set_kill_switch
from controller.control.state import KillSwitch
from controller.model import Message, Request
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime
from tests.bench._drill_support import run_report, summary

HELLO = Request(messages=(Message(role="user", content="hello"),))
POLL = 0.002
LIMIT = 10.0  # a flip not applied by then counts as missed

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
kill_switch: {{pin: null}}
state: {{path: "{state}"}}
"""


class Traffic:
    """Open-loop requests at a fixed rate; remembers when each was sent and who served it."""

    def __init__(self, runtime: Runtime, rate: float) -> None:
        self.runtime, self.gap = runtime, 1.0 / rate
        self.served: list[tuple[float, str]] = []
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            task = asyncio.create_task(self._one(time.monotonic()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(self.gap)
        await asyncio.gather(*self._tasks)

    async def _one(self, sent: float) -> None:
        try:
            answer = await self.runtime.router.complete(HELLO, tier="frontier")
        except Exception:  # counted; the bench reports it
            self.errors += 1
            return
        self.served.append((sent, answer.provider))

    def first_to(self, provider: str, after: float) -> float | None:
        """Send time of the first request sent after ``after`` that ``provider`` served."""
        times = [t for t, p in self.served if t >= after and p == provider]
        return min(times) if times else None


async def flip(path: Path, runtime: Runtime, traffic: Traffic, pin: str | None) -> dict[str, Any]:
    start = time.monotonic()
    set_kill_switch(path, KillSwitch(pin=pin), who="bench")
    while runtime.holder.current.kill_switch.pin != pin:
        if time.monotonic() - start > LIMIT:
            return {"applied": None, "routed": None}
        await asyncio.sleep(POLL)
    applied = time.monotonic() - start
    expected = pin or "primary"
    while (first := traffic.first_to(expected, start)) is None:
        if time.monotonic() - start > LIMIT:
            return {"applied": applied, "routed": None}
        await asyncio.sleep(POLL)
    # The first request sent after the write that obeyed it: routed = when it was sent, or when
    # the switch applied if it was sent before (it could not obey earlier than that).
    return {"applied": applied, "routed": max(first - start, applied)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": " ".join(["python -m tests.bench.kill_switch", *sys.argv[1:]])
    }
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmpdir:
        path = Path(tmpdir) / "failover.yaml"
        async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
            path.write_text(
                CONFIG.format(
                    primary=primary.url("openai"),
                    backup=backup.url("anthropic"),
                    state=Path(tmpdir) / "state.json",
                )
            )
            env = {"PRIMARY_KEY": "sk-bench", "BACKUP_KEY": "sk-bench"}
            runtime = Runtime(load_config(path), config_path=path, env=env)
            await runtime.start()
            stop = asyncio.Event()
            traffic = Traffic(runtime, args.rate)
            load = asyncio.create_task(traffic.run(stop))
            rows = []
            try:
                for n in range(args.flips):
                    await asyncio.sleep(0.3 + rng.random() * 0.25)  # every phase of the poll
                    rows.append(
                        await flip(path, runtime, traffic, "backup" if n % 2 == 0 else None)
                    )
            finally:
                stop.set()
                await load
                await runtime.stop(grace=2.0)
    applied = [r["applied"] for r in rows if r["applied"] is not None]
    routed = [r["routed"] for r in rows if r["routed"] is not None]
    report.update(
        flips=len(rows),
        missed=len(rows) - len(applied),
        applied=summary(applied),
        routed=summary(routed),
        requests=len(traffic.served) + traffic.errors,
        errors=traffic.errors,
    )
    return report


def render(report: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"$ {report['command']}",
            f"flips {report['flips']} (missed {report['missed']})",
            f"applied  {report['applied']}",
            f"routed   {report['routed']}",
            f"requests {report['requests']}, errors {report['errors']}",
        ]
    )


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    found.add_argument("--flips", type=int, default=40)
    found.add_argument("--rate", type=float, default=20.0)
    found.add_argument("--seed", type=int, default=1)
    return found


if __name__ == "__main__":
    run_report(main, render, parser())
