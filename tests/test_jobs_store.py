"""Deferred jobs without a gateway: the SQLite store (durable, bounded, oldest first) and the
replayer on a fake clock (rate limit, degraded tiers wait, backoff, dead letters, callbacks)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller._clock import FakeClock
from controller.jobs import (
    CallbackState,
    Done,
    Finished,
    Job,
    JobState,
    NewJob,
    Outcome,
    QueueFull,
    Replayer,
    ReplayLimits,
    Retry,
    SqliteJobStore,
)


def new_job(n: int, *, tier: str = "t", at: float = 1000.0, **kw: object) -> NewJob:
    fields: dict[str, object] = {
        "id": f"job_{n:020d}",
        "owner": "o",
        "tier": tier,
        "front": "openai",
        "model": "m",
        "body": b'{"model": "m"}',
        "idempotency_key": f"idem-{n}",
        "created_at": at + n,
    }
    return NewJob(**(fields | kw))  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    kept = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield kept
    await kept.close()


async def test_a_job_is_kept_on_disk_and_read_back_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteJobStore(path)
    job, created = await first.add(new_job(1, headers={"anthropic-version": "x"}), max_jobs=10)
    assert created
    assert job.state is JobState.QUEUED
    await first.close()
    again = SqliteJobStore(path)
    try:
        kept = await again.get(job.id)
        assert kept == job
        assert kept.headers == {"anthropic-version": "x"}
    finally:
        await again.close()


async def test_the_same_idempotency_key_of_the_same_owner_is_one_job(store: SqliteJobStore) -> None:
    first, _ = await store.add(new_job(1), max_jobs=10)
    again, created = await store.add(new_job(2, idempotency_key="idem-1"), max_jobs=10)
    assert (again.id, created) == (first.id, False)
    other, created = await store.add(new_job(3, idempotency_key="idem-1", owner="p"), max_jobs=10)
    assert created
    assert other.id != first.id


async def test_a_full_queue_refuses_and_frees_as_jobs_finish(store: SqliteJobStore) -> None:
    for n in range(3):
        await store.add(new_job(n), max_jobs=3)
    with pytest.raises(QueueFull):
        await store.add(new_job(9), max_jobs=3)
    (claimed,) = await store.claim("t", now=5000.0, limit=1)
    await store.finish([Finished(claimed.id, outcome=Done(200, b"{}"))], now=5000.0)
    await store.add(new_job(9), max_jobs=3)


async def test_claims_take_the_oldest_due_jobs_of_one_tier_and_spend_an_attempt(
    store: SqliteJobStore,
) -> None:
    for n in (3, 1, 2):
        await store.add(new_job(n), max_jobs=10)
    await store.add(new_job(0, tier="other"), max_jobs=10)
    claimed = await store.claim("t", now=5000.0, limit=2)
    assert [j.id for j in claimed] == [new_job(1).id, new_job(2).id]
    assert all(j.state is JobState.RUNNING and j.attempts == 1 for j in claimed)
    assert [j.id for j in await store.claim("t", now=5000.0, limit=5)] == [new_job(3).id]
    assert await store.claim("t", now=5000.0, limit=5) == []
    assert (await store.queues())["t"].running == 3


async def test_finish_records_answers_retries_and_dead_letters(store: SqliteJobStore) -> None:
    for n in range(3):
        await store.add(new_job(n, callback="http://127.0.0.1:9/cb"), max_jobs=10)
    a, b, c = await store.claim("t", now=5000.0, limit=3)
    await store.finish(
        [
            Finished(a.id, outcome=Done(200, b'{"ok": 1}')),
            Finished(b.id, error="every provider failed", next_at=6000.0),
            Finished(c.id, error="every provider failed", dead=True),
        ],
        now=5001.0,
    )
    done, retry, dead = [await store.get(j.id) for j in (a, b, c)]
    assert done is not None
    assert (done.state, done.result, done.finished_at) == (JobState.DONE, b'{"ok": 1}', 5001.0)
    assert done.callback_state is CallbackState.PENDING
    assert retry is not None
    assert (retry.state, retry.next_at, retry.error) == (
        JobState.QUEUED,
        6000.0,
        "every provider failed",
    )
    assert retry.callback_state is CallbackState.WAITING
    assert dead is not None
    assert dead.state is JobState.DEAD
    assert await store.claim("t", now=5999.0, limit=5) == []  # the retry waits for next_at
    assert [j.id for j in await store.claim("t", now=6000.0, limit=5)] == [b.id]
    queue = (await store.queues())["t"]
    assert (queue.queued, queue.running, queue.done, queue.dead) == (0, 1, 1, 1)


async def test_jobs_a_crash_left_running_are_queued_again_or_dead(store: SqliteJobStore) -> None:
    for n in range(2):
        await store.add(new_job(n), max_jobs=10)
    first, second = await store.claim("t", now=5000.0, limit=2)
    await store.finish([Finished(second.id, error="x", next_at=5000.0)], now=5000.0)
    await store.claim("t", now=5000.0, limit=1)  # the second's second attempt
    assert await store.recover(now=5001.0, max_tries=2) == 2
    back, dead = await store.get(first.id), await store.get(second.id)
    assert back is not None
    assert (back.state, back.attempts) == (JobState.QUEUED, 1)
    assert dead is not None
    assert (dead.state, dead.attempts) == (JobState.DEAD, 2)


async def test_finished_jobs_are_purged_after_their_keep_time(store: SqliteJobStore) -> None:
    for n in range(2):
        await store.add(new_job(n), max_jobs=10)
    (claimed,) = await store.claim("t", now=5000.0, limit=1)
    await store.finish([Finished(claimed.id, outcome=Done(200, b"{}"))], now=5000.0)
    assert await store.purge(before=5000.0, limit=10) == 0
    assert await store.purge(before=5000.5, limit=10) == 1
    assert await store.get(claimed.id) is None
    assert await store.get(new_job(1).id) is not None  # unfinished: never purged


# ----------------------------------------------------------------------------- the replayer
class Runs:
    """The replayer's runner seam: answers each job with what the test set for its id."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.failing: set[str] = set()

    async def __call__(self, job: Job) -> Outcome:
        self.seen.append((job.id, job.attempts))
        if job.id in self.failing:
            return Retry("every provider failed")
        return Done(200, b'{"answer": "' + job.id.encode() + b'"}')


