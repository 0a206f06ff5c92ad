"""The answer cache's fleet copy on a real redis-server: bounded by entries and bytes (oldest
out first) with each answer expiring after the TTL; an answer kept by one cache is found by
another; a frozen Redis costs one bounded read, then the rung skips Redis for its pause (on
the injected clock), and asks again after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from controller._clock import FakeClock
from controller.fleet import FleetConfig
from controller.model import Message, Request
from controller.routing._answers_redis import RedisAnswers
from controller.routing._degrade import AnswerCache, static_answer
from tests.redis_support import RedisServer

PREFIX = "degrade-test"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    running = RedisServer(tmp_path)
    await running.start()
    try:
        yield running
    finally:
        running.stop()


def shared(server: RedisServer, clock: FakeClock) -> RedisAnswers:
    cfg = FleetConfig(prefix=PREFIX, timeout_seconds=0.3)
    env = {"FAILOVER_REDIS_URL": server.url}
    return RedisAnswers.connect(cfg, env, read_timeout=0.3, clock=clock)


def test_the_fleets_copy_is_bounded_by_entries_and_bytes_and_expires(
    server: RedisServer,
) -> None:
    answers = shared(server, FakeClock())
    probe = redis.Redis.from_url(server.url)
    try:
        for n in range(3):
            answers.put(f"k{n}", 100.0 + n, b"x" * 100, ttl=60.0, bounds=(2, 10_000))
        assert sorted(probe.zrange(f"{PREFIX}:cache:index", 0, -1)) == [b"k1", b"k2"]
        assert probe.get(f"{PREFIX}:cache:a:k0") is None  # the oldest went first
        assert 0 < probe.pttl(f"{PREFIX}:cache:a:k2") <= 60_000  # it expires with the TTL
        answers.put("big", 200.0, b"y" * 250, ttl=60.0, bounds=(10, 300))
        assert probe.zrange(f"{PREFIX}:cache:index", 0, -1) == [b"big"]  # 300 bytes at most
        assert int(probe.get(f"{PREFIX}:cache:bytes") or 0) == 250
    finally:
        probe.close()
        answers.close()


async def test_an_answer_kept_by_one_cache_is_found_by_another(server: RedisServer) -> None:
    clock = FakeClock(wall_start=1000.0)
    writer = AnswerCache(None, clock=clock, shared=shared(server, clock))
    reader = AnswerCache(None, clock=clock, shared=shared(server, clock))
    request = Request(messages=(Message(role="user", content="hi"),))
    try:
        key = AnswerCache.key("t", request, "client-key")
        writer.put(key, static_answer("kept by the writer", "m"))
        for _ in range(500):  # bounded: the writer's thread sends it
            found = await reader.lookup(key)
            if found is not None:
                break
            await asyncio.sleep(0.01)
        assert found is not None
        assert found.message.content == "kept by the writer"
        assert len(reader) == 0  # read through, not copied into the reader's memory
        assert await reader.lookup(AnswerCache.key("t", request, "another-key")) is None
    finally:
        writer.close()
        reader.close()


async def test_a_frozen_redis_costs_one_bounded_read_then_is_skipped_for_a_pause(
    server: RedisServer,
) -> None:
    clock = FakeClock()
    answers = shared(server, clock)
    try:
        assert await answers.get("nothing") is None
        server.freeze()
        began = time.monotonic()
        assert await answers.get("k") is None
        assert answers.failed_reads == 1
        assert await answers.get("k") is None  # skipped: Redis is not asked in the pause
        assert answers.failed_reads == 1
        assert time.monotonic() - began < 10.0  # bounded (0.3 s socket timeout, one read)
        server.thaw()
        answers.put("k", 0.0, b"v", ttl=60.0, bounds=(10, 1000))
        assert await answers.get("k") is None  # still in the pause
        clock.advance(5.1)
        assert await answers.get("k") == b"v"
    finally:
        answers.close()


async def test_more_reads_at_once_than_connections_wait_for_one_and_skip_nothing(
    server: RedisServer,
) -> None:
    """In an outage every request of the tier reaches the cache rung at once: 30 reads over 16
    connections, while Redis is briefly slow (paused 0.5 s, as a fork or a latency spike does,
    well within the read bound), wait for a connection and all find the answer; none is
    refused for want of a connection (which would skip the rung for everyone for 5 s)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(40))  # as many threads as a 36-core host's
    cfg = FleetConfig(prefix=PREFIX, timeout_seconds=5.0)
    answers = RedisAnswers.connect(
        cfg, {"FAILOVER_REDIS_URL": server.url}, read_timeout=5.0, clock=FakeClock()
    )
    admin = redis.Redis.from_url(server.url)
    try:
        answers.put("k", 100.0, b"the answer", ttl=3600.0, bounds=(10, 10_000))
        admin.client_pause(500, all=True)
        found = await asyncio.gather(*(answers.get("k") for _ in range(30)))
        assert found == [b"the answer"] * 30
        assert answers.failed_reads == 0
    finally:
        admin.close()
        answers.close()
