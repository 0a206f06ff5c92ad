"""Editing the ``kill_switch:`` block of a config file in place, keeping everything else.

``failover kill-switch pin openai`` rewrites only the lines of the ``kill_switch`` mapping (or
appends one), validates the whole new file before writing, and writes in place (not by rename)
so a bind-mounted file in a container sees the change. The running gateway's watcher picks it
up within a second; a comment at the end of the block records who changed it and when. The
file's line endings (LF or CRLF) are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from controller._errors import ConfigError, FailoverError
from controller.config._model import Config, parse_config
from controller.control.state import KillSwitch


def render_block(switch: KillSwitch, *, who: str, at: float) -> list[str]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return [
        "kill_switch:",
        f"  pin: {json.dumps(switch.pin) if switch.pin else 'null'}",
        f"  disable: {json.dumps(list(switch.disable))}",
        f"  # last changed by {who} at {stamp} with `failover kill-switch`",
    ]


def _block_lines(text: str) -> tuple[int, int] | None:
    """0-based [start, end) line range of the top-level ``kill_switch`` entry, if present."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return None
    entries = root.value
    for index, (key, _value) in enumerate(entries):
        if isinstance(key, yaml.ScalarNode) and key.value == "kill_switch":
            start = key.start_mark.line
            if index + 1 < len(entries):
                end = entries[index + 1][0].start_mark.line
            else:
                end = len(text.splitlines())
            return start, end
    return None


def rewrite(text: str, switch: KillSwitch, *, who: str, at: float) -> str:
    """The config text with its kill switch replaced (comments elsewhere kept)."""
    lines = text.splitlines()
    block = render_block(switch, who=who, at=at)
    span = _block_lines(text)
    if span is None:
        return "\n".join([*lines, "", *block]) + "\n"
    start, end = span
    # Keep blank lines and column-0 comments that precede the next key (or end the file).
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


def set_kill_switch(path: str | os.PathLike[str], switch: KillSwitch, *, who: str) -> Config:
    """Validate and write.

    Raises ConfigError (file untouched) if the file cannot be read or the result would be
    invalid, and FailoverError (file as it was) if it cannot be written.
    """
    source = Path(path)
    try:
        old = source.read_bytes()  # bytes: line endings as they are, and what to restore
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=str(source)) from None
    try:
        text = old.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", source=str(source)) from None
    eol = _line_ending(text)
    new_text = rewrite(text.replace("\r\n", "\n"), switch, who=who, at=time.time())
    config = parse_config(new_text, source=str(source))
    _write_in_place(source, new_text.replace("\n", eol).encode("utf-8"), old=old)
    return config


def _line_ending(text: str) -> str:
    """CRLF when most lines end so (a file saved on Windows), else LF.

    A file that mixes the two comes out with one style throughout: the majority's.
    """
    return "\r\n" if 2 * text.count("\r\n") > text.count("\n") else "\n"


def _write_in_place(path: Path, data: bytes, *, old: bytes) -> None:
    """Replace the contents of ``path`` with ``data`` without replacing the file itself.

    A write-temp-then-rename would be atomic, but the rename swaps the inode and a single-file
    bind mount keeps showing the old one, so the gateway in the container would never see the
    change. The failures are handled instead: opening for writing fails before a byte changes
    (read-only or immutable file, wrong owner), and if writing fails part-way (disk full, I/O
    error) the old bytes, which fit in blocks the file already has, are put back before the
    error is reported. A reader can still catch the file mid-write; the gateway's watcher waits
    for the file to hold still before it reads (see ``controller/config/_watch.py``).
    """
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))  # no O_TRUNC, no O_CREAT
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        try:
            _overwrite(fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                _overwrite(fd, old)
            raise _cannot_write(path, exc) from None
    finally:
        os.close(fd)


def _overwrite(fd: int, data: bytes) -> None:
    """Write ``data`` from offset 0, cut the file to its length, and flush it to disk."""
    os.lseek(fd, 0, os.SEEK_SET)
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _cannot_write(path: Path, exc: OSError) -> FailoverError:
    return FailoverError(f"cannot write {path}: {exc.strerror or exc}")


def usage_problem(action: str, providers: Sequence[str]) -> str:
    """What is wrong with the provider names for ``action``, or "". Strict: ``disable`` with no
    names would mean "disable nothing" and silently release an emergency pin; names given to
    ``show`` or ``clear`` are refused rather than ignored, since the operator meant something."""
    if action == "pin" and len(providers) != 1:
        return f"pin takes exactly one provider name (got {len(providers)})"
    if action == "disable" and not providers:
        return "disable takes one or more provider names (to turn the kill switch off: clear)"
    if action in ("show", "clear") and providers:
        return f"{action} takes no provider names (got: {' '.join(providers)})"
    return ""
