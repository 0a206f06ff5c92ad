"""The config file: one YAML document validated into typed, frozen objects.

Errors name the dotted key and the line (``failover.yaml:14: tiers.fast.targets.0.provider:
unknown provider 'opnai' (known: anthropic, openai)``). Secrets never live in the file: a
provider names the environment variable that holds its key (``api_key_env``).

Environment overrides for emergencies (they win over the file, and are shown as such):
``FAILOVER_KILL_SWITCH_PIN=<provider>`` and ``FAILOVER_KILL_SWITCH_DISABLE=<p1>,<p2>``.

Some problems are not invalid documents: a kill switch that leaves a tier nothing to route to,
a state file that cannot be written. Refusing them would block an operator pinning during an
outage (or turn a full disk into an outage), so ``serve`` and a reload apply them with a warning;
``failover check`` reports them, located like validation errors (:func:`readiness_problems`).
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from controller._env_name import EnvName
from controller._errors import (
    AuthFailed,
    ConfigError,
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
)
from controller.config._shorthand import ShorthandError, origin
from controller.config._shorthand import expand as expand_models
from controller.control.config import TripwireConfig
from controller.control.promql import PromqlConfig
from controller.control.state import KillSwitch
from controller.control.store import FileStateStore
from controller.fleet.config import FleetConfig
from controller.notify.config import NotifyConfig
from controller.providers.base import Timeouts
from controller.routing.plan import Degrade, Hedge, Priority, Strategy

ENV_PIN = "FAILOVER_KILL_SWITCH_PIN"
ENV_DISABLE = "FAILOVER_KILL_SWITCH_DISABLE"

log = logging.getLogger(__name__)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OPENAI_COMPATIBLE = "openai_compatible"


DEFAULT_BASE_URLS: dict[ProviderKind, str] = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
}

Seconds = Annotated[float, Field(gt=0)]


class TimeoutsConfig(_Frozen):
    """A provider's per-attempt limits, in seconds (what each bounds: :class:`Timeouts`).

    ``total`` bounds a non-streaming answer and a stream's wait for its first chunk; a stream
    already flowing is bounded by ``idle`` and ``stream_total`` instead.
    """

    connect: Seconds = 5.0
    pool: Seconds = 1.0
    first_token: Seconds = 20.0
    idle: Seconds = 30.0
    total: Seconds = 120.0
    stream_total: Seconds = 600.0

    @model_validator(mode="after")
    def _stream_cap_past_the_first_wait(self) -> TimeoutsConfig:
        """A stream's length counts from its attempt's start, so a cap no longer than the wait
        for its first chunk would cut a stream that starts late but healthy right away. After
        validation, so the default 600 s is checked against a long first_token / total too."""
        first = min(self.first_token, self.total)
        if self.stream_total <= first:
            given = "" if "stream_total" in self.model_fields_set else ", the default,"
            raise _AtField(
                "stream_total",
                f"{self.stream_total:g} s{given} must be longer than the wait for a stream's "
                f"first chunk ({first:g} s: the shorter of first_token and total)",
            )
        return self

    def limits(self) -> Timeouts:
        """These limits as the router and the adapters take them."""
        return Timeouts(
            connect=self.connect,
            pool=self.pool,
            first_token=self.first_token,
            idle=self.idle,
            total=self.total,
            stream_total=self.stream_total,
        )


class ProviderConfig(_Frozen):
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: EnvName | None = None
    default_model: str | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    # Connections open to the provider at once; 0: no limit. A stream holds its connection for
    # its whole length, so this is also the provider's concurrent streams (README "Limits").
    max_connections: Annotated[int, Field(ge=0)] = 4096
    # What the gateway holds of one answer: a whole body, one stream event (README "Limits").
    max_response_bytes: Annotated[int, Field(ge=64 * 1024)] = 32 * 1024 * 1024
    max_event_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024
    # An http:// proxy URL, or "none" to ignore HTTPS_PROXY / HTTP_PROXY (README "Egress proxy").
    proxy: str | None = None
    # Continues an answer from a trailing assistant turn; None: by kind (README "Continuation").
    prefill: bool | None = None
    # openai_compatible only:
    provider_name: str | None = None  # gen_ai.provider.name, e.g. "ollama", "openrouter"
    auth: Literal["bearer", "api-key", "none"] = "bearer"
    path: str = "/chat/completions"
    query: dict[str, str] = Field(default_factory=dict)
    stream_usage: bool = True
    # openai and openai_compatible: the organization and project calls are billed to
    organization: str | None = None
    project: str | None = None
    # openai only: "responses" calls the Responses API (models offered only there, and the
    # /v1/responses front's requests pass through as they came); "chat": chat completions
    api: Literal["chat", "responses"] = "chat"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """A URL the provider client can call; the message never repeats it (it may hold a key)."""
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http:// or https:// URL with a host, e.g. https://api.openai.com/v1"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not hold a user name or password: secrets come from the environment "
                "(api_key_env)"
            )
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        try:
            parts.hostname.encode("idna")
        except UnicodeError:
            raise ValueError(
                "has a host name that is not valid (an empty or too long label)"
            ) from None
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        """An http:// URL without credentials (those come from the environment), or none."""
        if value is None or value.strip().lower() == "none":
            return value
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("must be an http:// URL with a host (e.g. http://proxy:3128) or none")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not hold a user name or password: a proxy that needs them is set with "
                "HTTPS_PROXY / HTTP_PROXY in the environment"
            )
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        return value

    @model_validator(mode="after")
    def _base_url_known(self) -> Self:
        if self.base_url is None and self.kind is ProviderKind.OPENAI_COMPATIBLE:
            raise ValueError("base_url is required for kind openai_compatible")
        return self

    @model_validator(mode="after")
    def _responses_for_openai(self) -> Self:
        if self.api == "responses" and self.kind is not ProviderKind.OPENAI:
            raise _AtField("api", f"responses is offered by kind openai, not {self.kind.value}")
        return self

    @model_validator(mode="after")
    def _account_where_it_is_sent(self) -> Self:
        """organization / project are OpenAI headers: set elsewhere, they would do nothing."""
        openai = (ProviderKind.OPENAI, ProviderKind.OPENAI_COMPATIBLE)
        for key in ("organization", "project"):
            value = getattr(self, key)
            if value is not None and self.kind not in openai:
                raise _AtField(
                    key, f"is sent only to kind openai or openai_compatible, not {self.kind.value}"
                )
            if value is not None and (not value.strip() or any(c in value for c in "\r\n")):
                raise _AtField(key, "must be one line of text (it goes into a header)")
        return self

    @property
    def takes_prefill(self) -> bool:
        """Anthropic's API and most OpenAI-compatible servers continue a trailing assistant
        turn; OpenAI's own API and Gemini's answer it as a new turn instead."""
        if self.prefill is not None:
            return self.prefill
        return self.kind in (ProviderKind.ANTHROPIC, ProviderKind.OPENAI_COMPATIBLE)

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.kind]


