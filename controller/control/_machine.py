"""Each provider's state machine, one step per :func:`~controller.control.decide.decide` call:
a cool-off ends, probes send it back or into failback, failback steps on or ends, and a healthy
or recovering provider becomes a :class:`~controller.control._decision.Candidate` to trip (by its
error rate, a run of failures, a fault during failback, a PromQL rule or a stall)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from controller.control._decision import Candidate, Pass, TransitionKind, TripCause
from controller.control._stall import stalled
from controller.control._tripping import announce_would_trip
from controller.control.promql import PromqlSignal
from controller.control.state import HealthState, ProviderStatus


def advance(work: Pass, name: str) -> Candidate | None:
    """Move one provider along its state machine; return it if it should trip."""
    status = work.status(name)
    if status.state is HealthState.TRIPPED:
        work.down_since.setdefault(name, status.since)
        _end_cooloff(work, name, status)
    elif status.state is HealthState.PROBING:
        _after_probes(work, name, status)
    elif status.state is HealthState.RECOVERING:
        fault = (
            _fault_while_recovering(work, name, status)
            or _promql_trip(work, name)
            or stalled(work, name, since=status.since)
        )
        if fault is not None and work.cfg.enforce:
            return fault
        if fault is not None:
            announce_would_trip(work, fault)
        _step(work, name, status)
    else:
        _forget_old_trips(work, name, status)
        return _healthy_trip(work, name, status) or _promql_trip(work, name) or stalled(work, name)
    return None


def _end_cooloff(work: Pass, name: str, status: ProviderStatus) -> None:
    cooloff = work.cfg.cooloff_for(status.trip_count)
    if work.now - status.since < cooloff:
        return
    new = replace(status, state=HealthState.PROBING, since=work.now, traffic_share=0.0)
    reason = f"cool-off of {cooloff:g}s over (trip #{status.trip_count}); probing"
    new = replace(new, reason=reason)
    work.event(name, TransitionKind.PROBE, new, reason)


def _after_probes(work: Pass, name: str, status: ProviderStatus) -> None:
    rules = work.promql.get(name, ())
    firing = [r for r in rules if r.firing]
    if firing:
        _retrip(work, name, status, _promql_reason(firing, "still fires"), probe=False)
        return
    if any(r.holds_out for r in rules):
        return  # its rule's Prometheus did not answer: nothing moves it either way
    result = work.probes.get(name)
    if result is not None and result.last_failure is not None:
        _retrip(work, name, status, result.last_failure)
        return
    if result is None or result.successes_in_a_row < work.cfg.probe_successes:
        return
    first = work.cfg.failback_steps[0]
    ok = f"{result.successes_in_a_row} probes in a row succeeded"
    if first >= 1.0:
        _recovered(work, name, status, ok)
        return
    reason = f"{ok}; failback at {first:.0%} of traffic"
    new = replace(
        status, state=HealthState.RECOVERING, since=work.now, reason=reason, traffic_share=first
    )
    work.table[name] = new
    work.transitions.append(
        work.make(
            name, TransitionKind.FAILBACK, status.state, new, reason, down_for=work.down_for(name)
        )
    )


def _retrip(
    work: Pass, name: str, status: ProviderStatus, failure: str, *, probe: bool = True
) -> None:
    count = status.trip_count + 1
    cooloff = work.cfg.cooloff_for(count)
    why = f"probe failed ({failure})" if probe else failure
    reason = f"{why}; cool-off {cooloff:g}s (trip #{count})"
    new = ProviderStatus(
        state=HealthState.TRIPPED,
        since=work.now,
        reason=reason,
        trip_count=count,
        traffic_share=0.0,
    )
    work.event(name, TransitionKind.RETRIP, new, reason)


def _step(work: Pass, name: str, status: ProviderStatus) -> None:
    steps = work.cfg.failback_steps
    index = int(max(0.0, work.now - status.since) // work.cfg.failback_step_seconds)
    if index >= len(steps) - 1:
        _recovered(work, name, status, f"failback through {len(steps)} steps without a fault")
    elif steps[index] != status.traffic_share:
        work.table[name] = replace(status, traffic_share=steps[index])


def _recovered(work: Pass, name: str, status: ProviderStatus, reason: str) -> None:
    new = replace(
        status, state=HealthState.HEALTHY, since=work.now, reason=reason, traffic_share=1.0
    )
    work.table[name] = new
    down_for = work.down_for(name)
    work.down_since.pop(name, None)
    work.transitions.append(
        work.make(name, TransitionKind.RECOVERED, status.state, new, reason, down_for=down_for)
    )


def _forget_old_trips(work: Pass, name: str, status: ProviderStatus) -> None:
    """Healthy for ``stable_seconds`` after a recovery: the next trip is a first trip again."""
    if status.trip_count and work.now - status.since >= work.cfg.stable_seconds:
        work.table[name] = replace(status, trip_count=0)


def _healthy_trip(work: Pass, name: str, status: ProviderStatus) -> Candidate | None:
    sig = work.signals(name)
    cfg = work.cfg
    elapsed = max(0.0, work.now - status.since)
    requests, faults = sig.counts_since(elapsed, bucket_seconds=work.snapshot.bucket_seconds)
    rate = faults / requests if requests else 0.0
    if requests >= cfg.min_requests and rate >= cfg.error_rate_threshold:
        reason = (
            f"error rate {rate:.0%} over {requests} requests in {sig.window_seconds:g}s "
            f"(threshold {cfg.error_rate_threshold:.0%})"
        )
        return Candidate(name, reason, sig, rate, requests, TripCause.ERROR_RATE)
    run_age = sig.failure_run_age
    run = sig.consecutive_failures if run_age is not None and run_age <= elapsed else 0
    if run >= cfg.consecutive_failures:
        reason = f"{run} consecutive failures"
        return Candidate(name, reason, sig, rate, requests, TripCause.CONSECUTIVE)
    return None


def _promql_trip(work: Pass, name: str) -> Candidate | None:
    """A PromQL rule naming ``name`` fires (an unknown one never trips anything)."""
    firing = [r for r in work.promql.get(name, ()) if r.firing]
    if not firing:
        return None
    sig = work.signals(name)
    reason = _promql_reason(firing, "fires")
    return Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.PROMQL)


def _promql_reason(firing: Sequence[PromqlSignal], verb: str) -> str:
    said = "; ".join(
        f"{r.rule} {verb} ({r.detail})" if r.detail else f"{r.rule} {verb}" for r in firing
    )
    return f"PromQL rule {said}"


def _fault_while_recovering(work: Pass, name: str, status: ProviderStatus) -> Candidate | None:
    sig = work.signals(name)
    age = sig.last_fault_age
    if age is None or age > max(0.0, work.now - status.since):
        return None
    top = sig.top_errors(1)
    what = f" ({top[0][0]})" if top else ""
    reason = f"fault during failback at {status.traffic_share:.0%} of traffic{what}"
    return Candidate(name, reason, sig, sig.error_rate, sig.requests, TripCause.FAILBACK_FAULT)
