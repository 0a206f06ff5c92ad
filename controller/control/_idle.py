"""Idle probes: a target that served nothing for ``probe_idle_seconds`` gets a small request.

A backup is tried only when the primary fails; if its key expired last week, the first sign
would be the outage itself. With ``controller.probe_idle_seconds`` set, the controller loop
asks each healthy provider that had no attempt of any kind (user traffic, warm traffic, a
probe) for that long for one tiny real answer, through the same prober the tripped providers'
probes use (``Router.probe``: reason ``probe`` on its span, counted in the provider's window).

A failed idle probe is a fault like any other, so the ordinary tripwire judges it: while its
last idle probe failed, a provider is probed again every ``probe_interval_seconds`` instead of
waiting to be idle again, and ``consecutive_failures`` faults in a row trip it while it stands
by (a single blip does not). Such a trip is announced with cause ``standby`` and as a warning
(``standby_unhealthy``: "backup X unhealthy while standing by"), even for a rejected key: the
primary still serves, nobody is paged at night for a spare. From there the usual way back
applies (cool-off, probes, failback), and the recovery alert clears it.

Only the deciding replica probes (the loop calls :meth:`IdleProbes.schedule` only then).
Internal to :mod:`controller.control`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from controller._clock import Clock
from controller.control.config import TripwireConfig
from controller.control.decide import Transition, TransitionKind, TripCause
from controller.control.state import HealthState, RoutingState

log = logging.getLogger(__name__)

Prober = Callable[[str], Awaitable[bool]]
IdleFor = Callable[[str], float | None]


@dataclass(slots=True)
class _Track:
    started: float = -math.inf
    failing: str | None = None  # why its last idle probe failed (None: it answered)
    ended: float = -math.inf  # when its last idle probe ended
    task: asyncio.Task[None] | None = None


class IdleProbes:
    """Schedules the idle probes and marks the trips they cause. ``idle_for(name)``: seconds
    since the provider's last attempt ended (None: none seen since start); ``served_for``: the
    same for attempts other than probes and warm ones (:meth:`SignalWindows.served_for
    <controller.signals.window.SignalWindows.served_for>`), which end its standing by."""

    def __init__(
        self,
        *,
        clock: Clock,
        cfg: TripwireConfig,
        prober: Prober,
        idle_for: IdleFor,
        served_for: IdleFor | None = None,
    ) -> None:
        self._clock = clock
        self._cfg = cfg
        self._prober = prober
        self._idle_for = idle_for
        self._served_for = served_for or idle_for
        self._started = clock.monotonic()
        self._tracks: dict[str, _Track] = {}

    def schedule(self, names: Iterable[str], state: RoutingState) -> None:
        """Start a probe of each healthy provider among ``names`` that has been idle long
        enough (or whose last idle probe failed, ``probe_interval_seconds`` ago)."""
        after = self._cfg.probe_idle_seconds
        if after <= 0:
            return
        now = self._clock.monotonic()
        for name in names:
            if "/" in name:
                continue  # a model of a provider: the provider's own probe speaks for it
            track = self._tracks.get(name)
            healthy = state.status(name).state is HealthState.HEALTHY
            if not healthy or not state.kill_switch.allows(name):
                if track is not None:
                    self._forget(name, track)
                continue
            if track is None:
                track = self._tracks[name] = _Track()
            if track.task is not None and not track.task.done():
                continue
            self._served_since(name, track)
            wait = self._cfg.probe_interval_seconds if track.failing else after
            idle = self._idle_for(name)
            quiet = idle if idle is not None else now - self._started
            if quiet >= wait and now - track.started >= wait:
                track.started = now
                track.task = asyncio.get_running_loop().create_task(self._probe(name, track))

    async def _probe(self, name: str, track: _Track) -> None:
        from controller.control.loop import _probe_once  # the loop imports this module

        ok, why = await _probe_once(self._prober, name, clock=self._clock, cfg=self._cfg)
        track.ended = self._clock.monotonic()
        if ok:
            track.failing = None
            return
        if track.failing is None:
            log.warning("idle probe of %s failed (%s): probing it again until it trips", name, why)
        track.failing = why

    def failing(self, name: str) -> str | None:
        """Why ``name``'s last idle probe failed, or None (also once it has had an attempt
        since: it is no longer standing by)."""
        track = self._tracks.get(name)
        return self._served_since(name, track) if track is not None else None

    def _served_since(self, name: str, track: _Track) -> str | None:
        """A provider that served a request (an attempt other than a probe or a warm one) after
        its failed idle probe is not standing by: the failure is forgotten (a trip under traffic
        is the usual page). A timed-out probe's own attempt, reported after it was given up,
        is a probe: it changes nothing."""
        if track.failing is not None and (track.task is None or track.task.done()):
            served = self._served_for(name)
            if served is not None and served < self._clock.monotonic() - track.ended:
                track.failing = None
        return track.failing

    def failing_now(self) -> dict[str, str]:
        """Every provider whose last idle probe failed, and why."""
        return {
            name: why
            for name, track in self._tracks.items()
            if (why := self._served_since(name, track)) is not None
        }

    def tag(self, event: Transition) -> Transition:
        """A trip of a provider whose idle probes were failing: cause ``standby``, not
        critical (the primary serves; a spare is fixed in office hours)."""
        why = self.failing(event.provider)
        if event.kind is not TransitionKind.TRIP or not event.enforced or why is None:
            return event
        reason = f"unhealthy while standing by: idle probes failing ({why}); {event.reason}"
        return replace(event, cause=TripCause.STANDBY, critical=False, reason=reason)

    def _forget(self, name: str, track: _Track) -> None:
        if track.task is not None:
            track.task.cancel()
        del self._tracks[name]

    def running(self) -> list[asyncio.Task[None]]:
        """The idle probes under way (a test awaits them)."""
        return [t.task for t in self._tracks.values() if t.task is not None and not t.task.done()]

    def stop(self) -> None:
        for track in self._tracks.values():
            if track.task is not None:
                track.task.cancel()
