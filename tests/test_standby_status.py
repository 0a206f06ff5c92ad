"""Standing by where a person looks: the status page (real Chromium) and ``failover status`` (a
real process against a running gateway) show each tier's warm share, the backups failing their
idle probes and each target's rate-limit reading, from ``/status.json``'s ``standby`` section
as :func:`controller.routing._standby.describe` writes it; no card when none of them is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller._clock import FakeClock
from controller.routing._standby import describe
from controller.routing.plan import Target, TierPlan
from controller.signals.headroom import Headroom
from tests.gateway_support import GatewayEnv, gateway_env, status_with
from tests.test_cli import status_lines
from tests.test_status_page import _run, _text, chromium  # noqa: F401 - chromium is a fixture

TIERS = {
    "frontier": TierPlan(
        name="frontier",
        targets=(Target(provider="primary", model="big"), Target(provider="backup", model="alt")),
        warm_share=0.01,
    ),
    "cheap": TierPlan(name="cheap", targets=(Target(provider="backup", model="alt"),)),
}


def standby() -> dict[str, Any]:
    """The section from the real code: a headroom that read OpenAI headers with 12 of 500
    requests left (below its 5 % share: low) and a backup whose idle probes fail."""
    headroom = Headroom(FakeClock(start=1000.0), below=0.05, hold_seconds=60)
    headroom.observe(
        "primary",
        "big",
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "12",
            "x-ratelimit-reset-requests": "20s",
        },
    )
    return describe(headroom, {"backup": "the probe request failed"}, TIERS)


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        status_with(running.backend, {"standby": standby()})  # what Runtime.status adds
        yield running


async def test_the_status_page_shows_what_stands_by(
    env: GatewayEnv,
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    dom = await _run(chromium, "--dump-dom", f"{env.url}/status", profile=tmp_path / "profile")
    text = _text(dom)
    assert "warm traffic to the next target: frontier 1%" in text
    assert (
        "backup: unhealthy while standing by (idle probes failing: the probe request failed)"
        in (text)
    )
    assert (
        "primary/big rate limits: requests 12 of 500 left, reset 20 s from the last answer: "
        "low, new requests go to the next target"
    ) in text


async def test_no_standby_card_when_nothing_stands_by(
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    empty = describe(Headroom(FakeClock(start=0.0)), {}, {"cheap": TIERS["cheap"]})
    async with gateway_env() as plain:
        status_with(plain.backend, {"standby": empty})
        dom = await _run(
            chromium, "--dump-dom", f"{plain.url}/status", profile=tmp_path / "profile"
        )
    assert 'id="standby-box" hidden=""' in dom


async def test_failover_status_prints_what_stands_by(env: GatewayEnv) -> None:
    lines = await status_lines(env.url)
    assert "  warm traffic to the next target: frontier 1.00%" in lines
    assert any(
        x.startswith("  standby backup") and x.endswith("standing by: the probe request failed")
        for x in lines
    )
    assert (
        "  ratelimit primary/big: requests 12 of 500 left, reset 20 s from the last answer"
        "  LOW: new requests go to the next target"
    ) in lines
