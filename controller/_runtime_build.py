"""The parts of a :class:`~controller.runtime.Runtime`, built from its config.

Pure builders (:func:`build_tiers`, :func:`build_provider`, :func:`answer_cache`,
:func:`model_names`, :func:`probe_models`, :func:`membership`) read only the config; a hot
reload calls them again. The ``build_*(rt, config)`` ones wire a part to those the runtime built
before it (the router to its providers and listeners, the controller to the router's windows),
in the order ``Runtime.__init__`` calls them; they are the runtime's, kept apart from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller._clock import Clock
from controller._drill import Drillable
from controller._errors import ConfigError
from controller._model_names import ModelNames
from controller.config import Config, ProviderConfig, resolve_secret
from controller.control._promql_eval import PromqlTripwires
from controller.control.audit import AuditLog, audit_path
from controller.control.loop import Controller
from controller.control.state import model_key
from controller.control.store import FileStateStore
from controller.fleet.config import state_backend
from controller.gateway._jobs import JobQueue, open_jobs
from controller.jobs import ReplayLimits
from controller.jobs._job import JobStoreError
from controller.jobs._redis import fleet_job_store
from controller.providers import HttpProvider, codec_for
from controller.providers._http_connect import ConnectFailed
from controller.providers._http_proxy import Proxy, proxy_for
from controller.routing._answers_redis import RedisAnswers
from controller.routing._standby import HeadroomSteer, StandbyMetrics, WarmSteer
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import DefaultRetryPolicy
from controller.routing.router import AnswerCache, Router
from controller.signals.headroom import Headroom
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

if TYPE_CHECKING:
    from controller.runtime import Runtime


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


def membership(config: Config) -> dict[str, list[str]]:
    """The targets of each tier, as ``provider/model`` keys: who the controller judges (a
    provider, and each model of one serving several) and what 'never eject the last usable
    one' judges by."""
    return {
        name: [model_key(t.provider, t.model) for t in tier.targets]
        for name, tier in config.tiers.items()
    }


def build_router(rt: Runtime, config: Config) -> Router:
    retry = config.routing.retry
    return Router(
        tiers=build_tiers(config),
        providers=rt.providers,
        state=rt.holder,
        listeners=[rt.telemetry.listener, rt.windows, rt._wake, rt._ladders],
        clock=rt.clock,
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
        default_models=rt._models,
        capture_content=config.telemetry.capture_content,
        sample_root=rt.telemetry.sample_root,
        droppable=frozenset(config.translation.droppable),
        inflight=rt.windows.inflight,
        cache=answer_cache(config, rt.clock, rt.env),
    )


def build_standby(rt: Runtime, config: Config) -> Headroom:
    """Warm traffic and rate-limit headroom steer the plans (:mod:`controller.routing.
    _standby`), ahead of any other steer; each provider tells the headroom its answers'
    rate-limit headers; ``failover.standby`` counts the warm and probe attempts."""
    cfg = config.routing.headroom
    headroom = Headroom(rt.clock, below=cfg.below, hold_seconds=cfg.hold_seconds)
    headroom.register(rt.meter)
    for name, provider in rt.providers.items():
        if isinstance(provider.inner, HttpProvider):
            provider.inner.on_headers = headroom.hook(name)
    rt.router.steers[:0] = [WarmSteer(), HeadroomSteer(headroom)]
    rt.router.listeners.add(StandbyMetrics(rt.meter))
    return headroom


def build_audit_log(rt: Runtime, config: Config) -> AuditLog | None:
    """The audit log beside the state file; none when the state has no file. In a fleet,
    beside ``state.path`` too, each record naming this replica: only the deciding replica's
    controller makes transitions, so the leader's log holds the fleet's decisions."""
    if isinstance(rt.store, FileStateStore):
        path, extra = rt.store.path, None
    elif rt.fleet is not None and config.state.path:
        path, extra = Path(config.state.path), {"replica": rt.fleet.replica}
    else:
        return None
    cfg = config.state
    return AuditLog(
        audit_path(path), max_bytes=cfg.audit_max_bytes, files=cfg.audit_files, extra=extra
    )


def build_promql(rt: Runtime, config: Config) -> PromqlTripwires | None:
    """The PromQL tripwires (``promql.rules``), evaluated by the deciding replica."""
    cfg = config.promql
    if not cfg.rules:
        return None
    url = cfg.resolve_url(rt.env)
    if url is None:
        raise ConfigError(
            f"set promql.url or ${cfg.url_env}: rules need a Prometheus", key="promql.url"
        )
    return PromqlTripwires(
        cfg,
        url=url,
        clock=rt.clock,
        deciding=rt.fleet.deciding if rt.fleet is not None else None,
        on_unavailable=rt._on_promql_unavailable,
        meter=rt.telemetry.meter,
    )


def build_controller(rt: Runtime, config: Config) -> Controller:
    return Controller(
        clock=rt.clock,
        windows=rt.fleet if rt.fleet is not None else rt.windows,
        holder=rt.holder,
        store=rt.store,
        cfg=config.controller,
        tiers=membership(config),
        prober=rt._probe,
        on_transition=[rt._on_transition],
        meter=rt.telemetry.meter,
        deciding=rt.fleet.deciding if rt.fleet is not None else None,
        promql=rt.promql.signals if rt.promql is not None else None,
    )


def build_jobs(rt: Runtime, config: Config, *, beside_state: bool) -> JobQueue:
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
                config.state.redis if rt.fleet is not None else None,
                rt.env,
                limits=limits,
                lease_seconds=cfg.lease_seconds,
                max_bytes=cfg.max_bytes,
            ),
            router=rt.router,
            clock=rt.clock,
            meter=rt.telemetry.meter,
            limits=limits,
            max_jobs=cfg.max_jobs,
            max_job_bytes=cfg.max_job_bytes,
            max_result_bytes=cfg.max_result_bytes,
            allow_hosts=cfg.callbacks.allow_hosts,
            callback_timeout=cfg.callbacks.timeout_seconds,
            on_dead=[rt._on_dead_job],
        )
    except JobStoreError as exc:
        raise ConfigError(str(exc), key="jobs.path") from None


def count_skipped_events(meter: Meter, providers: Mapping[str, Drillable]) -> None:
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
