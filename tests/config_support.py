"""Shared by the config tests: editing a watched config file the way people do."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

__all__ = ["example_copy", "rewrite_in_place"]

_EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "failover.example.yaml"

# Each rewrite gets its own modification time, a second apart: the watcher compares mtimes, and
# two writes within the file system's timestamp granularity would otherwise look like one.
_mtimes = itertools.count(1_700_000_000_000_000_000, 1_000_000_000)


def rewrite_in_place(path: Path, text: str) -> None:
    """What an editor or ``echo > file`` does: same inode, truncated, then written."""
    with path.open("r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)
    tick = next(_mtimes)
    os.utime(path, ns=(tick, tick))


def example_copy(where: Path) -> Path:
    """``deploy/failover.example.yaml`` copied into ``where`` with its routing state (and so
    the audit log a kill-switch command writes beside it) there too, not in /var/lib."""
    path = where / "failover.yaml"
    state = b"/var/lib/failover/state.json"
    original = _EXAMPLE.read_bytes()
    assert state in original  # the example still names it (else this copy would miss it)
    path.write_bytes(original.replace(state, str(where / "state.json").encode()))
    return path
