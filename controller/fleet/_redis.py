"""The one seam to Redis (or Valkey): every command the fleet sends, each bounded in time.

Keys, all under the configured prefix ``P``::

    P:state            the routing state document (the file format of controller/control/store)
    P:state:version    its version, compared and set with it in one script (CAS)
    P:state:events     pub/sub channel: each new document, as written
    P:leader           the lease: the leader's token, with a TTL of lease_seconds
    P:replicas         sorted set: replica -> wall time of its last push (heartbeat)
    P:signals:R        replica R's last push (signals + heartbeat), with a TTL of the window
    P:signals:events   pub/sub channel: every push, as written (the leader merges it at once)
    P:alert:KEY        an alert already sent fleet-wide (TTL: the notify cooldown)
    P:audit            list of operator actions on the fleet state (newest first, bounded)
    P:spend:D          hash: replica -> its spend totals of UTC day D (JSON), TTL two days
    P:spend:D:alerted  hash: the budget alerts of day D already sent fleet-wide, TTL two days

Each call raises :class:`FleetUnavailable` (never a redis-py exception, never the URL) when
Redis does not answer within ``timeout_seconds``; redis-py's own retries are off, so a frozen
Redis costs one timeout per call, not several.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller._errors import ConfigError
from controller.fleet.config import FleetConfig

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

AUDIT_KEEP = 1000

_CAS = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '-1')
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return {0, cur} end
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[2])
return {1, tonumber(ARGV[3])}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DOCS = """
local names = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for i, name in ipairs(names) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('GET', ARGV[2] .. name) or ''
end
return out
"""
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if KEYS[2] ~= KEYS[1] then redis.call('DEL', KEYS[2]) end
  return 1
end
return 0
"""


class FleetUnavailable(Exception):
    """Redis did not answer (down, frozen, refused, or a command failed). Never holds the URL."""


def redis_url(cfg: FleetConfig, env: Mapping[str, str]) -> str:
    url = env.get(cfg.url_env, "").strip()
    if not url:
        raise ConfigError(
            f"environment variable {cfg.url_env} is not set (state.backend is redis)",
            key="state.redis.url_env",
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{cfg.url_env} must be a redis://, rediss:// or unix:// URL (value not shown)",
            key="state.redis.url_env",
        )
    return url


