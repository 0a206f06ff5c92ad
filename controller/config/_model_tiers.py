"""``tiers.<name>`` (its targets, hedge, degrade ladder and shadow), ``routing`` (deadline,
attempts, retries, headroom) and ``kill_switch``: what a request is routed to, in what order,
and for how long."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from controller.config._model_base import Frozen, Seconds
from controller.routing.plan import Degrade, Hedge, Priority, Strategy

Capability = Literal["image", "document", "tools", "response_format"]


class TargetConfig(Frozen):
    provider: str
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    cost_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    reasoning: bool | None = None  # takes reasoning parameters; unset: told by the model's name
    lacks: tuple[Capability, ...] = ()  # what the model cannot honour (a text-only model: image)


class HedgeConfig(Frozen):
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


class DegradeConfig(Frozen):
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


class ShadowConfig(Frozen):
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


class TierConfig(Frozen):
    strategy: Strategy = Strategy.PRIORITY
    targets: Annotated[tuple[TargetConfig, ...], Field(min_length=1)]
    context_fallback: TargetConfig | None = None
    hedge: HedgeConfig | None = None
    degrade: DegradeConfig = DegradeConfig()
    # The share of requests its second target serves first, to keep it measured (README
    # "Knowing the backups"); 0: off.
    warm_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    shadow: ShadowConfig | None = None


class RetryConfig(Frozen):
    max_tries_per_provider: Annotated[int, Field(ge=1, le=10)] = 2
    max_retry_after: Annotated[float, Field(ge=0)] = 5.0
    wait_retry_after_under: Annotated[float, Field(ge=0)] = 3.0
    backoff_base: Annotated[float, Field(ge=0)] = 0.2
    backoff_cap: Annotated[float, Field(ge=0)] = 2.0


class HeadroomConfig(Frozen):
    """``routing.headroom``: a target whose rate-limit headers say less than ``below`` of its
    requests or tokens are left gets new requests only after the others of its plan, until its
    window resets (a reading with no reset time holds ``hold_seconds``). 0: headers are read
    (the gauges) and nothing moves."""

    below: Annotated[float, Field(ge=0, lt=1)] = 0.0
    hold_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0


class RoutingConfig(Frozen):
    deadline_seconds: Seconds = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 6
    retry: RetryConfig = RetryConfig()
    headroom: HeadroomConfig = HeadroomConfig()


class KillSwitchConfig(Frozen):
    pin: str | None = None
    disable: tuple[str, ...] = ()
