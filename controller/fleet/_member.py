"""One replica's place in the fleet: leader, follower, or deciding alone while Redis is away.

::

    sync loop (every push_seconds,    push my signals + heartbeat ─► P:signals:me, P:replicas,
     sooner after a fault here)       and PUBLISH them (the leader takes them at once)
      leader:   renew the lease; read the others' signals (the aggregate decide() judges)
      follower: try the lease (SET NX); every read_seconds read the state (pub/sub's net)
    writer (woken by a save)          CAS the leader's new version ─► P:state + PUBLISH
    subscriber                        PUBLISHed versions ─► apply (newer only) ─► StateHolder

Roles. Only the ``leader`` (the holder of the lease) runs ``decide()``: the controller loop asks
:meth:`Fleet.deciding` each tick, reads the fleet's aggregate through :meth:`Fleet.snapshot`, and
its saves become compare-and-set writes fenced by the lease token. A ``follower`` routes on the
last version it applied. When Redis has not answered for ``lease_seconds`` a replica goes
``local``: it decides on its own windows as a single process does, and the runtime raises a
critical alert. Requests never wait on any of this: routing reads the StateHolder.

Convergence. A replica back from ``local`` keeps deciding alone until it sees a fleet version
written after the outage began. The first one to win the lease back writes that version: its own
table merged with the tables the others decided alone (pushed with their heartbeats), keeping for
each provider the state furthest out of rotation, so a provider one replica tripped alone is not
put back into traffic only to be tripped again (no flapping).

The kill switch: the state document carries the fleet's (set by ``failover kill-switch --fleet``
or any replica); each replica routes on ``environment > fleet > its config file``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from controller import _json
from controller._clock import Clock
from controller._tasks import cancel_and_wait, sleep_or_woken
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
    StateHolder,
)
from controller.control.store import (
    CorruptState,
    decode_providers,
    decode_state,
    encode_providers,
    encode_state,
)
from controller.fleet._redis import FleetUnavailable, RedisLink
from controller.fleet._signals import ReplicaDoc, decode_doc, encode_doc, fleet_snapshot
from controller.fleet._spend import FleetSpend
from controller.fleet.config import FleetConfig
from controller.notify.alert import OPPOSITE, Alert, AlertEvent
from controller.signals.window import SignalSnapshot, SignalWindows

log = logging.getLogger(__name__)

_RANK = {
    HealthState.TRIPPED: 3,
    HealthState.PROBING: 2,
    HealthState.RECOVERING: 1,
    HealthState.HEALTHY: 0,
}


class Role(enum.StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    LOCAL = "local"  # Redis away: deciding alone


def replica_name(cfg: FleetConfig, env: Mapping[str, str]) -> str:
    return (
        cfg.replica
        or env.get("FAILOVER_REPLICA")
        or env.get("HOSTNAME")
        or f"{socket.gethostname()}-{os.getpid()}"
    )


def converge(
    mine: Mapping[str, ProviderStatus], others: Sequence[Mapping[str, ProviderStatus]]
) -> dict[str, ProviderStatus]:
    """One table from replicas that decided alone: per provider, the status furthest out of
    rotation (tripped > probing > recovering > healthy), then the smaller share, the later
    trip."""
    table = dict(mine)
    for other in others:
        for name, status in other.items():
            have = table.get(name)
            if have is None or _outer(status) > _outer(have):
                table[name] = status
    return table


def _outer(status: ProviderStatus) -> tuple[int, float, float]:
    return (_RANK[status.state], -status.traffic_share, status.since)


class FleetStore:
    """The controller's :class:`~controller.control.store.StateStore` in fleet mode: a save is
    handed to the fleet's writer (a CAS in Redis, by the leader only); it never blocks."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def load(self) -> RoutingState:
        return self._fleet.holder.current

    def save(self, state: RoutingState) -> None:
        self._fleet.offer(state)


