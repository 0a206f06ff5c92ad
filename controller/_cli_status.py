"""``failover status``: what a running gateway is doing, from its ``/status.json``.

The document is built by ``controller/_status.py``; this module only fetches it and prints it
a line a part: the state version and kill switch, each tier's route, each provider's error rate
against the threshold, deferred jobs, the fleet, standby readings, PromQL rules and the latest
alerts. ``controller/cli.py`` wires it to the command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller._gateway_client import call_json

# What each rung of a tier's ladder is called where a person reads it (``failover status``).
_RUNGS = {
    "tier": "its step-down tier",
    "cache": "the last good answer",
    "static": "its static answer",
}


def cmd_status(args: argparse.Namespace) -> int:
    status = call_json(args.url.rstrip("/") + "/status.json")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    switch = status.get("kill_switch", {})
    print(
        f"state version {status.get('version')}  mode {status.get('mode')}  "
        f"kill switch: {switch.get('describe', 'off')}"
    )
    for tier in status.get("tiers", []):
        print(_tier_line(tier))
    for p in status.get("providers", []):
        print(_provider_line(p))
    for tier_name, queue in sorted(status.get("jobs", {}).items()):
        print(f"  jobs  {tier_name:14} {_queue_line(queue)}")
    fleet = status.get("fleet")
    if isinstance(fleet, dict):
        print(_fleet_line(fleet))
    standby = status.get("standby")
    for line in _standby_lines(standby) if isinstance(standby, dict) else []:
        print(line)
    for rule in status.get("promql", []):
        print(_promql_line(rule))
    for alert in status.get("alerts", [])[:5]:
        print(f"  alert {alert['severity']:8} {alert['text']}")
    return 0


def _tier_line(tier: dict[str, Any]) -> str:
    """One tier's current route, and whether it is in panic or served by a lower rung."""
    panic = "  PANIC: all tripped" if tier.get("panic") else ""
    rung = f"  DEGRADED: served by {_RUNGS[tier['degraded']]}" if tier.get("degraded") else ""
    return (
        f"  tier {tier['name']:14} -> {' -> '.join(tier.get('route', [])) or 'nothing'}"
        f"{panic}{rung}"
    )


def _provider_line(p: dict[str, Any]) -> str:
    """One provider's state and error rate against the threshold."""
    return (
        f"  {p['name']:16} {p['state']:10} error rate {p['error_rate']:.0%} "
        f"(threshold {p['threshold']:.0%}, {p['requests']} req)  {p.get('reason', '')}"
    )


def _promql_line(rule: dict[str, Any]) -> str:
    """One PromQL tripwire rule's state (``(held out)`` while its answer is unknown)."""
    return (
        f"  promql {rule.get('rule')} -> {rule.get('target')}: {rule.get('state')}"
        f"{' (held out)' if rule.get('held') and rule.get('state') == 'unknown' else ''}"
        f"  {rule.get('detail') or ''}"
    )


def _queue_line(queue: dict[str, Any]) -> str:
    """One tier's deferred jobs, as ``failover status`` prints them."""
    age = queue.get("oldest_age_seconds")
    oldest = f", oldest {age:.0f} s" if isinstance(age, int | float) else ""
    return (
        f"{queue.get('queued', 0)} queued, {queue.get('running', 0)} replaying{oldest}; "
        f"{queue.get('done', 0)} done, {queue.get('dead', 0)} dead letters"
    )


def _fleet_line(fleet: dict[str, Any]) -> str:
    """The fleet, as ``failover status`` prints it (fleet mode): this replica, the leader,
    Redis, and each replica's role, applied version and last heartbeat."""
    redis = "Redis up" if fleet.get("redis") == "up" else "Redis unavailable: deciding alone"
    others = []
    for replica in fleet.get("replicas", []):
        age = replica.get("heartbeat_age")
        beat = f"{age:.1f} s ago" if isinstance(age, int | float) else "no heartbeat"
        others.append(
            f"{replica.get('name')} {replica.get('role')} v{replica.get('version')} ({beat})"
        )
    return (
        f"  fleet {fleet.get('replica')} ({fleet.get('role')}), leader "
        f"{fleet.get('leader') or 'none'}, {redis}, fleet version {fleet.get('fleet_version')}; "
        + "; ".join(others)
    )


def _standby_lines(standby: dict[str, Any]) -> list[str]:
    """Warm shares, backups failing their idle probes and rate-limit readings, as ``failover
    status`` prints them (from ``/status.json``'s ``standby``; nothing when none is set)."""
    lines = []
    warm = {t: s for t, s in standby.get("warm_share", {}).items() if isinstance(s, int | float)}
    if warm:
        shares = ", ".join(f"{tier} {share:.2%}" for tier, share in warm.items())
        lines.append(f"  warm traffic to the next target: {shares}")
    for provider, reason in standby.get("idle_probes_failing", {}).items():
        lines.append(f"  standby {provider:14} UNHEALTHY while standing by: {reason}")
    for target, reading in standby.get("ratelimits", {}).items():
        said = [_reading(kind, r) for kind, r in reading.items() if isinstance(r, dict)]
        low = "  LOW: new requests go to the next target" if reading.get("low") else ""
        lines.append(f"  ratelimit {target}: {'; '.join(said) or 'none read'}{low}")
    return lines


def _reading(kind: str, reading: dict[str, Any]) -> str:
    """One kind of rate limit as the last answer stated it: ``requests 12 of 500 left, ...``."""
    left, limit, reset = (reading.get(k) for k in ("remaining", "limit", "reset_seconds"))
    said = f"{kind} {left:g}" if isinstance(left, int | float) else f"{kind} ?"
    if isinstance(limit, int | float):
        said += f" of {limit:g}"
    said += " left"
    if isinstance(reset, int | float):
        said += f", reset {reset:.0f} s from the last answer"
    return said
