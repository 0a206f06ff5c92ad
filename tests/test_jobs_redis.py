"""The fleet's job store on a real redis-server: one queue for every replica (oldest first, one
claim per job, the replay rate shared by the fleet), a dead replica's claimed job replayed by
another (its attempt spent, its late result fenced out), results readable from any replica, and
a Redis that is away answering fast with an error, never hanging. Two stores on one Redis are
two replicas. Leases, the rate bucket and due times are on Redis's clock (TIME): the stores
here follow a fake clock (their test-only offset makes Redis's time the fake clock's wall), and
two stores whose own clocks are 45 s apart never take each other's live job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from controller._clock import FakeClock
from controller.fleet import FleetConfig
from controller.jobs import Done, Finished, JobState, QueueFull, Replayer, ReplayLimits
from controller.jobs._job import CallbackState, Job, JobStoreError, Outcome
from controller.jobs._redis import MAX_BYTES, RedisJobStore
from tests.redis_support import RedisServer
from tests.test_jobs_store import new_job

LEASE = 10.0
T0 = 5000.0


def following(clock: FakeClock) -> Callable[[], float]:
    """The offset that makes Redis's time (the host's: the server is on loopback) the fake
    clock's wall, whatever real time went by."""
    return lambda: clock.wall() - time.time()


def replica(
    redis: RedisServer,
    clock: FakeClock | None,
    *,
    rate: float = 1000.0,
    tick: float = 0.5,
    lease: float = LEASE,
    max_bytes: int = MAX_BYTES,
) -> RedisJobStore:
    cfg = FleetConfig(prefix="jobs-test", timeout_seconds=0.3)
    return RedisJobStore.connect(
        cfg,
        {"FAILOVER_REDIS_URL": redis.url},
        per_second=rate,
        tick_seconds=tick,
        lease_seconds=lease,
        clock_offset=None if clock is None else following(clock),
        max_bytes=max_bytes,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=T0)


@pytest.fixture
async def pair(
    redis: RedisServer, clock: FakeClock
) -> AsyncIterator[tuple[RedisJobStore, RedisJobStore]]:
    a, b = replica(redis, clock), replica(redis, clock)
    yield a, b
    await a.close()
    await b.close()


async def test_a_job_added_on_one_replica_is_read_on_the_other(
    pair: tuple[RedisJobStore, RedisJobStore],
) -> None:
    a, b = pair
    job, created = await a.add(new_job(1, headers={"anthropic-version": "x"}), max_jobs=10)
    assert created
    assert job.state is JobState.QUEUED
    assert await b.get(job.id) == job
    again, created = await b.add(new_job(2, idempotency_key="idem-1"), max_jobs=10)
    assert (again.id, created) == (job.id, False)  # one owner, one idempotency key: one job
    assert await b.get("job_nope") is None


async def test_the_fleet_holds_at_most_max_jobs_unfinished(
    pair: tuple[RedisJobStore, RedisJobStore],
) -> None:
    a, b = pair
    await a.add(new_job(1), max_jobs=2)
    await b.add(new_job(2, tier="other"), max_jobs=2)
    with pytest.raises(QueueFull):
        await a.add(new_job(3), max_jobs=2)


