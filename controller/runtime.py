"""The assembled process: providers, router, tripwire, notifier and telemetry, from one config.

:class:`Runtime` builds every part from a :class:`~controller.config.Config`, runs the control
loop, the alert dispatcher and the config watcher as background tasks, and offers the gateway
its narrow :class:`~controller.gateway.backend.GatewayBackend` view (status, readiness, metrics,
drills). Routers read the routing state without ever waiting on the controller. What the gateway
is shown is built in :mod:`controller._status`, the alert list kept in
:mod:`controller._alert_history`, drills run by :mod:`controller._drill`; this module wires.

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
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Tracer

from controller._alert_history import HISTORY, AlertHistory
from controller._alerting import (
    LadderWatch,
    alert_for_transition,
    kill_switch_alert,
    rejected_alert,
)
from controller._clock import Clock, SystemClock
from controller._drill import Drillable, start_drill
from controller._errors import ConfigError
from controller._model_names import ModelNames
from controller._spend_shadow import attach_spend_and_shadow, shadow_plans
from controller._status import (
    TierPlans,
    event_entry,
    readiness,
    status_document,
    tier_plans,
    tier_routes,
)
from controller._tasks import cancel_and_wait
from controller.config import Config, ConfigWatcher, ProviderConfig, resolve_secret
from controller.config._model import ENV_DISABLE, ENV_PIN
from controller.control._idle import IdleProbes
from controller.control._promql_eval import PromqlTripwires
from controller.control.audit import AuditLog, audit_path, kill_switch_record, transition_record
from controller.control.decide import Transition
from controller.control.loop import Controller
from controller.control.state import KillSwitch, StateHolder, model_key, split_key
from controller.control.store import FileStateStore, MemoryStateStore, StateStore
from controller.events import AttemptEvent, Outcome, RouteEvent
from controller.fleet import Fleet, Role
from controller.fleet._metrics import register_fleet_gauges
from controller.fleet.config import state_backend
from controller.gateway._jobs import JobQueue, open_jobs
from controller.jobs import Job, ReplayLimits
from controller.jobs._job import JobStoreError
from controller.jobs._redis import fleet_job_store
from controller.notify import Dispatcher, senders_from_env
from controller.notify._bot_runtime import command_bot
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent
from controller.providers import HttpProvider, codec_for
from controller.providers._http_connect import ConnectFailed
from controller.providers._http_proxy import Proxy, proxy_for
from controller.routing._answers_redis import RedisAnswers
from controller.routing._standby import HeadroomSteer, StandbyMetrics, WarmSteer
from controller.routing._standby import describe as describe_standby
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import DefaultRetryPolicy
from controller.routing.router import AnswerCache, Router
from controller.signals.headroom import Headroom
from controller.signals.inflight import InFlight
from controller.signals.window import SignalWindows
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS
from controller.telemetry.setup import Telemetry, setup_telemetry

log = logging.getLogger(__name__)

# Config sections whose change needs a restart (hot reload: kill_switch, tiers, aliases,
# translation).
_RESTART_SECTIONS = (
    "providers",
    "controller",
    "notify",
    "telemetry",
    "state",
    "gateway",
    "spend",
    "routing",
    "jobs",
    "promql",
)


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


def build_tiers(config: Config) -> dict[str, TierPlan]:
    def target(t: Any) -> Target:
        return Target(
            provider=t.provider,
            model=t.model,
            weight=t.weight,
            cost_per_mtok=t.cost_per_mtok,
            reasoning=t.reasoning,
            lacks=frozenset(t.lacks),
        )

    return {
        name: TierPlan(
            name=name,
            targets=tuple(target(t) for t in tier.targets),
            strategy=tier.strategy,
            context_fallback=target(tier.context_fallback) if tier.context_fallback else None,
            hedge=tier.hedge.plan() if tier.hedge is not None else None,
            degrade=tier.degrade.plan(),
            warm_share=tier.warm_share,
        )
        for name, tier in config.tiers.items()
    }


def answer_cache(
    config: Config, clock: Clock, env: Mapping[str, str] | None = None
) -> AnswerCache | None:
    """The answer cache of the tiers whose ladder has its cache rung (None: no such tier):
    copied to SQLite, or in fleet mode to the fleet's Redis (every replica serves it)."""
    if not any(tier.degrade.cache for tier in config.tiers.values()):
        return None
    cfg = config.cache
    path = cfg.path
    shared = None
    if env is not None and state_backend(config.state.backend, env) == "redis":
        shared = RedisAnswers.connect(
            config.state.redis, env, read_timeout=config.state.redis.timeout_seconds, clock=clock
        )
        path = None
    elif path is None and config.state.path:
        path = str(Path(config.state.path).with_suffix(".cache.sqlite"))
    return AnswerCache(
        path,
        max_entries=cfg.max_entries,
        max_bytes=cfg.max_bytes,
        ttl=cfg.ttl_seconds,
        clock=clock,
        shared=shared,
    )


