"""The ``state.redis:`` config section: where a fleet keeps its one routing state.

YAML shape (``state.backend: redis`` turns it on; every key optional)::

    state:
      backend: redis                  # default: file (one process decides alone)
      redis:
        url_env: FAILOVER_REDIS_URL   # redis://host:6379/0, or rediss:// for TLS
        password_env: null            # a variable holding the password (else in the URL)
        ca_file: null                 # CA bundle for rediss:// (default: the system's)
        prefix: failover              # key namespace: the replicas of one fleet share it
        replica: null                 # this replica's name (default: $FAILOVER_REPLICA,
                                      # $HOSTNAME, else host-pid)
        lease_seconds: 2              # a dead leader is replaced within this (+ one try)
        push_seconds: 0.25            # signals and heartbeat pushed this often
        read_seconds: 1               # the state read this often behind pub/sub
        timeout_seconds: 0.5          # per Redis command: nothing waits on Redis longer

The URL and the password come from the environment only, never from the file.
``FAILOVER_STATE_BACKEND=redis`` (or ``file``) overrides ``state.backend``, so one config file
serves a laptop and a fleet: the deployment (compose, the k8s manifest) says which it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller._env_name import EnvName
from controller._errors import ConfigError

ENV_BACKEND = "FAILOVER_STATE_BACKEND"
BACKENDS = ("file", "redis")


class FleetConfig(BaseModel):
    """How a replica talks to the fleet's Redis (or Valkey)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url_env: EnvName = "FAILOVER_REDIS_URL"
    password_env: EnvName | None = None
    ca_file: str | None = None
    prefix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = (
        "failover"
    )
    replica: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None
    ) = None
    lease_seconds: Annotated[float, Field(ge=0.5, le=60)] = 2.0
    push_seconds: Annotated[float, Field(ge=0.05, le=5)] = 0.25
    read_seconds: Annotated[float, Field(ge=0.1, le=30)] = 1.0
    timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.5

    @model_validator(mode="after")
    def _lease_outlives_a_push(self) -> Self:
        if self.lease_seconds < 2 * self.push_seconds:
            raise ValueError("lease_seconds must be at least twice push_seconds")
        return self

    @property
    def renew_seconds(self) -> float:
        """How often the leader renews its lease: a third of it, so two renewals may fail."""
        return self.lease_seconds / 3


def state_backend(configured: str, env: Mapping[str, str]) -> str:
    """The state backend in force: ``FAILOVER_STATE_BACKEND`` wins over ``state.backend``."""
    chosen = env.get(ENV_BACKEND, "").strip() or configured
    if chosen not in BACKENDS:
        raise ConfigError(f"must be one of {', '.join(BACKENDS)} (got {chosen!r})", key=ENV_BACKEND)
    return chosen