async def test_each_job_is_claimed_once_oldest_first_and_finished_from_either_replica(
    pair: tuple[RedisJobStore, RedisJobStore], clock: FakeClock
) -> None:
    a, b = pair
    for n in (3, 1, 2, 4):
        await a.add(new_job(n, callback="http://127.0.0.1:9/cb"), max_jobs=10)
    first = await a.claim("t", now=T0, limit=2)
    second = await b.claim("t", now=T0, limit=5)
    assert [j.id for j in first] == [new_job(1).id, new_job(2).id]
    assert [j.id for j in second] == [new_job(3).id, new_job(4).id]
    assert all(j.state is JobState.RUNNING and j.attempts == 1 for j in first + second)
    assert await a.claim("t", now=T0, limit=5) == []
    queue = (await b.queues())["t"]
    assert (queue.queued, queue.running, queue.oldest_created_at) == (0, 4, 1001.0)

    await a.finish(
        [
            Finished(first[0].id, outcome=Done(200, b'{"ok": 1}', degraded="tier")),
            Finished(first[1].id, error="every provider failed", next_at=T0 + 60),
        ],
        now=T0 + 1,
    )
    await b.finish([Finished(second[0].id, error="poison", dead=True)], now=T0 + 1)
    done = await b.get(first[0].id)
    assert done is not None
    assert (done.state, done.result, done.result_status, done.degraded) == (
        JobState.DONE,
        b'{"ok": 1}',
        200,
        "tier",
    )
    assert done.callback_state is CallbackState.PENDING
    waiting = await b.get(first[1].id)
    assert waiting is not None
    assert (waiting.state, waiting.next_at) == (JobState.QUEUED, T0 + 60)
    clock.advance(30)
    assert await b.claim("t", now=T0 + 30, limit=5) == []  # its backoff is not over
    clock.advance(31)
    assert [j.id for j in await b.claim("t", now=T0 + 61, limit=5)] == [first[1].id]
    queue = (await a.queues())["t"]
    assert (queue.done, queue.dead, queue.running) == (1, 1, 2)

    due = await a.callbacks_due(now=T0 + 62, limit=10)
    assert {j.id for j in due} == {first[0].id, second[0].id}
    assert await b.callbacks_due(now=T0 + 62, limit=10) == []  # held: one replica posts it
    await a.callback_result(first[0].id, delivered=True, next_at=None, now=T0 + 2)
    delivered = await b.get(first[0].id)
    assert delivered is not None
    assert (delivered.callback_state, delivered.callback_attempts) == (CallbackState.DELIVERED, 1)

    await a.callback_result(second[0].id, delivered=False, next_at=None, now=T0 + 2)
    assert await b.purge(before=T0 + 5, limit=10) == 2
    assert await a.get(first[0].id) is None
    assert (await b.add(new_job(1), max_jobs=10))[1]  # its idempotency key is free again


async def test_a_dead_replicas_claimed_job_goes_back_once_its_lease_runs_out(
    pair: tuple[RedisJobStore, RedisJobStore], clock: FakeClock
) -> None:
    a, b = pair
    await a.add(new_job(1), max_jobs=10)
    (claimed,) = await a.claim("t", now=T0, limit=1)
    clock.advance(1)
    assert await b.maintain(now=T0 + 1, max_tries=3) == []
    clock.advance(LEASE - 2)
    await a.maintain(now=T0 + LEASE - 1, max_tries=3)  # a is alive: its lease is renewed
    clock.advance(2)
    await b.maintain(now=T0 + LEASE + 1, max_tries=3)
    assert await b.claim("t", now=T0 + LEASE + 1, limit=5) == []  # still a's
    # a dies: no renewal. Past its lease, b's tick puts the job back, its attempt spent.
    clock.advance(LEASE - 1)
    await b.maintain(now=T0 + 2 * LEASE, max_tries=3)
    (again,) = await b.claim("t", now=T0 + 2 * LEASE, limit=5)
    assert (again.id, again.attempts, again.idempotency_key) == (claimed.id, 2, "idem-1")
    assert "lease ran out" in again.error
    # a comes back late with a result for attempt 1: not written (the job is b's now)
    await a.finish([Finished(claimed.id, outcome=Done(200, b"late"))], now=T0 + 2 * LEASE)
    assert (await b.get(claimed.id)).state is JobState.RUNNING  # type: ignore[union-attr]
    await b.finish([Finished(claimed.id, outcome=Done(200, b"b's"))], now=T0 + 2 * LEASE)
    finished = await a.get(claimed.id)
    assert finished is not None
    assert (finished.state, finished.result) == (JobState.DONE, b"b's")


