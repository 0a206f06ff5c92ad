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
