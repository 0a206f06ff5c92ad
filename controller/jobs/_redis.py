"""The fleet's deferred jobs in Redis (or Valkey): one queue for every replica.

With ``state.backend: redis`` the replicas of a fleet share one :class:`RedisJobStore`: a job
deferred on one replica is replayed by whichever replica claims it first, its answer fetched
from any of them. Every change is one Lua script (``_redis_scripts.py``, which lists the keys
under ``P`` = ``<state.redis.prefix>:jobs``), so it is atomic on the server.

**Exactly one replica at a time** replays a job: a claim moves it to ``P:r`` with a lease
deadline and a fresh token (a fencing token); the claiming replica renews the deadline every
tick (:meth:`maintain`). A replica that dies stops renewing: once the deadline passes, the next
replica's :meth:`maintain` puts the job back (its attempt spent: each attempt number is sent
at most once, with the job's idempotency key) or into the dead letters when no try is left. A
replica that was only stalled past its lease finds its token gone: its late result is not
written (the job is another replica's now).

**One clock**: lease deadlines, the rate bucket and retry and callback due times are read from
Redis (``TIME`` in the scripts; Redis 5 or later replicates a script by its effects), so a
replica whose own clock is off neither takes a live replica's job nor lends its skew to the
fleet's rate. What a job shows (``next_at``, ``finished_at``) is the writing replica's clock,
and a finished job is purged by the purging replica's: a skew moves its expiry, nothing else.

**Bounded bytes**: ``P:bytes`` counts every job's body, headers and callback (plus a fixed
overhead) from its acceptance and its answer once done, until it is purged; a job that would
pass ``max_bytes`` is refused (:class:`QueueFull`), an answer never is.

**Durable before the 202**: :meth:`add` returns once Redis has answered the script. That is on
disk only as far as the server's persistence makes it: ``appendonly yes`` with ``appendfsync
always`` fsyncs the write before the answer (``everysec``, the default, may lose the last
second of jobs to a crash of the Redis host). :meth:`check_persistence` says so in the log at
start-up when it can read the server's config.

**Redis away**: every call is bounded (``state.redis.timeout_seconds``, twice for the call) and
raises :class:`JobStoreError`; the gateway then refuses a ``defer`` with its 503 and a
``Retry-After`` in the caller's format (nothing accepted is lost: nothing was accepted), and
the replayer waits for the store's return. Scripts name their keys from ``P``: one Redis (or a
primary with replicas), not a Redis Cluster.

The scripts' texts are ``_redis_scripts.py``; a hash read back into a :class:`Job` is
``_redis_rows.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controller import _json
from controller._errors import ConfigError
from controller.fleet._redis import connection_options, unusable_url
from controller.fleet.config import FleetConfig
from controller.jobs._job import CallbackState, Job, JobState, JobStoreError, NewJob, QueueFull
from controller.jobs._redis_rows import decoded, job_of, pairs
from controller.jobs._redis_scripts import SCRIPTS
from controller.jobs._replay import ReplayLimits
from controller.jobs._store import Finished, TierQueue

__all__ = ["RedisJobStore", "fleet_job_store"]

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 30  # the bytes of the jobs kept in Redis, all tiers (past it: QueueFull)
_OVERHEAD = 512  # bytes counted per job beyond its body, headers and result: keys, fields, ids
_CUT = "a replica stopped or crashed during its attempt (its lease ran out)"


class RedisJobStore:
    """:class:`~controller.jobs._store.JobStore` shared by a fleet; see the module docstring.

    ``per_second`` is each tier's replay rate for the whole fleet (a token bucket in Redis
    holding at most two ticks' worth), ``lease_seconds`` how long a claimed job stays this
    replica's without a renewal (renewed every tick).

    Lease deadlines, the rate bucket, retry and callback due times are on Redis's clock
    (``TIME`` in the scripts), the one every replica shares: a replica whose own clock is off
    never takes a live replica's job. ``clock_offset`` is for tests only (seconds added to
    Redis's time, asked before every script; None: 0, as in production)."""

    shares_rate = True
    durable = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        timeout: float,
        per_second: float,
        tick_seconds: float,
        lease_seconds: float,
        errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
        clock_offset: Callable[[], float] | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._offset = clock_offset
        self._p = f"{prefix}:jobs"
        self._timeout = timeout
        self._rate = per_second
        self._burst = max(1.0, 2 * per_second * tick_seconds)
        self._lease = lease_seconds
        self._errors = errors
        self._leases: dict[str, str] = {}  # this replica's running jobs: id -> token
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}

    @classmethod
    def connect(
        cls,
        cfg: FleetConfig,
        env: Mapping[str, str],
        *,
        per_second: float,
        tick_seconds: float,
        lease_seconds: float,
        clock_offset: Callable[[], float] | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> RedisJobStore:
        """A store on the fleet's Redis (``state.redis``: its URL, password, CA, prefix and
        timeout); nothing is sent until it is used."""
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError(
                "the fleet's job store needs the redis package: "
                "pip install 'llm-failover-controller[fleet]'",
                key="state.backend",
            ) from None
        url, options = connection_options(
            cfg,
            env,
            timeout=cfg.timeout_seconds,
            max_connections=32,
            name=f"failover-jobs-{cfg.prefix}",
            retry=Retry(NoBackoff(), 0),
        )
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, timeout=cfg.timeout_seconds, **options
            )
        except ValueError as exc:
            raise unusable_url(cfg, exc) from None
        return cls(
            aioredis.Redis.from_pool(pool),  # the client owns the pool: closed with it
            prefix=cfg.prefix,
            timeout=cfg.timeout_seconds * 2,
            per_second=per_second,
            tick_seconds=tick_seconds,
            lease_seconds=lease_seconds,
            errors=(RedisError, OSError, TimeoutError),
            clock_offset=clock_offset,
            max_bytes=max_bytes,
        )

    async def _call(self, what: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await what
        except self._errors as exc:  # never the URL: the exception's type says enough
            raise JobStoreError(f"Redis did not answer ({type(exc).__name__})") from None

    async def _script_call(self, name: str, args: Sequence[Any]) -> Any:
        offset = "0" if self._offset is None else repr(self._offset())
        return await self._call(self._scripts[name](keys=[], args=[self._p, offset, *args]))

    # ----------------------------------------------------------------------------- the calls
    async def check_persistence(self) -> str | None:
        """What the server's persistence promises for an accepted job (logged when it is less
        than an fsync per write); None when its config cannot be read (CONFIG disabled)."""
        try:
            got = await self._call(self._client.config_get("append*"))
        except JobStoreError:
            return None
        except Exception:  # a managed Redis that renames CONFIG: an error reply
            return None
        conf = {decoded(k): decoded(v) for k, v in dict(got).items()}
        mode = f"appendonly {conf.get('appendonly', '?')}, appendfsync {conf.get('appendfsync')}"
        if conf.get("appendonly") != "yes" or conf.get("appendfsync") != "always":
            log.warning(
                "deferred jobs are kept in Redis with %s: a crash of the Redis host may lose "
                "accepted jobs (appendonly yes + appendfsync always keeps each one on disk "
                "before its 202)",
                mode,
            )
        return mode

    async def add(self, job: NewJob, *, max_jobs: int) -> tuple[Job, bool]:
        cb_state = CallbackState.WAITING if job.callback else CallbackState.NONE
        fields: dict[str, Any] = {
            "id": job.id,
            "owner": job.owner,
            "tier": job.tier,
            "front": job.front,
            "model": job.model,
            "body": job.body,
            "headers": _json.dumps(dict(job.headers)),
            "idem": job.idempotency_key,
            "callback": job.callback or "",
            "state": JobState.QUEUED.value,
            "attempts": 0,
            "created_at": repr(job.created_at),
            "next_at": repr(job.created_at),
            "cb_state": cb_state.value,
            "cb_attempts": 0,
        }
        flat = [item for pair in fields.items() for item in pair]
        size = _OVERHEAD + len(job.body) + len(fields["headers"]) + len(fields["callback"])
        head = [job.id, job.owner, job.idempotency_key, job.tier, repr(job.created_at), max_jobs]
        head += [self._max_bytes, size]
        done, value = await self._script_call("add", [*head, *flat])
        if int(done) == -1:
            raise QueueFull(f"{decoded(value)} jobs are waiting (jobs.max_jobs {max_jobs})")
        if int(done) == -2:
            raise QueueFull(
                f"the fleet's jobs hold {decoded(value)} bytes in Redis "
                f"(jobs.max_bytes {self._max_bytes})"
            )
        if int(done) == 0:
            known = await self.get(decoded(value))
            if known is not None:
                return known, False
            raise JobStoreError("the job of that idempotency key vanished")  # purged meanwhile
        return job_of(dict(zip(flat[0::2], flat[1::2], strict=True))), True

    async def get(self, job_id: str) -> Job | None:
        raw = await self._call(self._client.hgetall(f"{self._p}:job:{job_id}"))
        return job_of(raw) if raw else None

    async def claim(self, tier: str, *, now: float, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        args = [tier, limit, repr(self._lease), repr(self._rate), repr(self._burst)]
        token, *rows = await self._script_call("claim", args)
        jobs = [job_of(pairs(row)) for row in rows]
        for job in jobs:
            self._leases[job.id] = decoded(token)
        return jobs

    async def finish(self, results: Sequence[Finished], *, now: float) -> None:
        args: list[Any] = [repr(now)]
        for item in results:
            token = self._leases.get(item.id)
            if token is None:
                continue
            outcome = item.outcome
            kind = "done" if outcome is not None else "dead" if item.dead else "retry"
            args += [
                item.id,
                token,
                kind,
                outcome.status if outcome is not None else 0,
                outcome.body if outcome is not None else b"",
                item.error,
                repr(item.next_at),
                outcome.degraded if outcome is not None else "",
            ]
        if len(args) > 1:
            written = await self._script_call("finish", args)
            if int(written) < (len(args) - 1) // 8:
                log.warning(
                    "deferred jobs: %d result(s) not written: their lease had run out and "
                    "another replica holds the job",
                    (len(args) - 1) // 8 - int(written),
                )
        for item in results:
            self._leases.pop(item.id, None)

    async def recover(self, *, now: float, max_tries: int) -> int:
        """At start-up: only the jobs whose lease ran out (another replica may be replaying
        the rest right now). Says in the log what the server's persistence promises."""
        await self.check_persistence()
        back, dead = await self._maintain(now=now, max_tries=max_tries, renew=False)
        return back + len(dead)

    async def maintain(self, *, now: float, max_tries: int) -> list[Job]:
        _, dead = await self._maintain(now=now, max_tries=max_tries, renew=True)
        return dead

    async def _maintain(self, *, now: float, max_tries: int, renew: bool) -> tuple[int, list[Job]]:
        mine = [item for pair in self._leases.items() for item in pair] if renew else []
        args = [repr(now), max_tries, repr(self._lease), _CUT, *mine]
        back, dead = await self._script_call("maintain", args)
        return int(back), [job_of(pairs(row)) for row in dead]

    async def callbacks_due(self, *, now: float, limit: int) -> list[Job]:
        hold = repr(self._lease)  # another replica posts it only if this one did not say
        rows = await self._script_call("callbacks", [limit, hold])
        return [job_of(pairs(row)) for row in rows]

    async def callback_result(
        self, job_id: str, *, delivered: bool, next_at: float | None, now: float
    ) -> None:
        state = "delivered" if delivered else "pending" if next_at is not None else "failed"
        shown = "" if next_at is None else repr(next_at)
        wait = "0" if next_at is None else repr(max(0.0, next_at - now))
        await self._script_call("callback_result", [job_id, state, shown, wait])

    async def purge(self, *, before: float, limit: int) -> int:
        return int(await self._script_call("purge", [repr(before), limit]))

    async def queues(self) -> dict[str, TierQueue]:
        rows = await self._script_call("queues", [])
        found: dict[str, TierQueue] = {}
        for tier, queued, waiting, running, done, dead, oldest in rows:
            found[decoded(tier)] = TierQueue(
                queued=int(queued) + int(waiting),
                running=int(running),
                done=int(done),
                dead=int(dead),
                oldest_created_at=float(oldest) if oldest not in (b"", "") else None,
            )
        return found

    async def close(self, *, hand_back: bool = True) -> None:
        """Hand back this replica's running jobs (their leases end now: the next replica's
        tick queues them again, the attempt spent) and close the connections. ``hand_back``
        False leaves the leases to run out, as a crash does (tests)."""
        if self._leases and hand_back:
            with contextlib.suppress(JobStoreError):
                mine = [item for pair in self._leases.items() for item in pair]
                # deadlines set to 0 (lease -1 expires none here): the next tick of any
                # replica puts them back, or into the dead letters by its own max_tries
                await self._script_call("maintain", ["0", 1, "-1", _CUT, *mine])
            self._leases.clear()
        with contextlib.suppress(*self._errors):
            await self._client.aclose()


def fleet_job_store(
    choice: str,
    fleet: FleetConfig | None,
    env: Mapping[str, str],
    *,
    limits: ReplayLimits,
    lease_seconds: float,
    max_bytes: int = MAX_BYTES,
) -> RedisJobStore | None:
    """The store ``jobs.store`` asks for when it is the fleet's Redis (``redis``, or ``auto``
    in fleet mode: ``fleet`` is ``state.redis`` then); None: the SQLite store."""
    if choice == "sqlite" or (choice == "auto" and fleet is None):
        return None
    if fleet is None:
        raise ConfigError(
            "jobs.store is redis but state.backend is not: the jobs live in the fleet's Redis",
            key="jobs.store",
        )
    return RedisJobStore.connect(
        fleet,
        env,
        per_second=limits.per_second,
        tick_seconds=limits.tick_seconds,
        lease_seconds=lease_seconds,
        max_bytes=max_bytes,
    )
