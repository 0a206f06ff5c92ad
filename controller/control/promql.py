"""PromQL tripwires (opt-in): a rule trips its target while a PromQL expression holds.

The ``promql:`` config section. Each rule names a target (a provider, or ``provider/model``)
and an expression evaluated against a Prometheus (a latency SLO burn rate, an error ratio
summed across clusters, anything the gateway's own windows cannot see). The expression holds
the way an alerting rule's does: it returns at least one series (a scalar holds when it is not
0). Held for ``for_seconds`` it is *firing*, and :func:`~controller.control.decide.decide` trips
the target with cause ``promql``; the way back is the built-in one (cool-off, probes, stepped
failback), and while the rule still fires a probing target is tripped again with a longer
cool-off, so a rule hovering at its bound cannot flip routing every evaluation.

A Prometheus that is down, slow (``timeout_seconds``) or answers garbage never trips or untrips
anything: the rule is *unknown*; a target its last answer had out stays out (``held``), nothing
else moves. After ``unavailable_after`` failed evaluations in a row a warning alert says so
(:mod:`controller.control._promql_eval` evaluates; it never runs on the request path).

YAML shape::

    promql:
      url: http://prometheus:9090       # or the variable named by url_env (it wins)
      url_env: FAILOVER_PROMETHEUS_URL
      interval_seconds: 15
      timeout_seconds: 5
      unavailable_after: 3
      rules:
        - name: openai_latency_slo
          target: openai                # a provider, or provider/model
          expr: failover:latency_slo_burn:1h{provider="openai"} > 14.4
          for_seconds: 60
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller._env_name import EnvName
from controller._urls import http_url

ENV_URL = "FAILOVER_PROMETHEUS_URL"


class PromqlRule(BaseModel):
    """One rule: ``target`` trips while ``expr`` returns data for ``for_seconds``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    target: Annotated[str, Field(min_length=1)]
    expr: Annotated[str, Field(min_length=1, max_length=4096)]
    for_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0

    @field_validator("expr")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a PromQL expression, not blank")
        return value.strip()


class PromqlConfig(BaseModel):
    """Where and how often the PromQL tripwires are evaluated (the ``promql:`` key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    url_env: EnvName = ENV_URL
    interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 15.0
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    unavailable_after: Annotated[int, Field(ge=1, le=100)] = 3
    rules: tuple[PromqlRule, ...] = ()

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """The message never repeats the URL (a URL with a password belongs in url_env)."""
        if value is None:
            return value
        http_url(value, credentials="put such a URL in the variable url_env names")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError(
                f"timeout_seconds ({self.timeout_seconds:g}) must not exceed "
                f"interval_seconds ({self.interval_seconds:g})"
            )
        return self

    def resolve_url(self, env: Mapping[str, str]) -> str | None:
        """The Prometheus URL in force: the ``url_env`` variable when set, else ``url``."""
        found = env.get(self.url_env, "").strip()
        if found:
            return found.rstrip("/")
        return self.url


class RuleState(enum.StrEnum):
    FIRING = "firing"  # the expression has held for for_seconds
    CLEAR = "clear"  # it returned no data (or has held for less than for_seconds)
    UNKNOWN = "unknown"  # no usable answer: Prometheus down, slow, or garbage


@dataclass(frozen=True, slots=True, kw_only=True)
class PromqlSignal:
    """One rule's latest evaluation, as :func:`~controller.control.decide.decide` reads it.

    ``held``: the last usable answer was firing (what an UNKNOWN rule keeps in force).
    ``detail`` says what was seen, in words (never the Prometheus URL)."""

    rule: str
    target: str
    state: RuleState
    held: bool = False
    value: float | None = None
    series: int = 0
    detail: str = ""

    @property
    def firing(self) -> bool:
        return self.state is RuleState.FIRING

    @property
    def holds_out(self) -> bool:
        """Keeps its target out of rotation: firing, or unknown after a firing answer."""
        return self.firing or (self.state is RuleState.UNKNOWN and self.held)
