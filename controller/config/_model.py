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

This module holds the whole document (:class:`Config`, its cross-references) and its loading;
the sections are beside it and re-exported here: providers (``_model_providers.py``), tiers,
routing and kill switch (``_model_tiers.py``), the other sections (``_model_sections.py``), the
frozen base and the located errors (``_model_base.py``), and the YAML lines that errors point
at (``_model_yaml.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from controller._errors import (
    AuthFailed,
    ConfigError,
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
)
from controller.config._model_base import At, Frozen, Loop, Ref, Seconds, Unpriced
from controller.config._model_providers import (
    DEFAULT_BASE_URLS,
    ProviderConfig,
    ProviderKind,
    TimeoutsConfig,
)
from controller.config._model_sections import (
    USD,
    BudgetConfig,
    BudgetsConfig,
    CacheConfig,
    CallbacksConfig,
    ClientPriorityConfig,
    GatewayConfig,
    JobsConfig,
    PriceConfig,
    SamplingConfig,
    SpendConfig,
    StateConfig,
    TelemetryConfig,
    TranslationConfig,
)
from controller.config._model_tiers import (
    Capability,
    DegradeConfig,
    HeadroomConfig,
    HedgeConfig,
    KillSwitchConfig,
    RetryConfig,
    RoutingConfig,
    ShadowConfig,
    TargetConfig,
    TierConfig,
)
from controller.config._model_yaml import config_error, line_of, located, refuse_duplicate_keys
from controller.config._shorthand import ShorthandError
from controller.config._shorthand import expand as expand_models
from controller.control.config import TripwireConfig
from controller.control.promql import PromqlConfig
from controller.control.state import KillSwitch
from controller.control.store import FileStateStore
from controller.notify.config import NotifyConfig

__all__ = [
    "DEFAULT_BASE_URLS",
    "ENV_DISABLE",
    "ENV_PIN",
    "USD",
    "BudgetConfig",
    "BudgetsConfig",
    "CacheConfig",
    "CallbacksConfig",
    "Capability",
    "ClientPriorityConfig",
    "Config",
    "DegradeConfig",
    "GatewayConfig",
    "HeadroomConfig",
    "HedgeConfig",
    "JobsConfig",
    "KillSwitchConfig",
    "PriceConfig",
    "ProviderConfig",
    "ProviderKind",
    "RetryConfig",
    "RoutingConfig",
    "SamplingConfig",
    "Seconds",
    "ShadowConfig",
    "SpendConfig",
    "StateConfig",
    "TargetConfig",
    "TelemetryConfig",
    "TierConfig",
    "TimeoutsConfig",
    "TranslationConfig",
    "load_config",
    "parse_config",
    "parse_config_bytes",
    "readiness_problems",
    "resolve_secret",
]

ENV_PIN = "FAILOVER_KILL_SWITCH_PIN"
ENV_DISABLE = "FAILOVER_KILL_SWITCH_DISABLE"

log = logging.getLogger(__name__)


class Config(Frozen):
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
                    raise Ref(f"tiers.{name}.{where}.provider", target.provider, known)
        tiers = ", ".join(sorted(self.tiers))
        for name, tier in self.tiers.items():
            lower, seen = tier.degrade.step_down, [name]
            if lower is not None and lower not in self.tiers:
                raise Ref(f"tiers.{name}.degrade.step_down", lower, tiers, "tier")
            while lower is not None:  # a ladder ends: no tier steps down to itself
                if lower in seen:
                    loop = " -> ".join([*seen, lower])
                    raise Loop(("tiers", name, "degrade", "step_down"), loop)
                seen.append(lower)
                lower = self.tiers[lower].degrade.step_down if lower in self.tiers else None
        for alias, tier_name in self.aliases.items():
            if tier_name not in self.tiers:
                raise Ref(("aliases", alias), tier_name, tiers, "tier")
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise Ref("default_tier", self.default_tier, tiers, "tier")
        ks = self.kill_switch
        if ks.pin is not None and ks.pin not in self.providers:
            raise Ref("kill_switch.pin", ks.pin, known)
        for i, name in enumerate(ks.disable):
            if name not in self.providers:
                raise Ref(f"kill_switch.disable.{i}", name, known)
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
                raise At((*key, "name"), f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
            provider, _, model = rule.target.partition("/")
            if provider not in self.providers:
                raise Ref((*key, "target"), provider, known)
            if model and rule.target not in targets:
                listed = ", ".join(sorted(targets))
                raise Ref((*key, "target"), rule.target, listed, "provider/model")

    def _spend_refs_exist(self, known: str) -> None:
        """Prices and budgets name providers and tiers that exist; a shadow's target is a
        provider, and has a price when the shadow has a daily_usd allowance."""
        for provider in self.spend.prices:
            if provider not in self.providers:
                raise Ref(("spend", "prices", provider), provider, known)
        for provider in self.spend.budgets.providers:
            if provider not in self.providers:
                raise Ref(("spend", "budgets", "providers", provider), provider, known)
        tiers = ", ".join(sorted(self.tiers))
        for tier in self.spend.budgets.tiers:
            if tier not in self.tiers:
                raise Ref(("spend", "budgets", "tiers", tier), tier, tiers, "tier")
        for name, tier_config in self.tiers.items():
            shadow = tier_config.shadow
            if shadow is None:
                continue
            where = ("tiers", name, "shadow", "target", "provider")
            if shadow.target.provider not in self.providers:
                raise Ref(where, shadow.target.provider, known)
            prices = self.spend.prices.get(shadow.target.provider, {})
            if shadow.daily_usd is not None and not ({shadow.target.model, "*"} & set(prices)):
                raise Unpriced(("tiers", name, "shadow", "daily_usd"), shadow.target)

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
    refuse_duplicate_keys(node, [], source)
    try:
        data, long_form = expand_models(data)
    except ShorthandError as exc:
        key = ".".join(exc.loc)
        raise ConfigError(str(exc), key=key, line=line_of(node, exc.loc), source=source) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, node, source, long_form) from None


def readiness_problems(
    config: Config, source: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> list[ConfigError]:
    """What a valid file can still get wrong, for ``failover check``: a kill switch that leaves
    tiers unroutable, a state file that cannot be saved. Each names its key and line."""
    problems: list[ConfigError] = []
    switch, key = config._kill_switch_and_key(os.environ if env is None else env)
    unroutable = config.unroutable(switch)
    if unroutable:
        problems.append(located(source, key, f"{switch.describe()}: {unroutable}"))
    if config.state.path:
        store = FileStateStore(config.state.path)
        problem = store.problem()
        if problem:
            consequence = "routing works, but a restart forgets the controller's decisions"
            message = f"{problem}: {store.path} cannot be saved ({consequence})"
            problems.append(located(source, "state.path", message))
    return problems


def resolve_secret(env_name: str | None, *, key: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a secret's environment variable, or a ConfigError naming both."""
    if not env_name:
        return ""
    env = os.environ if env is None else env
    value = env.get(env_name, "")
    if not value:
        raise ConfigError(f"environment variable {env_name} is not set", key=key)
    return value
