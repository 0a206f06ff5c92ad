"""Background tasks end when stopped, even when a cancellation is lost on the way.

On Python 3.11 ``asyncio.wait_for`` returns its inner result instead of raising when the cancel
arrives in the same loop turn as that result (CPython gh-86296), and redis-py wraps each socket
write in ``wait_for``: a fleet or job-store loop cancelled at that moment just goes on. That is
how ``Runtime.stop`` of a fleet replica sometimes waited forever (seen in test_bot_fleet's and
test_fleet's teardowns under load). ``controller._tasks.cancel_and_wait`` cancels again until
the task has ended. The cancellation points are scanned by loop turns, not real sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import pytest

from controller._tasks import cancel_and_wait
from tests.redis_support import RedisServer

TURNS = 60  # cancellation points tried: 0..TURNS-1 loop turns after the loop's first call
LOST_CANCEL_PYTHON = sys.version_info < (3, 12)


class Looping:
    """A loop of Redis calls as the fleet's and the job store's make them (a socket timeout,
    each call bounded by ``asyncio.timeout``, a failed call is the loop's next turn), counting
    the calls it finished."""

    def __init__(self, client: object) -> None:
        self.client = client
        self.calls = 0

    async def run(self) -> None:
        from redis.exceptions import RedisError

        while True:
            try:  # a connection a cancel cut is refused at its next use: a turn too, as there
                async with asyncio.timeout(5.0):
                    await self.client.get("k")  # type: ignore[attr-defined]
            except (RedisError, OSError, TimeoutError):
                pass
            self.calls += 1


async def _client(server: RedisServer) -> object:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.from_url(
        server.url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


async def _started(loop: Looping, turns: int) -> asyncio.Task[None]:
    task = asyncio.create_task(loop.run())
    while loop.calls < 1:  # noqa: ASYNC110 - connected, one call done: the steady state next
        await asyncio.sleep(0)
    for _ in range(turns):
        await asyncio.sleep(0)
    return task


async def _ended_by_one_cancel(loop: Looping, task: asyncio.Task[None]) -> bool:
    """Cancel once; whether the task ended rather than finished two more calls."""
    task.cancel()
    at = loop.calls
    while not task.done() and loop.calls < at + 2:  # noqa: ASYNC110 - loop turns, no clock
        await asyncio.sleep(0)
    return task.done()


async def test_one_cancel_can_be_lost_and_cancel_and_wait_ends_every_loop(
    redis: RedisServer,
) -> None:
    client = await _client(redis)
    try:
        lost = 0
        for turns in range(TURNS):
            loop = Looping(client)
            task = await _started(loop, turns)
            if not await _ended_by_one_cancel(loop, task):
                lost += 1
                assert loop.calls >= 2  # it went on calling after the cancel
            results = await asyncio.wait_for(cancel_and_wait([task], again_after=0.01), 30)
            assert task.done()
            assert results == [None]
        if LOST_CANCEL_PYTHON:  # the reason this module exists, seen on this interpreter
            assert lost > 0, f"no cancel lost in {TURNS} tries: the test no longer shows it"
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def test_cancel_and_wait_repeats_until_a_task_that_swallows_cancels_ends() -> None:
    swallowed = 0

    async def stubborn() -> str:
        nonlocal swallowed
        while swallowed < 3:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1  # as a lost cancel looks from outside: the loop goes on
        await asyncio.sleep(3600)
        return "never"

    async def fails() -> None:
        raise ValueError("a bug")

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(fails())]
    await asyncio.sleep(0)
    results = await cancel_and_wait(tasks, again_after=0)
    assert swallowed == 3
    assert tasks[0].cancelled()
    assert results[0] is None
    assert isinstance(results[1], ValueError)


async def test_a_task_that_never_ends_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(deaf(), name="deaf-loop")
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait([task], again_after=0))
    with caplog.at_level(logging.WARNING, logger="controller._tasks"):
        while "deaf-loop" not in caplog.text:
            assert not stopping.done()
            await asyncio.sleep(0)
    assert "does not end when cancelled" in caplog.text
    assert "deaf" in caplog.text
    release.set()
    assert await stopping == [None]