Capability = Literal["image", "document", "tools", "response_format"]


class TargetConfig(_Frozen):
    provider: str
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    reasoning: bool | None = None  # takes reasoning parameters; unset: told by the model's name
    lacks: tuple[Capability, ...] = ()  # what the model cannot honour (a text-only model: image)


class HedgeConfig(_Frozen):
    """``tiers.<name>.hedge``: start the next target beside an attempt that has produced nothing
    after ``after`` seconds, or after ``p50``/``p90``/``p95``/``p99`` of the target's own recent
    times to answer (once it has ``min_samples``); the first answer wins. At most ``per_second``
    hedges a second in the tier, one per request."""

    after: Annotated[float, Field(gt=0)] | Literal["p50", "p90", "p95", "p99"]
    per_second: Annotated[float, Field(gt=0)] = 1.0
    min_samples: Annotated[int, Field(ge=1)] = 20

    def plan(self) -> Hedge:
        if isinstance(self.after, str):
            quantile = int(self.after[1:]) / 100
            return Hedge(
                quantile=quantile, per_second=self.per_second, min_samples=self.min_samples
            )
        return Hedge(after=self.after, per_second=self.per_second, min_samples=self.min_samples)


class DegradeConfig(_Frozen):
    """``tiers.<name>.degrade``: the rungs a tier steps down when every target of it failed
    (``step_down`` tier, ``cache``d answer, ``static`` text; each opt-in, in that order), and the
    triage of its requests while it is degraded (README "When a whole tier is down")."""

    step_down: str | None = None
    cache: bool = False
    static: Annotated[str, Field(min_length=1, max_length=64 * 1024)] | None = None
    priority: Priority = Priority.CRITICAL
    healthy_below: Annotated[float, Field(ge=0, le=1)] = 0.0

    def plan(self) -> Degrade:
        return Degrade(
            step_down=self.step_down,
            cache=self.cache,
            static=self.static,
            priority=self.priority,
            healthy_below=self.healthy_below,
        )