def build_provider(
    name: str, cfg: ProviderConfig, env: Mapping[str, str], base_url: str | None = None
) -> HttpProvider:
    key = resolve_secret(cfg.api_key_env, key=f"providers.{name}.api_key_env", env=env)
    codec = codec_for(
        cfg.kind.value,
        provider_name=cfg.provider_name,
        auth=cfg.auth,
        path=cfg.path,
        query=cfg.query,
        stream_usage=cfg.stream_usage,
        organization=cfg.organization,
        project=cfg.project,
        api=cfg.api,
    )
    return HttpProvider(
        name=name,
        codec=codec,
        base_url=base_url or cfg.url,
        api_key=key or None,
        max_connections=cfg.max_connections,
        max_response_bytes=cfg.max_response_bytes,
        max_event_bytes=cfg.max_event_bytes,
        proxy=_proxy(name, cfg, env, base_url or cfg.url),
        takes_prefill=cfg.takes_prefill,
    )


def _proxy(name: str, cfg: ProviderConfig, env: Mapping[str, str], url: str) -> Proxy | None:
    """The proxy a provider's calls take; a proxy variable the client cannot use is refused
    at start, naming it (the message holds no part of its value: it may carry a password)."""
    try:
        return proxy_for(url, cfg.proxy, env)
    except ConnectFailed as exc:
        where = f"providers.{name}.proxy" if cfg.proxy else "HTTPS_PROXY / HTTP_PROXY"
        raise ConfigError(str(exc), key=where) from None


def model_names(config: Config) -> ModelNames:
    """The model-name lookup of ``config`` (its aliases, tiers and default tier)."""
    return ModelNames(config.aliases, config.tiers, default_tier=config.default_tier)


