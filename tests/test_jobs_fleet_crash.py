"""A fleet replica SIGKILLed in the middle of a deferred job's replay: two real ``failover
serve`` processes in fleet mode on a real redis-server. Replica A claims the job (its provider
hangs, so the attempt stays under way) and is killed with SIGKILL; replica B, started after,
puts the job back once A's lease runs out and replays it: the job is done on its second
attempt, with the idempotency key it was given, and fetched from B. Every wait is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from controller.fleet import FleetConfig
from controller.gateway._jobs import owner_of
from controller.jobs import NewJob
from controller.jobs._redis import RedisJobStore
from controller.providers.fake import FakeProvider, FaultMode
from tests.fakes_chat import unused_port
from tests.redis_support import RedisServer
from tests.test_jobs_crash import serve, until

KEY = "sk-fleet-crash-test"
REPLY = "Answered by the replica that was left."
PREFIX = "crash-fleet"
CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
tiers:
  frontier: {{targets: [{{provider: primary, model: big}}]}}
gateway: {{port: {port}, admin_port: {admin}}}
state:
  backend: redis
  path: "{state}"
  redis: {{prefix: {prefix}, replica: {name}, lease_seconds: 1, push_seconds: 0.2}}
jobs: {{tick_seconds: 0.1, replay_per_second: 20, lease_seconds: 1}}
"""
AUTH = {"Authorization": f"Bearer {KEY}"}


def _config(tmp_path: Path, name: str, primary: FakeProvider) -> tuple[Path, str]:
    port = unused_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        CONFIG.format(
            primary=primary.url("openai"),
            port=port,
            admin=unused_port(),
            state=tmp_path / f"{name}-state.json",
            prefix=PREFIX,
            name=name,
        )
    )
    return path, f"http://127.0.0.1:{port}"


async def test_a_replica_sigkilled_mid_replay_leaves_the_job_to_another(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    log = tmp_path / "serve.log"
    try:
        async with (
            FakeProvider(name="primary", reply=REPLY) as primary,
            aiohttp.ClientSession() as http,
        ):
            store = RedisJobStore.connect(
                FleetConfig(prefix=PREFIX),
                {"FAILOVER_REDIS_URL": redis.url},
                per_second=20,
                tick_seconds=0.1,
                lease_seconds=1,
            )
            body = b'{"model": "frontier", "messages": [{"role": "user", "content": "later"}]}'
            job = NewJob(
                id="job_" + "k" * 24,
                owner=owner_of(KEY),
                tier="frontier",
                front="openai",
                model="frontier",
                body=body,
                idempotency_key="fleet-crash-1",
                created_at=time.time(),
            )
            await store.add(job, max_jobs=10)  # deferred earlier, by a replica since gone
            await store.close()
            primary.set_fault(FaultMode.HANG)  # replica A's attempt never comes back
            config_a, url_a = _config(tmp_path, "gw-a", primary)
            config_b, url_b = _config(tmp_path, "gw-b", primary)

            async def state(url: str) -> dict[str, Any] | None:
                async with http.get(f"{url}/v1/failover/jobs/{job.id}", headers=AUTH) as got:
                    found: dict[str, Any] = await got.json()
                    return found if got.status == 200 else None

            async with serve(config_a, log, key=KEY, FAILOVER_REDIS_URL=redis.url) as replica_a:

                async def claimed() -> bool:
                    doc = await state(url_a)
                    return doc is not None and doc["status"] == "running"

                await until(claimed, within=30, what="replica A's claim", log=log)
                replica_a.kill()  # SIGKILL: no hand-back, its lease left to run out
                await replica_a.wait()
            primary.clear_fault()
            async with serve(config_b, log, key=KEY, FAILOVER_REDIS_URL=redis.url):

                async def done() -> dict[str, Any] | None:
                    doc = await state(url_b)
                    return doc if doc is not None and doc["status"] == "done" else None

                finished = await until(done, within=30, what="replica B's replay", log=log)
            assert finished["attempts"] == 2  # A's attempt was spent, B's is the second
            assert finished["idempotency_key"] == "fleet-crash-1"
            assert finished["result"]["choices"][0]["message"]["content"] == REPLY
            assert "lease ran out" not in (finished["error"] or "")  # cleared once answered
    finally:
        redis.stop()