async def replayer(
    store: SqliteJobStore,
    clock: FakeClock,
    runs: Runs,
    degraded: set[str],
    **limits: float,
) -> tuple[Replayer, list[tuple[str, str]]]:
    dead: list[tuple[str, str]] = []
    replay = Replayer(
        store,
        run=runs,
        degraded=lambda tier: tier in degraded,
        clock=clock,
        limits=ReplayLimits(**limits),  # type: ignore[arg-type]
        on_dead=[lambda job, error: dead.append((job.id, error))],
    )
    await replay.start()
    return replay, dead


async def step(replay: Replayer, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await replay.tick()
    await replay.settle()


async def test_replays_wait_while_the_tier_is_degraded_then_go_oldest_first_at_the_rate(
    store: SqliteJobStore,
) -> None:
    clock, runs, degraded = FakeClock(wall_start=2000.0), Runs(), {"t"}
    for n in range(20):
        await store.add(new_job(n), max_jobs=100)
    replay, _ = await replayer(
        store, clock, runs, degraded, per_second=4.0, tick_seconds=0.5, concurrency=100
    )
    for _ in range(4):
        await step(replay, clock, 0.5)
    assert runs.seen == []  # degraded: nothing is sent
    degraded.clear()
    started: list[int] = []
    for _ in range(8):  # 4 s at 4 jobs/s, a burst of 2 saved up
        await step(replay, clock, 0.5)
        started.append(len(runs.seen))
    assert started[-1] <= 4 * 4.0 + 2
    assert all(b - a <= 2 for a, b in zip([0, *started], started, strict=False))
    assert [job for job, _ in runs.seen] == [new_job(n).id for n in range(len(runs.seen))]
    done = await store.get(new_job(0).id)
    assert done is not None
    assert (done.state, done.result) == (JobState.DONE, b'{"answer": "' + done.id.encode() + b'"}')


async def test_a_job_that_keeps_failing_backs_off_then_goes_to_the_dead_letters(
    store: SqliteJobStore,
) -> None:
    clock, runs = FakeClock(wall_start=2000.0), Runs()
    job, _ = await store.add(new_job(1), max_jobs=10)
    runs.failing.add(job.id)
    replay, dead = await replayer(
        store, clock, runs, set(), max_tries=3, retry_backoff_seconds=10.0, per_second=100.0
    )
    await step(replay, clock, 0.5)
    assert runs.seen == [(job.id, 1)]
    await step(replay, clock, 9.0)  # the backoff after try 1 is 10 s
    assert len(runs.seen) == 1
    await step(replay, clock, 1.5)
    assert runs.seen[-1] == (job.id, 2)
    await step(replay, clock, 20.5)  # 20 s after try 2
    await step(replay, clock, 0.5)  # its result written, the hook told
    assert runs.seen[-1] == (job.id, 3)
    kept = await store.get(job.id)
    assert kept is not None
    assert kept.state is JobState.DEAD
    assert dead == [(job.id, "every provider failed")]
    assert replay.replayed[("t", "dead")] == 1
    assert replay.replayed[("t", "retry")] == 2


async def test_a_finished_job_is_posted_to_its_callback_with_retries(
    store: SqliteJobStore,
) -> None:
    clock, runs = FakeClock(wall_start=2000.0), Runs()
    posts: list[tuple[str, dict[str, str]]] = []
    answers = [False, False, True]

    async def send(url: str, body: bytes, headers: dict[str, str]) -> bool:
        posts.append((url, headers))
        return answers.pop(0)

    job, _ = await store.add(new_job(1, callback="http://hooks.test/x"), max_jobs=10)
    replay = Replayer(
        store,
        run=runs,
        degraded=lambda _: False,
        clock=clock,
        limits=ReplayLimits(callback_tries=5, callback_backoff_seconds=1.0, per_second=10.0),
        send_callback=send,
    )
    await replay.start()
    for _ in range(12):
        await step(replay, clock, 0.5)
    assert [url for url, _ in posts] == ["http://hooks.test/x"] * 3
    assert posts[0][1]["Idempotency-Key"] == "idem-1"
    kept = await store.get(job.id)
    assert kept is not None
    assert (kept.callback_state, kept.callback_attempts) == (CallbackState.DELIVERED, 3)


async def test_stop_cuts_attempts_under_way_and_a_restart_queues_them_again(
    store: SqliteJobStore,
) -> None:
    clock = FakeClock(wall_start=2000.0)
    gate = asyncio.Event()

    async def slow(job: Job) -> Outcome:
        await gate.wait()
        return Done(200, b"{}")

    await store.add(new_job(1), max_jobs=10)
    replay = Replayer(store, run=slow, degraded=lambda _: False, clock=clock, limits=ReplayLimits())
    await replay.start()
    await replay.tick()
    await asyncio.sleep(0)
    assert replay.busy == 1
    await replay.stop()
    again = Replayer(store, run=slow, degraded=lambda _: False, clock=clock, limits=ReplayLimits())
    await again.start()
    kept = await store.get(new_job(1).id)
    assert kept is not None
    assert (kept.state, kept.attempts) == (JobState.QUEUED, 1)


async def test_a_store_that_kept_nothing_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.sqlite3"
    store = SqliteJobStore(path)
    assert await store.queues() == {}
    assert await store.recover(now=1.0, max_tries=3) == 0
    assert await store.claim("t", now=1.0, limit=5) == []
    assert not path.exists()
    await store.add(new_job(1), max_jobs=10)
    assert path.exists()
    await store.close()


async def test_a_store_file_from_before_the_degraded_column_opens_and_gains_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    first = SqliteJobStore(path)
    await first.add(new_job(1), max_jobs=10)
    await first.close()
    with sqlite3.connect(path) as db:  # the file as a release without the column left it
        db.execute("ALTER TABLE jobs DROP COLUMN degraded")
    again = SqliteJobStore(path)
    try:
        (claimed,) = await again.claim("t", now=5000.0, limit=1)
        done = Done(200, b"{}", degraded="tier")
        await again.finish([Finished(claimed.id, outcome=done)], now=5001.0)
        kept = await again.get(claimed.id)
        assert kept is not None
        assert (kept.state, kept.degraded) == (JobState.DONE, "tier")
        assert kept.public(now=5002.0)["degraded"] == "tier"
    finally:
        await again.close()
