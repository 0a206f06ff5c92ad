"""Tripping the candidates of one :func:`~controller.control.decide.decide` call: a provider as a
whole or only its failing models, never the last usable target of a tier (a PANIC instead, one
per episode), and in observe mode a "would trip" notice instead of a trip."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from controller.control._decision import Candidate, Pass, TransitionKind, TripCause
from controller.control.state import HealthState, ProviderStatus, model_key, split_key
from controller.signals.window import ProviderSignals

AUTH_ERROR = "auth"


def trip(work: Pass, candidate: Candidate) -> None:
    blocked = _tiers_left_empty(work, candidate.name)
    if blocked:
        for tier in blocked:
            _panic(work, candidate, tier)
        return
    status = work.view.get(candidate.name) or work.state.status(candidate.name)
    new = ProviderStatus(
        state=HealthState.TRIPPED,
        since=work.now,
        reason=candidate.reason,
        trip_count=status.trip_count + 1,
        traffic_share=0.0,
    )
    if not work.cfg.enforce:
        work.view[candidate.name] = new
        announce_would_trip(work, candidate)
        return
    work.down_since.setdefault(candidate.name, work.now)
    critical = _is_auth(candidate.signals)
    work.table[candidate.name] = new
    work.transitions.append(
        work.make(
            candidate.name,
            TransitionKind.TRIP,
            status.state,
            new,
            candidate.reason,
            critical=critical,
            error_rate=candidate.error_rate,
            requests=candidate.requests,
            cause=candidate.cause,
        )
    )


def by_model(work: Pass, candidates: list[Candidate]) -> list[Candidate]:
    """A provider serving several models trips as a whole only when every model of it that had
    traffic would trip, or when it stalled (silence is the provider's); its models then need no
    trip of their own. Otherwise only the failing models trip, and their siblings serve on."""
    named = {c.name: c for c in candidates}
    whole = {
        name for name in named if split_key(name)[1] is None and _trips_whole(work, named, name)
    }
    kept = []
    for candidate in candidates:
        provider, model = split_key(candidate.name)
        if (provider in whole) == (model is None):
            kept.append(candidate)
    return kept


def _trips_whole(work: Pass, named: Mapping[str, Candidate], provider: str) -> bool:
    if provider not in work.members.multi or named[provider].cause in _WHOLE:
        return True
    served = [
        model_key(p, m)
        for (p, m), sig in work.snapshot.models.items()
        if p == provider and sig.requests
    ]
    return all(key in named for key in served)


_WHOLE = (TripCause.STALLED, TripCause.PROMQL)  # causes that are the provider's, not a model's


def _tiers_left_empty(work: Pass, name: str) -> list[str]:
    """Tiers in which ``name`` (a provider, or one model of one) is the last target traffic can
    still go to."""
    disabled = set(work.state.kill_switch.disable)
    if split_key(name)[0] in disabled:
        return []
    blocked = []
    for tier, others in work.members.blocked_by(name):
        if not any(_target_usable(work, target, disabled) for target in others):
            blocked.append(tier)
    return blocked


def _target_usable(work: Pass, target: tuple[str, str | None], disabled: set[str]) -> bool:
    provider, model = target
    if provider in disabled or not _usable(work, provider):
        return False
    return model is None or _usable(work, model_key(provider, model))


def _usable(work: Pass, name: str) -> bool:
    found = work.view.get(name)
    return (found or work.state.status(name)).usable


def _panic(work: Pass, candidate: Candidate, tier: str) -> None:
    first = tier not in work.panic
    work.panic[tier] = work.now
    if first:
        work.panics.append((tier, candidate))


def announce_panic(work: Pass) -> None:
    """One PANIC for every tier this pass left without a provider: one outage that downs many
    tiers at once is one critical alert naming them all, not one per tier."""
    if not work.panics:
        return
    tiers = tuple(dict.fromkeys(tier for tier, _ in work.panics))
    lead = work.panics[0][1]
    kept = dict.fromkeys(c.name for _, c in work.panics)
    why = "; ".join(dict.fromkeys(f"{c.name}: {c.reason}" for _, c in work.panics))
    named = ", ".join(repr(t) for t in tiers)
    reason = (
        f"all providers of tier{'s' if len(tiers) > 1 else ''} {named} down: not ejecting "
        f"{', '.join(kept)}, the last usable ({why}); panic mode"
    )
    status = work.view.get(lead.name) or work.state.status(lead.name)
    event = work.make(
        lead.name,
        TransitionKind.PANIC,
        status.state,
        status,
        reason,
        critical=True,
        enforced=work.cfg.enforce,
        tier=tiers[0],
        tiers=tiers,
        error_rate=lead.error_rate,
        requests=lead.requests,
    )
    (work.transitions if work.cfg.enforce else work.notices).append(event)


def announce_would_trip(work: Pass, candidate: Candidate) -> None:
    first = candidate.name not in work.would_trip
    work.would_trip[candidate.name] = work.now
    if not first:
        return
    status = work.status(candidate.name)
    would = replace(status, state=HealthState.TRIPPED, traffic_share=0.0)
    work.notices.append(
        work.make(
            candidate.name,
            TransitionKind.TRIP,
            status.state,
            would,
            f"would trip (observe mode): {candidate.reason}",
            critical=_is_auth(candidate.signals),
            enforced=False,
            error_rate=candidate.error_rate,
            requests=candidate.requests,
            cause=candidate.cause,
        )
    )


def _is_auth(sig: ProviderSignals) -> bool:
    return any(kind == AUTH_ERROR for kind, _ in sig.errors_by_type)


def expire(work: Pass) -> None:
    hold = work.cfg.cooloff_seconds
    for table in (work.would_trip, work.panic):
        for key in _stale(table.items(), work.now - hold):
            del table[key]


def _stale(items: Iterable[tuple[str, float]], before: float) -> list[str]:
    return [key for key, seen in items if seen < before]
