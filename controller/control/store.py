"""Where the routing state lives between restarts: a file (the default), or Redis for fleets.

The interface is two calls so another backend is a small class (the fleet's is in
:mod:`controller.fleet`): ``load()`` never raises (a
controller that cannot read its old decision starts healthy and says so in the log; refusing to
start would turn a corrupt file into an outage), ``save()`` may raise and the loop logs it. A
file store raises ``OSError`` naming the state file itself (not the temporary file beside it), and
:meth:`FileStateStore.problem` tells ``failover check`` in advance why saving would fail.

The file is a JSON document with a schema version, written atomically: a temporary file in the
same directory, flushed and fsynced, then ``os.replace`` over the old one, so a crash mid-write
leaves either the old or the new document, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from controller.control.state import HealthState, KillSwitch, ProviderStatus, RoutingState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class StateStore(Protocol):
    """Persistence of the routing state document."""

    def load(self) -> RoutingState:
        """The last saved state, or a fresh healthy one. Never raises."""
        ...

    def save(self, state: RoutingState) -> None:
        """Persist ``state`` (whole). May raise; the caller logs and carries on."""
        ...


class MemoryStateStore:
    """Keeps the last saved state in memory: tests, demos, and deployments that opt out."""

    def __init__(self, state: RoutingState | None = None) -> None:
        self._state = state or RoutingState()
        self.saves = 0

    def load(self) -> RoutingState:
        return self._state

    def save(self, state: RoutingState) -> None:
        self._state = state
        self.saves += 1


class CorruptState(ValueError):
    """The state file exists but does not hold a document this version understands."""


class FileStateStore:
    """A JSON file, replaced atomically on every save."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> RoutingState:
        try:
            text = self._path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # nothing was ever saved there
            return RoutingState()
        except (OSError, UnicodeDecodeError) as exc:
            return self._start_fresh(f"cannot read it: {exc}")
        try:
            return decode_state(text)
        except CorruptState as exc:
            return self._start_fresh(str(exc))

    def save(self, state: RoutingState) -> None:
        try:
            self._write(encode_state(state).encode("utf-8"))
        except OSError as exc:
            if not exc.errno:
                raise
            # OSError(errno, ...) is the matching subclass again (FileNotFoundError, ...).
            raise OSError(exc.errno, exc.strerror, str(self._path)) from exc

    def problem(self) -> str | None:
        """Why :meth:`save` would fail now, or None, for ``failover check``. A missing directory
        is no problem when it can be created (the first save creates it, as a package's
        ``/var/lib/failover`` would be); otherwise the same test as a save: a temporary file
        created (and removed) in the state file's directory."""
        directory = self._path.parent
        if not directory.exists():
            ancestor = next(p for p in directory.parents if p.exists())
            if not ancestor.is_dir():
                return f"{ancestor} is not a directory"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"directory {directory} does not exist and cannot be created in {ancestor}"
            return None
        if not directory.is_dir():
            return f"{directory} is not a directory"
        if self._path.is_dir():
            return f"{self._path} is a directory"
        try:
            fd, tmp = self._temp_file()
        except OSError as exc:
            return f"cannot write in directory {directory}: {exc.strerror or exc}"
        os.close(fd)
        _remove_quietly(tmp)
        return None

    def _temp_file(self) -> tuple[int, str]:
        name = f".{self._path.name}."
        return tempfile.mkstemp(prefix=name, suffix=".tmp", dir=self._path.parent)

    def _write(self, data: bytes) -> None:
        if not self._path.parent.exists():  # a file in its place fails below, named as such
            self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = self._temp_file()
        replaced = False
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
            replaced = True
        finally:
            if not replaced:  # the old document stays; do not leave the half-written one around
                _remove_quietly(tmp)
        _fsync_dir(self._path.parent)

    def _start_fresh(self, problem: str) -> RoutingState:
        corrupt = self._path.with_name(self._path.name + ".corrupt")
        try:
            shutil.copyfile(self._path, corrupt)
            kept = f"a copy is kept at {corrupt}"
        except OSError as exc:
            kept = f"could not keep a copy ({exc})"
        log.error(
            "routing state file %s is unusable (%s); starting from a fresh healthy state, %s",
            self._path,
            problem,
            kept,
        )
        return RoutingState()


def encode_state(state: RoutingState) -> str:
    """The file form of a state document (stable key order, readable by a person)."""
    doc = {
        "schema": SCHEMA_VERSION,
        "version": state.version,
        "updated_at": state.updated_at,
        "changed_by": state.changed_by,
        "kill_switch": {"pin": state.kill_switch.pin, "disable": list(state.kill_switch.disable)},
        "providers": encode_providers(state.providers),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def encode_providers(providers: Mapping[str, ProviderStatus]) -> dict[str, dict[str, Any]]:
    """The ``providers`` table of a state document as plain JSON values."""
    return {
        name: {
            "state": status.state.value,
            "since": status.since,
            "reason": status.reason,
            "trip_count": status.trip_count,
            "traffic_share": status.traffic_share,
        }
        for name, status in sorted(providers.items())
    }


def decode_state(text: str) -> RoutingState:
    """Parse a state document; any deviation raises :class:`CorruptState` saying what."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptState(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptState("not a JSON object")
    if doc.get("schema") != SCHEMA_VERSION:
        raise CorruptState(f"unknown schema {doc.get('schema')!r} (expected {SCHEMA_VERSION})")
    try:
        return RoutingState(
            version=_typed(doc, "version", int),
            updated_at=float(_typed(doc, "updated_at", (int, float))),
            changed_by=_typed(doc, "changed_by", str),
            providers=MappingProxyType(decode_providers(_typed(doc, "providers", dict))),
            kill_switch=_decode_kill_switch(_typed(doc, "kill_switch", dict)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptState(f"bad field: {exc}") from exc


def decode_providers(raw: dict[str, Any]) -> dict[str, ProviderStatus]:
    """The inverse of :func:`encode_providers`; raises TypeError, ValueError or KeyError."""
    table = {}
    for name, item in raw.items():
        if not isinstance(item, dict):
            raise TypeError(f"providers.{name} is not an object")
        share = float(_typed(item, "traffic_share", (int, float)))
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"providers.{name}.traffic_share {share} is outside [0, 1]")
        table[str(name)] = ProviderStatus(
            state=HealthState(_typed(item, "state", str)),
            since=float(_typed(item, "since", (int, float))),
            reason=_typed(item, "reason", str),
            trip_count=_typed(item, "trip_count", int),
            traffic_share=share,
        )
    return table


def _decode_kill_switch(raw: dict[str, Any]) -> KillSwitch:
    pin = raw.get("pin")
    if pin is not None and not isinstance(pin, str):
        raise TypeError("kill_switch.pin is not a string")
    disable = _typed(raw, "disable", list)
    if not all(isinstance(d, str) for d in disable):
        raise TypeError("kill_switch.disable holds a non-string")
    return KillSwitch(pin=pin, disable=tuple(disable))


def _typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{key} has the wrong type ({type(value).__name__})")
    return value


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        log.warning("could not remove temporary state file %s", path)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("fsync of directory %s not supported", directory)
    finally:
        os.close(fd)
