"""The assembled process: providers, router, tripwire, notifier and telemetry, from one config.

:class:`Runtime` builds every part from a :class:`~controller.config.Config`, runs the control
loop, the alert dispatcher and the config watcher as background tasks, and offers the gateway
its narrow :class:`~controller.gateway.backend.GatewayBackend` view (status, readiness, metrics,
drills). Routers read the routing state without ever waiting on the controller. What the gateway
is shown is built in :mod:`controller._status`, the alert list kept in
:mod:`controller._alert_history`, drills run by :mod:`controller._drill`; the parts are built
in :mod:`controller._runtime_build`, and what a saved config, a kill switch, a flip or a fleet
role change does is in :mod:`controller._runtime_react`; this module wires.

Hot reload: the kill switch, tiers, aliases and ``default_tier`` take effect on save (within two
polls of the watcher, about 0.5 s: it waits for the file to hold still); a change to
``providers``, ``controller``, ``notify``, ``telemetry`` or ``state`` is reported and needs a
restart. An invalid file is rejected, the running config stays, and an alert says why.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from controller import _runtime_react as react
from controller._alert_history import HISTORY, AlertHistory
from controller._alerting import LadderWatch
from controller._clock import Clock, SystemClock
from controller._drill import Drillable, start_drill
from controller._errors import ConfigError
from controller._runtime_build import (
    answer_cache,
    build_audit_log,
    build_controller,
    build_jobs,
    build_promql,
    build_provider,
    build_router,
    build_standby,
    build_tiers,
    count_skipped_events,
    model_names,
    probe_models,
)
from controller._spend_shadow import attach_spend_and_shadow
from controller._status import TierPlans, readiness, status_document, tier_plans, tier_routes
from controller._tasks import cancel_and_wait
from controller.config import Config, ConfigWatcher
from controller.control._idle import IdleProbes
from controller.control.decide import Transition
from controller.control.loop import Controller
from controller.control.state import KillSwitch, StateHolder, split_key
from controller.control.store import FileStateStore, MemoryStateStore, StateStore
from controller.events import AttemptEvent, Outcome, RouteEvent
from controller.fleet import Fleet, Role
from controller.fleet._metrics import register_fleet_gauges
from controller.fleet.config import state_backend
from controller.jobs import Job
from controller.notify import Dispatcher, senders_from_env
from controller.notify._bot_runtime import command_bot
from controller.notify.alert import Alert
from controller.routing._standby import describe as describe_standby
from controller.signals.inflight import InFlight
from controller.signals.window import SignalWindows
from controller.telemetry.setup import Telemetry, setup_telemetry

# The builders were defined here; their importers still import them from here.
__all__ = [
    "Runtime",
    "answer_cache",
    "build_provider",
    "build_tiers",
    "model_names",
    "probe_models",
]

log = logging.getLogger(__name__)


class _Wake:
    """A router listener that wakes the controller on a provider fault (faster trips), and in a
    fleet has the replica push its signals to the leader soon."""

    def __init__(self) -> None:
        self.controller: Controller | None = None
        self.fleet: Fleet | None = None

    def on_attempt(self, event: AttemptEvent) -> None:
        if event.outcome is Outcome.FAULT and self.controller is not None:
            self.controller.wake()
            if self.fleet is not None:
                self.fleet.nudge()

    def on_route(self, event: RouteEvent) -> None:
        return None


class Runtime:
    """One gateway's worth of parts. ``await start()``, serve, ``await stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
        base_urls: Mapping[str, str] | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.clock = clock or SystemClock()
        self.config = config
        self._names = model_names(config)
        self._models = probe_models(config)
        self.config_path = Path(config_path) if config_path else None
        self.telemetry = telemetry or setup_telemetry(
            service_name=config.telemetry.service_name,
            capture_content=config.telemetry.capture_content,
            env=self.env,
            healthy_share=config.telemetry.sampling.healthy_share,
        )
        self.tracer: Tracer = self.telemetry.tracer
        self.meter: Meter = self.telemetry.meter
        urls = base_urls or {}
        self.providers = {
            name: Drillable(build_provider(name, cfg, self.env, urls.get(name)), clock=self.clock)
            for name, cfg in config.providers.items()
        }
        self.holder = StateHolder()
        self.windows = SignalWindows(
            clock=self.clock,
            window_seconds=config.controller.window_seconds,
            bucket_seconds=config.controller.bucket_seconds,
            inflight=InFlight(
                self.clock,
                quantile=config.controller.stall.quantile,
                least=config.controller.stall.min_samples,
            ),
        )
        self._wake = _Wake()
        # One alert when a tier starts serving from its ladder, one when it stops.
        self._ladders = LadderWatch(
            lambda alert: self.notify(alert), self.clock, lambda: self.routes()
        )
        self.router = build_router(self, config)
        self.headroom = build_standby(self, config)  # warm traffic, rate-limit headroom
        # What each request costs (budgets may steer), and the tiers' shadow comparison.
        self.spend, self.shadow = attach_spend_and_shadow(
            self.router,
            config,
            clock=self.clock,
            meter=self.telemetry.meter,
            tracer=self.tracer,
            on_alert=lambda alert: self.notify(alert),
            beside_state=store is None,
        )
        self.fleet: Fleet | None = None
        if state_backend(config.state.backend, self.env) == "redis":  # one decision, N replicas
            self.fleet = Fleet(
                config.state.redis,
                env=self.env,
                clock=self.clock,
                holder=self.holder,
                windows=self.windows,
                alert_ttl=config.notify.cooldown_seconds,
            )
            register_fleet_gauges(self.fleet, self.telemetry.meter)
            self.spend.shared = self.fleet.spend_totals()  # budgets judge the fleet's day
            self._wake.fleet = self.fleet
        self.store = store or (
            self.fleet.store
            if self.fleet is not None
            else FileStateStore(Path(config.state.path))
            if config.state.path
            else MemoryStateStore()
        )
        self.audit = build_audit_log(self, config)  # beside the state file, in a fleet too
        self.promql = build_promql(self, config)  # PromQL tripwires, or None
        self.controller = build_controller(self, config)
        count_skipped_events(self.telemetry.meter, self.providers)
        self._wake.controller = self.controller
        self.controller.idle = IdleProbes(  # controller.probe_idle_seconds
            clock=self.clock,
            cfg=config.controller,
            prober=self._probe,
            idle_for=self.windows.idle_for,
            served_for=self.windows.served_for,
        )
        self.history = AlertHistory(now=self.controller.now)
        self.bot = command_bot(self)  # Telegram commands (notify.telegram.commands), or None
        buttons = self.bot.center.book if self.bot is not None else None
        self.dispatcher = Dispatcher(
            senders=senders_from_env(config.notify, self.env, buttons=buttons),
            clock=self.clock,
            cfg=config.notify,
            meter=self.telemetry.meter,
            on_outcome=[self.history.on_outcome],
            shared=self.fleet,
        )
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self.watcher: ConfigWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.jobs = build_jobs(self, config, beside_state=store is None)

    def _on_dead_job(self, job: Job, error: str) -> None:
        react.on_dead_job(self, job, error)

    def _on_promql_unavailable(self, unavailable: bool, why: str) -> None:
        react.on_promql_unavailable(self, unavailable, why)

    @property
    def alerts(self) -> collections.deque[dict[str, Any]]:
        """The latest alerts, newest first, as the status document lists them."""
        return self.history.entries

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.fleet is not None:
            self.fleet.on_role.append(self._on_fleet_role)
            self.fleet.on_fleet_switch.append(self._on_fleet_switch)
            self.fleet.on_fault_news.append(self.controller.wake)
            await self.fleet.start()  # the fleet's last version, before anything routes
        self.controller.resume()
        switch = self.config.effective_kill_switch(self.env)
        if self.fleet is not None or switch != self.holder.current.kill_switch:
            self._apply_kill_switch(switch, changed_by="config")
        self.dispatcher.start()
        if self.bot is not None:
            self.bot.start()  # its own task; a dead Telegram only makes it retry
        self._tasks.append(asyncio.create_task(self.controller.run(), name="controller"))
        self._tasks.append(asyncio.create_task(self.spend.run(), name="spend"))
        if self.promql is not None:
            self._tasks.append(asyncio.create_task(self.promql.run(), name="promql-tripwires"))
        await self.jobs.replayer.start()  # jobs a crash left running are queued again
        self._tasks.append(asyncio.create_task(self.jobs.replayer.run(), name="job-replayer"))
        if self.config_path is not None:
            self.watcher = ConfigWatcher(
                self.config_path,
                clock=self.clock,
                on_change=self.apply_config,
                on_error=self._reject_config,
                running=self.config,  # an edit saved between loading and now is not missed
            )
            self._tasks.append(asyncio.create_task(self.watcher.run(), name="config-watcher"))

    async def stop(self, *, grace: float = 5.0) -> None:
        self.controller.stop()
        if self.watcher is not None:
            self.watcher.stop()
        for result in await cancel_and_wait(self._tasks):
            if isinstance(result, Exception):
                log.error("background task failed: %r", result)
        self._tasks.clear()
        if self.promql is not None:
            await self.promql.aclose()
        if self.fleet is not None:
            await self.fleet.stop()  # a leader hands its lease back: another takes over now
        if self.bot is not None:
            await self.bot.stop(grace=grace)
        await self.dispatcher.stop(timeout=grace)
        await self.jobs.close()  # replays under way are cut (queued again at the next start)
        await self.shadow.aclose()  # comparisons under way are cut
        self.spend.flush()  # the day's totals, for the next start
        await self.router.aclose()
        self.telemetry.listener.flush()
        self.telemetry.shutdown(timeout=grace)

    # ----------------------------------------------------------------------------- control
    async def _probe(self, name: str) -> bool:
        """Probe a provider with its own model, or one model of it (``provider/model``)."""
        provider, model = split_key(name)
        model = model or self._models.get(provider)
        if model is None or provider not in self.providers:
            return False
        within = self.config.controller.probe_timeout_seconds
        return await self.router.probe(provider, model, within=within)

    def _on_transition(self, transition: Transition) -> None:
        react.on_transition(self, transition)

    def notify(self, alert: Alert) -> None:
        """Hand ``alert`` to the dispatcher and list it (status page, demo), newest first: see
        :mod:`controller._alert_history` for what is listed and how it is marked."""
        self.history.add(alert, self.dispatcher.submit(alert))

    def _apply_kill_switch(self, switch: KillSwitch, *, changed_by: str) -> None:
        react.apply_kill_switch(self, switch, changed_by=changed_by)

    # ----------------------------------------------------------------------------- config
    def apply_config(self, config: Config) -> None:
        """Take a new valid config: routing tables and kill switch now, the rest on restart
        (:func:`controller._runtime_react.apply_config`)."""
        react.apply_config(self, config)

    def _on_fleet_role(self, before: Role, after: Role) -> None:
        react.on_fleet_role(self, before, after)

    def _on_fleet_switch(self, before: KillSwitch, after: KillSwitch) -> None:
        react.on_fleet_switch(self, before, after)

    def _reject_config(self, err: ConfigError) -> None:
        react.reject_config(self, err)

    # ----------------------------------------------------------------------------- gateway
    def tier_for(self, model: str) -> str | None:
        return self._names.tier_for(model)

    def models(self) -> list[str]:
        return self._names.known()

    def retry_after(self, providers: Collection[str]) -> float | None:
        """The soonest the controller looks again at a provider out of rotation in the tier a
        failed request was routed in: the tiers that list every provider it was tried on."""
        tried = set(providers)
        if not tried:
            return None
        around: set[str] = set()
        for tier in self.config.tiers.values():
            fallback = (tier.context_fallback,) if tier.context_fallback else ()
            members = {t.provider for t in (*tier.targets, *fallback)}
            if tried <= members:
                around |= members
        return self.controller.next_look_in(around)

    def routes(self) -> dict[str, tuple[str, ...]]:
        """Where each tier's traffic goes now, in order (no randomness: the configured order)."""
        return tier_routes(self._plans())

    def _plans(self) -> TierPlans:
        return tier_plans(
            self.router.tiers,
            self.holder.current,
            default_models=self._models,
            latency_of=self.router.latency.latency,
        )

    def ready(self) -> tuple[bool, str]:
        return readiness(self._plans())

    def status(self) -> dict[str, Any]:
        """The status document (the shape ``controller/gateway/_status_page.py`` reads); with
        the Telegram command bot, a ``telegram_bot`` section (polling, counts); in a fleet, a
        ``fleet`` section (roles, the leader, each replica's heartbeat and applied version)."""
        doc = status_document(
            state=self.holder.current,
            snapshot=self.controller.snapshot,
            tripwire=self.config.controller,
            providers=self.providers,
            plans=self._plans(),
            events=self.events,
            alerts=self.history.entries,
            rungs=self.router.rungs,
        )
        if self.fleet is not None:
            doc["fleet"] = self.fleet.describe()
        if self.bot is not None:
            doc["telegram_bot"] = self.bot.describe()
        if self.promql is not None:
            doc["promql"] = self.promql.describe()
        doc["jobs"] = self.jobs.describe()
        idle = self.controller.idle
        failing = idle.failing_now() if idle is not None else {}
        doc["standby"] = describe_standby(self.headroom, failing, self.router.tiers)
        return doc

    def render_metrics(self) -> tuple[bytes, str]:
        self.telemetry.listener.flush()
        return self.telemetry.render_prometheus(), self.telemetry.prometheus_content_type

    async def drill(self, provider: str, seconds: float) -> dict[str, Any]:
        return start_drill(self.providers, provider, seconds)

    async def set_kill_switch(self, switch: KillSwitch, *, by: str) -> dict[str, Any]:
        """The admin API's kill switch: the same code as the Telegram commands (the config
        file's flag through ``failover kill-switch``'s writer, or the fleet's in Redis)."""
        from controller.notify._bot_commands import OperatorError
        from controller.notify._bot_runtime import RuntimeOperator

        try:
            said = await RuntimeOperator(self).set_kill_switch(switch, by=by, chat="")
        except OperatorError as exc:
            raise ValueError(str(exc)) from None
        now = self.holder.current.kill_switch
        return {"kill_switch": now.describe(), "routes": self.routes(), "said": said}