def probe_models(config: Config) -> dict[str, str]:
    """The model each provider is probed (and pinned) with: its default, else its first use."""
    models = {n: p.default_model for n, p in config.providers.items() if p.default_model}
    for tier in config.tiers.values():
        for target in tier.targets:
            models.setdefault(target.provider, target.model)
    return models


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
        self.router = self._build_router(config)
        self.headroom = self._standby(config)  # warm traffic, rate-limit headroom
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
            self._wake.fleet = self.fleet
        self.store = store or (
            self.fleet.store
            if self.fleet is not None
            else FileStateStore(Path(config.state.path))
            if config.state.path
            else MemoryStateStore()
        )
        self.audit = self._audit_log(config)  # beside the state file, in a fleet too
        self.promql = self._build_promql(config)  # PromQL tripwires, or None
        self.controller = self._build_controller(config)
        _count_skipped_events(self.telemetry.meter, self.providers)
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
        self.jobs = self._open_jobs(config, beside_state=store is None)

    def _open_jobs(self, config: Config, *, beside_state: bool) -> JobQueue:
        """The deferred jobs' store and replayer (controller/jobs, gateway/_jobs.py): in
        ``jobs.path``, else beside the state file (in memory when there is none, or when the
        state store was handed in: tests, library use)."""
        cfg = config.jobs
        path = cfg.path
        if path is None:
            state = config.state.path
            path = str(Path(state).with_suffix(".jobs.sqlite3")) if state and beside_state else ""
        limits = ReplayLimits(
            per_second=cfg.replay_per_second,
            concurrency=cfg.replay_concurrency,
            max_tries=cfg.max_tries,
            retry_backoff_seconds=cfg.retry_backoff_seconds,
            keep_seconds=cfg.keep_results_seconds,
            tick_seconds=cfg.tick_seconds,
            callback_tries=cfg.callbacks.max_tries,
            callback_backoff_seconds=cfg.callbacks.backoff_seconds,
        )
        try:
            return open_jobs(
                path=path,
                store=fleet_job_store(
                    cfg.store,
                    config.state.redis if self.fleet is not None else None,
                    self.env,
                    limits=limits,
                    lease_seconds=cfg.lease_seconds,
                    max_bytes=cfg.max_bytes,
                ),
                router=self.router,
                clock=self.clock,
                meter=self.telemetry.meter,
                limits=limits,
                max_jobs=cfg.max_jobs,
                max_job_bytes=cfg.max_job_bytes,
                max_result_bytes=cfg.max_result_bytes,
                allow_hosts=cfg.callbacks.allow_hosts,
                callback_timeout=cfg.callbacks.timeout_seconds,
                on_dead=[self._on_dead_job],
            )
        except JobStoreError as exc:
            raise ConfigError(str(exc), key="jobs.path") from None

    def _on_dead_job(self, job: Job, error: str) -> None:
        """A deferred job ran out of tries: one alert per tier within the cooldown."""
        alert = Alert(
            event=AlertEvent.JOB_DEAD_LETTER,
            severity=DEFAULT_SEVERITY[AlertEvent.JOB_DEAD_LETTER],
            at=self.clock.wall(),
            tier=job.tier,
            detail=f"job {job.id} failed {job.attempts} tries; last: {error[:300]}",
            routes=self.routes(),
        )
        self.notify(alert)

    def _build_router(self, config: Config) -> Router:
        retry = config.routing.retry
        return Router(
            tiers=build_tiers(config),
            providers=self.providers,
            state=self.holder,
            listeners=[self.telemetry.listener, self.windows, self._wake, self._ladders],
            clock=self.clock,
            retry=DefaultRetryPolicy(
                max_tries_per_provider=retry.max_tries_per_provider,
                max_retry_after=retry.max_retry_after,
                wait_retry_after_under=retry.wait_retry_after_under,
                backoff_base=retry.backoff_base,
                backoff_cap=retry.backoff_cap,
            ),
            timeouts={n: p.timeouts.limits() for n, p in config.providers.items()},
            deadline=config.routing.deadline_seconds,
            max_attempts=config.routing.max_attempts,
            default_models=self._models,
            capture_content=config.telemetry.capture_content,
            sample_root=self.telemetry.sample_root,
            droppable=frozenset(config.translation.droppable),
            inflight=self.windows.inflight,
            cache=answer_cache(config, self.clock, self.env),
        )

    def _audit_log(self, config: Config) -> AuditLog | None:
        """The audit log beside the state file; none when the state has no file. In a fleet,
        beside ``state.path`` too, each record naming this replica: only the deciding replica's
        controller makes transitions, so the leader's log holds the fleet's decisions."""
        if isinstance(self.store, FileStateStore):
            path, extra = self.store.path, None
        elif self.fleet is not None and config.state.path:
            path, extra = Path(config.state.path), {"replica": self.fleet.replica}
        else:
            return None
        cfg = config.state
        return AuditLog(
            audit_path(path), max_bytes=cfg.audit_max_bytes, files=cfg.audit_files, extra=extra
        )

    def _build_promql(self, config: Config) -> PromqlTripwires | None:
        """The PromQL tripwires (``promql.rules``), evaluated by the deciding replica."""
        cfg = config.promql
        if not cfg.rules:
            return None
        url = cfg.resolve_url(self.env)
        if url is None:
            raise ConfigError(
                f"set promql.url or ${cfg.url_env}: rules need a Prometheus", key="promql.url"
            )
        return PromqlTripwires(
            cfg,
            url=url,
            clock=self.clock,
            deciding=self.fleet.deciding if self.fleet is not None else None,
            on_unavailable=self._on_promql_unavailable,
            meter=self.telemetry.meter,
        )

    def _on_promql_unavailable(self, unavailable: bool, why: str) -> None:
        """One warning when PromQL tripwires stop getting answers, one when they are back."""
        event = AlertEvent.PROMQL_UNAVAILABLE if unavailable else AlertEvent.PROMQL_RESTORED
        detail = f"{why}; the built-in tripwire works on" if unavailable else why
        alert = Alert(
            event=event,
            severity=DEFAULT_SEVERITY[event],
            at=self.clock.wall(),
            detail=detail,
            routes=self.routes(),
        )
        self.notify(alert)

    def _standby(self, config: Config) -> Headroom:
        """Warm traffic and rate-limit headroom steer the plans (:mod:`controller.routing.
        _standby`), ahead of any other steer; each provider tells the headroom its answers'
        rate-limit headers; ``failover.standby`` counts the warm and probe attempts."""
        cfg = config.routing.headroom
        headroom = Headroom(self.clock, below=cfg.below, hold_seconds=cfg.hold_seconds)
        headroom.register(self.meter)
        for name, provider in self.providers.items():
            if isinstance(provider.inner, HttpProvider):
                provider.inner.on_headers = headroom.hook(name)
        self.router.steers[:0] = [WarmSteer(), HeadroomSteer(headroom)]
        self.router.listeners.add(StandbyMetrics(self.meter))
        return headroom

    def _build_controller(self, config: Config) -> Controller:
        return Controller(
            clock=self.clock,
            windows=self.fleet if self.fleet is not None else self.windows,
            holder=self.holder,
            store=self.store,
            cfg=config.controller,
            tiers=_membership(config),
            prober=self._probe,
            on_transition=[self._on_transition],
            meter=self.telemetry.meter,
            deciding=self.fleet.deciding if self.fleet is not None else None,
            promql=self.promql.signals if self.promql is not None else None,
        )

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
        """List the flip (status page), trace it, and alert when it is worth a page."""
        self.events.appendleft(event_entry(transition))
        if self.audit is not None:
            self.audit.append(transition_record(transition, version=self.holder.current.version))
        _trace_flip(self.tracer, transition, version=self.holder.current.version)
        alert = alert_for_transition(
            transition,
            state=self.holder.current,
            routes=self.routes(),
            threshold=self.config.controller.error_rate_threshold,
            observe=not self.config.controller.enforce,
        )
        if alert is not None:
            self.notify(alert)

    def notify(self, alert: Alert) -> None:
        """Hand ``alert`` to the dispatcher and list it (status page, demo), newest first: see
        :mod:`controller._alert_history` for what is listed and how it is marked."""
        self.history.add(alert, self.dispatcher.submit(alert))

    def _apply_kill_switch(self, switch: KillSwitch, *, changed_by: str) -> None:
        before = self.holder.current.kill_switch
        if self.fleet is not None:  # this replica's own switch: environment > fleet > file
            from_env = bool(self.env.get(ENV_PIN, "").strip()) or ENV_DISABLE in self.env
            self.fleet.set_local_switch(switch, from_env=from_env)
            after = self.holder.current.kill_switch
            if after != before:
                log.warning("kill switch %s (by %s)", after.describe(), changed_by)
                self._audit_switch(before, after, by=changed_by)
                alert = kill_switch_alert(before, after, at=self.clock.wall(), routes=self.routes())
                self.notify(alert)
            return
        state = self.controller.set_kill_switch(switch, changed_by=changed_by)
        if self.audit is not None:
            record = kill_switch_record(
                before, switch, by=changed_by, at=state.updated_at, version=state.version
            )
            self.audit.append(record)
        self.notify(kill_switch_alert(before, switch, at=self.clock.wall(), routes=self.routes()))

    # ----------------------------------------------------------------------------- config
    def apply_config(self, config: Config) -> None:
        """Take a new valid config: routing tables and kill switch now, the rest on restart.

        Sections that need a restart keep their running values, so status and alerts never
        show settings that are not in force.
        """
        changed = [s for s in _RESTART_SECTIONS if getattr(config, s) != getattr(self.config, s)]
        for section in changed:
            log.warning("config section %r changed: restart to apply it", section)
        if "providers" in changed:
            log.warning("providers changed: tiers and aliases are kept until the restart too")
            config = self.config.model_copy(update={"kill_switch": config.kill_switch})
        else:
            config = config.model_copy(
                update={s: getattr(self.config, s) for s in _RESTART_SECTIONS}
            )
        try:
            switch = config.effective_kill_switch(self.env)
        except ConfigError as err:
            self._reject_config(err)
            return
        self.config = config
        self._names = model_names(config)
        self.router.tiers = build_tiers(config)
        if self.router.cache is None:  # a tier's ladder may have gained its cache rung
            self.router.cache = answer_cache(config, self.clock, self.env)
        self.router.droppable = frozenset(config.translation.droppable)
        self.shadow.plans = shadow_plans(config)
        self.controller.set_tiers(_membership(config))
        self._models = probe_models(config)
        if self.fleet is not None or switch != self.holder.current.kill_switch:
            self._apply_kill_switch(switch, changed_by="config")

    def _on_fleet_role(self, before: Role, after: Role) -> None:
        """A replica that loses Redis decides alone: a critical alert says so, and another
        when it follows the fleet's decision again."""
        fleet = self.fleet
        assert fleet is not None
        if after is Role.LOCAL:
            event = AlertEvent.FLEET_UNAVAILABLE
            detail = (
                f"Redis did not answer for {fleet.cfg.lease_seconds:g}s: this replica routes on "
                "its last state and trips providers on its own traffic until Redis is back"
            )
        elif before is Role.LOCAL:
            event = AlertEvent.FLEET_RESTORED
            detail = f"following the fleet's version {fleet.holder.current.version} again"
        else:
            return
        alert = Alert(
            event=event,
            severity=DEFAULT_SEVERITY[event],
            at=self.clock.wall(),
            provider=fleet.replica,
            detail=detail,
            routes=self.routes(),
        )
        self.notify(alert)

    def _on_fleet_switch(self, before: KillSwitch, after: KillSwitch) -> None:
        """The leader announces an operator's fleet-wide kill switch (once, fleet-wide)."""
        log.warning("fleet kill switch %s (was %s)", after.describe(), before.describe())
        self._audit_switch(before, after, by=self.holder.current.changed_by)
        self.notify(kill_switch_alert(before, after, at=self.clock.wall(), routes=self.routes()))

    def _audit_switch(self, before: KillSwitch, after: KillSwitch, *, by: str) -> None:
        """A kill switch a fleet replica applied, in its audit log."""
        if self.audit is not None:
            state = self.holder.current
            record = kill_switch_record(
                before, after, by=by, at=self.clock.wall(), version=state.version
            )
            self.audit.append(record)

    def _reject_config(self, err: ConfigError) -> None:
        self.notify(rejected_alert(err, at=self.clock.wall(), routes=self.routes()))

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


