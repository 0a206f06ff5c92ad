"""The routing state document: what the controller decided, read by every router.

A small, versioned, immutable document. The controller replaces it whole; routers read the
latest one from a :class:`StateHolder` without waiting (a plain attribute read).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


class HealthState(enum.StrEnum):
    HEALTHY = "healthy"
    TRIPPED = "tripped"
    PROBING = "probing"
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStatus:
    """One provider's place in the routing state.

    ``traffic_share`` is the fraction of its normal traffic it gets: 1.0 when healthy, 0.0 when
    tripped or probing, a failback step (e.g. 0.1, 0.5) while recovering.
    ``since`` is epoch seconds of the last transition; ``trip_count`` counts trips (it grows the
    cool-off and resets after a full, stable recovery).
    """

    state: HealthState = HealthState.HEALTHY
    since: float = 0.0
    reason: str = ""
    trip_count: int = 0
    traffic_share: float = 1.0

    @property
    def usable(self) -> bool:
        return self.traffic_share > 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitch:
    """The operator's override, from config (or the environment). Highest precedence."""

    pin: str | None = None
    disable: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.pin is not None or bool(self.disable)

    def allows(self, provider: str) -> bool:
        """Whether ``provider`` may serve at all: not disabled, and the pinned one if any."""
        if self.pin is not None and provider != self.pin:
            return False
        return provider not in self.disable

    def describe(self) -> str:
        if self.pin:
            return f"pinned to {self.pin}"
        if self.disable:
            return "disabled: " + ", ".join(self.disable)
        return "off"


_HEALTHY = ProviderStatus()


def model_key(provider: str, model: str) -> str:
    """The routing state's name for one model of a provider (``provider/model``), judged on its
    own when the provider serves several models (the first ``/`` ends the provider's name)."""
    return f"{provider}/{model}"


def split_key(name: str) -> tuple[str, str | None]:
    """``provider/model`` -> (provider, model); a provider's own name -> (provider, None)."""
    provider, _, model = name.partition("/")
    return provider, model or None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingState:
    """Versioned routing state. ``changed_by`` is ``controller``, ``operator``, ``config``, ..."""

    version: int = 0
    updated_at: float = 0.0
    changed_by: str = "init"
    providers: Mapping[str, ProviderStatus] = field(default_factory=lambda: MappingProxyType({}))
    kill_switch: KillSwitch = KillSwitch()

    def status(self, provider: str) -> ProviderStatus:
        """A provider the controller has never judged is healthy."""
        return self.providers.get(provider, _HEALTHY)

    def share(self, provider: str, model: str) -> float:
        """The traffic share of one target: its provider's, and its model's when that was
        judged on its own (a model tripped while its siblings serve)."""
        share = self.providers.get(provider, _HEALTHY).traffic_share
        if self.providers:  # none judged yet (the usual state): no model either
            found = self.providers.get(model_key(provider, model))
            if found is not None:
                share = min(share, found.traffic_share)
        return share

    def evolve(
        self,
        *,
        changed_by: str,
        now: float,
        providers: Mapping[str, ProviderStatus] | None = None,
        kill_switch: KillSwitch | None = None,
    ) -> RoutingState:
        """The next version of this document."""
        table = providers if providers is not None else self.providers
        return replace(
            self,
            version=self.version + 1,
            updated_at=now,
            changed_by=changed_by,
            providers=MappingProxyType(dict(table)),
            kill_switch=kill_switch if kill_switch is not None else self.kill_switch,
        )


StateWatcher = Callable[[RoutingState, RoutingState], None]


class StateHolder:
    """Holds the latest RoutingState. Readers never block; the controller publishes whole docs.

    A watcher (:meth:`watch`) is called with the old and the new document on each publish, on
    the publisher's task: the router uses it to move requests off a provider the moment it
    leaves rotation. A watcher must be quick and must not raise."""

    __slots__ = ("_state", "_watchers")

    def __init__(self, state: RoutingState | None = None) -> None:
        self._state = state or RoutingState()
        self._watchers: list[StateWatcher] = []

    @property
    def current(self) -> RoutingState:
        return self._state

    def watch(self, watcher: StateWatcher) -> None:
        self._watchers.append(watcher)

    def publish(self, state: RoutingState) -> None:
        old, self._state = self._state, state
        for watcher in self._watchers:
            watcher(old, state)