async def test_a_job_with_no_try_left_whose_replica_died_is_a_dead_letter(
    pair: tuple[RedisJobStore, RedisJobStore], clock: FakeClock
) -> None:
    a, b = pair
    await a.add(new_job(1), max_jobs=10)
    await a.claim("t", now=T0, limit=1)
    clock.advance(LEASE + 1)
    (dead,) = await b.maintain(now=T0 + LEASE + 1, max_tries=1)
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert (await a.queues())["t"].dead == 1


async def test_a_stopping_replica_hands_its_running_jobs_back(
    redis: RedisServer, clock: FakeClock
) -> None:
    a, b = replica(redis, clock), replica(redis, clock)
    try:
        await a.add(new_job(1), max_jobs=10)
        await a.claim("t", now=T0, limit=1)
        await a.close()
        await b.maintain(now=T0 + 1, max_tries=3)  # long before the lease would have run out
        (again,) = await b.claim("t", now=T0 + 1, limit=1)
        assert again.attempts == 2
    finally:
        await b.close()


async def test_the_replay_rate_is_the_fleets_not_each_replicas(redis: RedisServer) -> None:
    """Two replayers on one Redis at 4 jobs/s: in 10 s of ticks they start about 40, not 80."""
    clock = FakeClock(wall_start=T0)
    stores = [replica(redis, clock, rate=4.0, tick=0.5) for _ in range(2)]
    started: list[str] = []

    async def run(job: Job) -> Outcome:
        started.append(job.id)
        return Done(200, b"{}")

    limits = ReplayLimits(per_second=4.0, concurrency=100, tick_seconds=0.5)
    replayers = [
        Replayer(s, run=run, degraded=lambda _: False, clock=clock, limits=limits) for s in stores
    ]
    try:
        for n in range(200):
            await stores[n % 2].add(new_job(n), max_jobs=1000)
        for _ in range(20):
            clock.advance(0.5)
            for replayer in replayers:
                await replayer.tick()
                await replayer.settle()
        assert 38 <= len(started) <= 44, len(started)  # 4/s x 10 s, + the first tick's burst
        assert len(set(started)) == len(started)  # none twice
        assert started == sorted(started)  # oldest first, across the fleet
    finally:
        for s in stores:
            await s.close()


async def test_a_redis_that_is_down_or_frozen_fails_fast(redis: RedisServer) -> None:
    store = replica(redis, None)
    try:
        await store.add(new_job(1), max_jobs=10)
        redis.freeze()
        began = time.monotonic()
        with pytest.raises(JobStoreError, match="Redis did not answer"):
            await store.add(new_job(2), max_jobs=10)
        with pytest.raises(JobStoreError):
            await store.get(new_job(1).id)
        redis.kill()
        with pytest.raises(JobStoreError):
            await store.queues()
        assert time.monotonic() - began < 10.0  # bounded: two 0.6 s timeouts and a refusal
    finally:
        await store.close()


async def test_a_replayer_stopped_while_redis_is_away_stops_and_its_job_is_not_lost(
    redis: RedisServer,
) -> None:
    """An attempt ended but its result not yet written when the gateway stops, with Redis not
    answering: the stop goes on (the runtime still flushes spend and telemetry after it), and
    the job, whose result was not written, is replayed again (its attempt spent)."""
    clock = FakeClock(wall_start=T0)
    a, b = replica(redis, clock), replica(redis, clock)

    ran = asyncio.Event()

    async def run(job: Job) -> Outcome:
        ran.set()  # the replayer keeps the result in the same step, before the test goes on
        return Done(200, b"{}")

    limits = ReplayLimits(per_second=100.0, concurrency=4, tick_seconds=0.5)
    replayer = Replayer(a, run=run, degraded=lambda _: False, clock=clock, limits=limits)
    try:
        await a.add(new_job(1), max_jobs=10)
        await replayer.tick()
        await ran.wait()  # the attempt ended; its result waits for the next tick
        redis.freeze()
        await replayer.stop()
        redis.thaw()
        await a.close()  # hands the job back
        await b.maintain(now=T0 + 1, max_tries=3)
        (again,) = await b.claim("t", now=T0 + 1, limit=1)
        assert again.attempts == 2
    finally:
        await a.close()
        await b.close()