def connection_options(
    cfg: FleetConfig,
    env: Mapping[str, str],
    *,
    timeout: float,
    max_connections: int,
    name: str,
    retry: Any,
) -> tuple[str, dict[str, Any]]:
    """The URL and the redis-py connection options every Redis client of the fleet uses:
    socket and connect times bounded by ``timeout``, ``retry`` (the client flavour's own class,
    built to make no retries: the caller decides what a failure means), at most
    ``max_connections``, named ``name`` in ``CLIENT LIST``, the password from its variable and
    the CA file for ``rediss://``."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
        "retry_on_timeout": False,
        "max_connections": max_connections,
        "client_name": name,
    }
    if cfg.password_env:
        options["password"] = env.get(cfg.password_env) or None
    url = redis_url(cfg, env)
    if url.startswith("rediss://") and cfg.ca_file:
        options["ssl_ca_certs"] = os.fspath(cfg.ca_file)
    return url, options


def unusable_url(cfg: FleetConfig, exc: ValueError) -> ConfigError:
    """A URL redis-py refused: say which variable, never its value (it may hold a password)."""
    return ConfigError(
        f"{cfg.url_env} is not a usable Redis URL ({type(exc).__name__})",
        key="state.redis.url_env",
    )


class RedisLink:
    """The fleet's Redis commands. ``connect`` builds the client; nothing is sent until used."""

    def __init__(self, cfg: FleetConfig, env: Mapping[str, str]) -> None:
        try:  # the `fleet` extra, imported only when fleet mode is configured
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError(
                "state.backend is redis but the redis package is missing: "
                "pip install 'llm-failover-controller[fleet]'",
                key="state.backend",
            ) from None
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self.cfg = cfg
        p = cfg.prefix
        self.k_state, self.k_version = f"{p}:state", f"{p}:state:version"
        self.channel, self.k_leader = f"{p}:state:events", f"{p}:leader"
        self.k_replicas, self.k_signals = f"{p}:replicas", f"{p}:signals:"
        self.k_alert, self.k_audit = f"{p}:alert:", f"{p}:audit"
        self.signals_channel = f"{p}:signals:events"
        self.k_spend = f"{p}:spend:"
        url, options = connection_options(
            cfg,
            env,
            timeout=cfg.timeout_seconds,
            max_connections=8,
            name=f"failover-{p}",
            retry=Retry(NoBackoff(), 0),
        )
        try:
            self._client = aioredis.from_url(url, **options)
        except ValueError as exc:
            raise unusable_url(cfg, exc) from None
        self._cas = self._client.register_script(_CAS)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._docs = self._client.register_script(_DOCS)
        self._claim = self._client.register_script(_CLAIM)

    async def _call(self, what: Any) -> Any:
        try:
            async with asyncio.timeout(self.cfg.timeout_seconds * 2):
                return await what
        except self._errors as exc:
            raise FleetUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        with contextlib.suppress(*self._errors):
            await self._client.aclose()

    # --- heartbeat and signals ----------------------------------------------------------------
    async def push(self, replica: str, doc: bytes, *, at: float, ttl: float) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self.k_signals + replica, doc, px=max(1, int(ttl * 1000)))
        pipe.zadd(self.k_replicas, {replica: at})
        pipe.publish(self.signals_channel, doc)
        pipe.zremrangebyscore(self.k_replicas, "-inf", at - 10 * ttl)
        await self._call(pipe.execute())

    async def docs(self, *, since: float) -> list[tuple[str, bytes]]:
        flat = await self._call(self._docs(keys=[self.k_replicas], args=[since, self.k_signals]))
        pairs = zip(flat[0::2], flat[1::2], strict=True)
        return [(_text(name), raw) for name, raw in pairs if raw]

    # --- the lease ----------------------------------------------------------------------------
    async def acquire(self, token: str, lease: float) -> bool:
        done = await self._call(self._client.set(self.k_leader, token, nx=True, px=_ms(lease)))
        return bool(done)

    async def renew(self, token: str, lease: float) -> bool:
        return bool(await self._call(self._renew(keys=[self.k_leader], args=[token, _ms(lease)])))

    async def release(self, token: str) -> None:
        await self._call(self._release(keys=[self.k_leader], args=[token]))

    async def leader(self) -> str | None:
        raw = await self._call(self._client.get(self.k_leader))
        return None if raw is None else _text(raw)

    # --- the state ----------------------------------------------------------------------------
    async def read_state(self) -> bytes | None:
        raw = await self._call(self._client.get(self.k_state))
        return None if raw is None else bytes(raw)

    async def cas_state(
        self, *, expected: int, doc: bytes, version: int, token: str | None
    ) -> tuple[bool, int]:
        """Write ``doc`` as ``version`` if the fleet holds ``expected`` (-1: nothing yet) and,
        with a ``token``, the lease is still ours; publish it. (written?, version held now)."""
        keys = [self.k_state, self.k_version, self.k_leader, self.channel]
        ok, held = await self._call(
            self._cas(keys=keys, args=[expected, doc, version, token or ""])
        )
        return bool(ok), int(held)

    def pubsub(self) -> PubSub:
        return self._client.pubsub(ignore_subscribe_messages=True)

    # --- alerts and audit ---------------------------------------------------------------------
    async def claim(self, key: str, opposite: str, ttl: float) -> bool:
        keys = [self.k_alert + key, self.k_alert + opposite]
        return bool(await self._call(self._claim(keys=keys, args=["1", _ms(ttl)])))

    # --- spend --------------------------------------------------------------------------------
    async def spend_exchange(
        self, day: int, replica: str, doc: bytes, *, ttl: float
    ) -> dict[str, bytes]:
        """Set ``replica``'s totals of ``day``; every replica's totals of that day."""
        key = f"{self.k_spend}{day}"
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(key, replica, doc)
        pipe.pexpire(key, _ms(ttl))
        pipe.hgetall(key)
        *_, found = await self._call(pipe.execute())
        return {_text(name): bytes(raw) for name, raw in found.items()}

    async def spend_claim(self, day: int, mark: str, *, ttl: float) -> bool:
        """Whether this is the first claim of budget alert ``mark`` on ``day``, fleet-wide."""
        key = f"{self.k_spend}{day}:alerted"
        pipe = self._client.pipeline(transaction=False)
        pipe.hsetnx(key, mark, "1")
        pipe.pexpire(key, _ms(ttl))
        won, _ = await self._call(pipe.execute())
        return bool(won)

    async def audit(self, record: bytes) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.lpush(self.k_audit, record)
        pipe.ltrim(self.k_audit, 0, AUDIT_KEEP - 1)
        await self._call(pipe.execute())

    async def audit_records(self, n: int) -> list[bytes]:
        return list(await self._call(self._client.lrange(self.k_audit, 0, max(0, n - 1))))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
