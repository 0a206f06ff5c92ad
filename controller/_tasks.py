"""Background tasks: ending them (cancel, and wait until each has really ended), and their
pauses (a sleep a nudge may cut short).

One ``task.cancel()`` is not always enough. On Python 3.11, ``asyncio.wait_for`` drops a
cancellation that arrives after what it waits for has finished but before it has resumed, and
returns that result instead (CPython gh-86296, fixed in 3.12 where ``wait_for`` is built on
``asyncio.timeout``). redis-py wraps every socket write in ``wait_for`` when a socket timeout is
set, so a fleet or job-store loop cancelled at that moment goes on with its next turn as if
nothing happened (a loop of Redis GETs cancelled once at each of 120 points lost 78 of the
cancels). ``Runtime.stop`` of a fleet replica then waited forever for its job replayer's loop,
which no longer knew it had been told to end: intermittently, in the fleet tests' teardowns under
load (``tests/test_task_cancel.py`` shows the lost cancel against a real Redis). A task still
running a short while after its cancel is therefore cancelled again, until it ends: repeated
cancels are what libraries already survive (anyio cancels a task on every loop turn until it
ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller._clock import Clock

log = logging.getLogger(__name__)

AGAIN_AFTER = 0.1  # seconds a cancelled task has to end before it is cancelled again
_SAY_AFTER = 50  # repeats (~5 s) before a task that will not end is logged, once


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, again_after: float = AGAIN_AFTER
) -> list[BaseException | None]:
    """Cancel ``tasks`` and return once every one has ended: each one's exception (None for a
    task that returned or was cancelled), in order. A task that goes on after its cancel (the
    cancel was lost, see the module's docstring) is cancelled again every ``again_after``
    seconds; one still running after ``_SAY_AFTER`` repeats is logged with where it waits."""
    every = list(tasks)
    pending = {task for task in every if not task.done()}
    repeats = 0
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)
        repeats += 1
        if pending and repeats == _SAY_AFTER:
            for task in pending:
                log.warning("task %s does not end when cancelled: %s", _name(task), _where(task))
    return [None if task.cancelled() else task.exception() for task in every]


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)


def _where(task: asyncio.Future[Any]) -> str:
    if not isinstance(task, asyncio.Task):
        return "?"
    frames = task.get_stack()  # outermost first: the last is where it waits
    if not frames:
        return "?"
    code = frames[-1].f_code
    return f"{code.co_filename}:{frames[-1].f_lineno} {code.co_name}"


async def sleep_or_woken(clock: Clock, seconds: float, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or until ``wake`` is set if that comes first (``wake``
    is left as it is: the caller clears it when it has acted on it)."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waker.cancel()
