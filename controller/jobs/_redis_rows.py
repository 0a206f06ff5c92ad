"""A job as the fleet's Redis holds it (``P:job:ID``, a hash of the SQLite row's columns, as
bytes) read back into a :class:`~controller.jobs._job.Job`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller import _json
from controller.jobs._job import CallbackState, Job, JobState


def decoded(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def pairs(row: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(row[0::2], row[1::2], strict=True))


def job_of(raw: Mapping[Any, Any]) -> Job:
    fields = {decoded(k): v for k, v in raw.items()}

    def text(name: str, default: str = "") -> str:
        value = fields.get(name)
        return default if value is None else decoded(value)

    def number(name: str) -> float | None:
        value = text(name)
        return float(value) if value else None

    result = fields.get("result")
    headers = fields.get("headers")
    return Job(
        id=text("id"),
        owner=text("owner"),
        tier=text("tier"),
        front=text("front"),
        model=text("model"),
        body=bytes(fields.get("body") or b""),
        headers=_json.loads(headers) if headers else {},
        idempotency_key=text("idem"),
        callback=text("callback") or None,
        state=JobState(text("state")),
        attempts=int(text("attempts", "0")),
        created_at=float(text("created_at")),
        next_at=float(text("next_at")),
        finished_at=number("finished_at"),
        result_status=int(text("result_status")) if text("result_status") else None,
        result=None if result is None else bytes(result),
        error=text("error"),
        callback_state=CallbackState(text("cb_state", "none")),
        callback_attempts=int(text("cb_attempts", "0")),
        callback_next_at=number("cb_next_at"),
        degraded=text("degraded"),
    )
