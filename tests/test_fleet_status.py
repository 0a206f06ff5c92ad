"""The fleet where a person looks: the status page (real Chromium) and ``failover status`` (a
real process against a running gateway) show this replica, the leader, Redis and each replica's
role, applied version and heartbeat, from ``/status.json``'s ``fleet`` section."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_support import GatewayEnv, gateway_env, status_with
from tests.test_cli import status_lines
from tests.test_status_page import _run, _text, chromium  # noqa: F401 - chromium is a fixture

FLEET = {  # the shape controller/fleet/_member.py describe() gives
    "backend": "redis",
    "replica": "gw-a",
    "role": "follower",
    "leader": "gw-b",
    "redis": "up",
    "fleet_version": 12,
    "applied_version": 12,
    "replicas": [
        {"name": "gw-b", "role": "leader", "version": 12, "heartbeat_age": 0.4},
        {"name": "gw-a", "role": "follower", "version": 12, "heartbeat_age": None},
    ],
}


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        status_with(running.backend, {"fleet": FLEET})  # what Runtime.status adds in a fleet
        yield running


async def test_the_status_page_shows_the_fleet(
    env: GatewayEnv,
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    dom = await _run(chromium, "--dump-dom", f"{env.url}/status", profile=tmp_path / "profile")
    text = _text(dom)
    assert "this replica gw-a (follower) \u00b7 leader gw-b \u00b7 Redis up" in text
    assert "gw-b: leader, version 12, heartbeat 0.4 s ago" in text
    assert "gw-a: follower, version 12, no heartbeat" in text


async def test_the_status_page_has_no_fleet_card_without_a_fleet(
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    async with gateway_env() as plain:
        dom = await _run(
            chromium, "--dump-dom", f"{plain.url}/status", profile=tmp_path / "profile"
        )
    assert 'id="fleet-box" hidden=""' in dom


async def test_failover_status_prints_the_fleet(env: GatewayEnv) -> None:
    line = next(x for x in await status_lines(env.url) if x.startswith("  fleet "))
    assert line.startswith("  fleet gw-a (follower), leader gw-b, Redis up, fleet version 12; ")
    assert "gw-b leader v12 (0.4 s ago)" in line
