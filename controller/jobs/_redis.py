"""The fleet's deferred jobs in Redis (or Valkey): one queue for every replica.

With ``state.backend: redis`` the replicas of a fleet share one :class:`RedisJobStore`: a job
deferred on one replica is replayed by whichever replica claims it first, its answer fetched
from any of them. Every change is one Lua script, so it is atomic on the server. Keys, under
``P`` = ``<state.redis.prefix>:jobs``::

    P:job:ID          hash: the job (the SQLite row's columns) and, while running, its lease
    P:idem:OWNER:KEY  the id of the job an owner sent with that idempotency key
    P:tiers           set: the tiers that ever had a job
    P:q:TIER          zset id -> created_at: due now, oldest first
    P:w:TIER          zset id -> next_at: waiting for a retry's backoff
    P:r:TIER          zset id -> lease deadline: running, claimed by a replica
    P:u:TIER          zset id -> created_at: unfinished (queued, waiting, running)
    P:d:TIER, P:x:TIER  zset id -> finished_at: done, dead (purged after keep_seconds)
    P:cb              zset id -> when its callback POST is due
    P:bucket:TIER     hash tokens, at: the tier's replay rate, for the whole fleet
    P:fence           counter: each claim's lease token
    P:bytes           counter: the bytes of the jobs kept (bodies, headers, results)

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
from controller.jobs._replay import ReplayLimits
from controller.jobs._store import Finished, TierQueue

__all__ = ["RedisJobStore", "fleet_job_store"]

log = logging.getLogger(__name__)

_MOVE_BATCH = 1000  # retries made due, leases expired, jobs purged: per tier per call
MAX_BYTES = 1 << 30  # the bytes of the jobs kept in Redis, all tiers (past it: QueueFull)
_OVERHEAD = 512  # bytes counted per job beyond its body, headers and result: keys, fields, ids
_CUT = "a replica stopped or crashed during its attempt (its lease ran out)"

# Every script's ARGV starts P, offset: the scripts read the time from Redis (TIME), the one
# clock every replica shares; offset is added to it (always 0 but in tests, which move it).
_NOW = """
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
end
local function num(x) return string.format('%.6f', x) end
"""

# ARGV: P, offset, id, owner, idem, tier, created_at, max_jobs, max_bytes, size, field, value,
# ... P:bytes, the bytes of every job kept, grows by the job's size (and its result's, when it
# is done) and shrinks when it is purged.
_ADD = """
local P = ARGV[1]
local ik = P .. ':idem:' .. ARGV[4] .. ':' .. ARGV[5]
local known = redis.call('GET', ik)
if known then return {0, known} end
local total = 0
for _, t in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  total = total + redis.call('ZCARD', P .. ':u:' .. t)
end
if total >= tonumber(ARGV[8]) then return {-1, tostring(total)} end
local used = tonumber(redis.call('GET', P .. ':bytes') or '0')
if used + tonumber(ARGV[10]) > tonumber(ARGV[9]) then return {-2, tostring(used)} end
redis.call('INCRBY', P .. ':bytes', ARGV[10])
local jk = P .. ':job:' .. ARGV[3]
for i = 11, #ARGV, 2 do redis.call('HSET', jk, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', jk, 'size', ARGV[10])
redis.call('SET', ik, ARGV[3])
redis.call('SADD', P .. ':tiers', ARGV[6])
redis.call('ZADD', P .. ':q:' .. ARGV[6], ARGV[7], ARGV[3])
redis.call('ZADD', P .. ':u:' .. ARGV[6], ARGV[7], ARGV[3])
return {1, ARGV[3]}
"""

# ARGV: P, offset, tier, limit, lease_seconds, rate (0: no bucket), burst
_CLAIM = (
    _NOW
    + """
