"""Nothing lost: a deferred job survives ``kill -9`` of a real ``failover serve`` between its 202
and its replay, and a job the providers keep failing ends in the dead letters with an alert.

The gateway is a real process on loopback in front of a fake provider (this process); the tier
is degraded because the controller tripped one of its two providers (``healthy_below: 0.6``).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from controller.config import parse_config
from controller.jobs import NewJob
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.fakes_chat import unused_port
from tests.test_cli import FAILOVER, ROOT

KEY = "sk-crash-test"
REPLY = "Answered after the restart."
CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: openai, base_url: "{backup}"}}
tiers:
  frontier:
    targets: [{{provider: primary, model: big}}, {{provider: backup, model: alt}}]
    degrade: {{healthy_below: 0.6}}
controller:
  window_seconds: 10
  min_requests: 2
  consecutive_failures: 2
  cooloff_seconds: {cooloff}
  probe_interval_seconds: 0.2
  probe_successes: 1
  failback_steps: [1.0]
  tick_seconds: 0.1
gateway: {{port: {port}, admin_port: {admin}}}
state: {{path: "{state}"}}
jobs: {{tick_seconds: 0.1, replay_per_second: 20, max_tries: 2, retry_backoff_seconds: 0.2}}
"""
BODY = {"model": "frontier", "messages": [{"role": "user", "content": "keep this for later"}]}
AUTH = {"Authorization": f"Bearer {KEY}"}


@asynccontextmanager
async def serve(
    config: Path, log: Path, *, key: str = KEY, **extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``failover serve --config CONFIG`` as a real process, its output in ``log``, client key
    ``key`` and ``extra`` environment variables; killed (if still running) when left."""
    env = {**os.environ, "FAILOVER_API_KEYS": key, **extra}
    with log.open("a") as out:
        proc = await asyncio.create_subprocess_exec(
            *FAILOVER, "serve", "--config", str(config), cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def until(check: Any, *, within: float, what: str, log: Path) -> Any:
    """Poll ``check()`` (a coroutine) until it returns something truthy, for ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            found = await check()
        except (aiohttp.ClientError, OSError):
            found = None
        if found:
            return found
        await asyncio.sleep(0.1)
    tail = await asyncio.to_thread(log.read_text)
    raise AssertionError(f"{what} not within {within} s; log:\n{tail[-3000:]}")


async def test_a_deferred_job_survives_kill_9_after_its_202_and_completes_after_restart(
    tmp_path: Path,
) -> None:
    port, admin = unused_port(), unused_port()
    log = tmp_path / "serve.log"
    async with (
        FakeProvider(name="primary", reply=REPLY) as primary,
        FakeProvider(name="backup", reply=REPLY) as backup,
        aiohttp.ClientSession() as http,
    ):
        config = tmp_path / "failover.yaml"
        state = tmp_path / "state.json"
        config.write_text(
            CONFIG.format(
                primary=primary.url("openai"),
                backup=backup.url("openai"),
                port=port,
                admin=admin,
                state=state,
                cooloff=3,
            )
        )
        url = f"http://127.0.0.1:{port}"
        primary.set_fault(FaultMode.ERROR_503)

        async def tripped() -> bool:
            async with http.post(f"{url}/v1/chat/completions", json=BODY, headers=AUTH):
                pass
            async with http.get(f"{url}/status.json") as answer:
                doc = await answer.json()
            return any(p["name"] == "primary" and p["state"] == "tripped" for p in doc["providers"])

        async with serve(config, log) as first:
            await until(tripped, within=20, what="the provider tripped", log=log)
            headers = AUTH | {"x-failover-priority": "defer", "Idempotency-Key": "crash-1"}
            async with http.post(
                f"{url}/v1/chat/completions", json=BODY, headers=headers
            ) as answer:
                assert answer.status == 202, await answer.text()
                job_id = (await answer.json())["id"]
            first.send_signal(signal.SIGKILL)  # right after the 202: nothing was replayed
            await first.wait()
        assert (tmp_path / "state.jobs.sqlite3").exists()  # beside the state file
        primary.clear_fault()

        async def done() -> dict[str, Any] | None:
            async with http.get(f"{url}/v1/failover/jobs/{job_id}", headers=AUTH) as answer:
                doc: dict[str, Any] = await answer.json()
            return doc if doc.get("status") == "done" else None

        async with serve(config, log):
            doc = await until(done, within=30, what="the job replayed after restart", log=log)
            assert doc["attempts"] == 1
            assert doc["idempotency_key"] == "crash-1"
            assert doc["result"]["choices"][0]["message"]["content"] == REPLY
            async with http.get(f"{url}/status.json") as answer:
                queue = (await answer.json())["jobs"]["frontier"]
            assert (queue["queued"], queue["running"], queue["done"]) == (0, 0, 1)


POISON = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
tiers:
  t:
    targets: [{{provider: primary, model: m}}]
controller: {{min_requests: 1000, consecutive_failures: 1000}}
state: {{path: ""}}
jobs: {{tick_seconds: 0.05, max_tries: 3, retry_backoff_seconds: 0.05, replay_per_second: 50}}
"""


async def test_a_poison_job_ends_in_the_dead_letters_with_an_alert() -> None:
    async with FakeProvider(name="primary", reply=REPLY) as primary:
        primary.set_fault(FaultMode.ERROR_500)  # every try fails; the tier stays in rotation
        runtime = Runtime(parse_config(POISON.format(primary=primary.url("openai"))), env={})
        job = NewJob(
            id="job_" + "p" * 24,
            owner="",
            tier="t",
            front="openai",
            model="t",
            body=b'{"model": "t", "messages": [{"role": "user", "content": "poison"}]}',
            idempotency_key="poison-1",
            created_at=time.time(),
        )
        await runtime.jobs.store.add(job, max_jobs=10)
        await runtime.start()
        try:
            for _ in range(300):  # bounded: 15 s
                if runtime.alerts:
                    break
                await asyncio.sleep(0.05)
            events = [entry["event"] for entry in runtime.alerts]
            assert events == ["job_dead_letter"], events
            assert "failed 3 tries" in runtime.alerts[0]["text"]
            kept = await runtime.jobs.store.get(job.id)
            assert kept is not None
            assert (kept.state.value, kept.attempts) == ("dead", 3)
            assert runtime.status()["jobs"]["t"]["dead"] == 1
        finally:
            await runtime.stop(grace=1.0)
