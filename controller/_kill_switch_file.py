"""Editing the ``kill_switch:`` block of a config file in place, keeping everything else.

``failover kill-switch pin openai`` rewrites only the lines of the ``kill_switch`` mapping (or
appends one), validates the whole new file before writing, and writes in place (not by rename)
so a bind-mounted file in a container sees the change. The running gateway's watcher picks it
up within a second; a comment at the end of the block records who changed it and when.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from controller._config import Config, parse_config
from controller._errors import ConfigError
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
    """Validate and write; raises ConfigError (file untouched) if the result would be invalid."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=str(source)) from None
    new_text = rewrite(text, switch, who=who, at=time.time())
    config = parse_config(new_text, source=str(source))
    with open(source, "r+", encoding="utf-8") as handle:  # in place: bind mounts see it
        handle.write(new_text)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())
    return config