class Fleet:
    """A replica's fleet member. ``await start()`` (bounded), ``await stop()``."""

    def __init__(
        self,
        cfg: FleetConfig,
        *,
        env: Mapping[str, str],
        clock: Clock,
        holder: StateHolder,
        windows: SignalWindows,
        alert_ttl: float,
        link: RedisLink | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.holder = holder
        self.windows = windows
        self.replica = replica_name(cfg, env)
        self.link = link or RedisLink(cfg, env)
        self.store = FleetStore(self)
        self.role = Role.FOLLOWER
        self.on_role: list[Callable[[Role, Role], None]] = []  # (before, after)
        self.on_fleet_switch: list[Callable[[KillSwitch, KillSwitch], None]] = []
        self._alert_ttl = alert_ttl
        self._token = f"{self.replica}:{secrets.token_hex(8)}"
        self._fleet_version = -1  # the version Redis holds, as far as this replica knows
        self._outage_version = -1  # the fleet version when this replica went local
        self._fleet_switch = KillSwitch()
        self._local_switch = KillSwitch()
        self._env_switch = False  # the local switch comes from the environment: it wins
        self._pending: RoutingState | None = None
        self._wrote = asyncio.Event()
        self._others: dict[str, ReplicaDoc] = {}
        self._nudge = asyncio.Event()  # a fault: push now, not at the next interval
        self._last_push = -math.inf
        self.on_fault_news: list[Callable[[], None]] = []  # leader: another replica saw a fault
        self._leader: str | None = None
        self._last_ok = -math.inf  # monotonic time of the last answer from Redis
        self._ok_streak = 0
        self._down_since: float | None = None  # wall time Redis stopped answering
        self._renewed = -math.inf
        self._last_read = -math.inf
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.applied_at: dict[int, float] = {}  # version -> monotonic time applied (bench)

    # --- what the controller and the runtime read -------------------------------------------
    def deciding(self) -> bool:
        return self.role is not Role.FOLLOWER

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def fleet_version(self) -> int:
        """The version Redis holds, as far as this replica knows (-1: none seen)."""
        return self._fleet_version

    @property
    def leader(self) -> str | None:
        return self.replica if self.role is Role.LEADER else self._leader

    def spend_totals(self) -> FleetSpend:
        """Where this replica shares its day's spend with the fleet (``Spend.shared``)."""
        return FleetSpend(self.link, self.replica)

    def snapshot(self) -> SignalSnapshot:
        """What the tripwire judges: the fleet's aggregate on the leader, else the local view."""
        local = self.windows.snapshot()
        if self.role is not Role.LEADER:
            return local
        return fleet_snapshot(local, self._others.values(), now_wall=self.clock.wall())

    def set_local_switch(self, switch: KillSwitch, *, from_env: bool) -> None:
        """This replica's kill switch from its config (or environment): applied at once."""
        self._local_switch, self._env_switch = switch, from_env
        self._recompose()

    def effective_switch(self) -> KillSwitch:
        if self._env_switch:
            return self._local_switch
        return self._fleet_switch if self._fleet_switch.active else self._local_switch

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume the fleet's state (a restart picks up where the fleet is) and start the
        loops. Bounded by the command timeout: with Redis away the replica starts ``local``."""
        self._running = True
        try:
            raw = await self.link.read_state()
            self._mark_ok()
            if raw is not None:
                self._apply(_decode(raw), force=True)
        except FleetUnavailable as exc:
            log.error("fleet state unavailable at start (%s): deciding locally", exc)
            self._go_local()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="fleet-sync"),
            loop.create_task(self._writer(), name="fleet-writer"),
            loop.create_task(self._subscriber(), name="fleet-subscriber"),
        ]

    async def stop(self) -> None:
        """Stop the loops; a leader hands the lease back so another takes over at once."""
        self._running = False
        self._wrote.set()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.role is Role.LEADER:
            with contextlib.suppress(FleetUnavailable):
                await self.link.release(self._token)
        await self.link.aclose()

    # --- applying versions --------------------------------------------------------------------
    def _compose(self, state: RoutingState) -> RoutingState:
        switch = self.effective_switch()
        return state if state.kill_switch == switch else replace(state, kill_switch=switch)

    def _recompose(self) -> None:
        current = self.holder.current
        composed = self._compose(current)
        if composed is not current:
            self.holder.publish(composed)

    def _apply(self, state: RoutingState, *, force: bool = False) -> bool:
        """Route on a fleet version: only a newer one; in ``local`` only one written after the
        outage began (the convergence). Returns whether it was applied."""
        if self.role is Role.LOCAL:
            if state.version <= self._outage_version:
                return False
            self._set_role(Role.FOLLOWER)
        elif state.version <= self._fleet_version and not force:
            return False
        self._fleet_version = state.version
        before, self._fleet_switch = self._fleet_switch, state.kill_switch
        self.holder.publish(self._compose(state))
        self.applied_at[state.version] = self.clock.monotonic()
        if len(self.applied_at) > 256:
            self.applied_at.pop(next(iter(self.applied_at)))
        if before != state.kill_switch and self.role is Role.LEADER:
            for callback in self.on_fleet_switch:
                callback(before, state.kill_switch)
        return True

    def offer(self, state: RoutingState) -> None:
        """A new version from this replica's controller: the leader writes it to the fleet."""
        if self.role is Role.LEADER:
            self._pending = state
            self._wrote.set()

    # --- roles --------------------------------------------------------------------------------
    def _set_role(self, role: Role) -> None:
        before, self.role = self.role, role
        if before is not role:
            log.warning("fleet: replica %s is now %s (was %s)", self.replica, role, before)
            for callback in self.on_role:
                try:
                    callback(before, role)
                except Exception:
                    log.exception("fleet role callback failed")

    def _go_local(self) -> None:
        if self.role is Role.LOCAL:
            return
        self._outage_version = self._fleet_version
        self._down_since = self._down_since or self.clock.wall()
        self._pending = None
        self._set_role(Role.LOCAL)

    def _mark_ok(self) -> None:
        self._last_ok = self.clock.monotonic()
        self._ok_streak += 1
        self._down_since = None

    async def _become_leader(self) -> bool:
        """Just won the lease: resume the fleet's latest version, or converge after an outage."""
        raw = await self.link.read_state()
        fleet = _decode(raw) if raw is not None else None
        held = fleet.version if fleet is not None else -1
        mine = self.holder.current
        if self.role is Role.LOCAL or fleet is None or held < mine.version:
            tables = [d.local_table for d in self._others.values() if d.local_table is not None]
            others = [decode_providers(dict(t)) for t in tables]
            table = converge(mine.providers, others)
            base = fleet or mine
            version = max(held, mine.version, self._outage_version) + 1
            state = replace(
                base.evolve(changed_by="fleet-converge", now=self.clock.wall(), providers=table),
                version=version,
                kill_switch=base.kill_switch if fleet is not None else self._fleet_switch,
            )
            ok, held = await self.link.cas_state(
                expected=held, doc=encode_state(state).encode(), version=version, token=self._token
            )
            if not ok:
                return False  # someone else wrote meanwhile: stay follower, read again
            self._set_role(Role.LEADER)
            self._apply(state, force=True)
            log.warning("fleet: %s leads from converged version %d", self.replica, version)
            return True
        self._set_role(Role.LEADER)
        self._apply(fleet, force=True)
        return True

    # --- loops --------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        while self._running:
            try:
                await self._sync_once()
            except FleetUnavailable as exc:
                self._ok_streak = 0
                self._lost(exc)
            except Exception:  # a bug here must not end fleet membership for good
                log.exception("fleet sync failed")
            await self._pause()

    def nudge(self) -> None:
        """An attempt failed here: push the signals soon (the leader hears of it at once)."""
        self._nudge.set()

    async def _pause(self) -> None:
        """Until the next push: ``push_seconds``, or sooner on a nudge, but never sooner than a
        fifth of it after the last push (a storm of faults is one push per 50 ms, not a spin)."""
        if not self._nudge.is_set():
            await sleep_or_woken(self.clock, self.cfg.push_seconds, self._nudge)
        rest = self.cfg.push_seconds / 5 - (self.clock.monotonic() - self._last_push)
        if rest > 0:
            await self.clock.sleep(rest)

    def _lost(self, exc: Exception) -> None:
        silent = self.clock.monotonic() - self._last_ok
        if self.role is Role.LEADER and silent >= self.cfg.lease_seconds * 0.8:
            self._go_local()  # the lease may be gone by now: never two deciders on purpose
        elif self.role is Role.FOLLOWER and silent >= self.cfg.lease_seconds:
            self._go_local()
        if self.role is Role.LOCAL:
            log.debug("fleet: Redis still unavailable (%s)", exc)

    async def _sync_once(self) -> None:
        now = self.clock.wall()
        fault = self._nudge.is_set()
        self._nudge.clear()
        doc = self._doc(now, fault=fault)
        await self.link.push(self.replica, doc, at=now, ttl=self.windows.window_seconds)
        self._last_push = self.clock.monotonic()
        self._mark_ok()
        mono = self.clock.monotonic()
        if self.role is Role.LEADER:
            if mono - self._renewed >= self.cfg.renew_seconds:
                if not await self.link.renew(self._token, self.cfg.lease_seconds):
                    log.warning("fleet: %s lost the lease", self.replica)
                    self._set_role(Role.FOLLOWER)
                    return
                self._renewed = mono
            await self._read_others(now)
            return
        if self.role is Role.LOCAL and self._ok_streak < 3:
            return  # back from an outage: let the others push their tables first
        if await self.link.acquire(self._token, self.cfg.lease_seconds):
            self._renewed = mono
            await self._read_others(now)
            if not await self._become_leader():
                await self.link.release(self._token)
            return
        if mono - self._last_read >= self.cfg.read_seconds or self.role is Role.LOCAL:
            self._last_read = mono
            leader = await self.link.leader()
            self._leader = leader.partition(":")[0] if leader else None
            raw = await self.link.read_state()
            if raw is not None:
                self._apply(_decode(raw))
            await self._read_others(now)

    async def _read_others(self, now: float) -> None:
        docs = []
        for name, raw in await self.link.docs(since=now - self.windows.window_seconds):
            doc = decode_doc(raw)
            if doc is None:
                log.warning("fleet: unreadable signals of replica %s ignored", name)
            elif name != self.replica:
                docs.append(doc)
        self._others = {d.replica: d for d in docs}

    def _heard(self, raw: bytes) -> None:
        """A replica's push, published: the leader takes it at once (a fault wakes its tick)."""
        doc = decode_doc(raw)
        if doc is None or doc.replica == self.replica or self.role is not Role.LEADER:
            return
        self._others[doc.replica] = doc
        if doc.fault:
            for callback in self.on_fault_news:
                callback()

    def _doc(self, now: float, *, fault: bool = False) -> bytes:
        local = encode_providers(self.holder.current.providers) if self.role is Role.LOCAL else None
        return encode_doc(
            self.windows.snapshot(),
            replica=self.replica,
            at=now,
            role=self.role.value,
            version=self.holder.current.version,
            local_table=local,
            fault=fault,
        )

    async def _writer(self) -> None:
        while self._running:
            await self._wrote.wait()
            self._wrote.clear()
            state, self._pending = self._pending, None
            if state is None or self.role is not Role.LEADER:
                continue
            await self._write(state)

    async def _write(self, state: RoutingState) -> None:
        fleet_form = replace(state, kill_switch=self._fleet_switch)
        try:
            ok, held = await self.link.cas_state(
                expected=self._fleet_version,
                doc=encode_state(fleet_form).encode(),
                version=state.version,
                token=self._token,
            )
        except FleetUnavailable as exc:
            log.warning("fleet: version %d not written (%s); kept to retry", state.version, exc)
            if self._pending is None:
                self._pending = state
            await self.clock.sleep(self.cfg.push_seconds)
            self._wrote.set()
            return
        if ok:
            self._fleet_version = state.version
            self.applied_at[state.version] = self.clock.monotonic()
            return
        log.warning(
            "fleet: version %d refused (fleet holds %d, or the lease moved); re-reading",
            state.version,
            held,
        )
        raw = await self.link.read_state()
        if raw is not None:
            self._apply(_decode(raw), force=True)

    async def _subscriber(self) -> None:
        pause = self.cfg.push_seconds
        while self._running:
            pubsub = self.link.pubsub()
            try:
                await pubsub.subscribe(self.link.channel, self.link.signals_channel)
                pause = self.cfg.push_seconds
                while self._running:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if _text(message["channel"]) == self.link.signals_channel:
                        self._heard(message["data"])
                    else:
                        self._apply(_decode(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the sync loop reports; retry with backoff
                log.debug("fleet subscriber: %s", type(exc).__name__)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    log.debug("fleet subscriber close failed")
            await self.clock.sleep(pause)
            pause = min(pause * 2, 2.0)

    # --- alerts across the fleet --------------------------------------------------------------
    async def claim(self, alert: Alert) -> bool:
        """Whether this replica sends ``alert``: the first to claim it fleet-wide does (a
        claim lasts the notify cooldown; its opposite's is cleared). Redis away: send."""
        if alert.event is AlertEvent.TEST:
            return True
        key = _alert_key(alert.event, alert)
        opposite = OPPOSITE.get(alert.event)
        other = _alert_key(opposite, alert) if opposite is not None else key
        try:
            return await self.link.claim(key, other, self._alert_ttl)
        except FleetUnavailable:
            return True

    # --- what the status page shows -----------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        now = self.clock.wall()
        replicas = [
            {
                "name": d.replica,
                "role": d.role,
                "version": d.version,
                "heartbeat_age": round(max(0.0, now - d.at), 3),
            }
            for d in self._others.values()
        ]
        replicas.append(
            {
                "name": self.replica,
                "role": self.role.value,
                "version": self.holder.current.version,
                "heartbeat_age": round(max(0.0, self.clock.monotonic() - self._last_ok), 3)
                if self._last_ok > -math.inf
                else None,
            }
        )
        return {
            "backend": "redis",
            "replica": self.replica,
            "role": self.role.value,
            "leader": self.leader,
            "redis": "up" if self.available else "unavailable",
            "unavailable_since": self._down_since,
            "fleet_version": self._fleet_version,
            "applied_version": self.holder.current.version,
            "kill_switch": {
                "fleet": self._fleet_switch.describe(),
                "local": self._local_switch.describe(),
                "in_force": self.effective_switch().describe(),
            },
            "replicas": sorted(replicas, key=lambda r: str(r["name"])),
        }


def _alert_key(event: AlertEvent, alert: Alert) -> str:
    _, provider, tier, content = alert.dedup_key
    return "|".join((event.value, provider or "", tier or "", content or ""))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _decode(raw: bytes | str) -> RoutingState:
    try:
        return decode_state(raw.decode() if isinstance(raw, bytes) else raw)
    except (CorruptState, UnicodeDecodeError) as exc:
        raise FleetUnavailable(f"unreadable fleet state: {exc}") from None


def audit_record(before: KillSwitch, after: KillSwitch, *, by: str, at: float) -> bytes:
    return _json.dumps(
        {
            "event": "fleet_kill_switch",
            "before": before.describe(),
            "after": after.describe(),
            "by": by,
            "from": socket.gethostname(),
            "at": at,
        }
    )
