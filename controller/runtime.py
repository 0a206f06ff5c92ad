"""The assembled process: providers, router, tripwire, notifier and telemetry, from one config.

:class:`Runtime` builds every part from a :class:`~controller.config.Config`, runs the control
loop, the alert dispatcher and the config watcher as background tasks, and offers the gateway
its narrow :class:`~controller.gateway.backend.GatewayBackend` view (status, readiness, metrics,
drills). Routers read the routing state without ever waiting on the controller.

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
import random
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from controller._alerting import alert_for_transition, kill_switch_alert, rejected_alert
from controller._clock import Clock, SystemClock
from controller._drill import Drillable
from controller._errors import ConfigError
from controller._model_names import ModelNames
from controller.config import Config, ConfigWatcher, ProviderConfig, resolve_secret
from controller.control.decide import Transition
from controller.control.loop import Controller
from controller.control.state import KillSwitch, StateHolder
from controller.control.store import FileStateStore, MemoryStateStore, StateStore
from controller.events import AttemptEvent, Outcome, RouteEvent
from controller.notify import Dispatcher, senders_from_env
from controller.notify.alert import Alert
from controller.notify.dispatcher import DROPPED, FAILED, SENT, Delivery, Submitted
from controller.providers import HttpProvider, codec_for
from controller.routing.plan import Plan, Target, TierPlan, make_plan
from controller.routing.policy import DefaultRetryPolicy
from controller.routing.router import Router
from controller.signals.window import SignalWindows
from controller.telemetry.setup import Telemetry, setup_telemetry

log = logging.getLogger(__name__)

_HISTORY = 50
# Why the dispatcher did not queue an alert, as the status page's alert list says it.
_NOT_SENT = {Submitted.QUEUE_FULL: "alert queue full", Submitted.CLOSING: "shutting down"}
# Config sections whose change needs a restart (hot reload: kill_switch, tiers, aliases,
# translation).
_RESTART_SECTIONS = (
    "providers",
    "controller",
    "notify",
    "telemetry",
    "state",
    "gateway",
    "routing",
)


class _Wake:
    """A router listener that wakes the controller on a provider fault (faster trips)."""

    def __init__(self) -> None:
        self.controller: Controller | None = None

    def on_attempt(self, event: AttemptEvent) -> None:
        if event.outcome is Outcome.FAULT and self.controller is not None:
            self.controller.wake()

    def on_route(self, event: RouteEvent) -> None:
        return None


def build_tiers(config: Config) -> dict[str, TierPlan]:
    def target(t: Any) -> Target:
        return Target(
            provider=t.provider, model=t.model, weight=t.weight, cost_per_mtok=t.cost_per_mtok
        )

    return {
        name: TierPlan(
            name=name,
            targets=tuple(target(t) for t in tier.targets),
            strategy=tier.strategy,
            context_fallback=target(tier.context_fallback) if tier.context_fallback else None,
        )
        for name, tier in config.tiers.items()
    }


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
    )
    return HttpProvider(
        name=name,
        codec=codec,
        base_url=base_url or cfg.url,
        api_key=key or None,
        max_connections=cfg.max_connections,
    )


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
        self.config_path = Path(config_path) if config_path else None
        self.telemetry = telemetry or setup_telemetry(
            service_name=config.telemetry.service_name,
            capture_content=config.telemetry.capture_content,
            env=self.env,
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
        )
        self._wake = _Wake()
        retry = config.routing.retry
        self._models = probe_models(config)
        self.router = Router(
            tiers=build_tiers(config),
            providers=self.providers,
            state=self.holder,
            listeners=[self.telemetry.listener, self.windows, self._wake],
            clock=self.clock,
            retry=DefaultRetryPolicy(
                max_tries_per_provider=retry.max_tries_per_provider,
                max_retry_after=retry.max_retry_after,
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
        )
        self.store = store or (
            FileStateStore(Path(config.state.path)) if config.state.path else MemoryStateStore()
        )
        self.controller = Controller(
            clock=self.clock,
            windows=self.windows,
            holder=self.holder,
            store=self.store,
            cfg=config.controller,
            tiers=_membership(config),
            prober=self._probe,
            on_transition=[self._on_transition],
            meter=self.telemetry.meter,
        )
        self._wake.controller = self.controller
        self.dispatcher = Dispatcher(
            senders=senders_from_env(config.notify, self.env),
            clock=self.clock,
            cfg=config.notify,
            meter=self.telemetry.meter,
            on_outcome=[self._on_alert_outcome],
        )
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=_HISTORY)
        self.alerts: collections.deque[dict[str, Any]] = collections.deque(maxlen=_HISTORY)
        # The alerts behind ``self.alerts`` entries, to mark them as channels take them.
        self._listed: collections.deque[tuple[Alert, dict[str, Any]]] = collections.deque(
            maxlen=_HISTORY
        )
        self.watcher: ConfigWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.controller.resume()
        switch = self.config.effective_kill_switch(self.env)
        if switch != self.holder.current.kill_switch:
            self._apply_kill_switch(switch, changed_by="config")
        self.dispatcher.start()
        self._tasks.append(asyncio.create_task(self.controller.run(), name="controller"))
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
        for task in self._tasks:
            task.cancel()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("background task failed: %r", result)
        self._tasks.clear()
        await self.dispatcher.stop(timeout=grace)
        await self.router.aclose()
        self.telemetry.listener.flush()
        self.telemetry.shutdown(timeout=grace)

    # ----------------------------------------------------------------------------- control
    async def _probe(self, provider: str) -> bool:
        model = self._models.get(provider)
        if model is None:
            return False
        within = self.config.controller.probe_timeout_seconds
        return await self.router.probe(provider, model, within=within)

    def _on_transition(self, transition: Transition) -> None:
        observed = "" if transition.enforced else " (observe mode: not enforced)"
        text = (
            f"{transition.provider}: {transition.from_state.value} -> "
            f"{transition.to_state.value} ({transition.reason}){observed}"
        )
        self.events.appendleft({"time": transition.at, "text": text, "kind": transition.kind})
        with self.tracer.start_as_current_span("failover.routing_flip") as span:
            span.add_event(
                "routing.flip",
                {
                    "failover.provider": transition.provider,
                    "failover.transition": transition.kind.value,
                    "failover.state.from": transition.from_state.value,
                    "failover.state.to": transition.to_state.value,
                    "failover.state.version": self.holder.current.version,
                },
            )
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
        """Hand ``alert`` to the dispatcher and list it (status page, demo), newest first.

        A repeat within the cooldown is not listed: it was not sent, and the earlier one is. One
        the dispatcher dropped (queue full, shutting down) is listed with ``"sent": false`` and
        the reason in its text: that is when the operator needs the page. A queued one stays
        ``"sent": null`` until a channel takes it (:meth:`_on_alert_outcome`).
        """
        submitted = self.dispatcher.submit(alert)
        if submitted is Submitted.DEDUPLICATED:
            return
        subject = alert.provider or alert.tier or ""
        text = " ".join(p for p in (subject, alert.event.value.replace("_", " ")) if p)
        if alert.detail:
            text += f": {alert.detail}"
        if not submitted:
            text += f" (not sent: {_NOT_SENT[submitted]})"
        entry: dict[str, Any] = {
            "time": alert.at,
            "severity": alert.severity.value,
            "event": alert.event,
            "text": text,
            "sent": None if submitted else False,
            "delivered_at": None,
            "delivered": {},  # channel -> when it first took the alert
            "not_sent_to": [],
        }
        self.alerts.appendleft(entry)
        self._listed.appendleft((alert, entry))

    def _on_alert_outcome(self, outcome: Delivery) -> None:
        """Mark the listed alerts a message stood for: ``delivered_at`` when a channel first
        took it and ``delivered`` when each did (on the controller's clock, like the transitions
        it reports), and each channel that failed or dropped it in ``not_sent_to``."""
        if outcome.result not in (SENT, FAILED, DROPPED):
            return
        for alert, entry in self._listed:
            if not any(alert is member for member in outcome.message.alerts):
                continue
            if outcome.result != SENT:
                if outcome.channel not in entry["not_sent_to"]:
                    entry["not_sent_to"].append(outcome.channel)
            elif outcome.channel not in entry["delivered"]:
                now = self.controller.now()
                entry["delivered"][outcome.channel] = now
                if entry["delivered_at"] is None:
                    entry.update(sent=True, delivered_at=now)

    def _apply_kill_switch(self, switch: KillSwitch, *, changed_by: str) -> None:
        before = self.holder.current.kill_switch
        self.controller.set_kill_switch(switch, changed_by=changed_by)
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
        self.router.droppable = frozenset(config.translation.droppable)
        self.controller.set_tiers(_membership(config))
        self._models = probe_models(config)
        if switch != self.holder.current.kill_switch:
            self._apply_kill_switch(switch, changed_by="config")

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
        return {name: tuple(t.provider for t in plan.targets) for name, plan in self._plans()}

    def _plans(self) -> list[tuple[str, Plan]]:
        """Each tier's plan as a request would see it now (fixed seed: a stable view)."""
        state = self.holder.current
        return [
            (
                name,
                make_plan(
                    tier,
                    state,
                    default_models=self._models,
                    rng=random.Random(0),
                    latency_of=self.router.latency.latency,
                ),
            )
            for name, tier in self.router.tiers.items()
        ]

    def ready(self) -> tuple[bool, str]:
        for name, plan in self._plans():
            if not plan.targets:
                return False, f"tier {name}: {plan.reason}"
            if plan.panic:
                return False, f"tier {name}: every provider is tripped"
        return True, "ready"

    def status(self) -> dict[str, Any]:
        """The status document (the shape ``controller/gateway/_status_page.py`` reads)."""
        state = self.holder.current
        snapshot = self.controller.snapshot
        cfg = self.config.controller
        providers: list[dict[str, Any]] = []
        for name in self.config.providers:
            status = state.status(name)
            signals = snapshot.providers.get(name) if snapshot is not None else None
            providers.append(
                {
                    "name": name,
                    "kind": self.providers[name].kind,
                    "state": status.state.value,
                    "since": status.since,
                    "reason": status.reason,
                    "trip_count": status.trip_count,
                    "traffic_share": status.traffic_share,
                    "error_rate": signals.error_rate if signals else 0.0,
                    "requests": signals.requests if signals else 0,
                    "threshold": cfg.error_rate_threshold,
                    "drill": self.providers[name].drilling,
                }
            )
        tiers = [
            {
                "name": name,
                "serving": plan.targets[0].provider if plan.targets else None,
                "route": [t.provider for t in plan.targets],
                "panic": plan.panic,
                "reason": plan.reason,
            }
            for name, plan in self._plans()
        ]
        switch = state.kill_switch
        return {
            "version": state.version,
            "updated_at": state.updated_at,
            "changed_by": state.changed_by,
            "mode": cfg.mode,
            "window_seconds": cfg.window_seconds,
            "tiers": tiers,
            "providers": providers,
            "kill_switch": {
                "active": switch.active,
                "pin": switch.pin,
                "disable": list(switch.disable),
                "describe": switch.describe(),
            },
            "events": list(self.events),
            "alerts": list(self.alerts),
        }

    def render_metrics(self) -> tuple[bytes, str]:
        self.telemetry.listener.flush()
        return self.telemetry.render_prometheus(), self.telemetry.prometheus_content_type

    async def drill(self, provider: str, seconds: float) -> dict[str, Any]:
        target = self.providers[provider]  # KeyError for an unknown provider
        seconds = max(0.0, min(seconds, 3600.0))
        target.start_drill(seconds)
        log.warning("drill: simulating an outage of %s for %.0f s", provider, seconds)
        return {"provider": provider, "seconds": seconds, "drill": True}


def _membership(config: Config) -> dict[str, list[str]]:
    """Which providers serve each tier (what 'never eject the last usable one' judges by)."""
    return {name: [t.provider for t in tier.targets] for name, tier in config.tiers.items()}