async def test_replicas_whose_clocks_are_45_s_apart_never_take_each_others_live_job(
    redis: RedisServer,
) -> None:
    """The review's case: leases of 30 s, one replica's clock 45 s ahead. Its ticks neither put
    back the other's running job nor claim it; nor do the other's, the other way round. Both
    stores on Redis's real time (no offset): nothing here waits on a timer (the test takes well
    under a second of the 30 s lease)."""
    right, ahead = replica(redis, None, lease=30.0), replica(redis, None, lease=30.0)
    try:
        now = time.time()
        await right.add(new_job(1), max_jobs=10)
        await right.add(new_job(2), max_jobs=10)
        (mine,) = await right.claim("t", now=now, limit=1)
        (theirs,) = await ahead.claim("t", now=now + 45, limit=1)
        for _ in range(3):  # ticks of both, each renewing its own leases
            assert await ahead.maintain(now=now + 45, max_tries=1) == []
            assert await right.maintain(now=now, max_tries=1) == []
        assert await ahead.claim("t", now=now + 45, limit=5) == []
        assert await right.claim("t", now=now, limit=5) == []
        for job in (mine, theirs):
            kept = await right.get(job.id)
            assert kept is not None
            assert (kept.state, kept.attempts, kept.error) == (JobState.RUNNING, 1, "")
        queue = (await ahead.queues())["t"]
        assert (queue.running, queue.queued, queue.dead) == (2, 0, 0)
        # each finishes its own: both results written (neither lease was taken)
        await right.finish([Finished(mine.id, outcome=Done(200, b"r"))], now=now)
        await ahead.finish([Finished(theirs.id, outcome=Done(200, b"a"))], now=now + 45)
        assert (await ahead.queues())["t"].done == 2
    finally:
        await right.close()
        await ahead.close()


async def used(probe: aioredis.Redis) -> int:
    return int(await probe.get("jobs-test:jobs:bytes") or 0)


async def test_the_fleet_holds_at_most_max_bytes_of_jobs_results_included(
    redis: RedisServer, clock: FakeClock
) -> None:
    """The bytes of the jobs kept in Redis are counted in the scripts: a job's body, headers
    and callback (plus a fixed overhead) when it is accepted, its result when it is done, all
    of it given back when it is purged. Past the bound a job is refused as by a full queue."""
    store = replica(redis, clock, max_bytes=4000)
    probe = aioredis.Redis.from_url(redis.url)
    try:
        body = b"x" * 1000
        await store.add(new_job(1, body=body), max_jobs=100)
        one = await used(probe)
        assert one > 1000
        await store.add(new_job(2, body=body), max_jobs=100)
        with pytest.raises(QueueFull, match="bytes in Redis"):
            await store.add(new_job(3, body=b"y" * 2500), max_jobs=100)
        assert await store.get(new_job(3).id) is None  # nothing of it kept
        (claimed,) = await store.claim("t", now=T0, limit=1)
        await store.finish([Finished(claimed.id, outcome=Done(200, b"r" * 900))], now=T0)
        assert await used(probe) == 2 * one + 900
        with pytest.raises(QueueFull):  # the result counts: 2 jobs + 900 B of answer
            await store.add(new_job(3, body=b"y" * 1000), max_jobs=100)
        assert await store.purge(before=T0 + 1, limit=10) == 1
        assert await used(probe) == one
        assert (await store.add(new_job(3, body=b"y" * 1000), max_jobs=100))[1]
    finally:
        await probe.aclose()
        await store.close()
