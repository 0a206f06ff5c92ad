"""A request's attempt and the one that may start beside it: the first answer wins.

Two things start a second attempt of a request, on its next target, while the first still waits
for an answer: a *rescue* (the first one's provider left rotation: it stalled, tripped or was
switched off) and a *hedge* (the tier's ``hedge`` wait passed and the first has produced
nothing). At most one runs beside a request's attempt.

The first attempt runs in the request's own task, so the usual request pays for no extra task;
the second runs in a task of its own. When the second answers first it cancels the request's
task (as :func:`asyncio.timeout` does) and marks the first attempt's waiter ``lost``: that
attempt reports itself abandoned (``Outpaced``, or ``Stalled`` after a rescue) and the request
takes the second one's answer. When the first answers first, the second is cancelled and reports
itself outpaced. Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from controller._errors import Outpaced, ProviderError, Stalled
from controller.signals.inflight import Waiter

__all__ = ["HedgeBudget", "Race", "lost_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Race(Generic[T]):
    """One attempt of a request in the request's own task, and at most one companion."""

    __slots__ = ("_closed", "_lost_as", "_owner", "_primary", "companion", "partner", "won")

    def __init__(self, primary: Waiter) -> None:
        owner = asyncio.current_task()
        assert owner is not None, "a request runs in a task"
        self._owner = owner
        self._primary = primary
        self._lost_as: type[Outpaced] = Outpaced
        self._closed = False
        self.companion: asyncio.Task[T] | None = None
        self.partner: Waiter | None = None  # the companion's waiter, once it has one
        self.won = False  # the companion answered first

    @property
    def can_start(self) -> bool:
        return not self._closed and self.companion is None and not self._primary.done

    def start(self, work: Coroutine[Any, Any, T], *, lost_as: type[Outpaced]) -> None:
        """Run ``work`` (the companion attempt) beside the request's own."""
        self._lost_as = lost_as
        self.companion = asyncio.get_running_loop().create_task(work)
        self.companion.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ProviderError):
            log.error("an attempt beside a request failed with a bug", exc_info=error)
        if self._closed or error is not None:
            return  # a failed companion leaves the request's own attempt to carry on
        self.won = True
        self._primary.lost = self._lost_as.error_type
        self._owner.cancel()

    def failed(self, task: asyncio.Task[T]) -> bool:
        """Whether the companion ``task`` failed while the request's own attempt still waits;
        its place is then free again (a rescue may take it)."""
        if task is not self.companion or self._closed or self._primary.done:
            return False
        if task.cancelled() or task.exception() is None:
            return False
        self.companion = self.partner = None
        return True

    def close(self) -> None:
        """The request's own attempt has settled: the companion can no longer interrupt it."""
        self._closed = True

    def took_over(self) -> bool:
        """Called where the request's task caught a cancellation: True when it was the
        companion's doing alone (then the cancellation is withdrawn and its answer taken)."""
        self._closed = True
        if not self.won:
            return False
        return self._owner.uncancel() == 0

    def abandon(self, *, outpaced: bool = True) -> T | None:
        """The request's own attempt answered first: cancel the companion (it reports itself
        outpaced; ``outpaced=False``: cancelled, the request itself was). Returns the
        companion's answer if it too had one, for the caller to discard."""
        self._closed = True
        task = self.companion
        if task is None:
            return None
        if self.partner is not None and outpaced:
            self.partner.lost = Outpaced.error_type
        if not task.done():
            task.cancel()
            return None
        if task.cancelled() or task.exception() is not None:
            return None
        return task.result()


class HedgeBudget:
    """A token bucket: at most ``per_second`` hedges a second, a burst of as many (at least 1)."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, per_second: float, now: float) -> None:
        self._rate = per_second
        self._burst = max(1.0, per_second)
        self._tokens = self._burst
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def lost_error(waiter: Waiter, waited: float) -> Outpaced:
    """What an attempt another one beat is reported as (``waiter.lost`` says which)."""
    if waiter.lost == Stalled.error_type:
        return Stalled(
            f"no answer after {waited:.1f}s; the provider left rotation and the request was "
            "answered elsewhere"
        )
    return Outpaced(f"another attempt of the request answered first (after {waited:.1f}s)")
