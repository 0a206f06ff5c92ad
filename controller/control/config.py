"""The ``controller:`` config section: how the tripwire trips and how a provider comes back.

Validated once, frozen. Every default is the value a first deployment should start with; each
field's description says what it changes. ``mode: observe`` is the dry run for new thresholds:
the controller computes everything and alerts "would trip", but never changes routing.

YAML shape (every key optional)::

    controller:
      mode: enforce              # or observe
      window_seconds: 30
      min_requests: 10
      error_rate_threshold: 0.5
      consecutive_failures: 5
      cooloff_seconds: 15
      failback_steps: [0.1, 0.5, 1.0]
      stall:                     # a provider that accepts requests and stops answering
        factor: 3                # limit = factor x p99 of its own recent times to answer
        floor_seconds: 2
        ceiling_seconds: 60
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A window is a ring of buckets; this bounds the ring so a typo cannot allocate millions.
MAX_BUCKETS = 3600


class StallConfig(BaseModel):
    """When a provider that has stopped answering is tripped as ``stalled`` (``controller.stall``).

    The limit is learned per provider and kind (a stream's first chunk, a whole answer):
    ``factor`` x the ``quantile`` of its times to answer (a two-minute baseline that leaves out
    the last 30 s: :mod:`controller.signals.inflight`), within ``floor_seconds`` and
    ``ceiling_seconds``, once it has ``min_samples`` of them (before that the attempt timeouts
    alone apply). It trips when attempts have waited past the limit while nothing was answered
    for that long, and either ``min_waiting`` attempts are waiting or one has waited
    ``alone_factor`` x the limit (low traffic).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="Trip providers that stop answering.")
    factor: float = Field(default=3.0, ge=1.0, description="Limit = factor x learned quantile.")
    quantile: float = Field(
        default=0.99, gt=0, le=1, description="Share of past answers the learned time covers."
    )
    floor_seconds: float = Field(default=2.0, gt=0, description="The limit is never shorter.")
    ceiling_seconds: float = Field(default=60.0, gt=0, description="The limit is never longer.")
    min_samples: int = Field(
        default=20, ge=1, description="Answers seen before a limit is learned."
    )
    min_waiting: int = Field(
        default=3, ge=1, le=16, description="Attempts waiting past the limit that trip at once."
    )
    alone_factor: float = Field(
        default=5.0, ge=1.0, description="Fewer waiting: one past this many limits trips."
    )

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> Self:
        if self.ceiling_seconds < self.floor_seconds:
            raise ValueError(
                f"ceiling_seconds ({self.ceiling_seconds}) must be at least "
                f"floor_seconds ({self.floor_seconds})"
            )
        return self

    def limit(self, typical: float | None, samples: int) -> float | None:
        """The learned limit for one provider and kind, or None while too little is known."""
        if typical is None or samples < self.min_samples:
            return None
        return min(max(typical * self.factor, self.floor_seconds), self.ceiling_seconds)


class TripwireConfig(BaseModel):
    """Thresholds, cool-offs, probing and failback of the controller (the ``controller:`` key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["enforce", "observe"] = Field(
        default="enforce",
        description="enforce: trips change routing. observe: only 'would trip' alerts.",
    )
    window_seconds: float = Field(
        default=30.0, gt=0, description="Length of the sliding window of attempt outcomes."
    )
    bucket_seconds: float = Field(
        default=1.0, gt=0, description="Resolution of the window (one bucket per this long)."
    )
    min_requests: int = Field(
        default=10, ge=1, description="Volume gate: the error rate trips only above this many."
    )
    error_rate_threshold: float = Field(
        default=0.5, description="Trip when faults / (successes + faults) reaches this, in (0, 1]."
    )
    consecutive_failures: int = Field(
        default=5, ge=1, description="Fast trip for low traffic: this many faults in a row."
    )
    cooloff_seconds: float = Field(
        default=15.0, gt=0, description="Time out of rotation after a first trip before probing."
    )
    cooloff_multiplier: float = Field(
        default=2.0, ge=1.0, description="Each repeated trip multiplies the cool-off (damping)."
    )
    max_cooloff_seconds: float = Field(
        default=600.0, gt=0, description="Upper bound of the growing cool-off."
    )
    probe_interval_seconds: float = Field(
        default=2.0, gt=0, description="At most one probe per provider this often."
    )
    probe_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A probe that takes longer counts as failed."
    )
    probe_idle_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Probe a healthy provider that had no attempt for this long (0: off).",
    )
    probe_successes: int = Field(
        default=3, ge=1, description="Successful probes in a row needed to start failback."
    )
    failback_steps: tuple[float, ...] = Field(
        default=(0.1, 0.5, 1.0),
        description="Traffic shares while recovering, increasing, ending at 1.0 (healthy).",
    )
    failback_step_seconds: float = Field(
        default=10.0, gt=0, description="Time spent at each failback step without a fault."
    )
    tick_seconds: float = Field(
        default=0.25, gt=0, le=60, description="How often the controller loop decides."
    )
    stable_seconds: float = Field(
        default=300.0, ge=0, description="Healthy this long after a recovery resets trip_count."
    )
    stall: StallConfig = Field(
        default_factory=StallConfig, description="Tripping a provider that stopped answering."
    )

    @field_validator("error_rate_threshold")
    @classmethod
    def _threshold_in_range(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"must be in (0, 1], got {value}")
        return value

    @field_validator("failback_steps")
    @classmethod
    def _steps_increase_to_one(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps:
            raise ValueError("needs at least one step (the last one is 1.0)")
        if any(not 0.0 < s <= 1.0 for s in steps):
            raise ValueError(f"every step must be in (0, 1], got {list(steps)}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must strictly increase, got {list(steps)}")
        if steps[-1] != 1.0:
            raise ValueError(f"the last step must be 1.0 (full traffic), got {steps[-1]}")
        return steps

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.bucket_seconds > self.window_seconds:
            raise ValueError(
                f"bucket_seconds ({self.bucket_seconds}) must not exceed "
                f"window_seconds ({self.window_seconds})"
            )
        if self.window_seconds / self.bucket_seconds > MAX_BUCKETS:
            raise ValueError(
                f"window_seconds / bucket_seconds must be at most {MAX_BUCKETS} buckets"
            )
        if self.max_cooloff_seconds < self.cooloff_seconds:
            raise ValueError(
                f"max_cooloff_seconds ({self.max_cooloff_seconds}) must be at least "
                f"cooloff_seconds ({self.cooloff_seconds})"
            )
        return self

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"

    def cooloff_for(self, trip_count: int) -> float:
        """Cool-off after the ``trip_count``-th trip: grows geometrically, capped."""
        exponent = max(0, trip_count - 1)
        try:
            grown = self.cooloff_seconds * self.cooloff_multiplier**exponent
        except OverflowError:  # a huge trip_count: the cap applies anyway
            return self.max_cooloff_seconds
        return min(grown, self.max_cooloff_seconds)


# The whole ``controller:`` section is the tripwire config today; the alias keeps call sites
# readable if the section grows other sub-keys later.
ControllerConfig = TripwireConfig
