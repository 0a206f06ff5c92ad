"""The queue's instruments: gauges read at export time from the replayer's last view (never a
query on the scrape), counters from its running totals."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller.jobs._replay import Replayer
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

__all__ = ["REPLAY_RESULTS", "register_job_metrics"]

# Every result is reported for every tier (0 until it happens): a rule or panel reading one
# finds a series, not an absence.
REPLAY_RESULTS = ("done", "retry", "dead")


def register_job_metrics(
    replayer: Replayer,
    meter: Meter,
    *,
    tiers: Callable[[], Iterable[str]],
    now: Callable[[], float],
) -> None:
    """Queue depth, oldest job's age and dead letters per tier (0 for a tier without jobs, so
    a rule sees a series, not an absence), and the replayed jobs by result."""

    def every_tier() -> list[str]:
        return sorted({*tiers(), *replayer.queues})

    def depth(_: CallbackOptions) -> Iterable[Observation]:
        for tier in every_tier():
            queue = replayer.queues.get(tier)
            count = 0 if queue is None else queue.queued + queue.running
            yield Observation(count, {names.ATTR_TIER: tier})

    def oldest(_: CallbackOptions) -> Iterable[Observation]:
        wall = now()
        for tier in every_tier():
            queue = replayer.queues.get(tier)
            created = None if queue is None else queue.oldest_created_at
            age = 0.0 if created is None else max(0.0, wall - created)
            yield Observation(age, {names.ATTR_TIER: tier})

    def dead(_: CallbackOptions) -> Iterable[Observation]:
        for tier in every_tier():
            queue = replayer.queues.get(tier)
            yield Observation(0 if queue is None else queue.dead, {names.ATTR_TIER: tier})

    def replayed(_: CallbackOptions) -> Iterable[Observation]:
        counts = dict(replayer.replayed)
        for tier in sorted({*every_tier(), *(tier for tier, _ in counts)}):
            for result in REPLAY_RESULTS:
                count = counts.get((tier, result), 0)
                yield Observation(count, {names.ATTR_TIER: tier, names.ATTR_RESULT: result})

    gauges = [
        (names.METRIC_JOBS_QUEUED, depth, "Deferred jobs waiting or under way"),
        (names.METRIC_JOBS_OLDEST_AGE, oldest, "Age of the oldest unfinished deferred job"),
        (names.METRIC_JOBS_DEAD, dead, "Deferred jobs in the dead letters (kept)"),
    ]
    for name, callback, description in gauges:
        meter.create_observable_gauge(
            name, callbacks=[callback], unit=METRIC_UNITS[name], description=description
        )
    meter.create_observable_counter(
        names.METRIC_JOBS_REPLAYED,
        callbacks=[replayed],
        unit=METRIC_UNITS[names.METRIC_JOBS_REPLAYED],
        description="Replay attempts of deferred jobs by result (done, retry, dead)",
    )
