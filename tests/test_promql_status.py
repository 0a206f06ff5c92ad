"""PromQL tripwires where a person looks: the status page (real Chromium) lists each rule, the
target it trips, its state and what it saw, from ``/status.json``'s ``promql`` section; hidden
without rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_support import GatewayEnv, gateway_env, status_with
from tests.test_status_page import _run, _text, chromium  # noqa: F401 - chromium is a fixture

PROMQL = [  # the shape controller/control/_promql_eval.py describe() gives
    {
        "rule": "latency_slo",
        "target": "primary",
        "state": "firing",
        "held": True,
        "value": 20.0,
        "detail": "1 series, value 20",
    },
    {
        "rule": "errors",
        "target": "backup",
        "state": "unknown",
        "held": True,
        "value": None,
        "detail": "no answer within 5s",
    },
]


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        status_with(running.backend, {"promql": PROMQL})  # what Runtime.status adds
        yield running


async def test_the_status_page_shows_the_promql_tripwires(
    env: GatewayEnv,
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    dom = await _run(chromium, "--dump-dom", f"{env.url}/status", profile=tmp_path / "profile")
    text = _text(dom)
    assert "latency_slo \u2192 primary: firing 1 series, value 20" in text
    assert "errors \u2192 backup: unknown (held out: it last fired) no answer within 5s" in text


async def test_no_promql_card_without_rules(
    chromium: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    async with gateway_env() as plain:
        dom = await _run(
            chromium, "--dump-dom", f"{plain.url}/status", profile=tmp_path / "profile"
        )
    assert 'id="promql-box" hidden=""' in dom
