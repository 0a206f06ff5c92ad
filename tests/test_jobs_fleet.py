"""Deferred jobs and the answer cache of a fleet: two gateway replicas on one real
redis-server, the official SDKs as clients over real HTTP.

A job deferred on replica A is replayed once by the fleet and fetched on replica B (another
client key: 404); A killed after claiming a job leaves it to B once A's lease runs out; an
answer kept by A is served by B's cache rung while every provider is down; with Redis stopped
a defer is refused at once (503, Retry-After, the caller's format), a job read is a 503, and the
cache rung is skipped for the static answer: nothing hangs. Replayers run on a fake clock, one
tick at a time; the servers are real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import openai
import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import load_config
from controller.control.state import HealthState, ProviderStatus, RoutingState, StateHolder
from controller.fleet import FleetConfig
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.gateway._jobs import JobQueue, JobRunner
from controller.jobs import Replayer, ReplayLimits
from controller.jobs._job import JobStoreError
from controller.jobs._redis import RedisJobStore
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing._answers_redis import RedisAnswers
from controller.routing.plan import Degrade, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import AnswerCache, Router
from controller.runtime import Runtime
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS, GatewayTestBackend
from tests.redis_support import RedisServer

KEY_A, KEY_B = "sk-client-a", "sk-client-b"
REPLY = "Answered by a provider of the fleet."
STATIC = "Every provider is down; try again later."
PREFIX = "jobs-fleet"
LEASE = 10.0
MAX_BYTES = 64 * 1024  # the fleet's jobs in Redis: ample for every test's few small jobs


@dataclass
class Replica:
    url: str
    router: Router
    recorder: Recorder
    store: RedisJobStore
    replayer: Replayer
    cache: AnswerCache


@dataclass
class Fleet:
    redis: RedisServer
    primary: FakeProvider
    backup: FakeProvider
    state: StateHolder
    clock: FakeClock
    a: Replica
    b: Replica

    def outage(self) -> None:
        """The primary is tripped (the tier is degraded) and failing."""
        tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
        statuses = MappingProxyType({"primary": tripped})
        self.state.publish(RoutingState(providers=statuses, version=2))
        self.primary.set_fault(FaultMode.ERROR_503)

    def recover(self) -> None:
        self.state.publish(RoutingState(version=3))
        self.primary.clear_fault()
        self.backup.clear_fault()

    async def tick(self, *replicas: Replica, ticks: int = 4) -> None:
        for _ in range(ticks):
            self.clock.advance(0.5)
            for replica in replicas or (self.a, self.b):
                await replica.replayer.tick()
                await replica.replayer.settle()


def _router(fleet_providers: tuple[FakeProvider, FakeProvider], state: StateHolder) -> Router:
    primary, backup = fleet_providers
    ladder = Degrade(cache=True, static=STATIC, healthy_below=0.6)
    targets = (Target(provider="primary", model="gpt-big"), Target(provider="backup", model="alt"))
    return Router(
        tiers={"frontier": TierPlan(name="frontier", targets=targets, degrade=ladder)},
        providers={
            "primary": adapter(primary, "openai", "primary"),
            "backup": adapter(backup, "anthropic", "backup"),
        },
        state=state,
        listeners=[],
        retry=never_retry,
        default_timeouts=TIMEOUTS,
    )


async def _replica(
    stack: AsyncExitStack,
    redis_server: RedisServer,
    providers: tuple[FakeProvider, FakeProvider],
    state: StateHolder,
    clock: FakeClock,
) -> Replica:
    cfg = FleetConfig(prefix=PREFIX, timeout_seconds=0.3)
    env = {"FAILOVER_REDIS_URL": redis_server.url}
    router = _router(providers, state)
    recorder = Recorder()
    router.listeners.add(recorder)
    cache = AnswerCache(
        None, clock=clock, shared=RedisAnswers.connect(cfg, env, read_timeout=0.3, clock=clock)
    )
    router.cache = cache
    limits = ReplayLimits(per_second=10.0, concurrency=4, max_tries=3)
    store = RedisJobStore.connect(
        cfg,
        env,
        per_second=10.0,
        tick_seconds=0.5,
        lease_seconds=LEASE,
        clock_offset=lambda: clock.wall() - time.time(),  # Redis's time: the fake clock's
        max_bytes=MAX_BYTES,
    )
    replayer = Replayer(
        store,
        run=JobRunner(router, max_result_bytes=1 << 20),
        degraded=router.degraded,
        clock=clock,
        limits=limits,
    )
    await replayer.start()
    queue = JobQueue(store=store, replayer=replayer, clock=clock)
    meter = MeterProvider().get_meter("tests.jobs.fleet")
    tracer = TracerProvider().get_tracer("tests.jobs.fleet")
    backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
    backend.retry_wait = 7.0
    app = create_app(backend, settings=GatewaySettings(api_keys=(KEY_A, KEY_B)), jobs=queue)
    server = await stack.enter_async_context(
        GatewayServer(app, host="127.0.0.1", port=0, grace=1.0)
    )

    async def close() -> None:
        await replayer.stop()
        await store.close()
        await router.aclose()

    stack.push_async_callback(close)
    return Replica(server.url, router, recorder, store, replayer, cache)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    server = RedisServer(tmp_path)
    await server.start()
    state, clock = StateHolder(), FakeClock(wall_start=1_800_000_000.0)
    try:
        async with (
            FakeProvider(name="primary", reply=REPLY) as primary,
            FakeProvider(name="backup", reply=REPLY) as backup,
            AsyncExitStack() as stack,
        ):
            a = await _replica(stack, server, (primary, backup), state, clock)
            b = await _replica(stack, server, (primary, backup), state, clock)
            yield Fleet(server, primary, backup, state, clock, a, b)
    finally:
        server.stop()


def _client(replica: Replica, key: str = KEY_A) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0)


def _ask(text: str = "hello") -> Any:
    return [{"role": "user", "content": text}]


async def _job(replica: Replica, job_id: str, key: str = KEY_A) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{replica.url}/v1/failover/jobs/{job_id}",
            headers={"Authorization": f"Bearer {key}"},
        ) as answer,
    ):
        return answer.status, await answer.json()


async def _defer(replica: Replica, text: str = "later please") -> Any:
    async with _client(replica) as client:
        return await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(text), extra_headers={"x-failover-priority": "defer"}
        )


def _replays(fleet: Fleet) -> int:
    return sum(
        1 for r in (fleet.a, fleet.b) for route in r.recorder.routes if route.tier == "frontier"
    )


async def test_a_job_deferred_on_one_replica_is_replayed_once_and_fetched_on_another(
    fleet: Fleet,
) -> None:
    fleet.outage()
    raw = await _defer(fleet.a)
    assert raw.status_code == 202
    job_id = raw.headers["x-failover-job"]
    assert (await _job(fleet.b, job_id))[1]["status"] == "queued"  # B sees A's job at once
    await fleet.tick()
    assert (await _job(fleet.b, job_id))[1]["status"] == "queued"  # degraded: it waits

    fleet.recover()
    before = _replays(fleet)
    await fleet.tick()
    assert _replays(fleet) - before == 1  # two replicas ticking, one replay
    status, doc = await _job(fleet.b, job_id)
    assert status == 200
    assert (doc["status"], doc["attempts"], doc["degraded"]) == ("done", 1, None)
    assert doc["idempotency_key"] == raw.headers["Idempotency-Key"]
    assert doc["result"]["choices"][0]["message"]["content"] == REPLY
    assert (await _job(fleet.b, job_id, KEY_B))[0] == 404  # another client key's job
    queue = fleet.a.replayer.queues["frontier"]  # A's metrics see the fleet's queue
    assert (queue.done, queue.queued, queue.running) == (1, 0, 0)


async def test_a_replica_killed_after_claiming_leaves_its_job_to_the_other(fleet: Fleet) -> None:
    fleet.outage()
    job_id = (await _defer(fleet.a)).headers["x-failover-job"]
    fleet.recover()
    fleet.primary.set_fault(FaultMode.HANG)  # A's attempt will not come back
    fleet.backup.set_fault(FaultMode.HANG)
    fleet.clock.advance(0.5)
    await fleet.a.replayer.tick()  # A claims the job, its attempt under way
    _, doc = await _job(fleet.b, job_id)
    assert (doc["status"], doc["attempts"]) == ("running", 1)
    # A dies (SIGKILL-like): its attempt is cut, its lease is not handed back.
    await fleet.a.replayer.stop()
    await fleet.a.store.close(hand_back=False)
    fleet.primary.clear_fault()
    fleet.backup.clear_fault()
    await fleet.tick(fleet.b, ticks=2)
    assert (await _job(fleet.b, job_id))[1]["status"] == "running"  # A's lease holds still
    fleet.clock.advance(LEASE)
    await fleet.tick(fleet.b, ticks=2)
    _, doc = await _job(fleet.b, job_id)
    assert (doc["status"], doc["attempts"]) == ("done", 2)  # attempt 1 was A's, spent
    assert doc["result"]["choices"][0]["message"]["content"] == REPLY


async def test_an_answer_kept_by_one_replica_is_served_by_the_others_cache_rung(
    fleet: Fleet,
) -> None:
    async with _client(fleet.a) as client:
        served = await client.chat.completions.create(model="frontier", messages=_ask("q1"))
    assert served.choices[0].message.content == REPLY
    probe = redis.Redis.from_url(fleet.redis.url)
    try:
        for _ in range(500):  # bounded: the cache's thread writes it off the request path
            if probe.zcard(f"{PREFIX}:cache:index"):
                break
            await asyncio.sleep(0.01)
        assert probe.zcard(f"{PREFIX}:cache:index") == 1
    finally:
        probe.close()
    fleet.primary.set_fault(FaultMode.ERROR_503)
    fleet.backup.set_fault(FaultMode.ERROR_503)
    async with _client(fleet.b) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask("q1")
        )
        assert raw.headers["x-failover-degraded"] == "cache"
        assert raw.parse().choices[0].message.content == REPLY
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask("never asked")
        )
        assert raw.headers["x-failover-degraded"] == "static"
    async with _client(fleet.b, KEY_B) as other:  # another client's question: not its answer
        raw = await other.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask("q1")
        )
        assert raw.headers["x-failover-degraded"] == "static"


async def test_a_defer_past_the_fleets_bytes_in_redis_is_refused_like_a_full_queue(
    fleet: Fleet,
) -> None:
    fleet.outage()
    fleet.backup.set_fault(FaultMode.ERROR_503)
    kept = await _defer(fleet.a, "x" * (MAX_BYTES // 2))
    assert kept.status_code == 202
    async with _client(fleet.b) as client:  # the bound is the fleet's: B sees A's bytes
        with pytest.raises(openai.InternalServerError) as refused:
            await client.chat.completions.create(
                model="frontier",
                messages=_ask("y" * (MAX_BYTES // 2)),
                extra_headers={"x-failover-priority": "defer"},
            )
    assert refused.value.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "7"
    assert "not deferred" in refused.value.message
    assert "bytes in Redis" in refused.value.message
    assert (await _defer(fleet.b, "a small one")).status_code == 202  # under the bound: kept


async def test_with_redis_stopped_defer_is_refused_at_once_and_the_cache_rung_skipped(
    fleet: Fleet,
) -> None:
    fleet.outage()
    job_id = (await _defer(fleet.a)).headers["x-failover-job"]
    fleet.redis.kill()
    fleet.backup.set_fault(FaultMode.ERROR_503)
    async with _client(fleet.a) as client:
        with pytest.raises(openai.InternalServerError) as refused:
            await client.chat.completions.create(
                model="frontier",
                messages=_ask("later"),
                extra_headers={"x-failover-priority": "defer"},
            )
        assert refused.value.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "7"
        assert "not deferred" in refused.value.message
        assert "redis://" not in refused.value.message
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask("any")
        )
        assert raw.headers["x-failover-degraded"] == "static"  # the cache rung was skipped
    status, doc = await _job(fleet.b, job_id)
    assert status == 503
    assert "job store is unavailable" in doc["error"]["message"]
    for replica in (fleet.a, fleet.b):  # a tick fails, bounded (run() logs it once, waits)
        with pytest.raises(JobStoreError, match="Redis did not answer"):
            await replica.replayer.tick()
    await fleet.redis.start()  # back (empty: this test's Redis keeps nothing on disk)
    await fleet.tick()
    assert (await _job(fleet.b, job_id))[0] == 404


async def test_with_redis_frozen_no_request_hangs(fleet: Fleet) -> None:
    """SIGSTOP: Redis takes connections and never answers (the worst case: timeouts, not
    refusals). A defer, a job read and the cache rung each end within their bound."""
    fleet.outage()
    job_id = (await _defer(fleet.a)).headers["x-failover-job"]
    fleet.backup.set_fault(FaultMode.ERROR_503)
    fleet.redis.freeze()
    try:
        began = time.monotonic()
        async with _client(fleet.b) as client:
            with pytest.raises(openai.InternalServerError) as refused:
                await client.chat.completions.create(
                    model="frontier",
                    messages=_ask("later"),
                    extra_headers={"x-failover-priority": "defer"},
                )
            assert refused.value.status_code == 503
            assert "Redis did not answer (TimeoutError)" in refused.value.message
            raw = await client.chat.completions.with_raw_response.create(
                model="frontier", messages=_ask("any")
            )
            assert raw.headers["x-failover-degraded"] == "static"
        assert (await _job(fleet.a, job_id))[0] == 503
        # bounded, not timed: three calls of at most 2 x 0.3 s each, on a loaded machine
        assert time.monotonic() - began < 20.0
    finally:
        fleet.redis.thaw()
    assert (await _job(fleet.a, job_id))[1]["status"] == "queued"  # kept all along


RUNTIME_CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: PRIMARY_KEY}}
tiers:
  frontier:
    targets: [{{provider: primary, model: big}}]
    degrade: {{cache: true, static: "down"}}
state:
  backend: {backend}
  path: "{state}"
  redis: {{prefix: runtime-jobs, replica: gw-a, timeout_seconds: 0.3}}
jobs: {{store: {store}, max_bytes: 2097152}}
"""


