"""Several gateway replicas (Runtimes) in one test, in fleet mode on a real redis-server.

Each replica is a whole :class:`~controller.runtime.Runtime` as ``failover serve`` builds it
(its own router, windows, controller, dispatcher and fleet member), pointed at the same fake
providers, the same fake Telegram and the same Redis. Traffic is spread over them round-robin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.config import load_config
from controller.control.state import HealthState
from controller.fleet import Role
from controller.model import Message, Request
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime
from tests.fakes_chat import FakeTelegram
from tests.redis_support import RedisServer
from tests.traffic import Send

HELLO = Request(messages=(Message(role="user", content="hello"),))

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
aliases: {{gpt-4o: frontier}}
routing: {{deadline_seconds: 10}}
kill_switch: {{pin: {pin}}}
controller:
  window_seconds: 10
  min_requests: {min_requests}
  consecutive_failures: {consecutive}
  cooloff_seconds: {cooloff}
  probe_interval_seconds: 0.2
  probe_successes: 2
  failback_steps: [0.5, 1.0]
  failback_step_seconds: 0.5
  tick_seconds: 0.1
notify:
  cooldown_seconds: 60
  group_window_seconds: 0
  backoff_base_seconds: 0.2
state:
  backend: redis
  path: "{state}"  # the audit log beside it: the leader's decisions
  redis:
    prefix: "{prefix}"
    replica: "{replica}"
    lease_seconds: {lease}
    push_seconds: 0.2
    read_seconds: 0.5
    timeout_seconds: 0.3
"""


@dataclass
class Fleet:
    """The replicas of one test, started and stopped together."""

    redis: RedisServer
    primary: FakeProvider
    backup: FakeProvider
    tg: FakeTelegram
    workdir: Path
    options: dict[str, object] = field(default_factory=dict)
    replicas: list[Runtime] = field(default_factory=list)
    crashed: list[Runtime] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "PRIMARY_KEY": "sk-primary-secret",
            "BACKUP_KEY": "sk-backup-secret",
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_CHAT_ID": "111",
            "TELEGRAM_API_BASE_URL": self.tg.base_url,
            "FAILOVER_REDIS_URL": self.redis.url,
        }

    def config_path(self, name: str, *, pin: str = "null") -> Path:
        values: dict[str, object] = {
            "min_requests": 10,
            "consecutive": 1000,  # the error rate trips, not a run on one replica
            "cooloff": 1,
            "lease": 1.5,
            "prefix": "fleet-test",
        }
        values.update(self.options)
        path = self.workdir / f"{name}.yaml"
        path.write_text(
            CONFIG.format(
                primary=self.primary.url("openai"),
                backup=self.backup.url("anthropic"),
                pin=pin,
                replica=name,
                state=self.workdir / f"{name}.state.json",
                **values,
            )
        )
        return path

    async def add(self, name: str) -> Runtime:
        path = self.config_path(name)
        runtime = Runtime(load_config(path), config_path=path, env=self.env())
        await runtime.start()
        self.replicas.append(runtime)
        return runtime

    async def stop(self) -> None:
        for runtime in self.replicas + self.crashed:
            await runtime.stop(grace=1.0)
        self.replicas.clear()
        self.crashed.clear()

    def send(self, only: Callable[[], list[Runtime]] | None = None) -> Send:
        """Requests round-robin over the running replicas (or over those ``only`` names)."""

        async def send(i: int) -> str:
            live = only() if only is not None else self.replicas
            runtime = live[i % len(live)]
            return (await runtime.router.complete(HELLO, tier="frontier")).provider

        return send

    def followers(self) -> list[Runtime]:
        return [r for r in self.replicas if r.fleet is not None and r.fleet.role is Role.FOLLOWER]

    def leaders(self) -> list[Runtime]:
        return [r for r in self.replicas if r.fleet is not None and r.fleet.role is Role.LEADER]

    def alerts(self, words: str) -> list[str]:
        return [m["text"] for m in self.tg.messages if words in m["text"].lower()]


def role(runtime: Runtime) -> Role:
    assert runtime.fleet is not None
    return runtime.fleet.role


async def eventually(
    condition: Callable[[], bool], *, within: float, what: str, every: float = 0.01
) -> float:
    """Seconds until ``condition()`` holds; fails after ``within`` (real processes: no fake
    clock to advance, so the bound keeps the test finite and the message says what was late)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def state_of(runtime: Runtime, provider: str = "primary") -> HealthState:
    return runtime.holder.current.status(provider).state


async def stop_within(stop: Awaitable[None], seconds: float = 60.0) -> None:
    """Await ``stop``; one still waiting after ``seconds`` fails naming where it waits (each
    frame of its chain of awaits). A hung stop otherwise shows only as pytest-timeout's dump
    of the loop waiting in ``select`` (seen in full runs under load, intermittently)."""
    task = asyncio.ensure_future(stop)
    await asyncio.wait({task}, timeout=seconds)
    if not task.done():
        where = awaiting(task)
        task.cancel()
        raise TimeoutError(f"did not stop within {seconds:g} s; waiting at:{''.join(where)}")
    task.result()


def awaiting(task: asyncio.Future[Any], indent: str = "  ") -> list[str]:
    """Where ``task`` waits: each frame of its chain of awaits, outermost first; a gather's
    children still pending, each with its own chain, below it."""
    where: list[str] = []
    step: Any = task.get_coro() if isinstance(task, asyncio.Task) else task
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None)
        frame = frame or getattr(step, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            where.append(f"\n{indent}{code.co_filename}:{frame.f_lineno} {code.co_name}")
        else:
            where.append(f"\n{indent}{step!r}")  # what it all waits for (a future)
            future = getattr(task, "_fut_waiter", None)  # the future the task's chain waits on
            for child in getattr(future, "_children", ()):  # a gather: who it still waits for
                if not child.done():
                    name = child.get_name() if isinstance(child, asyncio.Task) else "future"
                    where.append(f"\n{indent}  pending {name}:")
                    where += awaiting(child, indent + "    ")
        nested = getattr(step, "cr_await", None) or getattr(step, "ag_await", None)
        step = nested or getattr(step, "gi_yieldfrom", None)
    return where
