"""What the gateway needs from the rest of the process: a narrow seam.

The runtime (router + controller + telemetry + notifier, built from config) implements it; the
gateway's tests implement it over a real Router and fake providers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from controller.control.state import KillSwitch
from controller.routing.router import Router


class GatewayBackend(Protocol):
    router: Router
    tracer: Tracer
    meter: Meter

    def tier_for(self, model: str) -> str | None:
        """The tier a front-end model name routes to (a tier name, an alias, an alias pattern
        or the default tier), else None."""
        ...

    def models(self) -> list[str]:
        """What clients may send: model names (tier names, exact aliases) and then alias
        patterns (``claude-*``), as :func:`controller._model_names.is_pattern` tells them apart.
        GET /v1/models lists the names; an unknown model's 404 lists both."""
        ...

    def retry_after(self, providers: Collection[str]) -> float | None:
        """Seconds a client should wait before retrying a request that failed on ``providers``
        (the providers it was tried on, in its tier), by what the controller knows: the soonest
        a provider of that tier out of rotation is looked at again (its cool-off ends, its next
        probe). None when nothing is known (the gateway then says a small constant)."""
        ...

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): config loaded and every tier has a usable provider."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-able status: tiers with their current route, providers with state, error rate,
        threshold, since, reason; the kill switch; recent routing events and alerts."""
        ...

    def render_metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition body and its content type."""
        ...

    async def set_kill_switch(self, switch: KillSwitch, *, by: str) -> dict[str, Any]:
        """Set the kill switch as ``failover kill-switch`` does (the config file's flag, or the
        fleet's in Redis in fleet mode), audited as made ``by``; the answer says the switch in
        force and the routes. Raises ValueError when it cannot be set (the message says why)."""
        ...

    async def drill(self, provider: str, seconds: float) -> dict[str, Any]:
        """Start a simulated outage of ``provider`` for ``seconds`` (rehearses the alert path).
        Raises KeyError for an unknown provider."""
        ...
