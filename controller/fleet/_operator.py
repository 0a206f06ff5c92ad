"""What an operator does to a fleet from outside a replica: set the kill switch, read the audit.

``failover kill-switch --fleet ...`` (and a replica asked by the admin API) writes the kill switch
into the fleet's routing state with compare-and-set, on whatever version is current, so it lands
beside the leader's decisions instead of over them; every replica applies it from pub/sub within
a second. Each change is audited in Redis: who, when, from which host, before and after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from controller import _json
from controller._errors import ConfigError
from controller.control.state import KillSwitch, RoutingState
from controller.control.store import CorruptState, decode_state, encode_state
from controller.fleet._member import audit_record
from controller.fleet._redis import FleetUnavailable, RedisLink
from controller.fleet.config import FleetConfig

CAS_TRIES = 8


async def set_fleet_kill_switch(
    link: RedisLink, switch: KillSwitch, *, by: str, now: float | None = None
) -> tuple[KillSwitch, RoutingState]:
    """Write ``switch`` as the fleet's kill switch; returns (the one before, the state written).

    Raises :class:`FleetUnavailable` when Redis does not answer or the state keeps moving."""
    for _ in range(CAS_TRIES):
        raw = await link.read_state()
        try:
            current = decode_state(raw.decode()) if raw is not None else None
        except (CorruptState, UnicodeDecodeError) as exc:
            raise FleetUnavailable(f"unreadable fleet state: {exc}") from None
        base = current or RoutingState(version=0)
        at = time.time() if now is None else now
        state = base.evolve(changed_by=f"operator:{by}", now=at, kill_switch=switch)
        ok, _ = await link.cas_state(
            expected=current.version if current is not None else -1,
            doc=encode_state(state).encode(),
            version=state.version,
            token=None,
        )
        if ok:
            await link.audit(audit_record(base.kill_switch, switch, by=by, at=at))
            return base.kill_switch, state
    raise FleetUnavailable(f"the fleet state changed {CAS_TRIES} times while writing")


def check_fleet(cfg: FleetConfig, env: Mapping[str, str]) -> tuple[str, str | None]:
    """``failover check`` in fleet mode: whether the fleet's Redis answers (one bounded read of
    the state and the lease). Returns what to print and the problem, if any; neither ever holds
    the URL or the password (the variable's name, the error's type)."""
    where = f"Redis at ${cfg.url_env}"

    async def run() -> tuple[str, str | None]:
        try:
            link = RedisLink(cfg, env)
        except ConfigError as exc:
            return f"{where}: not usable", str(exc)
        try:
            raw = await link.read_state()
            holder = await link.leader()
        except FleetUnavailable as exc:
            limit = cfg.timeout_seconds * 2
            problem = (
                f"the fleet's Redis (${cfg.url_env}) did not answer within {limit:g} s ({exc}): "
                "replicas would start deciding alone (fleet_unavailable)"
            )
            return f"{where}: NOT reachable", problem
        finally:
            await link.aclose()
        try:
            version = decode_state(raw.decode()).version if raw is not None else None
        except (CorruptState, UnicodeDecodeError):
            return (
                f"{where}: answers",
                f"the fleet's state in Redis ({cfg.prefix}:state) is unreadable",
            )
        state = f"fleet version {version}" if version is not None else "no fleet state yet"
        leader = holder.partition(":")[0] if holder else "none"
        return f"{where}: answers; {state}, leader {leader}", None

    return asyncio.run(run())


async def fleet_audit(link: RedisLink, n: int = 50) -> list[dict[str, object]]:
    """The newest ``n`` operator actions on the fleet state, newest first."""
    out = []
    for raw in await link.audit_records(n):
        record = _json.loads(raw)
        if isinstance(record, dict):
            out.append(record)
    return out


def fleet_kill_switch_command(
    cfg: FleetConfig,
    env: Mapping[str, str],
    *,
    new: KillSwitch | None,
    by: str,
    out: Callable[[str], None],
) -> int:
    """``failover kill-switch --fleet``: show (``new`` None) or set the fleet's kill switch.
    Exit status 1 with a message when Redis does not answer (the URL is never printed)."""

    async def run() -> int:
        link = RedisLink(cfg, env)
        try:
            if new is None:
                raw = await link.read_state()
                state = decode_state(raw.decode()) if raw is not None else RoutingState()
                out(f"fleet kill switch: {state.kill_switch.describe()} (version {state.version})")
                return 0
            before, state = await set_fleet_kill_switch(link, new, by=by)
            out(
                f"fleet kill switch now {new.describe()} (was {before.describe()}), "
                f"version {state.version}; every replica applies it within a second"
            )
            return 0
        except FleetUnavailable as exc:
            out(f"error: the fleet's Redis ({cfg.url_env}) did not answer: {exc}")
            return 1
        finally:
            await link.aclose()

    return asyncio.run(run())
