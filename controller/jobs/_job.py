"""A deferred job: a request accepted with 202 while its tier was degraded, kept until replayed.

States::

    queued ──claim──► running ──answered──► done        (the answer, kept keep_results_seconds)
      ▲                  │
      └──── fault, ◄─────┤
            tries left   └──fault, no tries left──► dead (dead letter: kept, alerted)

``attempts`` is written (durably) *before* an attempt is sent, so a crash in the middle of one
spends it: each attempt number is sent at most once. A job found ``running`` at start-up was
cut by a crash or a stop, and goes back to ``queued`` (or ``dead`` when it has no tries left).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CallbackState",
    "Done",
    "Job",
    "JobState",
    "JobStoreError",
    "NewJob",
    "Outcome",
    "QueueFull",
    "Retry",
]


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for its tier to be healthy (or for its next try)
    RUNNING = "running"  # an attempt is under way
    DONE = "done"  # answered: ``result`` holds the answer in the caller's format
    DEAD = "dead"  # dead letter: every try failed


class CallbackState(enum.StrEnum):
    NONE = "none"  # no callback URL given
    WAITING = "waiting"  # the job has not finished yet
    PENDING = "pending"  # finished; the POST is due at ``callback_next_at``
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every delivery try failed (the result can still be fetched)


class JobStoreError(Exception):
    """The store could not do what was asked (a full disk, a locked or corrupt file)."""


class QueueFull(Exception):
    """The queue holds ``jobs.max_jobs`` unfinished jobs already: nothing more is accepted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """What the gateway hands the store to keep: the request as replay needs it."""

    id: str
    owner: str  # a digest of the client key that sent it ("" with client auth off)
    tier: str
    front: str  # the caller's format: openai | anthropic | responses
    model: str  # the model name the caller sent
    body: bytes = field(repr=False)  # the request body (made non-streaming)
    headers: Mapping[str, str] = field(default_factory=dict)  # relayed upstream as they came
    idempotency_key: str
    callback: str | None = None
    created_at: float  # wall seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as stored."""

    id: str
    owner: str
    tier: str
    front: str
    model: str
    body: bytes = field(repr=False)
    headers: Mapping[str, str]
    idempotency_key: str
    callback: str | None
    state: JobState
    attempts: int
    created_at: float
    next_at: float  # not replayed before (wall seconds): a retry's backoff
    finished_at: float | None = None
    result_status: int | None = None
    result: bytes | None = field(default=None, repr=False)
    error: str = ""  # why the last attempt failed, one line
    callback_state: CallbackState = CallbackState.NONE
    callback_attempts: int = 0
    callback_next_at: float | None = None
    # How the answer was degraded: "tier" when a step-down tier served it ("" by the job's own
    # tier; a cache or static rung's answer is never a job's, it is tried again).
    degraded: str = ""

    def public(self, *, now: float) -> dict[str, object]:
        """The job as ``GET /v1/failover/jobs/{id}`` shows it (the result added by the
        caller, which decodes it)."""
        return {
            "id": self.id,
            "object": "failover.job",
            "status": self.state.value,
            "tier": self.tier,
            "model": self.model,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "created_at": round(self.created_at, 3),
            "age_seconds": round(max(0.0, (self.finished_at or now) - self.created_at), 3),
            "finished_at": None if self.finished_at is None else round(self.finished_at, 3),
            "error": self.error or None,
            "degraded": self.degraded or None,
            "callback": None
            if self.callback is None
            else {"state": self.callback_state.value, "attempts": self.callback_attempts},
        }


@dataclass(frozen=True, slots=True)
class Done:
    """An attempt that got an answer: a 200, or the provider's refusal of the request (a 4xx:
    trying again would get the same), in the caller's format."""

    status: int
    body: bytes
    degraded: str = ""  # "tier": a step-down tier answered (the x-failover-degraded value)


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt that failed for a reason that may pass (every provider of the tier faulted,
    the deadline ran out): tried again after a backoff while tries are left."""

    error: str


Outcome = Done | Retry