local P, tier, limit, lease = ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = server_now()
local q, w, r = P .. ':q:' .. tier, P .. ':w:' .. tier, P .. ':r:' .. tier
for _, id in ipairs(redis.call('ZRANGEBYSCORE', w, '-inf', num(now), 'LIMIT', 0, __BATCH__)) do
  redis.call('ZREM', w, id)
  redis.call('ZADD', q, redis.call('HGET', P .. ':job:' .. id, 'created_at'), id)
end
local rate, burst, have = tonumber(ARGV[6]), tonumber(ARGV[7]), 0
local take = limit
if rate > 0 then
  local b = redis.call('HMGET', P .. ':bucket:' .. tier, 'tokens', 'at')
  have = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  have = math.min(burst, have + rate * math.max(0, now - at))
  take = math.min(limit, math.floor(have))
end
local ids = {}
if take > 0 then ids = redis.call('ZRANGE', q, 0, take - 1) end
local token = redis.call('INCR', P .. ':fence')
local out = {tostring(token)}
for _, id in ipairs(ids) do
  local jk = P .. ':job:' .. id
  redis.call('ZREM', q, id)
  redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('HSET', jk, 'state', 'running', 'lease', token)
  redis.call('ZADD', r, num(now + lease), id)
  out[#out + 1] = redis.call('HGETALL', jk)
end
if rate > 0 then
  redis.call('HSET', P .. ':bucket:' .. tier, 'tokens', tostring(have - #ids), 'at', num(now))
end
return out
"""
)

# An ended job (done or dead): out of the unfinished set, its callback made due (``due`` on
# Redis's clock; ``shown``, the caller's, is what the job says).
_END = (
    _NOW
    + """
local function ended(P, jk, id, tier, shown, due, cb_state)
  redis.call('ZREM', P .. ':u:' .. tier, id)
  if cb_state == 'waiting' then
    redis.call('HSET', jk, 'cb_state', 'pending', 'cb_next_at', shown)
    redis.call('ZADD', P .. ':cb', due, id)
  end
end
"""
)

# ARGV: P, offset, now, then per job: id, token, kind (done|retry|dead), status, result, error,
# next_at, degraded. now and next_at are the caller's clock: what the job says; a retry is due
# next_at - now after Redis's now.
_FINISH = (
    _END
    + """
local P, now = ARGV[1], ARGV[3]
local rnow = server_now()
local n = 0
for i = 4, #ARGV, 8 do
  local id, token, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = P .. ':job:' .. id
  local cur = redis.call('HMGET', jk, 'state', 'lease', 'tier', 'cb_state')
  if cur[1] == 'running' and cur[2] == token then
    local tier = cur[3]
    redis.call('ZREM', P .. ':r:' .. tier, id)
    redis.call('HDEL', jk, 'lease')
    if kind == 'retry' then
      local wait = math.max(0, tonumber(ARGV[i + 6]) - tonumber(now))
      redis.call('HSET', jk, 'state', 'queued', 'next_at', ARGV[i + 6], 'error', ARGV[i + 5])
      redis.call('ZADD', P .. ':w:' .. tier, num(rnow + wait), id)
    elseif kind == 'done' then
      redis.call('HSET', jk, 'state', 'done', 'finished_at', now, 'result_status', ARGV[i + 3],
        'result', ARGV[i + 4], 'error', '', 'degraded', ARGV[i + 7])
      redis.call('HINCRBY', jk, 'size', #ARGV[i + 4])
      redis.call('INCRBY', P .. ':bytes', #ARGV[i + 4])
      redis.call('ZADD', P .. ':d:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[4])
    else
      redis.call('HSET', jk, 'state', 'dead', 'finished_at', now, 'error', ARGV[i + 5])
      redis.call('ZADD', P .. ':x:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[4])
    end
    n = n + 1
  end
end
return n
"""
)

# ARGV: P, offset, now, max_tries, lease_seconds, cut, then per own running job: id, token.
# Renews this replica's leases (deadlines on Redis's clock), then puts back (or kills) the jobs
# whose lease ran out. lease_seconds -1: hands the jobs back (deadline 0), expires none.
_MAINTAIN = (
    _END
    + """
local P, now, max_tries, lease = ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rnow = server_now()
local deadline = '0'
if lease >= 0 then deadline = num(rnow + lease) end
for i = 7, #ARGV, 2 do
  local cur = redis.call('HMGET', P .. ':job:' .. ARGV[i], 'lease', 'tier')
  if cur[1] == ARGV[i + 1] then
    redis.call('ZADD', P .. ':r:' .. cur[2], 'XX', deadline, ARGV[i])
  end
end
local dead, back = {}, 0
if lease < 0 then return {back, dead} end
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  local r = P .. ':r:' .. tier
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', r, '-inf', num(rnow), 'LIMIT', 0,
      __BATCH__)) do
    local jk = P .. ':job:' .. id
    local cur = redis.call('HMGET', jk, 'attempts', 'created_at', 'cb_state')
    redis.call('ZREM', r, id)
    redis.call('HDEL', jk, 'lease')
    if tonumber(cur[1]) >= max_tries then
      redis.call('HSET', jk, 'state', 'dead', 'finished_at', now, 'error', ARGV[6])
      redis.call('ZADD', P .. ':x:' .. tier, now, id)
      ended(P, jk, id, tier, now, num(rnow), cur[3])
      dead[#dead + 1] = redis.call('HGETALL', jk)
    else
      redis.call('HSET', jk, 'state', 'queued', 'next_at', now, 'error', ARGV[6])
      redis.call('ZADD', P .. ':q:' .. tier, cur[2], id)
      back = back + 1
    end
  end
end
return {back, dead}
"""
)

# ARGV: P, offset, limit, hold_seconds: due callbacks, each held (its due time moved on Redis's
# clock) so that one replica at a time posts it.
_CALLBACKS = (
    _NOW
    + """
local P = ARGV[1]
local now = server_now()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':cb', '-inf', num(now), 'LIMIT', 0,
    tonumber(ARGV[3]))) do
  redis.call('ZADD', P .. ':cb', num(now + tonumber(ARGV[4])), id)
  out[#out + 1] = redis.call('HGETALL', P .. ':job:' .. id)
end
return out
"""
)

# ARGV: P, offset, id, state, next_at ('' for none, the caller's clock), wait_seconds
_CALLBACK_RESULT = (
    _NOW
    + """
local P, id = ARGV[1], ARGV[3]
local jk = P .. ':job:' .. id
if redis.call('EXISTS', jk) == 0 then return 0 end
redis.call('HINCRBY', jk, 'cb_attempts', 1)
redis.call('HSET', jk, 'cb_state', ARGV[4], 'cb_next_at', ARGV[5])
if ARGV[4] == 'pending' then
  redis.call('ZADD', P .. ':cb', num(server_now() + tonumber(ARGV[6])), id)
else redis.call('ZREM', P .. ':cb', id) end
return 1
"""
)

# ARGV: P, offset, before, limit. Finished times are the finishing replica's clock: a clock s
# seconds off moves a result's expiry by s (nothing running is touched).
_PURGE = """
local P, limit, n = ARGV[1], tonumber(ARGV[4]), 0
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  for _, set in ipairs({P .. ':d:' .. tier, P .. ':x:' .. tier}) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. ARGV[3], 'LIMIT', 0,
        limit)) do
      if n >= limit then return n end
      local jk = P .. ':job:' .. id
      local cur = redis.call('HMGET', jk, 'cb_state', 'owner', 'idem', 'size')
      if cur[1] ~= 'pending' and cur[1] ~= 'waiting' then
        redis.call('DEL', jk)
        if cur[4] then redis.call('DECRBY', P .. ':bytes', cur[4]) end
        if cur[2] then redis.call('DEL', P .. ':idem:' .. cur[2] .. ':' .. cur[3]) end
        redis.call('ZREM', set, id)
        n = n + 1
      end
    end
  end
end
return n
"""

# ARGV: P, offset -> per tier: name, queued, waiting, running, done, dead, oldest created_at
_QUEUES = """
local P = ARGV[1]
local out = {}
for _, tier in ipairs(redis.call('SMEMBERS', P .. ':tiers')) do
  local oldest = redis.call('ZRANGE', P .. ':u:' .. tier, 0, 0, 'WITHSCORES')
  out[#out + 1] = {tier, redis.call('ZCARD', P .. ':q:' .. tier),
    redis.call('ZCARD', P .. ':w:' .. tier), redis.call('ZCARD', P .. ':r:' .. tier),
    redis.call('ZCARD', P .. ':d:' .. tier), redis.call('ZCARD', P .. ':x:' .. tier),
    oldest[2] or ''}
end
return out
"""


def _script(text: str) -> str:
    return text.replace("__BATCH__", str(_MOVE_BATCH))


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
        self._scripts = {
            name: client.register_script(_script(text))
            for name, text in (
                ("add", _ADD),
                ("claim", _CLAIM),
                ("finish", _FINISH),
                ("maintain", _MAINTAIN),
                ("callbacks", _CALLBACKS),
                ("callback_result", _CALLBACK_RESULT),
                ("purge", _PURGE),
                ("queues", _QUEUES),
            )
        }

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
        conf = {_text(k): _text(v) for k, v in dict(got).items()}
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
            raise QueueFull(f"{_text(value)} jobs are waiting (jobs.max_jobs {max_jobs})")
        if int(done) == -2:
            raise QueueFull(
                f"the fleet's jobs hold {_text(value)} bytes in Redis "
                f"(jobs.max_bytes {self._max_bytes})"
            )
        if int(done) == 0:
            known = await self.get(_text(value))
            if known is not None:
                return known, False
            raise JobStoreError("the job of that idempotency key vanished")  # purged meanwhile
        return _job(dict(zip(flat[0::2], flat[1::2], strict=True))), True

    async def get(self, job_id: str) -> Job | None:
        raw = await self._call(self._client.hgetall(f"{self._p}:job:{job_id}"))
        return _job(raw) if raw else None

    async def claim(self, tier: str, *, now: float, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        args = [tier, limit, repr(self._lease), repr(self._rate), repr(self._burst)]
        token, *rows = await self._script_call("claim", args)
        jobs = [_job(_pairs(row)) for row in rows]
        for job in jobs:
            self._leases[job.id] = _text(token)
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
        return int(back), [_job(_pairs(row)) for row in dead]

    async def callbacks_due(self, *, now: float, limit: int) -> list[Job]:
        hold = repr(self._lease)  # another replica posts it only if this one did not say
        rows = await self._script_call("callbacks", [limit, hold])
        return [_job(_pairs(row)) for row in rows]

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
            found[_text(tier)] = TierQueue(
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


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _pairs(row: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(row[0::2], row[1::2], strict=True))


def _job(raw: Mapping[Any, Any]) -> Job:
    fields = {_text(k): v for k, v in raw.items()}

    def text(name: str, default: str = "") -> str:
        value = fields.get(name)
        return default if value is None else _text(value)

    def number(name: str) -> float | None:
        value = text(name)
        return float(value) if value else None

    result = fields.get("result")
    headers = fields.get("headers")
    return Job(
        id=text("id"),
        owner=text("owner"),
        tier=text("tier"),
        front=text("front"),
        model=text("model"),
        body=bytes(fields.get("body") or b""),
        headers=_json.loads(headers) if headers else {},
        idempotency_key=text("idem"),
        callback=text("callback") or None,
        state=JobState(text("state")),
        attempts=int(text("attempts", "0")),
        created_at=float(text("created_at")),
        next_at=float(text("next_at")),
        finished_at=number("finished_at"),
        result_status=int(text("result_status")) if text("result_status") else None,
        result=None if result is None else bytes(result),
        error=text("error"),
        callback_state=CallbackState(text("cb_state", "none")),
        callback_attempts=int(text("cb_attempts", "0")),
        callback_next_at=number("cb_next_at"),
        degraded=text("degraded"),
    )


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