def _trace_flip(tracer: Tracer, transition: Transition, *, version: int) -> None:
    """A ``failover.routing_flip`` span holding the flip as its ``routing.flip`` event."""
    with tracer.start_as_current_span("failover.routing_flip") as span:
        span.add_event(
            "routing.flip",
            {
                "failover.provider": transition.provider,
                "failover.transition": transition.kind.value,
                "failover.state.from": transition.from_state.value,
                "failover.state.to": transition.to_state.value,
                "failover.state.version": version,
            },
        )


def _count_skipped_events(meter: Meter, providers: Mapping[str, Drillable]) -> None:
    """``failover.events.skipped``: the unparseable stream events each provider sent (skipped,
    the stream went on), read from the providers when a reader collects."""

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        for name, provider in providers.items():
            count = getattr(provider.inner, "skipped_events", 0)
            yield Observation(count, {names.ATTR_PROVIDER: name})

    meter.create_observable_counter(
        names.METRIC_EVENTS_SKIPPED,
        callbacks=[observe],
        unit=METRIC_UNITS[names.METRIC_EVENTS_SKIPPED],
        description="Unparseable stream events skipped (the stream went on)",
    )


def _membership(config: Config) -> dict[str, list[str]]:
    """The targets of each tier, as ``provider/model`` keys: who the controller judges (a
    provider, and each model of one serving several) and what 'never eject the last usable
    one' judges by."""
    return {
        name: [model_key(t.provider, t.model) for t in tier.targets]
        for name, tier in config.tiers.items()
    }
