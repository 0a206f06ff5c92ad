"""``failover history``: the routing and kill-switch changes from the audit log, oldest first.

The log is the one beside the state file (``controller/control/audit.py``); in fleet mode the
operators' fleet-wide kill switches are read from Redis too and merged in by time. Each record
prints as one line (:func:`_history_line`), or the whole list as JSON with ``--json``.
``controller/cli.py`` wires it to the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from controller._errors import ConfigError
from controller.config import Config, load_config


def cmd_history(args: argparse.Namespace) -> int:
    from controller.control.audit import audit_path, read_audit

    config = load_config(args.config)
    if not config.state.path:
        print("state.path is empty: no audit log is kept", file=sys.stderr)
        return 1
    path = audit_path(config.state.path)
    records = read_audit(path, last=args.last)
    records = _with_fleet_audit(config, records, last=args.last)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"no changes recorded in {path}")
        return 0
    for record in records:
        print(_history_line(record))
    return 0


def _with_fleet_audit(
    config: Config, records: list[dict[str, Any]], *, last: int | None
) -> list[dict[str, Any]]:
    """In fleet mode, the operators' fleet-wide kill switches from Redis too, merged by time
    (this replica's log holds the routing decisions it made as the leader). Redis away: this
    log alone, and a line on stderr saying so (never the URL)."""
    from controller.fleet import FleetUnavailable, RedisLink, fleet_audit
    from controller.fleet.config import state_backend

    if state_backend(config.state.backend, os.environ) != "redis":
        return records
    cfg = config.state.redis

    async def read() -> list[dict[str, Any]]:
        link = RedisLink(cfg, os.environ)
        try:
            return [dict(r) for r in await fleet_audit(link, last or 1000)]
        finally:
            await link.aclose()

    try:
        fleet = asyncio.run(read())
    except (FleetUnavailable, ConfigError) as exc:
        print(
            f"(the fleet's Redis, ${cfg.url_env}, did not answer: {exc}; this replica's log only)",
            file=sys.stderr,
        )
        return records
    merged = sorted([*records, *(_stamp(r) for r in fleet)], key=lambda r: float(r.get("at", 0)))
    return merged[-last:] if last else merged


def _stamp(record: dict[str, Any]) -> dict[str, Any]:
    at = record.get("at")
    if isinstance(at, int | float) and "time" not in record:
        when = datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")
        record = {"time": when.replace("+00:00", "Z"), **record}
    return record


def _history_line(record: dict[str, Any]) -> str:
    """One audit record as ``failover history`` prints it."""
    when = str(record.get("time", "?"))
    version = f"v{record['version']}" if "version" in record else "-"
    by = str(record.get("by", "?"))
    event = record.get("event")
    describe = _WHAT.get(event, json.dumps) if isinstance(event, str) else json.dumps
    what = describe(record)
    if "replica" in record:
        what += f" [replica {record['replica']}]"
    return f"{when}  {version:>6}  {by:<12}  {what}"


def _routing(record: dict[str, Any]) -> str:
    what = (
        f"{record.get('provider')}: {record.get('from')} -> {record.get('to')}"
        f" ({record.get('reason')})"
    )
    if record.get("enforced") is False:
        what += " (observe mode: not enforced)"
    return what


def _kill_switch(record: dict[str, Any]) -> str:
    return f"kill switch {record.get('before', '?')} -> {record.get('after')} (applied)"


def _fleet_kill_switch(record: dict[str, Any]) -> str:
    return (
        f"fleet kill switch: {record.get('before', '?')} -> {record.get('after')}"
        f" (from {record.get('from', '?')})"
    )


def _kill_switch_command(record: dict[str, Any]) -> str:
    return f"kill-switch command: {record.get('before', '?')} -> {record.get('after')}"


def _bot_command(record: dict[str, Any]) -> str:
    return (
        f"telegram {record.get('name')} in chat {record.get('chat')}: "
        f"{record.get('command')} -> {record.get('result')}"
    )


# What each kind of audit record says (by its "event"); any other is printed as its JSON.
_WHAT: dict[str, Callable[[dict[str, Any]], str]] = {
    "routing": _routing,
    "kill_switch": _kill_switch,
    "fleet_kill_switch": _fleet_kill_switch,
    "kill_switch_command": _kill_switch_command,
    "bot_command": _bot_command,
}
