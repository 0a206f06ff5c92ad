"""``failover kill-switch``: show, pin, disable or clear the kill switch.

Without ``--fleet`` it rewrites the ``kill_switch`` block of the config file in place (a running
gateway applies it within a second) and notes in the audit log who ran the command; with
``--fleet`` it reads or sets the fleet's kill switch in Redis (``controller/fleet/_operator.py``)
and leaves the file alone. ``controller/cli.py`` wires it to the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from controller.config import Config, load_config, set_kill_switch, usage_problem
from controller.control.state import KillSwitch


def cmd_kill_switch(args: argparse.Namespace) -> int:
    problem = usage_problem(args.action, args.providers)
    if problem:
        args.usage_error(problem)  # exits 2 before the file is read, let alone written
    config = load_config(args.config)
    if args.fleet:
        return _fleet_kill_switch(args, config)
    current = config.effective_kill_switch({}, warn=False)  # shown, not applied: no warning
    if args.action == "show":
        print(f"kill switch in {args.config}: {current.describe()}")
        env = config.effective_kill_switch(warn=False)
        if env != current:
            print(f"environment override in force: {env.describe()}")
        return 0
    new = _switch_for(args.action, args.providers)
    who = _operator()
    set_kill_switch(args.config, new, who=who)
    _audit_command(config, current, new, who=who, config_path=args.config)
    print(
        f"kill switch now {new.describe()} (was {current.describe()}); "
        "a running gateway applies it within a second"
    )
    if stranded := config.unroutable(new):  # written anyway: the operator may mean it
        print(f"warning: {stranded}", file=sys.stderr)
    return 0


def _fleet_kill_switch(args: argparse.Namespace, config: Config) -> int:
    """``--fleet``: the kill switch in the fleet's Redis (controller/fleet/_operator.py)."""
    from controller.fleet import fleet_kill_switch_command
    from controller.fleet.config import state_backend

    if state_backend(config.state.backend, os.environ) != "redis":
        print(
            "error: --fleet needs state.backend: redis (or FAILOVER_STATE_BACKEND=redis)",
            file=sys.stderr,
        )
        return 2
    unknown = [p for p in args.providers if p not in config.providers]
    if unknown:
        known = ", ".join(sorted(config.providers))
        print(f"error: unknown provider {unknown[0]!r} (known: {known})", file=sys.stderr)
        return 2
    new = None if args.action == "show" else _switch_for(args.action, args.providers)
    by = _operator()
    return fleet_kill_switch_command(config.state.redis, os.environ, new=new, by=by, out=print)


def _operator() -> str:
    """Who ran the command, as the audit log names them."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"


def _switch_for(action: str, providers: list[str]) -> KillSwitch:
    if action == "pin":
        return KillSwitch(pin=providers[0])
    if action == "disable":
        return KillSwitch(disable=tuple(providers))
    return KillSwitch()


def _audit_command(
    config: Config, before: KillSwitch, after: KillSwitch, *, who: str, config_path: str
) -> None:
    """Note in the audit log who ran ``kill-switch`` (the gateway notes when it applies it)."""
    from controller.control.audit import AuditLog, audit_path, kill_switch_record

    if not config.state.path:
        return
    log_ = AuditLog(
        audit_path(config.state.path),
        max_bytes=config.state.audit_max_bytes,
        files=config.state.audit_files,
    )
    record = kill_switch_record(
        before,
        after,
        by=who,
        at=time.time(),
        event="kill_switch_command",
        config=os.path.abspath(config_path),
    )
    log_.append(record)
