"""The dispatcher: decides *when* and *whether* an alert goes out; senders decide *where*.

::

    submit(alert)  ─ sync, never blocks ─►  dedup (cooldown per event+provider)  ─►  inbox (bounded)
                                                                                      │
    collector: an alert after a quiet spell goes out AT ONCE (a trip must reach a phone
               in well under a second); alerts arriving within the grouping window after a
               send are held and become ONE message (a storm summary when more than one) ─┘
                   │ fan-out, one bounded queue per sender
                   ▼
    worker per sender: send → retry with exponential backoff + jitter, or exactly the
                       Retry-After the far side asked for, up to max_attempts

In a fleet several replicas may notice the same event (a kill-switch file every pod reads, a
leader that alerted just before it died): with ``shared`` (a :class:`SharedDedup`, the fleet's
record in Redis) the collector claims each alert fleet-wide before it goes out, and one that
another replica claimed within the cooldown is counted ``deduplicated``. The claims run
concurrently, each bounded by the fleet's command timeout; a claim that cannot be made sends.

One worker per sender means a dead Telegram never delays Slack or the log. Cooldowns, the
grouping window and backoff sleeps all run on the injected :class:`Clock`; only ``stop``'s
flush bound is real time, because it bounds how long a process takes to exit.

``submit`` must be called from the event loop's thread (the controller loop, a watcher task).
It says what it did (:class:`Submitted`), so a caller can list an alert that was dropped as not
sent rather than hide it. Outcomes are counted on ``failover.alerts`` {channel, event, result},
result one of ``sent | failed | dropped | deduplicated``; a storm summary counts once per member
alert. Every counted outcome is also reported, as it happens, to the ``on_outcome`` listeners
(a :class:`Delivery` each): that is how the runtime learns when a channel took an alert.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.metrics import Meter

from controller._clock import Clock
from controller._tasks import cancel_and_wait
from controller.notify.alert import ALSO_CLEARS, OPPOSITE, Alert, DedupKey, combine
from controller.notify.base import Sender, SendResult
from controller.notify.config import NotifyConfig
from controller.telemetry import names

log = logging.getLogger(__name__)

SENT = "sent"
FAILED = "failed"
DROPPED = "dropped"
DEDUPLICATED = "deduplicated"

CountKey = tuple[str, str, str]  # (channel, event, result)


class Submitted(enum.Enum):
    """What :meth:`Dispatcher.submit` did with an alert.

    Only ``QUEUED`` is truthy, so ``if dispatcher.submit(alert):`` still reads "was queued".
    """

    QUEUED = "queued"
    DEDUPLICATED = "deduplicated"  # a repeat within the cooldown: the earlier one went out
    QUEUE_FULL = "queue_full"  # dropped: the intake queue is full
    CLOSING = "closing"  # dropped: the dispatcher is stopping

    def __bool__(self) -> bool:
        return self is Submitted.QUEUED


@dataclass(frozen=True, slots=True)
class Delivery:
    """One counted outcome of ``message`` on one sender: ``result`` is a ``failover.alerts``
    result (``sent | failed | dropped | deduplicated``). Reported when it happens."""

    channel: str
    message: Alert
    result: str


OutcomeListener = Callable[[Delivery], None]


class SharedDedup(Protocol):
    """A dedup record shared by several dispatchers (the fleet's, in Redis)."""

    async def claim(self, alert: Alert) -> bool:
        """Whether this dispatcher sends ``alert`` (True when the record cannot be reached)."""
        ...


class _Tally:
    """Counts outcomes in memory and, when a meter is given, on the OTel counter; reports each
    to the listeners (a listener that raises is logged, never lets delivery fail)."""

    def __init__(self, meter: Meter | None, listeners: Sequence[OutcomeListener] = ()) -> None:
        self.counts: Counter[CountKey] = Counter()
        self._listeners = tuple(listeners)
        self._counter = (
            meter.create_counter(
                names.METRIC_ALERTS,
                unit="{alert}",
                description="Alerts by channel, event and delivery result",
            )
            if meter is not None
            else None
        )

    def add(self, channel: str, message: Alert, result: str) -> None:
        for alert in message.alerts:
            self.counts[(channel, alert.event.value, result)] += 1
            if self._counter is not None:
                attrs = {
                    names.ATTR_CHANNEL: channel,
                    names.ATTR_EVENT: alert.event.value,
                    names.ATTR_RESULT: result,
                }
                self._counter.add(1, attrs)
        for listener in self._listeners:
            try:
                listener(Delivery(channel, message, result))
            except Exception as exc:  # like an exporter's failure: logged, never raised
                log.error("alert outcome listener raised %s", type(exc).__name__)


class _Worker:
    """Delivers messages to one sender, one at a time, with retries."""

    def __init__(
        self,
        sender: Sender,
        *,
        clock: Clock,
        cfg: NotifyConfig,
        rng: random.Random,
        tally: _Tally,
    ) -> None:
        self.sender = sender
        self._clock = clock
        self._cfg = cfg
        self._rng = rng
        self._tally = tally
        self._queue: deque[Alert] = deque()
        self._current: Alert | None = None
        self._wake = asyncio.Event()
        self._finished = False

    def offer(self, message: Alert) -> None:
        if len(self._queue) >= self._cfg.queue_size:
            log.warning("alert queue for %s is full; dropping %s", self.sender.name, message.event)
            self._tally.add(self.sender.channel, message, DROPPED)
            return
        self._queue.append(message)
        self._wake.set()

    def finish(self) -> None:
        """No more messages will come: return once the queue is empty."""
        self._finished = True
        self._wake.set()

    def abandon(self) -> None:
        """Count what will never be delivered (shutdown ran out of time)."""
        pending = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for message in pending:
            self._tally.add(self.sender.channel, message, DROPPED)

    async def run(self) -> None:
        while True:
            if not self._queue:
                if self._finished:
                    return
                self._wake.clear()  # offer() and finish() set it again
                await self._wake.wait()
                continue
            self._current = self._queue.popleft()
            await self._deliver(self._current)
            self._current = None

    async def _deliver(self, message: Alert) -> None:
        channel = self.sender.channel
        for attempt in range(1, self._cfg.max_attempts + 1):
            result = await self._send_once(message)
            if result.ok:
                self._tally.add(channel, message, SENT)
                return
            delay = self._retry_delay(attempt, result)
            if delay is None:
                log.warning(
                    "alert %s to %s failed after %d attempt(s): %s",
                    message.event,
                    self.sender.name,
                    attempt,
                    result.error,
                )
                self._tally.add(channel, message, FAILED)
                return
            await self._clock.sleep(delay)

    async def _send_once(self, message: Alert) -> SendResult:
        try:
            return await self.sender.send(message)
        except Exception as exc:  # a sender bug must not kill its worker; text may hold secrets
            log.error("sender %s raised %s", self.sender.name, type(exc).__name__)
            return SendResult.failed(self.sender.channel, type(exc).__name__)

    def _retry_delay(self, attempt: int, result: SendResult) -> float | None:
        """Seconds before the next attempt, or None to give up."""
        if not result.retryable or attempt >= self._cfg.max_attempts:
            return None
        if result.retry_after is not None:
            # Exactly what the far side asked for (never earlier); an unreasonable ask ends it.
            wait = result.retry_after
            return wait if wait <= self._cfg.backoff_max_seconds else None
        ceiling = min(
            self._cfg.backoff_max_seconds, self._cfg.backoff_base_seconds * 2.0 ** (attempt - 1)
        )
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # "equal jitter"


class Dispatcher:
    """Dedup, storm grouping, bounded queues, per-sender retries, counted outcomes.

    The dispatcher owns its senders: ``stop`` closes them.
    """

    def __init__(
        self,
        *,
        senders: Sequence[Sender],
        clock: Clock,
        cfg: NotifyConfig,
        meter: Meter | None = None,
        rng: random.Random | None = None,
        on_outcome: Sequence[OutcomeListener] = (),
        shared: SharedDedup | None = None,
    ) -> None:
        self._clock = clock
        self._cfg = cfg
        self._shared = shared
        self._tally = _Tally(meter, on_outcome)
        shared_rng = rng or random.Random()
        self._workers = [
            _Worker(s, clock=clock, cfg=cfg, rng=shared_rng, tally=self._tally) for s in senders
        ]
        self._inbox: deque[Alert] = deque()
        self._last_flush = -math.inf
        self._last_sent: dict[DedupKey, float] = {}
        self._muted: dict[DedupKey, float] = {}  # acknowledged: held back until (monotonic)
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels alerts go to ("log", "telegram", "slack"), each once."""
        return tuple(dict.fromkeys(worker.sender.channel for worker in self._workers))

    # -- intake -----------------------------------------------------------------------------------
    def submit(self, alert: Alert) -> Submitted:
        """Queue ``alert`` unless it duplicates a recent one or cannot be queued. Never blocks.

        Says what it did; anything but ``QUEUED`` (falsy) has been counted already.
        """
        if self._closing.is_set():
            self._count_everywhere(alert, DROPPED)
            return Submitted.CLOSING
        now = self._clock.monotonic()
        last = self._last_sent.get(alert.dedup_key)
        muted = self._muted.get(alert.dedup_key, -math.inf) > now
        if muted or (last is not None and now - last < self._cfg.cooldown_seconds):
            self._count_everywhere(alert, DEDUPLICATED)
            return Submitted.DEDUPLICATED
        if len(self._inbox) >= self._cfg.queue_size:
            log.warning("alert queue full (%d); dropping %s", len(self._inbox), alert.event)
            self._count_everywhere(alert, DROPPED)
            return Submitted.QUEUE_FULL
        self._inbox.append(alert)
        self._remember(alert, now)
        self._wake.set()
        return Submitted.QUEUED

    def mute(self, key: DedupKey, seconds: float) -> None:
        """Hold back repeats of ``key`` (an acknowledged alert) for ``seconds``; each one held
        back is counted ``deduplicated``. The opposite event (a recovery) still goes out."""
        now = self._clock.monotonic()
        self._muted = {k: until for k, until in self._muted.items() if until > now}
        if len(self._muted) < 4 * self._cfg.queue_size:
            self._muted[key] = now + seconds

    def _remember(self, alert: Alert, now: float) -> None:
        opposite = OPPOSITE.get(alert.event)
        undone = (opposite, *ALSO_CLEARS.get(alert.event, ())) if opposite is not None else ()
        if opposite is not None or len(self._last_sent) > 4 * self._cfg.queue_size:
            horizon = now - self._cfg.cooldown_seconds
            self._last_sent = {
                key: at
                for key, at in self._last_sent.items()
                if at > horizon
                and not (key[0] in undone and key[1:3] == (alert.provider, alert.tier))
            }
            self._muted = {  # an ack ends with the incident: a later trip is news again
                key: until
                for key, until in self._muted.items()
                if not (key[0] in undone and key[1:3] == (alert.provider, alert.tier))
            }
        self._last_sent[alert.dedup_key] = now

    def _count_everywhere(self, alert: Alert, result: str) -> None:
        for worker in self._workers:
            self._tally.add(worker.sender.channel, alert, result)

    # -- observation ------------------------------------------------------------------------------
    def counts(self) -> dict[CountKey, int]:
        """Outcomes so far, ``{(channel, event, result): n}`` (the metric's in-process twin)."""
        return dict(self._tally.counts)

    @property
    def pending(self) -> int:
        """Alerts accepted but not yet handed to the senders."""
        return len(self._inbox)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the collector and one worker per sender as tasks (idempotent)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._collect(), name="notify-collector")]
        self._tasks += [
            loop.create_task(w.run(), name=f"notify-{w.sender.name}") for w in self._workers
        ]

    async def run(self) -> None:
        """Start if needed and wait until ``stop`` has drained (or cut) everything."""
        self.start()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a flush bound
        """Flush what is queued within ``timeout`` real seconds, then cut, count and close."""
        self._closing.set()
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            await cancel_and_wait(pending)
        for alert in self._inbox:
            self._count_everywhere(alert, DROPPED)
        self._inbox.clear()
        for worker in self._workers:
            worker.abandon()
        await self._close_senders()

    async def _close_senders(self) -> None:
        for worker in self._workers:
            try:
                await worker.sender.aclose()
            except Exception as exc:  # closing is best effort; keep closing the others
                log.warning("closing %s failed: %s", worker.sender.name, type(exc).__name__)

    # -- grouping ---------------------------------------------------------------------------------
    async def _collect(self) -> None:
        try:
            while True:
                if not self._inbox:
                    if self._closing.is_set():
                        return
                    self._wake.clear()  # submit() and stop() set it again
                    await self._wake.wait()
                    continue
                if self._clock.monotonic() - self._last_flush < self._cfg.group_window_seconds:
                    await self._group_window()  # inside a storm: the rest goes as one summary
                batch = tuple(self._inbox)
                self._inbox.clear()
                self._last_flush = self._clock.monotonic()
                if self._shared is not None:
                    batch = await self._claimed(batch)
                    if not batch:
                        continue
                for message in _by_origin(batch):
                    for worker in self._workers:
                        if worker.sender.name != message.origin:  # the asking chat knows
                            worker.offer(message)
        finally:
            for worker in self._workers:
                worker.finish()

    async def _claimed(self, batch: tuple[Alert, ...]) -> tuple[Alert, ...]:
        """The alerts of ``batch`` this dispatcher won fleet-wide; the rest are counted."""
        assert self._shared is not None
        results = await asyncio.gather(
            *(self._shared.claim(alert) for alert in batch), return_exceptions=True
        )
        kept = []
        for alert, won in zip(batch, results, strict=True):
            if isinstance(won, BaseException):
                log.error("shared alert dedup raised %s; sending", type(won).__name__)
                won = True
            if won:
                kept.append(alert)
            else:
                self._count_everywhere(alert, DEDUPLICATED)
        return tuple(kept)

    async def _group_window(self) -> None:
        """Wait for the grouping window, cut short when the dispatcher is stopping."""
        window = self._cfg.group_window_seconds
        if window <= 0 or self._closing.is_set():
            return
        waits = {
            asyncio.ensure_future(self._clock.sleep(window)),
            asyncio.ensure_future(self._closing.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()


def _by_origin(batch: Sequence[Alert]) -> list[Alert]:
    """One message per origin (most alerts have none): news an operator's chat gave is not
    mixed into a summary that goes back to that chat."""
    groups: dict[str | None, list[Alert]] = {}
    for alert in batch:
        groups.setdefault(alert.origin, []).append(alert)
    return [combine(group) for group in groups.values()]