class ShadowConfig(_Frozen):
    """``tiers.<name>.shadow``: a ``share`` of the tier's served requests is sent again to
    ``target`` after the answer, off the request path, to compare (README "Shadow comparison").
    At most ``max_concurrency`` calls at once and ``max_queue`` waiting; at most
    ``daily_requests`` a UTC day, and ``daily_usd`` at the target's price (spend.prices)."""

    target: TargetConfig
    share: Annotated[float, Field(gt=0, le=1)]
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    max_queue: Annotated[int, Field(ge=0, le=10_000)] = 16
    daily_requests: Annotated[int, Field(ge=1)] = 1000
    daily_usd: Annotated[float, Field(gt=0)] | None = None


class TierConfig(_Frozen):
    strategy: Strategy = Strategy.PRIORITY
    targets: Annotated[tuple[TargetConfig, ...], Field(min_length=1)]
    context_fallback: TargetConfig | None = None
    hedge: HedgeConfig | None = None
    degrade: DegradeConfig = DegradeConfig()
    # The share of requests its second target serves first, to keep it measured (README
    # "Knowing the backups"); 0: off.
    warm_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    shadow: ShadowConfig | None = None


class RetryConfig(_Frozen):
    max_tries_per_provider: Annotated[int, Field(ge=1, le=10)] = 2
    max_retry_after: Annotated[float, Field(ge=0)] = 5.0
    wait_retry_after_under: Annotated[float, Field(ge=0)] = 3.0
    backoff_base: Annotated[float, Field(ge=0)] = 0.2
    backoff_cap: Annotated[float, Field(ge=0)] = 2.0


class HeadroomConfig(_Frozen):
    """``routing.headroom``: a target whose rate-limit headers say less than ``below`` of its
    requests or tokens are left gets new requests only after the others of its plan, until its
    window resets (a reading with no reset time holds ``hold_seconds``). 0: headers are read
    (the gauges) and nothing moves."""

    below: Annotated[float, Field(ge=0, lt=1)] = 0.0
    hold_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0


class RoutingConfig(_Frozen):
    deadline_seconds: Seconds = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 6
    retry: RetryConfig = RetryConfig()
    headroom: HeadroomConfig = HeadroomConfig()


class KillSwitchConfig(_Frozen):
    pin: str | None = None
    disable: tuple[str, ...] = ()


class SamplingConfig(_Frozen):
    """``telemetry.sampling``: tail sampling, decided once a request's trace has ended. Every
    trace with a failed attempt, a retry, failover, rescue, hedge or continuation, or a route
    that did not simply serve, is kept; of the rest, ``healthy_share`` (1: all, tail sampling
    off; 0.01: one in a hundred). README "Telemetry"."""

    healthy_share: Annotated[float, Field(ge=0, le=1)] = 1.0


class TelemetryConfig(_Frozen):
    service_name: str = "llm-failover"
    capture_content: bool = False  # record prompts/completions on spans: opt-in only
    sampling: SamplingConfig = SamplingConfig()


class TranslationConfig(_Frozen):
    """Requests served by a provider of another wire format than the client's.

    The translation carries what the formats share; what it cannot carry (``cache_control``,
    ``thinking``, images, ``response_format``, a field it does not know, ...) makes the router
    skip such a provider for that request. ``droppable`` names features a provider of another
    format may serve without: the request is then served with the feature dropped, counted
    in ``failover.features.dropped`` and logged once.
    """

    droppable: tuple[str, ...] = ()


class StateConfig(_Frozen):
    # file: this process decides alone, its state in `path`; redis: one decision for a fleet of
    # replicas (controller/fleet, the `redis:` block; README "Fleet mode").
    backend: Literal["file", "redis"] = "file"
    redis: FleetConfig = FleetConfig()
    path: str = "failover-state.json"
    # The audit log beside it (controller/control/audit.py): rotated past this size, this many
    # files kept in all.
    audit_max_bytes: Annotated[int, Field(ge=4096)] = 4 * 1024 * 1024
    audit_files: Annotated[int, Field(ge=1, le=100)] = 5


