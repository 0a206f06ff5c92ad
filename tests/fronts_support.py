"""Tiers for the Responses and Gemini fronts' tests, over the same two fakes as
:mod:`tests.gateway_support` (each fake speaks every wire format)::

    tier "frontier"     (alias "gpt-test"):   primary-openai    -> backup-anthropic
    tier "gemini-test":                       primary-gemini    -> backup-openai
    tier "gemini3-test":                      primary-gemini (gemini-3-pro) -> backup-openai
    tier "claude-first":                      primary-anthropic -> backup-gemini
    tier "responses-test":                    primary-responses -> backup-anthropic
    tier "responses-only":                    primary-responses

``primary-responses`` is an OpenAI provider that calls the Responses API upstream (``api:
responses``).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from controller.control.state import StateHolder
from controller.providers import HttpProvider, Provider, Timeouts, codec_for
from controller.providers.fake import FakeProvider
from controller.routing.plan import Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry.otel import TelemetryListener
from tests.conftest import Recorder, adapter
from tests.gateway_support import GatedProvider, GatewayEnv, gateway_env

__all__ = ["fronts_env"]


def _tier(name: str, *targets: tuple[str, str]) -> TierPlan:
    return TierPlan(name=name, targets=tuple(Target(provider=p, model=m) for p, m in targets))


def _responses_provider(fake: FakeProvider, name: str) -> HttpProvider:
    return HttpProvider(
        name=name,
        codec=codec_for("openai", api="responses"),
        base_url=fake.url("openai"),
        api_key="sk-test-not-a-secret",
    )


def fronts_router(
    primary: FakeProvider,
    backup: FakeProvider,
    gated: GatedProvider,
    *,
    telemetry: TelemetryListener,
    recorder: Recorder,
    state: StateHolder,
    timeouts: Timeouts,
) -> Router:
    providers: dict[str, Provider] = {
        "primary-openai": adapter(primary, "openai", "primary-openai"),
        "primary-anthropic": adapter(primary, "anthropic", "primary-anthropic"),
        "primary-gemini": adapter(primary, "gemini", "primary-gemini"),
        "primary-responses": _responses_provider(primary, "primary-responses"),
        "backup-openai": adapter(backup, "openai", "backup-openai"),
        "backup-anthropic": adapter(backup, "anthropic", "backup-anthropic"),
        "backup-gemini": adapter(backup, "gemini", "backup-gemini"),
        "gated": gated,
    }
    tiers = {
        "frontier": _tier(
            "frontier", ("primary-openai", "gpt-big"), ("backup-anthropic", "claude-alt")
        ),
        "gemini-test": _tier(
            "gemini-test", ("primary-gemini", "gemini-big"), ("backup-openai", "gpt-alt")
        ),
        "claude-first": _tier(
            "claude-first", ("primary-anthropic", "claude-big"), ("backup-gemini", "gemini-alt")
        ),
        "gemini3-test": _tier(
            "gemini3-test", ("primary-gemini", "gemini-3-pro"), ("backup-openai", "gpt-alt")
        ),
        "responses-only": _tier("responses-only", ("primary-responses", "gpt-big")),
        "responses-test": _tier(
            "responses-test", ("primary-responses", "gpt-big"), ("backup-anthropic", "claude-alt")
        ),
    }
    return Router(
        tiers=tiers,
        providers=providers,
        state=state,
        listeners=[recorder, telemetry],
        retry=never_retry,
        default_timeouts=timeouts,
        deadline=20.0,
        rng=random.Random(7),
    )


@asynccontextmanager
async def fronts_env(**kwargs: Any) -> AsyncIterator[GatewayEnv]:
    async with gateway_env(router_for=fronts_router, **kwargs) as env:
        yield env
