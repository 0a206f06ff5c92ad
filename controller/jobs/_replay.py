"""The replayer: deferred jobs go back to their tier once it is healthy, at a bounded rate.

Each :meth:`Replayer.tick` (every ``tick_seconds``, on the injected clock):

1. writes what finished since the last tick (one transaction for the lot), then announces the
   jobs that went to the dead letters (after they are on disk);
2. asks the store to renew this replica's leases and put back the jobs of replicas that
   stopped renewing theirs (a shared store; a no-op for SQLite);
3. for each tier with queued jobs that is *not* degraded (``degraded(tier)``, the router's own
   view), starts up to what its token bucket holds (``per_second`` refilled continuously, at
   most what the time since the last tick earned, or one tick's worth), oldest first, never
   more than ``concurrency`` attempts at once across tiers: a recovering provider gets a
   trickle, not the whole backlog at once. A store shared by a fleet (``shares_rate``) keeps
   the bucket itself, so the rate holds for the fleet, not per replica;
4. POSTs the results of finished jobs that gave a callback URL (at most ``concurrency`` at
   once; a failed POST is tried again after a doubling backoff, ``callback_tries`` in all);
5. deletes finished jobs older than ``keep_seconds`` (every minute, a bounded batch).

An attempt that fails with a fault (:class:`~controller.jobs._job.Retry`) waits ``backoff``
doubling from ``retry_backoff_seconds`` (capped) before its next try; after ``max_tries`` the
job is dead (a dead letter) and ``on_dead`` hears of it (the runtime alerts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from controller import _json
from controller._clock import Clock
from controller._tasks import cancel_and_wait
from controller.jobs._job import Done, Job, JobStoreError, Outcome, Retry
from controller.jobs._store import Finished, JobStore, TierQueue

__all__ = ["CallbackSender", "ReplayLimits", "Replayer"]

log = logging.getLogger(__name__)

Runner = Callable[[Job], Awaitable[Outcome]]
CallbackSender = Callable[[str, bytes, dict[str, str]], Awaitable[bool]]
_PURGE_EVERY = 60.0  # seconds between deletions of expired results
_PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayLimits:
    per_second: float = 2.0  # jobs started per second, per tier
    concurrency: int = 4  # attempts (and callback POSTs) under way at once
    max_tries: int = 5
    retry_backoff_seconds: float = 5.0
    retry_backoff_cap: float = 300.0
    keep_seconds: float = 86_400.0
    tick_seconds: float = 0.5
    callback_tries: int = 6
    callback_backoff_seconds: float = 2.0

    def backoff(self, attempts: int, base: float | None = None) -> float:
        """Seconds before try ``attempts + 1``: ``base`` doubling per try, capped."""
        first = self.retry_backoff_seconds if base is None else base
        return float(min(self.retry_backoff_cap, first * 2 ** max(0, attempts - 1)))


class Replayer:
    """Replays one store's jobs through ``run``; see the module docstring."""

    def __init__(
        self,
        store: JobStore,
        *,
        run: Runner,
        degraded: Callable[[str], bool],
        clock: Clock,
        limits: ReplayLimits,
        tiers: Callable[[], Iterable[str]] = tuple,
        on_dead: Iterable[Callable[[Job, str], None]] = (),
        send_callback: CallbackSender | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self._run = run
        self._degraded = degraded
        self._clock = clock
        self._tiers = tiers
        self._on_dead = list(on_dead)
        self._send = send_callback
        self.queues: dict[str, TierQueue] = {}  # the last view (metrics, status)
        self.replayed: Counter[tuple[str, str]] = Counter()  # (tier, done|retry|dead)
        self.callbacks: Counter[str] = Counter()  # delivered | failed | retry
        self._tokens: dict[str, float] = {}
        self._last_refill: float | None = None
        self._last_purge = float("-inf")
        self._running: set[asyncio.Task[None]] = set()
        self._posting: dict[str, asyncio.Task[None]] = {}
        self._finished: list[tuple[Finished, Job]] = []
        self._stopped = asyncio.Event()
        self._recovered = False  # recover() done (at start, or at the first tick that could)

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Put back what a crash or a stop left running, and take the first look. A store
        that does not answer (the fleet's Redis away) does not stop the gateway's start: the
        first tick that reaches it does this."""
        try:
            await self._recover()
        except JobStoreError as exc:
            log.warning("deferred jobs: the store failed at start-up (%s); replays wait", exc)

    async def _recover(self) -> None:
        found = await self.store.recover(now=self._clock.wall(), max_tries=self.limits.max_tries)
        if found:
            log.warning("%d deferred job(s) were cut by a stop or crash; queued again", found)
        self._recovered = True
        self.queues = await self.store.queues()

    async def run(self) -> None:
        """Tick until :meth:`stop`; a failing tick is logged and the next one comes."""
        failing = False
        while not self._stopped.is_set():
            try:
                await self.tick()
                if failing:
                    log.warning("deferred jobs: the store answers again; replays go on")
                failing = False
            except JobStoreError as exc:  # a store away (Redis down): said once, not per tick
                if not failing:
                    log.warning("deferred jobs: replays wait, the store failed: %s", exc)
                failing = True
            except Exception:  # a bug must not end replays for good
                log.exception("deferred jobs: replay tick failed")
            await self._clock.sleep(self.limits.tick_seconds)

    async def stop(self) -> None:
        """Stop ticking; attempts under way are cancelled (their jobs are queued again at the
        next start, the attempt spent); what finished is written first (a store that fails
        then is logged, not raised: those jobs are replayed again)."""
        self._stopped.set()
        await cancel_and_wait([*self._running, *self._posting.values()])
        try:
            await self._flush()
        except JobStoreError as exc:  # the stop goes on: the runtime has more to close
            log.warning(
                "deferred jobs: %d result(s) not written at stop (%s); those jobs are "
                "replayed again, their attempt spent",
                len(self._finished),
                exc,
            )

    @property
    def busy(self) -> int:
        """Attempts under way now."""
        return len(self._running)

    # ----------------------------------------------------------------------------- one tick
    async def tick(self) -> None:
        if not self._recovered:
            await self._recover()
        await self._flush()
        now_wall = self._clock.wall()
        for job in await self.store.maintain(now=now_wall, max_tries=self.limits.max_tries):
            self._dead(job, job.error)  # its replica died holding its last try
        self.queues = await self.store.queues()
        self._refill()
        for tier, queue in self.queues.items():
            if queue.queued and not self._degraded(tier):
                await self._start(tier)
        await self._post_callbacks()
        now = self._clock.monotonic()
        if now - self._last_purge >= _PURGE_EVERY:
            self._last_purge = now
            before = self._clock.wall() - self.limits.keep_seconds
            await self.store.purge(before=before, limit=_PURGE_BATCH)

    async def settle(self) -> None:
        """Wait for the attempts and POSTs under way, then write their results (tests, bench)."""
        while self._running or self._posting:
            await asyncio.gather(*self._running, *self._posting.values(), return_exceptions=True)
        await self._flush()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed = 0.0 if self._last_refill is None else max(0.0, now - self._last_refill)
        self._last_refill = now
        rate = self.limits.per_second
        # A tick that came late (a busy loop) may start what its whole wait earned: over any
        # window at most rate * window jobs start, plus one tick's worth.
        burst = max(1.0, rate * max(self.limits.tick_seconds, elapsed))
        for tier in self.queues:
            start = self._tokens.get(tier, burst)  # a first look may start a burst at once
            self._tokens[tier] = min(burst, start + rate * elapsed)

    async def _start(self, tier: str) -> None:
        free = self.limits.concurrency - len(self._running)
        shared = self.store.shares_rate  # the fleet's bucket, in the store, limits the rate
        allowed = free if shared else min(free, int(self._tokens.get(tier, 0.0)))
        if allowed <= 0:
            return
        jobs = await self.store.claim(tier, now=self._clock.wall(), limit=allowed)
        if not shared:
            self._tokens[tier] -= len(jobs)
        for job in jobs:
            task = asyncio.create_task(self._attempt(job), name=f"replay {job.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _attempt(self, job: Job) -> None:
        try:
            outcome = await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a codec must not take the replayer down
            log.exception("deferred job %s: replay failed", job.id)
            outcome = Retry(f"the gateway failed to replay it ({type(exc).__name__})")
        self._finished.append((self._settle(job, outcome), job))

    def _settle(self, job: Job, outcome: Outcome) -> Finished:
        if isinstance(outcome, Done):
            self.replayed[(job.tier, "done")] += 1
            return Finished(job.id, outcome=outcome)
        if job.attempts >= self.limits.max_tries:
            self.replayed[(job.tier, "dead")] += 1
            return Finished(job.id, error=outcome.error, dead=True)
        self.replayed[(job.tier, "retry")] += 1
        wait = self.limits.backoff(job.attempts)
        return Finished(job.id, error=outcome.error, next_at=self._clock.wall() + wait)

    async def _flush(self) -> None:
        if not self._finished:
            return
        batch, self._finished = self._finished, []
        try:
            await self.store.finish([item for item, _ in batch], now=self._clock.wall())
        except BaseException:
            self._finished[:0] = batch  # written at the next tick
            raise
        for item, job in batch:
            if item.dead:
                self._dead(job, item.error)

    def _dead(self, job: Job, error: str) -> None:
        log.error("deferred job %s dead after %d tries: %s", job.id, job.attempts, error)
        for hook in self._on_dead:
            hook(job, error)

    # ----------------------------------------------------------------------------- callbacks
    async def _post_callbacks(self) -> None:
        if self._send is None:
            return
        free = self.limits.concurrency - len(self._posting)
        if free <= 0:
            return
        wanted = free + len(self._posting)  # those under way may be listed again
        due = await self.store.callbacks_due(now=self._clock.wall(), limit=wanted)
        for job in due:
            if job.id in self._posting or len(self._posting) >= self.limits.concurrency:
                continue
            task = asyncio.create_task(self._post(job), name=f"callback {job.id}")
            self._posting[job.id] = task
            task.add_done_callback(self._posted(job.id))

    def _posted(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self._posting.pop(job_id, None)

        return done

    async def _post(self, job: Job) -> None:
        assert self._send is not None
        assert job.callback is not None
        body = callback_body(job, now=self._clock.wall())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": job.idempotency_key,
            "x-failover-job": job.id,
        }
        delivered = False
        with contextlib.suppress(Exception):
            delivered = await self._send(job.callback, body, headers)
        tries = job.callback_attempts + 1
        next_at: float | None = None
        if not delivered and tries < self.limits.callback_tries:
            wait = self.limits.backoff(tries, base=self.limits.callback_backoff_seconds)
            next_at = self._clock.wall() + wait
        outcome = "delivered" if delivered else "retry" if next_at is not None else "failed"
        self.callbacks[outcome] += 1
        if outcome == "failed":
            log.warning("deferred job %s: callback failed %d times, given up", job.id, tries)
        now = self._clock.wall()
        await self.store.callback_result(job.id, delivered=delivered, next_at=next_at, now=now)


def job_document(job: Job, *, now: float) -> dict[str, object]:
    """The job as the API shows it and a callback receives it: its state, and once it has
    one, the answer (``result``: the caller's format, as a live request would have got it)."""
    doc = job.public(now=now)
    if job.result is not None:
        doc["result_status"] = job.result_status
        try:
            doc["result"] = _json.loads(job.result)
        except ValueError:  # not JSON: kept as text
            doc["result"] = job.result.decode("utf-8", "replace")
    return doc


def callback_body(job: Job, *, now: float) -> bytes:
    return _json.dumps(job_document(job, now=now))