class CacheConfig(_Frozen):
    """``cache``: the last good answers of tiers with ``degrade.cache``, served only when every
    provider a request could go to failed. ``path`` None: beside the state file
    (``<state>.cache.sqlite``); memory only when the state has no file either."""

    path: str | None = None
    max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024
    ttl_seconds: Annotated[float, Field(gt=0)] = 86400.0


class ClientPriorityConfig(_Frozen):
    """``gateway.client_priorities[]``: the client keys in ``keys_env`` (a comma-separated
    list, like ``api_keys_env``) are client keys too, and their requests get ``priority`` when
    they send no ``x-failover-priority`` (README "Triage and deferred jobs")."""

    keys_env: EnvName
    priority: Priority


class CallbacksConfig(_Frozen):
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


class JobsConfig(_Frozen):
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


class PriceConfig(_Frozen):
    """``spend.prices.<provider>.<model>``: USD per million tokens (the user's prices; nothing
    is fetched). ``cached_input`` applies to input tokens a provider reports as cache reads
    (unset: they cost ``input``)."""

    input: USD = 0.0
    output: USD = 0.0
    cached_input: USD | None = None


class BudgetConfig(_Frozen):
    """A daily budget in USD (UTC day): alerts at 80 % and 100 %; with ``enforce``, at 100 %
    traffic moves to the next target until the day ends."""

    daily_usd: Annotated[float, Field(gt=0)]
    enforce: bool = False


class BudgetsConfig(_Frozen):
    providers: dict[str, BudgetConfig] = Field(default_factory=dict)
    tiers: dict[str, BudgetConfig] = Field(default_factory=dict)


class SpendConfig(_Frozen):
    """``spend``: prices per provider and model (``*``: any other model of the provider) and
    daily budgets (README "Spend and budgets"). ``path`` keeps the day's totals across a
    restart; unset, beside ``state.path`` (``<state>.spend.json``); "" keeps them in memory."""

    prices: dict[str, dict[str, PriceConfig]] = Field(default_factory=dict)
    budgets: BudgetsConfig = BudgetsConfig()
    path: str | None = None


class GatewayConfig(_Frozen):
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
    # An answer's `model` names the model that served it, as the providers' own APIs do; true
    # answers with the name the client sent instead.
    echo_requested_model: bool = False
    # More client keys, each list with the priority its requests get by default (triage).
    client_priorities: tuple[ClientPriorityConfig, ...] = ()


