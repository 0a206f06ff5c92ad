"""Each tier's queue of deferred jobs where a person looks: the status page (real Chromium)
and ``failover status`` (a real process against a running gateway), from ``/status.json``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_support import GatewayEnv, gateway_env, status_with
from tests.test_cli import status_lines
from tests.test_status_page import _run, _text, chromium  # noqa: F401 - chromium is a fixture

JOBS = {
    "frontier": {"queued": 3, "running": 1, "done": 40, "dead": 2, "oldest_age_seconds": 42.4},
    "claude": {"queued": 0, "running": 0, "done": 0, "dead": 0, "oldest_age_seconds": None},
}


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        status_with(running.backend, {"jobs": JOBS})  # what Runtime.status adds (runtime.py)
        yield running


async def test_the_status_page_shows_each_tiers_queue(
    env: GatewayEnv,
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    dom = await _run(chromium, "--dump-dom", f"{env.url}/status", profile=tmp_path / "profile")
    text = _text(dom)
    wanted = "deferred jobs: 3 queued, 1 replaying, oldest 42 s; 40 done, 2 dead letters"
    assert wanted in text
    assert text.count("deferred jobs:") == 1  # an empty queue is not shown


async def test_failover_status_prints_each_tiers_queue(env: GatewayEnv) -> None:
    lines = await status_lines(env.url)
    assert (
        "  jobs  frontier       3 queued, 1 replaying, oldest 42 s; 40 done, 2 dead letters"
        in lines
    )
    assert "  jobs  claude         0 queued, 0 replaying; 0 done, 0 dead letters" in lines
