"""A replica's signal windows as a document in Redis, and the fleet's aggregate of them. Pure.

Each replica pushes a summary of its own snapshot (per provider and per provider+model: the
non-empty buckets with their ages, the error types, the run of consecutive faults, the failing
trace ids) stamped with its wall clock. The leader merges every fresh document into one
:class:`SignalSnapshot`, shifting each bucket's age by how old its document is, so the tripwire
judges the fleet's requests exactly as it judges one process's: three replicas each seeing a
third of the traffic trip at the same aggregate error rate and volume.

Two fields have no exact fleet-wide meaning and are approximated (documented in the README):
the *consecutive* faults of the fleet are the sum of each replica's current run, counting only
runs not certainly followed by a success on another replica (one in a bucket that began after
the run did; within one bucket a success can be missed, so the run may be overcounted), and the
latency percentiles are the highest replica's (display only; ``decide`` does not read them).
What is waiting right now (stalls) is the leader's own view: attempts in flight are not pushed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from controller import _json
from controller.signals.window import (
    MAX_TRACE_IDS,
    BucketCounts,
    ProviderSignals,
    SignalSnapshot,
)

DOC_SCHEMA = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaDoc:
    """One replica's push: its heartbeat and its signals. ``at`` is its wall clock."""

    replica: str
    at: float
    role: str
    version: int
    window_seconds: float
    bucket_seconds: float
    providers: Mapping[str, ProviderSignals]
    models: Mapping[tuple[str, str], ProviderSignals]
    local_table: Mapping[str, Any] | None = None  # its own decisions while Redis was away
    fault: bool = False  # pushed early because an attempt failed there


def encode_doc(
    snapshot: SignalSnapshot,
    *,
    replica: str,
    at: float,
    role: str,
    version: int,
    local_table: Mapping[str, Any] | None = None,
    fault: bool = False,
) -> bytes:
    doc: dict[str, Any] = {
        "schema": DOC_SCHEMA,
        "replica": replica,
        "at": at,
        "role": role,
        "version": version,
        "w": snapshot.window_seconds,
        "b": snapshot.bucket_seconds,
        "p": {k: _encode_sig(s) for k, s in snapshot.providers.items() if _worth(s)},
        "m": {f"{p}/{m}": _encode_sig(s) for (p, m), s in snapshot.models.items() if _worth(s)},
    }
    if local_table is not None:
        doc["local"] = dict(local_table)
    if fault:
        doc["f"] = True
    return _json.dumps(doc)