class Config(_Frozen):
    providers: Annotated[dict[str, ProviderConfig], Field(min_length=1)]
    tiers: Annotated[dict[str, TierConfig], Field(min_length=1)]
    # Front model name or glob pattern → tier (lookup order: controller/_model_names.py).
    aliases: dict[str, str] = Field(default_factory=dict)
    default_tier: str | None = None  # the tier of a model name nothing else matches; else 404
    routing: RoutingConfig = RoutingConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    controller: TripwireConfig = TripwireConfig()
    notify: NotifyConfig = NotifyConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    translation: TranslationConfig = TranslationConfig()
    state: StateConfig = StateConfig()
    cache: CacheConfig = CacheConfig()
    gateway: GatewayConfig = GatewayConfig()
    jobs: JobsConfig = JobsConfig()
    spend: SpendConfig = SpendConfig()  # prices and daily budgets (controller/routing/_spend.py)
    promql: PromqlConfig = PromqlConfig()  # PromQL tripwires (controller/control/promql.py)

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        known = ", ".join(sorted(self.providers))
        for name, tier in self.tiers.items():
            fallback = (tier.context_fallback,) if tier.context_fallback else ()
            for i, target in enumerate((*tier.targets, *fallback)):
                if target.provider not in self.providers:
                    where = f"targets.{i}" if i < len(tier.targets) else "context_fallback"
                    raise _Ref(f"tiers.{name}.{where}.provider", target.provider, known)
        tiers = ", ".join(sorted(self.tiers))
        for name, tier in self.tiers.items():
            lower, seen = tier.degrade.step_down, [name]
            if lower is not None and lower not in self.tiers:
                raise _Ref(f"tiers.{name}.degrade.step_down", lower, tiers, "tier")
            while lower is not None:  # a ladder ends: no tier steps down to itself
                if lower in seen:
                    loop = " -> ".join([*seen, lower])
                    raise _Loop(("tiers", name, "degrade", "step_down"), loop)
                seen.append(lower)
                lower = self.tiers[lower].degrade.step_down if lower in self.tiers else None
        for alias, tier_name in self.aliases.items():
            if tier_name not in self.tiers:
                raise _Ref(("aliases", alias), tier_name, tiers, "tier")
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise _Ref("default_tier", self.default_tier, tiers, "tier")
        ks = self.kill_switch
        if ks.pin is not None and ks.pin not in self.providers:
            raise _Ref("kill_switch.pin", ks.pin, known)
        for i, name in enumerate(ks.disable):
            if name not in self.providers:
                raise _Ref(f"kill_switch.disable.{i}", name, known)
        self._spend_refs_exist(known)
        self._promql_rules_exist(known)
        return self

    def _promql_rules_exist(self, known: str) -> None:
        """A PromQL rule's target is a provider, or a model a tier routes to (``p/m``)."""
        targets = {f"{t.provider}/{t.model}" for tier in self.tiers.values() for t in tier.targets}
        names: set[str] = set()
        for i, rule in enumerate(self.promql.rules):
            key = ("promql", "rules", str(i))
            if rule.name in names:
                raise _At((*key, "name"), f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
            provider, _, model = rule.target.partition("/")
            if provider not in self.providers:
                raise _Ref((*key, "target"), provider, known)
            if model and rule.target not in targets:
                listed = ", ".join(sorted(targets))
                raise _Ref((*key, "target"), rule.target, listed, "provider/model")

    def _spend_refs_exist(self, known: str) -> None:
        """Prices and budgets name providers and tiers that exist; a shadow's target is a
        provider, and has a price when the shadow has a daily_usd allowance."""
        for provider in self.spend.prices:
            if provider not in self.providers:
                raise _Ref(("spend", "prices", provider), provider, known)
        for provider in self.spend.budgets.providers:
            if provider not in self.providers:
                raise _Ref(("spend", "budgets", "providers", provider), provider, known)
        tiers = ", ".join(sorted(self.tiers))
        for tier in self.spend.budgets.tiers:
            if tier not in self.tiers:
                raise _Ref(("spend", "budgets", "tiers", tier), tier, tiers, "tier")
        for name, tier_config in self.tiers.items():
            shadow = tier_config.shadow
            if shadow is None:
                continue
            where = ("tiers", name, "shadow", "target", "provider")
            if shadow.target.provider not in self.providers:
                raise _Ref(where, shadow.target.provider, known)
            prices = self.spend.prices.get(shadow.target.provider, {})
            if shadow.daily_usd is not None and not ({shadow.target.model, "*"} & set(prices)):
                raise _Unpriced(("tiers", name, "shadow", "daily_usd"), shadow.target)

    def effective_kill_switch(
        self, env: Mapping[str, str] | None = None, *, warn: bool = True
    ) -> KillSwitch:
        """The kill switch in force: environment overrides win over the file.

        Start-up and every reload call this; with ``warn``, a switch that leaves tiers with
        nothing to route to is logged as a warning naming them, and still returned (applied):
        the tiers that do work must follow the operator's switch.
        """
        switch, key = self._kill_switch_and_key(os.environ if env is None else env)
        problem = self.unroutable(switch) if warn else ""
        if problem:
            log.warning("kill switch %s (%s) applied, but %s", switch.describe(), key, problem)
        return switch

    def _kill_switch_and_key(self, env: Mapping[str, str]) -> tuple[KillSwitch, str]:
        """The kill switch in force and the key that sets it (a variable, or the file's key)."""
        pin = env.get(ENV_PIN, "").strip() or self.kill_switch.pin
        raw = env.get(ENV_DISABLE)
        disable = (
            tuple(p.strip() for p in raw.split(",") if p.strip())
            if raw is not None
            else self.kill_switch.disable
        )
        for var, names in ((ENV_PIN, (pin,) if pin else ()), (ENV_DISABLE, disable)):
            for name in names:
                if name not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise ConfigError(f"unknown provider {name!r} (known: {known})", key=var)
        if pin:
            key = ENV_PIN if env.get(ENV_PIN, "").strip() else "kill_switch.pin"
        else:
            key = ENV_DISABLE if raw is not None else "kill_switch.disable"
        return KillSwitch(pin=pin, disable=disable), key

    def unroutable_tiers(self, switch: KillSwitch) -> list[str]:
        """The tiers ``switch`` leaves with nothing to try, by the rule of
        :func:`controller.routing.plan.make_plan`: a pin wins over disable and reaches a tier
        that does not list it through the provider's own model (its ``default_model``, else its
        first use in any tier: ``runtime.probe_models``); disable removes from every tier."""
        members = {name: {t.provider for t in tier.targets} for name, tier in self.tiers.items()}
        if switch.pin is not None:
            provider = self.providers.get(switch.pin)
            if provider is not None and provider.default_model:
                return []
            return [] if any(switch.pin in m for m in members.values()) else list(members)
        return [name for name, m in members.items() if m <= set(switch.disable)]

    def unroutable(self, switch: KillSwitch) -> str:
        """What ``switch`` leaves unroutable, in words, or "" when every tier can route."""
        tiers = self.unroutable_tiers(switch)
        if not tiers:
            return ""
        one = len(tiers) == 1
        what = f"tier{'' if one else 's'} {', '.join(tiers)} {'has' if one else 'have'}"
        if switch.pin is not None:
            why = f"{switch.pin} is in no tier and has no default_model: no model to send"
        else:
            why = f"all {'its' if one else 'their'} providers are disabled"
        return f"{what} no provider to route to ({why}); requests fail until the switch changes"

    def explain_failure(
        self, name: str, err: ProviderError, *, within: float, env: Mapping[str, str] | None = None
    ) -> str:
        """Why provider ``name`` failed a request cut to ``within`` seconds, in one line that
        says what to look at; its API key is masked out of the provider's own message."""
        provider = self.providers[name]
        if isinstance(err, ProviderTimeout):
            limit = min(getattr(provider.timeouts, err.phase, within), within)
            return f"timed out ({err.phase}): {_PHASES.get(err.phase, 'no answer in')} {limit:g} s"
        env = os.environ if env is None else env
        secret = env.get(provider.api_key_env or "", "")
        message = err.message.replace(secret, "***") if secret else err.message
        if isinstance(err, ConnectionFailed):
            return f"connection failed: {message}"
        status = f"HTTP {err.status}" if err.status else err.error_type
        if isinstance(err, AuthFailed):
            where = f"${provider.api_key_env}" if provider.api_key_env else "no api_key_env set"
            return f"authentication failed ({status}): {message!r}; check the key ({where})"
        return f"{status} ({err.error_type}): {message!r}"


_PHASES = {
    "connect": "no connection within",
    "first_token": "connected, but no answer within",
    "idle": "the answer stalled for",
    "total": "no complete answer within",
}


class _AtField(ValueError):
    """A model's own check about one of its fields: the error points at that field's line."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class _Ref(ValueError):
    """A dangling reference; carries its key so the error can point at its line. A dotted
    string, or the parts as a tuple where a part may hold a dot (``aliases.gpt-4.1*``)."""

    def __init__(
        self, key: str | tuple[str, ...], value: str, known: str, what: str = "provider"
    ) -> None:
        self.loc = key.split(".") if isinstance(key, str) else list(key)
        super().__init__(f"unknown {what} {value!r} (known: {known or 'none'})")


class _At(_Ref):
    """A problem at a key, in its own words (not a dangling reference)."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        self.loc = list(key)
        ValueError.__init__(self, message)


class _Unpriced(_Ref):
    """A shadow's daily_usd allowance for a target that has no price to count it by."""

    def __init__(self, key: tuple[str, ...], target: TargetConfig) -> None:
        self.loc = list(key)
        ValueError.__init__(
            self,
            f"needs a price for {target.provider} {target.model!r} in spend.prices (or "
            f"{target.provider} '*') to count the shadow's spend by",
        )


class _Loop(_Ref):
    """A ladder of tiers that steps down in a loop (``step_down``), at the key that closes it."""

    def __init__(self, key: tuple[str, ...], loop: str) -> None:
        self.loc = list(key)
        ValueError.__init__(self, f"steps down in a loop ({loop}): a ladder must end")


# ------------------------------------------------------------------------------------ loading
def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError naming the key and line."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=str(source)) from None
    return parse_config_bytes(data, source=str(source))


def parse_config_bytes(data: bytes, *, source: str) -> Config:
    """:func:`parse_config` for the raw bytes of a file, which must be UTF-8 text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", source=source) from None
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str = "config") -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", line=line, source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("the file must be a YAML mapping (key: value)", source=source)
    _refuse_duplicate_keys(node, [], source)
    try:
        data, long_form = expand_models(data)
    except ShorthandError as exc:
        key = ".".join(exc.loc)
        raise ConfigError(str(exc), key=key, line=_line_of(node, exc.loc), source=source) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, node, source, long_form) from None


def _refuse_duplicate_keys(node: yaml.Node | None, path: list[str], source: str) -> None:
    """YAML lets a key appear twice in one mapping and keeps the last: a second ``tiers.fast``
    or ``kill_switch`` block would silently replace the first (and ``failover kill-switch``
    would edit the one that does not count). Refused instead, naming both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":  # merge keys repeat
                continue
            line = key.start_mark.line + 1
            if key.value in seen:
                message = f"duplicate key (first on line {seen[key.value]}; YAML keeps only one)"
                dotted = ".".join([*path, key.value])
                raise ConfigError(message, key=dotted, line=line, source=source)
            seen[key.value] = line
            _refuse_duplicate_keys(value, [*path, key.value], source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, [*path, str(index)], source)


def _config_error(
    exc: ValidationError, node: yaml.Node | None, source: str, long_form: dict[str, bool]
) -> ConfigError:
    errors = exc.errors()
    # A misspelled key usually also leaves a required one missing; the spelling is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"] if not _is_type_tag(str(part))]
    message = first["msg"].removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _Ref):
        loc = cause.loc
    elif isinstance(cause, _AtField):
        loc = [*loc, cause.field]
    elif first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see deploy/failover.example.yaml)"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    loc = origin(loc, long_form)  # a tier written under models: is reported there
    return ConfigError(message, key=".".join(loc), line=_line_of(node, loc), source=source)


