"""The answer cache's fleet copy: in fleet mode (``state.backend: redis``) the answers the
cache rung may serve live in the fleet's Redis, so an answer kept by one replica is served by
another when every provider of its tier is down.

Writes stay off the request path: the cache's own thread (:class:`~._degrade.AnswerCache`)
hands each kept answer to :meth:`RedisAnswers.put`, one script that stores it with a TTL and
keeps the fleet's copy bounded by entries and bytes (oldest first out). Reads happen on the
cache rung only, after every live rung failed, bounded by ``read_timeout``; a Redis that does
not answer makes :meth:`RedisAnswers.get` say "not cached" (the next rung, a static answer,
serves) and is not asked again for ``pause`` seconds, so an outage of Redis costs at most one
slow read per pause, never one per request. Keys, under ``P`` = ``<state.redis.prefix>:cache``::

    P:a:KEY     the answer (the cache's own encoding), expiring after cache.ttl_seconds
    P:index     zset KEY -> when it was stored (the oldest goes first past a bound)
    P:sizes     hash KEY -> its bytes;  P:bytes  their sum

KEY is the cache key as the memory side computes it: a SHA-256 over the tier, the request and
the client key that asked (never the key itself), so an answer goes back only to its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from controller._clock import Clock, SystemClock
from controller._errors import ConfigError
from controller.fleet._redis import connection_options, unusable_url
from controller.fleet.config import FleetConfig

__all__ = ["RedisAnswers"]

log = logging.getLogger(__name__)

# ARGV: P, key, now, blob, ttl_ms, max_entries, max_bytes, expired_before
_PUT = """
local P = ARGV[1]
local index, sizes, total = P .. ':index', P .. ':sizes', P .. ':bytes'
local function drop(k)
  local size = redis.call('HGET', sizes, k)
  if size then
    redis.call('DECRBY', total, size)
    redis.call('HDEL', sizes, k)
  end
  redis.call('ZREM', index, k)
  redis.call('DEL', P .. ':a:' .. k)
end
drop(ARGV[2])
for _, k in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[8], 'LIMIT', 0, 100)) do
  drop(k)
end
redis.call('SET', P .. ':a:' .. ARGV[2], ARGV[4], 'PX', ARGV[5])
redis.call('ZADD', index, ARGV[3], ARGV[2])
redis.call('HSET', sizes, ARGV[2], string.len(ARGV[4]))
redis.call('INCRBY', total, string.len(ARGV[4]))
local n = 0
while (redis.call('ZCARD', index) > tonumber(ARGV[6])
    or tonumber(redis.call('GET', total) or '0') > tonumber(ARGV[7])) and n < 1000 do
  local oldest = redis.call('ZRANGE', index, 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
  n = n + 1
end
return n
"""


class RedisAnswers:
    """The fleet's copy of the answer cache (module docstring). ``client`` is a synchronous
    redis-py client: writes come from the cache's thread, reads go through a worker thread."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        read_timeout: float,
        pause: float = 5.0,
        clock: Clock | None = None,
        errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
    ) -> None:
        self._client = client
        self._clock = clock or SystemClock()
        self._p = f"{prefix}:cache"
        self._put = client.register_script(_PUT)
        self._read_timeout = read_timeout
        self._pause = pause
        self._errors = errors
        self._quiet_until = 0.0  # monotonic: no read before (Redis failed a moment ago)
        self._failing = False  # a write failed: logged once until one succeeds
        self.failed_reads = 0
        self.failed_writes = 0

    @classmethod
    def connect(
        cls,
        cfg: FleetConfig,
        env: Mapping[str, str],
        *,
        read_timeout: float,
        clock: Clock | None = None,
    ) -> RedisAnswers:
        """On the fleet's Redis (``state.redis``); nothing is sent until used."""
        try:  # the `fleet` extra, imported only when fleet mode is configured
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
            from redis.retry import Retry
        except ImportError:
            raise ConfigError(
                "state.backend is redis but the redis package is missing: "
                "pip install 'llm-failover-controller[fleet]'",
                key="state.backend",
            ) from None

        url, options = connection_options(
            cfg,
            env,
            timeout=read_timeout,
            max_connections=16,
            name=f"failover-cache-{cfg.prefix}",
            retry=Retry(NoBackoff(), 0),
        )
        # Blocking: a read finding every connection busy (the whole tier at the rung at once)
        # waits for one, within the read bound, instead of failing and pausing the rung
        try:
            pool = redis.BlockingConnectionPool.from_url(url, timeout=read_timeout, **options)
        except ValueError as exc:
            raise unusable_url(cfg, exc) from None
        client = redis.Redis.from_pool(pool)  # the client owns the pool: closed with it
        return cls(
            client,
            prefix=cfg.prefix,
            read_timeout=read_timeout,
            clock=clock,
            errors=(RedisError, OSError, TimeoutError),
        )

    def put(self, key: str, at: float, blob: bytes, *, ttl: float, bounds: tuple[int, int]) -> None:
        """Store one answer (the cache's thread); a failure is logged once and dropped."""
        max_entries, max_bytes = bounds
        args = [self._p, key, repr(at), blob, max(1, int(ttl * 1000)), max_entries, max_bytes]
        try:
            self._put(keys=[], args=[*args, repr(at - ttl)])
        except self._errors as exc:
            self.failed_writes += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "answer cache: Redis did not take an answer (%s); the fleet's copy misses "
                    "answers until it is back (this replica's memory keeps them)",
                    type(exc).__name__,
                )
            return
        if self._failing:
            self._failing = False
            log.warning("answer cache: Redis takes answers again")

    async def get(self, key: str) -> bytes | None:
        """The fleet's answer for ``key``, or None (not there, or Redis not answering within
        ``read_timeout``: the cache rung is skipped, fast)."""
        if self._clock.monotonic() < self._quiet_until:
            return None
        try:
            async with asyncio.timeout(self._read_timeout * 2):
                raw = await asyncio.to_thread(self._client.get, f"{self._p}:a:{key}")
        except self._errors as exc:
            self.failed_reads += 1
            self._quiet_until = self._clock.monotonic() + self._pause
            log.warning(
                "answer cache: Redis did not answer a read (%s); the cache rung skips it for %gs",
                type(exc).__name__,
                self._pause,
            )
            return None
        return None if raw is None else bytes(raw)

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._client.close()
