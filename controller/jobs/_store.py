"""Where deferred jobs live: the :class:`JobStore` interface and its SQLite implementation.

The interface is what the gateway and the replayer need and nothing more, so a Redis store for
a fleet (one queue for every replica) is another small class behind the same calls. Every call
is a coroutine: a store does its I/O off the event loop.

SQLite (the default): one file, WAL journal, ``synchronous=FULL``: a job's row is on disk
(fsynced) when :meth:`add` returns, which is before the client gets its 202, so a ``kill -9``
right after the answer loses nothing. Every statement runs on one thread of its own (the
connection never leaves it), so the event loop never waits on the disk. An empty ``path`` keeps
the jobs in memory only (lost on restart; for tests and deployments that opt out).

Bounds: at most ``max_jobs`` unfinished jobs (:class:`QueueFull` past it), a finished job's row
is deleted ``keep_seconds`` after it finished (:meth:`purge`), and every read that returns rows
takes a ``limit``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from controller import _json
from controller.jobs._job import (
    CallbackState,
    Done,
    Job,
    JobState,
    JobStoreError,
    NewJob,
    QueueFull,
)

__all__ = ["Finished", "JobStore", "SqliteJobStore", "TierQueue"]


@dataclass(frozen=True, slots=True)
class TierQueue:
    """One tier's queue as the metrics, the status page and the replayer see it."""

    queued: int = 0  # waiting (a retry's backoff included)
    running: int = 0
    done: int = 0  # finished with an answer, results still kept
    dead: int = 0  # dead letters still kept
    oldest_created_at: float | None = None  # of the unfinished jobs


@dataclass(frozen=True, slots=True)
class Finished:
    """What became of one claimed job's attempt: answered (``outcome`` a :class:`Done`), to be
    tried again at ``next_at``, or dead (``dead``)."""

    id: str
    outcome: Done | None = None
    error: str = ""
    next_at: float = 0.0
    dead: bool = False