def _is_type_tag(part: str) -> bool:
    """A part pydantic adds to the path of an error inside a union (``constrained-float``,
    ``literal['p50','p95']``): not a key of the file."""
    return "[" in part or part.startswith(("constrained-", "function-")) or part in _SCALARS


_SCALARS = frozenset({"int", "float", "str", "bool"})


def _line_of(node: yaml.Node | None, loc: list[str], *, exact: bool = False) -> int | None:
    """The 1-based line of the deepest node along ``loc`` that exists in the document (with
    ``exact``, None unless the whole of ``loc`` does: a default is on no line)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit():
            items = node.value
            if int(part) < len(items):
                child = items[int(part)]
                line = child.start_mark.line + 1
        if child is None:
            return None if exact else line
        node = child
    return line


def readiness_problems(
    config: Config, source: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> list[ConfigError]:
    """What a valid file can still get wrong, for ``failover check``: a kill switch that leaves
    tiers unroutable, a state file that cannot be saved. Each names its key and line."""
    problems: list[ConfigError] = []
    switch, key = config._kill_switch_and_key(os.environ if env is None else env)
    unroutable = config.unroutable(switch)
    if unroutable:
        problems.append(_located(source, key, f"{switch.describe()}: {unroutable}"))
    if config.state.path:
        store = FileStateStore(config.state.path)
        problem = store.problem()
        if problem:
            consequence = "routing works, but a restart forgets the controller's decisions"
            message = f"{problem}: {store.path} cannot be saved ({consequence})"
            problems.append(_located(source, "state.path", message))
    return problems


def _located(source: str | os.PathLike[str], key: str, message: str) -> ConfigError:
    """A problem at ``key``: an environment variable, or a dotted key found in the file."""
    if "." not in key:
        return ConfigError(message, key=key, source="environment")
    try:
        node = yaml.compose(Path(source).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        node = None
    line = _line_of(node, key.split("."), exact=True)
    return ConfigError(message, key=key, line=line, source=str(source))


def resolve_secret(env_name: str | None, *, key: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a secret's environment variable, or a ConfigError naming both."""
    if not env_name:
        return ""
    env = os.environ if env is None else env
    value = env.get(env_name, "")
    if not value:
        raise ConfigError(f"environment variable {env_name} is not set", key=key)
    return value
