"""The config's other top-level sections: ``telemetry``, ``translation``, ``state``, ``cache``,
``jobs``, ``spend`` and ``gateway`` (the tripwire, alerts and PromQL rules are their own
components' configs: ``controller``, ``notify``, ``promql``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from controller._env_name import EnvName
from controller.config._model_base import Frozen
from controller.fleet.config import FleetConfig
from controller.routing.plan import Priority


class SamplingConfig(Frozen):
    """``telemetry.sampling``: tail sampling, decided once a request's trace has ended. Every
    trace with a failed attempt, a retry, failover, rescue, hedge or continuation, or a route
    that did not simply serve, is kept; of the rest, ``healthy_share`` (1: all, tail sampling
    off; 0.01: one in a hundred). README "Telemetry"."""

    healthy_share: Annotated[float, Field(ge=0, le=1)] = 1.0


class TelemetryConfig(Frozen):
    service_name: str = "llm-failover"
    capture_content: bool = False  # record prompts/completions on spans: opt-in only
    sampling: SamplingConfig = SamplingConfig()


class TranslationConfig(Frozen):
    """Requests served by a provider of another wire format than the client's.

    The translation carries what the formats share; what it cannot carry (``cache_control``,
    ``thinking``, images, ``response_format``, a field it does not know, ...) makes the router
    skip such a provider for that request. ``droppable`` names features a provider of another
    format may serve without: the request is then served with the feature dropped, counted
    in ``failover.features.dropped`` and logged once.
    """

    droppable: tuple[str, ...] = ()


class StateConfig(Frozen):
    # file: this process decides alone, its state in `path`; redis: one decision for a fleet of
    # replicas (controller/fleet, the `redis:` block; README "Fleet mode").
    backend: Literal["file", "redis"] = "file"
    redis: FleetConfig = FleetConfig()
    path: str = "failover-state.json"
    # The audit log beside it (controller/control/audit.py): rotated past this size, this many
    # files kept in all.
    audit_max_bytes: Annotated[int, Field(ge=4096)] = 4 * 1024 * 1024
    audit_files: Annotated[int, Field(ge=1, le=100)] = 5


class CacheConfig(Frozen):
    """``cache``: the last good answers of tiers with ``degrade.cache``, served only when every
    provider a request could go to failed. ``path`` None: beside the state file
    (``<state>.cache.sqlite``); memory only when the state has no file either."""

    path: str | None = None
    max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024
    ttl_seconds: Annotated[float, Field(gt=0)] = 86400.0


class ClientPriorityConfig(Frozen):
    """``gateway.client_priorities[]``: the client keys in ``keys_env`` (a comma-separated
    list, like ``api_keys_env``) are client keys too, and their requests get ``priority`` when
    they send no ``x-failover-priority`` (README "Triage and deferred jobs")."""

    keys_env: EnvName
    priority: Priority


class CallbacksConfig(Frozen):
    """``jobs.callbacks``: where a deferred job's result may be POSTed (``x-failover-callback``);
    no hosts listed, callbacks are off (a request naming one is a 400)."""

    allow_hosts: tuple[str, ...] = ()
    max_tries: Annotated[int, Field(ge=1, le=20)] = 6
    backoff_seconds: Annotated[float, Field(gt=0)] = 2.0  # doubles per try (capped at 300 s)
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not host or any(c in host for c in "/:@ ") or host != host.strip():
                raise ValueError(f"{host!r} is not a host name (no scheme, port or path)")
        return tuple(host.lower() for host in value)


class JobsConfig(Frozen):
    """``jobs``: the durable queue of deferred requests (controller/jobs; README "Triage and
    deferred jobs"). ``path`` is the SQLite file; unset, beside ``state.path`` (its name with
    ``.jobs.sqlite3``); "" keeps jobs in memory (lost on restart)."""

    # sqlite: this process's file (`path`); redis: the fleet's Redis (`state.redis`, so
    # state.backend must be redis); auto: redis in fleet mode, else sqlite.
    store: Literal["auto", "sqlite", "redis"] = "auto"
    path: str | None = None
    max_jobs: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000  # unfinished, all tiers
    max_job_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024  # one request body
    max_result_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024  # one answer kept
    replay_per_second: Annotated[float, Field(gt=0, le=10_000)] = 2.0  # per tier
    replay_concurrency: Annotated[int, Field(ge=1, le=1000)] = 4
    max_tries: Annotated[int, Field(ge=1, le=100)] = 5  # then the dead letters
    retry_backoff_seconds: Annotated[float, Field(gt=0)] = 5.0  # doubles per try, capped 300 s
    keep_results_seconds: Annotated[float, Field(gt=0)] = 86_400.0
    tick_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5
    # Redis store: a claimed job stays its replica's this long without a renewal (renewed
    # every tick); a dead replica's job is replayed by another after it.
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # Redis store: the fleet's jobs (bodies, headers, callbacks, answers kept) in Redis's
    # memory; past it a defer is refused like a full queue.
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 1 << 30
    callbacks: CallbacksConfig = CallbacksConfig()


USD = Annotated[float, Field(ge=0)]


class PriceConfig(Frozen):
    """``spend.prices.<provider>.<model>``: USD per million tokens (the user's prices; nothing
    is fetched). ``cached_input`` applies to input tokens a provider reports as cache reads
    (unset: they cost ``input``)."""

    input: USD = 0.0
    output: USD = 0.0
    cached_input: USD | None = None


class BudgetConfig(Frozen):
    """A daily budget in USD (UTC day): alerts at 80 % and 100 %; with ``enforce``, at 100 %
    traffic moves to the next target until the day ends."""

    daily_usd: Annotated[float, Field(gt=0)]
    enforce: bool = False


class BudgetsConfig(Frozen):
    providers: dict[str, BudgetConfig] = Field(default_factory=dict)
    tiers: dict[str, BudgetConfig] = Field(default_factory=dict)


class SpendConfig(Frozen):
    """``spend``: prices per provider and model (``*``: any other model of the provider) and
    daily budgets (README "Spend and budgets"). ``path`` keeps the day's totals across a
    restart; unset, beside ``state.path`` (``<state>.spend.json``); "" keeps them in memory."""

    prices: dict[str, dict[str, PriceConfig]] = Field(default_factory=dict)
    budgets: BudgetsConfig = BudgetsConfig()
    path: str | None = None


class GatewayConfig(Frozen):
    """The HTTP front. Keys come from environment variables (comma-separated lists)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    admin_host: str = "127.0.0.1"  # admin endpoints (state, drill) stay on loopback by default
    admin_port: Annotated[int, Field(ge=0, le=65535)] = 9091
    api_keys_env: EnvName = "FAILOVER_API_KEYS"  # unset or empty: client auth off
    admin_token_env: EnvName = "FAILOVER_ADMIN_TOKEN"  # unset: admin endpoints answer 403
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    # Client connections (controller/gateway/_server.py): open at once (over it a new one gets a
    # 503), idle with no request, a request's head from its first byte, its body after its head.
    max_connections: Annotated[int, Field(ge=1)] = 4096
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # While the gateway waits on a client to read what it is sent (its connection's writes
    # paused), the client must take 32 KiB every so many seconds, else its connection is reset.
    send_timeout_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    # An answer's `model` names the model that served it, as the providers' own APIs do; true
    # answers with the name the client sent instead.
    echo_requested_model: bool = False
    # More client keys, each list with the priority its requests get by default (triage).
    client_priorities: tuple[ClientPriorityConfig, ...] = ()