def _runtime_config(tmp_path: Path, *, backend: str, store: str) -> Path:
    path = tmp_path / f"{backend}-{store}.yaml"
    state = tmp_path / "state.json"
    path.write_text(RUNTIME_CONFIG.format(backend=backend, store=store, state=state))
    return path


async def test_a_fleet_runtime_keeps_its_jobs_and_answers_in_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    await server.start()
    env = {"PRIMARY_KEY": "sk-x", "FAILOVER_REDIS_URL": server.url}
    try:
        config = load_config(_runtime_config(tmp_path, backend="redis", store="auto"))
        runtime = Runtime(config, env=env)
        await runtime.start()
        try:
            assert isinstance(runtime.jobs.store, RedisJobStore)
            assert runtime.jobs.store._max_bytes == 2 * 1024 * 1024  # jobs.max_bytes
            assert runtime.router.cache is not None
            assert runtime.router.cache._shared is not None  # the fleet's copy, not SQLite
            assert not (tmp_path / "state.cache.sqlite").exists()
        finally:
            await runtime.stop(grace=0.5)
        alone = load_config(_runtime_config(tmp_path, backend="file", store="auto"))
        runtime = Runtime(alone, env=env)
        assert not isinstance(runtime.jobs.store, RedisJobStore)  # no fleet: SQLite
        await runtime.stop(grace=0.5)
        wrong = load_config(_runtime_config(tmp_path, backend="file", store="redis"))
        with pytest.raises(ConfigError) as refused:
            Runtime(wrong, env=env)
        assert refused.value.key == "jobs.store"
    finally:
        server.stop()
