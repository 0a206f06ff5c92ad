"""Fleet mode as deployed: three ``failover serve`` processes, one redis-server, SIGKILL.

The replicas are real processes on loopback ports, in front of fake providers and a fake
Telegram (this process); the client is plain HTTP against each replica's OpenAI front,
round-robin. What each replica does is read from its ``/status.json`` (the ``fleet`` section).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.providers.fake import FakeProvider, FaultMode
from tests.fakes_chat import FakeTelegram, unused_port
from tests.redis_support import RedisServer
from tests.test_cli import FAILOVER, ROOT

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: anthropic, base_url: "{backup}"}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
controller:
  window_seconds: 10
  min_requests: 10
  consecutive_failures: 1000
  cooloff_seconds: 1
  probe_interval_seconds: 0.2
  probe_successes: 2
  failback_steps: [1.0]
  tick_seconds: 0.1
notify: {{cooldown_seconds: 120, group_window_seconds: 0}}
gateway: {{port: {port}, admin_port: {admin}}}
state:
  backend: redis
  path: "{state}"
  redis: {{replica: {name}, prefix: proc-test, lease_seconds: 2, push_seconds: 0.25}}
"""
BODY = {"model": "frontier", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Replica:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    redis: RedisServer
    primary: FakeProvider
    backup: FakeProvider
    tg: FakeTelegram
    workdir: Path
    replicas: list[Replica] = field(default_factory=list)
    dead: list[Replica] = field(default_factory=list)  # the client sends them nothing more

    async def spawn(self, name: str) -> Replica:
        port, admin = unused_port(), unused_port()
        path = self.workdir / f"{name}.yaml"
        path.write_text(
            CONFIG.format(
                primary=self.primary.url("openai"),
                backup=self.backup.url("anthropic"),
                port=port,
                admin=admin,
                name=name,
                state=self.workdir / f"{name}.state.json",
            )
        )
        env = {
            **os.environ,
            "FAILOVER_REDIS_URL": self.redis.url,
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_CHAT_ID": "111",
            "TELEGRAM_API_BASE_URL": self.tg.base_url,
        }
        log = self.workdir / f"{name}.log"
        with log.open("w") as out:
            proc = await asyncio.create_subprocess_exec(
                *FAILOVER, "serve", "--config", str(path), cwd=ROOT, env=env, stdout=out, stderr=out
            )
        replica = Replica(name=name, port=port, proc=proc, log=log)
        self.replicas.append(replica)
        return replica


async def status(http: aiohttp.ClientSession, replica: Replica) -> dict[str, Any] | None:
    try:
        async with http.get(f"{replica.url}/status.json", timeout=aiohttp.ClientTimeout(1)) as r:
            doc: dict[str, Any] = await r.json()
            return doc
    except (aiohttp.ClientError, TimeoutError):
        return None


async def statuses(http: aiohttp.ClientSession, replicas: list[Replica]) -> list[dict[str, Any]]:
    docs = await asyncio.gather(*(status(http, r) for r in replicas))
    return [d for d in docs if d is not None]


async def until(probe: Any, *, within: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await probe():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def primary_state(doc: dict[str, Any]) -> str:
    return next(str(p["state"]) for p in doc["providers"] if p["name"] == "primary")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        async with (
            FakeProvider(name="primary") as primary,
            FakeProvider(name="backup") as backup,
            FakeTelegram() as tg,
        ):
            group = Stack(redis=redis, primary=primary, backup=backup, tg=tg, workdir=tmp_path)
            try:
                yield group
            finally:
                for replica in group.replicas:
                    if replica.proc.returncode is None:
                        replica.proc.kill()
                        await replica.proc.wait()
    finally:
        redis.stop()


async def load(http: aiohttp.ClientSession, stack: Stack, stop: asyncio.Event) -> list[str]:
    """Requests round-robin over the live replicas, ~20/s, until ``stop``; returns the errors."""
    errors: list[str] = []
    for i in itertools.count():
        if stop.is_set() or i > 2000:
            break
        live = [r for r in stack.replicas if r.proc.returncode is None and r not in stack.dead]
        replica = live[i % len(live)]
        try:
            async with http.post(f"{replica.url}/v1/chat/completions", json=BODY) as answer:
                if answer.status != 200:
                    errors.append(f"{replica.name}: {answer.status}")
        except aiohttp.ClientError as exc:
            errors.append(f"{replica.name}: {type(exc).__name__}")
        await asyncio.sleep(0.05)
    return errors


async def test_sigkilled_leader_is_replaced_and_the_fleet_alerts_once(stack: Stack) -> None:
    for name in ("gw-a", "gw-b", "gw-c"):
        await stack.spawn(name)
    async with aiohttp.ClientSession() as http:

        async def one_leader() -> bool:
            docs = await statuses(http, stack.replicas)
            return len(docs) == 3 and [d["fleet"]["role"] for d in docs].count("leader") == 1

        await until(one_leader, within=30.0, what="three replicas and one leader")
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(http, stack, stop))
        await asyncio.sleep(1.0)
        stack.primary.set_fault(FaultMode.ERROR_503)

        async def all_tripped() -> bool:
            docs = await statuses(http, stack.replicas)
            return len(docs) == 3 and all(primary_state(d) != "healthy" for d in docs)

        await until(all_tripped, within=8.0, what="every replica off the primary")
        await stack.tg.wait_messages(1)
        docs = await statuses(http, stack.replicas)
        leader = next(
            r for r, d in zip(stack.replicas, docs, strict=True) if d["fleet"]["role"] == "leader"
        )
        stack.dead.append(leader)  # a load balancer's job, not the test's: no request is lost
        await asyncio.sleep(0.3)  # to a process as it dies
        leader.proc.send_signal(signal.SIGKILL)
        await leader.proc.wait()
        others = [r for r in stack.replicas if r is not leader]

        async def new_leader() -> bool:
            docs = await statuses(http, others)
            return [d["fleet"]["role"] for d in docs].count("leader") == 1

        took = await until(new_leader, within=30.0, what="a new leader")
        # The 2 s lease and a try (under 3 s on a quiet machine); the margin is for a loaded one.
        assert took <= 10.0
        stack.primary.clear_fault()

        async def all_healthy() -> bool:
            docs = await statuses(http, others)
            return len(docs) == 2 and all(primary_state(d) == "healthy" for d in docs)

        await until(all_healthy, within=15.0, what="recovery under the new leader")

        cli = await asyncio.to_thread(
            subprocess.run,
            [
                *FAILOVER,
                "kill-switch",
                "--fleet",
                "--config",
                str(stack.workdir / "gw-b.yaml"),
                "pin",
                "backup",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "FAILOVER_REDIS_URL": stack.redis.url},
            check=False,
        )
        assert cli.returncode == 0, cli.stderr + cli.stdout

        async def pinned() -> bool:
            docs = await statuses(http, others)
            return all(d["kill_switch"]["pin"] == "backup" for d in docs)

        await until(pinned, within=10.0, what="the fleet kill switch on every replica")
        stop.set()
        errors = await traffic
    assert errors == []
    await stack.tg.wait_messages(3)
    await asyncio.sleep(0.5)
    texts = [m["text"].lower() for m in stack.tg.messages]
    assert sum("tripped" in t for t in texts) == 1, texts
    assert sum("recovered" in t for t in texts) == 1, texts
    assert sum("kill switch engaged" in t for t in texts) == 1, texts
    with contextlib.suppress(FileNotFoundError):
        assert "Traceback" not in leader.log.read_text()
