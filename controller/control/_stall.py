"""A provider that stalls: attempts waiting past the limit learned from its own answers while
nothing it answered came within it (``controller.stall``; see :mod:`controller.control.decide`)."""

from __future__ import annotations

from controller.control._decision import Candidate, Pass, TripCause
from controller.control.config import StallConfig, TripwireConfig
from controller.signals.inflight import Waits, WaitSignals


def stalled(work: Pass, name: str, *, since: float | None = None) -> Candidate | None:
    """Attempts waiting past the learned limit while the provider answered nothing within it for
    as long: ``min_waiting`` of them, or one waiting ``alone_factor`` times the limit. With
    ``since`` (a recovering provider) only attempts started after it count: those left waiting
    from the outage (with nowhere to be rescued to) are not news."""
    cfg = work.cfg.stall
    waits = work.snapshot.waiting(name)  # per provider: a model key has none
    if not cfg.enabled or not waits.waiting:
        return None
    within = None if since is None else max(0.0, work.now - since)
    for stream in (True, False):
        reason = _stall_reason(waits, stream, work.cfg, within)
        if reason is not None:
            sig = work.snapshot.provider(name)
            return Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.STALLED)
    return None


def _stall_reason(
    waits: WaitSignals, stream: bool, cfg: TripwireConfig, within: float | None
) -> str | None:
    stall = cfg.stall
    ages = [a for a in waits.kind(stream).ages if within is None or a <= within]
    limit, learned = _limit(waits, stream, stall)
    if limit is None or not ages or ages[0] < limit:
        return None
    alive = [waits.last_error_age] + [
        of.answered_within(bound)
        for of, bound in (
            (waits.streams, _limit(waits, True, stall)[0] or limit),
            (waits.answers, _limit(waits, False, stall)[0] or limit),
        )
    ]
    if any(age is not None and age < limit for age in alive):
        return None  # it answers others in time (or with errors): not silent, not slow
    past = sum(1 for age in ages if age >= limit)
    if past < stall.min_waiting and ages[0] < limit * stall.alone_factor:
        return None
    late = sum(1 for of in (waits.streams, waits.answers) for age, _ in of.recent if age < limit)
    what = f"{late} answered, later than that" if late else "nothing answered"
    assert learned.typical is not None  # a limit was learned from it
    return (
        f"stalled: {past} waiting past the limit, the oldest {ages[0]:.1f}s; {what} in the last "
        f"{limit:.1f}s (limit: {stall.factor:g} x p{stall.quantile * 100:g} of its "
        f"{'first chunks' if learned is waits.streams else 'answers'}, {learned.typical:.2f}s)"
    )


def _limit(waits: WaitSignals, stream: bool, stall: StallConfig) -> tuple[float | None, Waits]:
    """The stall limit of one kind, and the history it was learned from: a stream with too
    little history of its own is judged by the whole answers' (a first chunk comes no later)."""
    learned = waits.kind(stream)
    if stream and learned.samples < stall.min_samples:
        learned = waits.answers
    return stall.limit(learned.typical, learned.samples), learned
