"""Deferred jobs (issue 20, triage): requests a client marked ``defer`` while their tier was
degraded, kept durably, replayed once the tier is healthy again, fetched by id or POSTed to an
allowlisted callback.

:mod:`._job` is the record and its states, :mod:`._store` the store interface and its SQLite
implementation, :mod:`._redis` the fleet's store in Redis (one queue for every replica, claims
leased to one replica at a time; its Lua scripts are :mod:`._redis_scripts`, a job's hash read
back :mod:`._redis_rows`), :mod:`._replay` the rate-limited replayer,
:mod:`._callback` the callback allowlist and POST, :mod:`._metrics` the queue's instruments.
The gateway's side (triage of a request, the 202, ``GET /v1/failover/jobs/{id}``, how a job is
run) is ``controller/gateway/_jobs.py``.
"""

from controller.jobs._callback import CallbackRefused, HttpCallbackSender, check_callback
from controller.jobs._job import (
    CallbackState,
    Done,
    Job,
    JobState,
    NewJob,
    Outcome,
    QueueFull,
    Retry,
)
from controller.jobs._metrics import register_job_metrics
from controller.jobs._redis import RedisJobStore, fleet_job_store
from controller.jobs._replay import Replayer, ReplayLimits, job_document
from controller.jobs._store import Finished, JobStore, SqliteJobStore, TierQueue, queue_totals

__all__ = [
    "CallbackRefused",
    "CallbackState",
    "Done",
    "Finished",
    "HttpCallbackSender",
    "Job",
    "JobState",
    "JobStore",
    "NewJob",
    "Outcome",
    "QueueFull",
    "RedisJobStore",
    "ReplayLimits",
    "Replayer",
    "Retry",
    "SqliteJobStore",
    "TierQueue",
    "check_callback",
    "fleet_job_store",
    "job_document",
    "queue_totals",
    "register_job_metrics",
]
