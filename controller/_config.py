"""The config file: one YAML document validated into typed, frozen objects.

Errors name the dotted key and the line (``failover.yaml:14: tiers.fast.targets.0.provider:
unknown provider 'opnai' (known: anthropic, openai)``). Secrets never live in the file: a
provider names the environment variable that holds its key (``api_key_env``).

Environment overrides for emergencies (they win over the file, and are shown as such):
``FAILOVER_KILL_SWITCH_PIN=<provider>`` and ``FAILOVER_KILL_SWITCH_DISABLE=<p1>,<p2>``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller._env_name import EnvName
from controller._errors import ConfigError
from controller.control.config import TripwireConfig
from controller.control.state import KillSwitch
from controller.notify.config import NotifyConfig
from controller.routing.plan import Strategy

ENV_PIN = "FAILOVER_KILL_SWITCH_PIN"
ENV_DISABLE = "FAILOVER_KILL_SWITCH_DISABLE"


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
    connect: Seconds = 5.0
    first_token: Seconds = 20.0
    idle: Seconds = 30.0
    total: Seconds = 120.0


class ProviderConfig(_Frozen):
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: EnvName | None = None
    default_model: str | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 256
    # openai_compatible only:
    provider_name: str | None = None  # gen_ai.provider.name, e.g. "ollama", "openrouter"
    auth: Literal["bearer", "api-key", "none"] = "bearer"
    path: str = "/chat/completions"
    query: dict[str, str] = Field(default_factory=dict)
    stream_usage: bool = True

    @model_validator(mode="after")
    def _base_url_known(self) -> Self:
        if self.base_url is None and self.kind is ProviderKind.OPENAI_COMPATIBLE:
            raise ValueError("base_url is required for kind openai_compatible")
        return self

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.kind]


class TargetConfig(_Frozen):
    provider: str
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0


class TierConfig(_Frozen):
    strategy: Strategy = Strategy.PRIORITY
    targets: Annotated[tuple[TargetConfig, ...], Field(min_length=1)]
    context_fallback: TargetConfig | None = None


class RetryConfig(_Frozen):
    max_tries_per_provider: Annotated[int, Field(ge=1, le=10)] = 2
    max_retry_after: Annotated[float, Field(ge=0)] = 5.0
    backoff_base: Annotated[float, Field(ge=0)] = 0.2
    backoff_cap: Annotated[float, Field(ge=0)] = 2.0


class RoutingConfig(_Frozen):
    deadline_seconds: Seconds = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 6
    retry: RetryConfig = RetryConfig()


class KillSwitchConfig(_Frozen):
    pin: str | None = None
    disable: tuple[str, ...] = ()


class TelemetryConfig(_Frozen):
    service_name: str = "llm-failover"
    capture_content: bool = False  # record prompts/completions on spans: opt-in only


class StateConfig(_Frozen):
    path: str = "failover-state.json"


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


class Config(_Frozen):
    providers: Annotated[dict[str, ProviderConfig], Field(min_length=1)]
    tiers: Annotated[dict[str, TierConfig], Field(min_length=1)]
    aliases: dict[str, str] = Field(default_factory=dict)  # front model name → tier
    routing: RoutingConfig = RoutingConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    controller: TripwireConfig = TripwireConfig()
    notify: NotifyConfig = NotifyConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    state: StateConfig = StateConfig()
    gateway: GatewayConfig = GatewayConfig()

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        known = ", ".join(sorted(self.providers))
        for name, tier in self.tiers.items():
            fallback = (tier.context_fallback,) if tier.context_fallback else ()
            for i, target in enumerate((*tier.targets, *fallback)):
                if target.provider not in self.providers:
                    where = f"targets.{i}" if i < len(tier.targets) else "context_fallback"
                    raise _Ref(f"tiers.{name}.{where}.provider", target.provider, known)
        for alias, tier_name in self.aliases.items():
            if tier_name not in self.tiers:
                raise _Ref(f"aliases.{alias}", tier_name, ", ".join(sorted(self.tiers)), "tier")
        ks = self.kill_switch
        if ks.pin is not None and ks.pin not in self.providers:
            raise _Ref("kill_switch.pin", ks.pin, known)
        for i, name in enumerate(ks.disable):
            if name not in self.providers:
                raise _Ref(f"kill_switch.disable.{i}", name, known)
        return self

    def effective_kill_switch(self, env: Mapping[str, str] | None = None) -> KillSwitch:
        """The kill switch in force: environment overrides win over the file."""
        env = os.environ if env is None else env
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
        return KillSwitch(pin=pin, disable=disable)


class _Ref(ValueError):
    """A dangling reference; carries the dotted key so the error can point at its line."""

    def __init__(self, key: str, value: str, known: str, what: str = "provider") -> None:
        self.key = key
        super().__init__(f"unknown {what} {value!r} (known: {known or 'none'})")


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
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, node, source) from None


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


def _config_error(exc: ValidationError, node: yaml.Node | None, source: str) -> ConfigError:
    errors = exc.errors()
    # A misspelled key usually also leaves a required one missing; the spelling is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _Ref):
        loc = cause.key.split(".")
    elif first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see deploy/failover.example.yaml)"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(message, key=".".join(loc), line=_line_of(node, loc), source=source)


def _line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the deepest node along ``loc`` that exists in the document."""
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
            break
        node = child
    return line


def resolve_secret(env_name: str | None, *, key: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a secret's environment variable, or a ConfigError naming both."""
    if not env_name:
        return ""
    env = os.environ if env is None else env
    value = env.get(env_name, "")
    if not value:
        raise ConfigError(f"environment variable {env_name} is not set", key=key)
    return value