class JobStore(Protocol):
    # True: the store enforces the per-tier replay rate itself, for every replica sharing it
    # (:meth:`claim` takes no more than the shared bucket holds); False: the replayer does.
    shares_rate: bool

    async def add(self, job: NewJob, *, max_jobs: int) -> tuple[Job, bool]:
        """Keep ``job`` durably; (the stored job, True). A job of the same owner and
        idempotency key already kept is returned instead: (that job, False). Raises
        :class:`QueueFull` when ``max_jobs`` unfinished jobs are kept."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def claim(self, tier: str, *, now: float, limit: int) -> list[Job]:
        """Up to ``limit`` of ``tier``'s queued jobs due by ``now``, oldest first, each marked
        running with one more attempt (durably, before they are returned)."""
        ...

    async def finish(self, results: Sequence[Finished], *, now: float) -> None: ...

    async def recover(self, *, now: float, max_tries: int) -> int:
        """At start-up: jobs left running (a crash, a stop) go back to the queue, or to the dead
        letters when they have no tries left. Returns how many were found."""
        ...

    async def maintain(self, *, now: float, max_tries: int) -> list[Job]:
        """Every tick: a shared store renews the leases of this replica's running jobs and puts
        back those whose replica stopped renewing (dead, or stalled past the lease), as
        :meth:`recover` does at start-up; the jobs that went to the dead letters are returned.
        A store of one process has nothing to do (its running jobs are its own)."""
        ...

    async def callbacks_due(self, *, now: float, limit: int) -> list[Job]: ...

    async def callback_result(
        self, job_id: str, *, delivered: bool, next_at: float | None, now: float
    ) -> None:
        """Record one delivery try: delivered, or failed (``next_at`` None: no tries left)."""
        ...

    async def purge(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` jobs that finished before ``before``; how many were deleted."""
        ...

    async def queues(self) -> dict[str, TierQueue]: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    tier TEXT NOT NULL,
    front TEXT NOT NULL,
    model TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    idem TEXT NOT NULL,
    callback TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    finished_at REAL,
    result_status INTEGER,
    result BLOB,
    error TEXT NOT NULL DEFAULT '',
    cb_state TEXT NOT NULL,
    cb_attempts INTEGER NOT NULL DEFAULT 0,
    cb_next_at REAL,
    degraded TEXT NOT NULL DEFAULT '',
    UNIQUE (owner, idem)
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, tier, created_at);
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (cb_state, cb_next_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""
_COLUMNS = (
    "id, owner, tier, front, model, body, headers, idem, callback, state, attempts, created_at, "
    "next_at, finished_at, result_status, result, error, cb_state, cb_attempts, cb_next_at, "
    "degraded"
)
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


def _job(row: Sequence[Any]) -> Job:
    headers = _json.loads(row[6]) if row[6] else {}
    return Job(
        id=row[0],
        owner=row[1],
        tier=row[2],
        front=row[3],
        model=row[4],
        body=bytes(row[5]),
        headers=headers,
        idempotency_key=row[7],
        callback=row[8],
        state=JobState(row[9]),
        attempts=row[10],
        created_at=row[11],
        next_at=row[12],
        finished_at=row[13],
        result_status=row[14],
        result=None if row[15] is None else bytes(row[15]),
        error=row[16],
        callback_state=CallbackState(row[17]),
        callback_attempts=row[18],
        callback_next_at=row[19],
        degraded=row[20],
    )


class _Sqlite:
    """The statements, run on the store's own thread only."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path or ":memory:", isolation_level=None)
        if path:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit is fsynced before it returns
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "degraded" not in columns:  # a file written before jobs said how they were served
            self.db.execute("ALTER TABLE jobs ADD COLUMN degraded TEXT NOT NULL DEFAULT ''")
        (self.unfinished,) = self.db.execute(
            "SELECT count(*) FROM jobs WHERE state IN (?, ?)", _UNFINISHED
        ).fetchone()

    def _one(self, where: str, args: Sequence[Any]) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {where}", args).fetchone()
        return None if row is None else _job(row)

    def add(self, job: NewJob, max_jobs: int) -> tuple[Job, bool]:
        known = self._one("owner = ? AND idem = ?", (job.owner, job.idempotency_key))
        if known is not None:
            return known, False
        if self.unfinished >= max_jobs:
            raise QueueFull(f"{self.unfinished} jobs are waiting (jobs.max_jobs {max_jobs})")
        cb_state = CallbackState.WAITING if job.callback else CallbackState.NONE
        self.db.execute(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL, NULL, NULL, '', ?, 0, NULL, '')",
            (
                job.id,
                job.owner,
                job.tier,
                job.front,
                job.model,
                job.body,
                _json.dumps_text(dict(job.headers)),
                job.idempotency_key,
                job.callback,
                JobState.QUEUED.value,
                job.created_at,
                job.created_at,
                cb_state.value,
            ),
        )
        self.unfinished += 1
        stored = self._one("id = ?", (job.id,))
        assert stored is not None
        return stored, True

    def get(self, job_id: str) -> Job | None:
        return self._one("id = ?", (job_id,))

    def claim(self, tier: str, now: float, limit: int) -> list[Job]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? AND tier = ? AND next_at <= ? "
                "ORDER BY created_at, rowid LIMIT ?",
                (JobState.QUEUED.value, tier, now, limit),
            ).fetchall()
            ids = [(row[0],) for row in rows]
            db.executemany(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?", ids
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        jobs = [_job(row) for row in rows]
        return [_running(job) for job in jobs]

    def finish(self, results: Sequence[Finished], now: float) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            ended = 0
            for item in results:
                ended += self._finish_one(item, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.unfinished -= ended

    def _finish_one(self, item: Finished, now: float) -> int:
        callback_due = (
            "cb_state = CASE cb_state WHEN 'waiting' THEN 'pending' ELSE cb_state END, "
            "cb_next_at = CASE cb_state WHEN 'waiting' THEN ? ELSE cb_next_at END"
        )
        if item.outcome is not None:
            cur = self.db.execute(
                "UPDATE jobs SET state = 'done', finished_at = ?, result_status = ?, result = ?, "
                f"error = '', degraded = ?, {callback_due} WHERE id = ? AND state = 'running'",
                (now, item.outcome.status, item.outcome.body, item.outcome.degraded, now, item.id),
            )
        elif item.dead:
            cur = self.db.execute(
                "UPDATE jobs SET state = 'dead', finished_at = ?, error = ?, "
                f"{callback_due} WHERE id = ? AND state = 'running'",
                (now, item.error, now, item.id),
            )
        else:
            self.db.execute(
                "UPDATE jobs SET state = 'queued', next_at = ?, error = ? "
                "WHERE id = ? AND state = 'running'",
                (item.next_at, item.error, item.id),
            )
            return 0
        return cur.rowcount

    def recover(self, now: float, max_tries: int) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cut = "a stop or crash cut its attempt"
            dead = db.execute(
                "UPDATE jobs SET state = 'dead', finished_at = ?, error = ?, "
                "cb_state = CASE cb_state WHEN 'waiting' THEN 'pending' ELSE cb_state END, "
                "cb_next_at = CASE cb_state WHEN 'waiting' THEN ? ELSE cb_next_at END "
                "WHERE state = 'running' AND attempts >= ?",
                (now, cut, now, max_tries),
            ).rowcount
            back = db.execute(
                "UPDATE jobs SET state = 'queued', next_at = ?, error = ? WHERE state = 'running'",
                (now, cut),
            ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.unfinished -= dead
        return int(dead + back)

    def callbacks_due(self, now: float, limit: int) -> list[Job]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE cb_state = 'pending' AND cb_next_at <= ? "
            "ORDER BY cb_next_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_job(row) for row in rows]

    def callback_result(
        self, job_id: str, delivered: bool, next_at: float | None, now: float
    ) -> None:
        state = "delivered" if delivered else "pending" if next_at is not None else "failed"
        self.db.execute(
            "UPDATE jobs SET cb_state = ?, cb_attempts = cb_attempts + 1, cb_next_at = ? "
            "WHERE id = ?",
            (state, next_at, job_id),
        )

    def purge(self, before: float, limit: int) -> int:
        cur = self.db.execute(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL "
            "AND finished_at < ? AND cb_state NOT IN ('pending', 'waiting') LIMIT ?)",
            (before, limit),
        )
        return int(cur.rowcount)

    def queues(self) -> dict[str, TierQueue]:
        counts: dict[str, dict[str, int]] = {}
        for tier, state, n in self.db.execute(
            "SELECT tier, state, count(*) FROM jobs GROUP BY tier, state"
        ):
            counts.setdefault(tier, {})[state] = n
        oldest = dict(
            self.db.execute(
                "SELECT tier, min(created_at) FROM jobs WHERE state IN (?, ?) GROUP BY tier",
                _UNFINISHED,
            ).fetchall()
        )
        return {
            tier: TierQueue(
                queued=by.get("queued", 0),
                running=by.get("running", 0),
                done=by.get("done", 0),
                dead=by.get("dead", 0),
                oldest_created_at=oldest.get(tier),
            )
            for tier, by in counts.items()
        }


def _running(job: Job) -> Job:
    return replace(job, state=JobState.RUNNING, attempts=job.attempts + 1)


class SqliteJobStore:
    """:class:`JobStore` over one SQLite file (``path``; "" keeps it in memory). The file is
    created with the first job kept: a gateway that never defers leaves nothing on disk."""

    shares_rate = False

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="failover-jobs")
        self._db: _Sqlite | None = None
        if not self.path or Path(self.path).exists():
            try:
                self._pool.submit(self._open, True).result()
            except (OSError, sqlite3.Error) as exc:
                self._pool.shutdown(wait=False)
                raise JobStoreError(f"cannot open the job store {self.path}: {exc}") from exc

    @property
    def durable(self) -> bool:
        return bool(self.path)

    def _open(self, create: bool) -> _Sqlite | None:
        """The database (on the store's thread); None while its file does not exist and
        ``create`` is false (nothing was ever kept: every read finds nothing)."""
        if self._db is None:
            if not create and self.path and not Path(self.path).exists():
                return None
            if self.path:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = _Sqlite(self.path)
        return self._db

    async def _run(self, method: str, empty: Any, *args: Any, create: bool = False) -> Any:
        def call() -> Any:
            db = self._open(create)
            return empty if db is None else getattr(db, method)(*args)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call)
        except (OSError, sqlite3.Error) as exc:
            raise JobStoreError(f"job store {self.path or ':memory:'}: {exc}") from exc

    async def add(self, job: NewJob, *, max_jobs: int) -> tuple[Job, bool]:
        added: tuple[Job, bool] = await self._run("add", None, job, max_jobs, create=True)
        return added

    async def get(self, job_id: str) -> Job | None:
        found: Job | None = await self._run("get", None, job_id)
        return found

    async def claim(self, tier: str, *, now: float, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        claimed: list[Job] = await self._run("claim", [], tier, now, limit)
        return claimed

    async def finish(self, results: Sequence[Finished], *, now: float) -> None:
        if results:
            await self._run("finish", None, list(results), now)

    async def recover(self, *, now: float, max_tries: int) -> int:
        found: int = await self._run("recover", 0, now, max_tries)
        return found

    async def maintain(self, *, now: float, max_tries: int) -> list[Job]:
        return []  # one process: what it left running is put back by recover() at start-up

    async def callbacks_due(self, *, now: float, limit: int) -> list[Job]:
        due: list[Job] = await self._run("callbacks_due", [], now, limit)
        return due

    async def callback_result(
        self, job_id: str, *, delivered: bool, next_at: float | None, now: float
    ) -> None:
        await self._run("callback_result", None, job_id, delivered, next_at, now)

    async def purge(self, *, before: float, limit: int) -> int:
        purged: int = await self._run("purge", 0, before, limit)
        return purged

    async def queues(self) -> dict[str, TierQueue]:
        queues: dict[str, TierQueue] = await self._run("queues", {})
        return queues

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.db.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown(wait=True)


def queue_totals(queues: Mapping[str, TierQueue]) -> TierQueue:
    """Every tier's queue added up."""
    oldest = [q.oldest_created_at for q in queues.values() if q.oldest_created_at is not None]
    return TierQueue(
        queued=sum(q.queued for q in queues.values()),
        running=sum(q.running for q in queues.values()),
        done=sum(q.done for q in queues.values()),
        dead=sum(q.dead for q in queues.values()),
        oldest_created_at=min(oldest) if oldest else None,
    )
