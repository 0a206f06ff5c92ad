"""The audit trail: every routing change and kill-switch change, and who made it, kept on disk.

One JSON object a line, appended to a file next to the state file (:func:`audit_path`:
``failover-state.json`` → ``failover-state.audit.jsonl``), so it outlives restarts, which the
status page's list of recent events does not. The file is rotated by size: past ``max_bytes`` it
becomes ``.1`` (``.1`` becomes ``.2``, ...) and the oldest beyond ``files`` in all is deleted, so
the trail holds at most ``files`` x ``max_bytes``. ``failover history`` reads it back
(:func:`read_audit`), oldest first.

Writing never fails or stops routing: an unwritable directory, a full disk or a read-only file is
logged once (and once more when writing works again), the record is lost, and the next one is
tried. Every string in a record goes through :func:`controller._redact.scrub`, so a secret the
gateway holds, or anything shaped like one, never reaches the file.

Records (``event``):

* ``routing``: a controller transition (``provider``, ``change``, ``from``, ``to``, ``reason``,
  ``cause``, ``enforced``, ``error_rate``, ``requests``, ``tier``), ``by`` ``controller``;
* ``kill_switch``: the gateway applied a kill switch (``before``, ``after``, ``pin``,
  ``disable``), ``by`` ``config`` (the file, or the environment's override);
* ``kill_switch_command``: ``failover kill-switch`` rewrote the config (``config``, ``after``,
  ``pin``, ``disable``), ``by`` the user who ran it.

Every record has ``time`` (ISO 8601, UTC), ``at`` (epoch seconds) and, for the gateway's own,
``version`` (of the routing state it produced). In fleet mode each replica keeps its own log
beside its ``state.path``, and its records carry ``replica`` (its name): the leader's holds the
fleet's routing decisions (a replica deciding alone while Redis is away, its own) and the
fleet-wide kill switches it applied (``by`` the operator the fleet state names); the operators'
own record of fleet-wide switches is in Redis (``failover history`` shows both).
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller._redact import scrub
from controller.control.decide import Transition
from controller.control.state import KillSwitch

__all__ = [
    "AuditLog",
    "audit_path",
    "kill_switch_record",
    "read_audit",
    "transition_record",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_FILES = 5
_MAX_TEXT = 2000  # characters of one string field (a reason); a record stays one short line


def audit_path(state_path: str | os.PathLike[str]) -> Path:
    """The audit log beside a state file."""
    path = Path(state_path)
    return path.with_name(f"{path.stem}.audit.jsonl")


class AuditLog:
    """Appends records to ``path``, rotated past ``max_bytes`` and kept to ``files`` files."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        files: int = DEFAULT_FILES,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._extra = dict(extra or {})  # in every record (a fleet replica's name)
        self._max_bytes = max_bytes
        self._files = max(1, files)
        self._failing = False

    @property
    def path(self) -> Path:
        return self._path

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` (scrubbed, stamped if it has no ``time``). Never raises; whether
        it was written."""
        try:
            stamped = _stamped({**record, **self._extra})
            line = (json.dumps(_clean(stamped), ensure_ascii=False) + "\n").encode()
            self._write(line)
        except (OSError, ValueError, TypeError) as exc:
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write the audit log %s (%s): routing goes on, changes are not "
                    "recorded until it can be written again",
                    self._path,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("the audit log %s is written again", self._path)
        return True

    def _write(self, line: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size  # another process (the CLI) may append too
            if size and size + len(line) > self._max_bytes:
                os.close(fd)
                fd = -1
                self._rotate()
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        finally:
            if fd >= 0:
                os.close(fd)

    def _rotate(self) -> None:
        """``path`` → ``path.1`` → ... → ``path.{files-1}``; the oldest beyond that deleted."""
        if self._files == 1:
            self._path.unlink(missing_ok=True)
            return
        _rotated(self._path, self._files - 1).unlink(missing_ok=True)
        for n in range(self._files - 2, 0, -1):
            older = _rotated(self._path, n)
            if older.exists():
                older.replace(_rotated(self._path, n + 1))
        self._path.replace(_rotated(self._path, 1))


def _rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def read_audit(path: str | os.PathLike[str], *, last: int | None = None) -> list[dict[str, Any]]:
    """The records in ``path`` and its rotated files, oldest first (the ``last`` ones only).
    A line that is not a JSON object (a write cut by a crash) is skipped."""
    path = Path(path)
    rotated = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)] + [path]
    records: collections.deque[dict[str, Any]] = collections.deque(maxlen=last)
    for file in files:
        try:
            with file.open("rb") as f:
                for raw in f:
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        records.append(record)
        except FileNotFoundError:
            continue
    return list(records)


def transition_record(transition: Transition, *, version: int) -> dict[str, Any]:
    """A controller transition as the audit log keeps it."""
    record: dict[str, Any] = {
        "at": transition.at,
        "event": "routing",
        "by": "controller",
        "version": version,
        "provider": transition.provider,
        "change": transition.kind.value,
        "from": transition.from_state.value,
        "to": transition.to_state.value,
        "reason": transition.reason,
        "enforced": transition.enforced,
        "error_rate": round(transition.error_rate, 4),
        "requests": transition.requests,
    }
    if transition.cause is not None:
        record["cause"] = transition.cause.value
    if transition.tier is not None:
        record["tier"] = transition.tier
    return record


def kill_switch_record(
    before: KillSwitch | None,
    after: KillSwitch,
    *,
    by: str,
    at: float,
    version: int | None = None,
    event: str = "kill_switch",
    **extra: Any,
) -> dict[str, Any]:
    """A kill-switch change as the audit log keeps it (``before`` None: not known)."""
    record: dict[str, Any] = {"at": at, "event": event, "by": by}
    if version is not None:
        record["version"] = version
    if before is not None:
        record["before"] = before.describe()
    record.update(after=after.describe(), pin=after.pin, disable=list(after.disable), **extra)
    return record


def _stamped(record: Mapping[str, Any]) -> dict[str, Any]:
    at = record.get("at")
    when = at if isinstance(at, int | float) else datetime.datetime.now(datetime.UTC).timestamp()
    iso = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="milliseconds")
    return {"time": iso.replace("+00:00", "Z"), "at": when, **record}


def _clean(value: Any) -> Any:
    """``value`` with every string scrubbed of secrets and cut to :data:`_MAX_TEXT`."""
    if isinstance(value, str):
        return scrub(value)[:_MAX_TEXT]
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