def decode_doc(raw: bytes | str) -> ReplicaDoc | None:
    """A pushed document, or None when it is not one this version reads (logged by the caller)."""
    try:
        doc = _json.loads(raw)
        if not isinstance(doc, dict) or doc.get("schema") != DOC_SCHEMA:
            return None
        window, bucket = float(doc["w"]), float(doc["b"])
        models = {}
        for key, sig in doc["m"].items():
            provider, _, model = str(key).partition("/")
            models[(provider, model)] = _decode_sig(sig, window)
        return ReplicaDoc(
            replica=str(doc["replica"]),
            at=float(doc["at"]),
            role=str(doc["role"]),
            version=int(doc["version"]),
            window_seconds=window,
            bucket_seconds=bucket,
            providers={str(k): _decode_sig(s, window) for k, s in doc["p"].items()},
            models=models,
            local_table=doc.get("local") if isinstance(doc.get("local"), dict) else None,
            fault=doc.get("f") is True,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _worth(sig: ProviderSignals) -> bool:
    return bool(sig.requests or sig.caller_errors or sig.cancelled or sig.last_fault_age)


def _encode_sig(sig: ProviderSignals) -> dict[str, Any]:
    return {
        "r": [[b.age, b.requests, b.faults] for b in sig.recent],
        "ce": sig.caller_errors,
        "ca": sig.cancelled,
        "e": [list(kv) for kv in sig.errors_by_type],
        "l": [sig.latency_p50, sig.latency_p95, sig.latency_p99],
        "run": sig.consecutive_failures,
        "ra": sig.failure_run_age,
        "lf": sig.last_fault_age,
        "t": list(sig.failing_trace_ids),
    }


def _decode_sig(raw: dict[str, Any], window: float) -> ProviderSignals:
    recent = tuple(
        BucketCounts(age=float(a), requests=int(r), faults=int(f)) for a, r, f in raw["r"]
    )
    p50, p95, p99 = (None if v is None else float(v) for v in raw["l"])
    return ProviderSignals(
        window_seconds=window,
        requests=sum(b.requests for b in recent),
        faults=sum(b.faults for b in recent),
        successes=sum(b.requests - b.faults for b in recent),
        error_rate=_rate(recent),
        caller_errors=int(raw["ce"]),
        cancelled=int(raw["ca"]),
        errors_by_type=tuple((str(k), int(n)) for k, n in raw["e"]),
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
        consecutive_failures=int(raw["run"]),
        failure_run_age=None if raw["ra"] is None else float(raw["ra"]),
        last_fault_age=None if raw["lf"] is None else float(raw["lf"]),
        failing_trace_ids=tuple(str(t) for t in raw["t"]),
        recent=recent,
    )


def _rate(recent: tuple[BucketCounts, ...]) -> float:
    requests = sum(b.requests for b in recent)
    return sum(b.faults for b in recent) / requests if requests else 0.0


# --- the aggregate --------------------------------------------------------------------------------
def _aged(sig: ProviderSignals, by: float) -> ProviderSignals:
    """``sig`` as seen ``by`` seconds after it was taken: every age grows, old buckets leave."""
    if by <= 0:
        return sig
    window = sig.window_seconds
    recent = tuple(
        BucketCounts(age=b.age + by, requests=b.requests, faults=b.faults)
        for b in sig.recent
        if b.age + by < window
    )
    return ProviderSignals(
        window_seconds=window,
        requests=sum(b.requests for b in recent),
        faults=sum(b.faults for b in recent),
        successes=sum(b.requests - b.faults for b in recent),
        error_rate=_rate(recent),
        caller_errors=sig.caller_errors,
        cancelled=sig.cancelled,
        errors_by_type=sig.errors_by_type,
        latency_p50=sig.latency_p50,
        latency_p95=sig.latency_p95,
        latency_p99=sig.latency_p99,
        consecutive_failures=sig.consecutive_failures,
        failure_run_age=None if sig.failure_run_age is None else sig.failure_run_age + by,
        last_fault_age=None if sig.last_fault_age is None else sig.last_fault_age + by,
        failing_trace_ids=sig.failing_trace_ids,
        recent=recent,
    )


def _newest_success_age(sig: ProviderSignals) -> float | None:
    """The start of the newest bucket of ``sig`` with a success (a bucket's ``age`` is that of
    its start): a run that began before it was certainly followed by a success."""
    ages = [b.age for b in sig.recent if b.requests > b.faults]
    return min(ages) if ages else None


def merge_signals(parts: list[ProviderSignals], *, bucket_seconds: float) -> ProviderSignals:
    """One series' fleet view from each replica's (already aged to the same instant)."""
    if len(parts) == 1:
        return parts[0]
    window = parts[0].window_seconds
    buckets: dict[int, list[int]] = {}
    for part in parts:
        for b in part.recent:
            slot = buckets.setdefault(int(b.age // bucket_seconds), [0, 0])
            slot[0] += b.requests
            slot[1] += b.faults
    recent = tuple(
        BucketCounts(age=i * bucket_seconds, requests=r, faults=f)
        for i, (r, f) in sorted(buckets.items())
    )
    requests = sum(b.requests for b in recent)
    faults = sum(b.faults for b in recent)
    run, run_age = _fleet_run(parts)
    fault_ages = [p.last_fault_age for p in parts if p.last_fault_age is not None]
    return ProviderSignals(
        window_seconds=window,
        requests=requests,
        successes=requests - faults,
        faults=faults,
        caller_errors=sum(p.caller_errors for p in parts),
        cancelled=sum(p.cancelled for p in parts),
        error_rate=faults / requests if requests else 0.0,
        errors_by_type=_sum_errors(p.errors_by_type for p in parts),
        latency_p50=_highest(p.latency_p50 for p in parts),
        latency_p95=_highest(p.latency_p95 for p in parts),
        latency_p99=_highest(p.latency_p99 for p in parts),
        consecutive_failures=run,
        failure_run_age=run_age,
        last_fault_age=min(fault_ages) if fault_ages else None,
        failing_trace_ids=tuple(dict.fromkeys(t for p in parts for t in p.failing_trace_ids))[
            :MAX_TRACE_IDS
        ],
        recent=recent,
    )


def _fleet_run(parts: list[ProviderSignals]) -> tuple[int, float | None]:
    """Consecutive faults fleet-wide: runs that began after every other replica's last success."""
    run, oldest = 0, None
    for i, part in enumerate(parts):
        if not part.consecutive_failures or part.failure_run_age is None:
            continue
        others = [_newest_success_age(p) for j, p in enumerate(parts) if j != i]
        newest_other = min((a for a in others if a is not None), default=None)
        if newest_other is not None and part.failure_run_age >= newest_other:
            continue  # another replica saw a success after this run began
        run += part.consecutive_failures
        oldest = max(oldest or 0.0, part.failure_run_age)
    return run, oldest


def _sum_errors(tables: Iterable[tuple[tuple[str, int], ...]]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for table in tables:
        for kind, count in table:
            totals[kind] = totals.get(kind, 0) + count
    return tuple(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def _highest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def fleet_snapshot(
    local: SignalSnapshot, others: Iterable[ReplicaDoc], *, now_wall: float
) -> SignalSnapshot:
    """The local snapshot merged with the other replicas' documents as of ``now_wall``.

    A document older than the window adds nothing; ``waits`` stay the local ones."""
    window, bucket = local.window_seconds, local.bucket_seconds
    providers: dict[str, list[ProviderSignals]] = {k: [s] for k, s in local.providers.items()}
    models: dict[tuple[str, str], list[ProviderSignals]] = {k: [s] for k, s in local.models.items()}
    for doc in others:
        age = max(0.0, now_wall - doc.at)
        if age >= window:
            continue
        for name, sig in doc.providers.items():
            providers.setdefault(name, []).append(_aged(sig, age))
        for key, sig in doc.models.items():
            models.setdefault(key, []).append(_aged(sig, age))
    return SignalSnapshot(
        taken_at=local.taken_at,
        window_seconds=window,
        bucket_seconds=bucket,
        providers=MappingProxyType(
            {k: merge_signals(v, bucket_seconds=bucket) for k, v in providers.items()}
        ),
        models=MappingProxyType(
            {k: merge_signals(v, bucket_seconds=bucket) for k, v in models.items()}
        ),
        waits=local.waits,
    )
