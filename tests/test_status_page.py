"""The status page rendered by a real headless Chromium against a running gateway.

The page is JavaScript that polls ``/status.json``; only a browser shows whether it actually
renders the tier routes, provider states and the kill switch. Chromium comes from Debian
(``apt-get install chromium``); it is installed when missing and we are root. Under ``CI=true``
a missing Chromium is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from controller._clock import FakeClock
from controller._demo import DEMO_CONFIG
from controller.config import parse_config
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
)
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FaultMode
from controller.runtime import Runtime
from tests.gateway_support import GatewayEnv, gateway_env, hello
from tests.notify_support import recovered

BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
)


def _chromium() -> str:
    """The Chromium binary, installing the Debian package if we can; else fail (CI) or skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        install = ["apt-get", "install", "-y", "-qq", "chromium"]
        subprocess.run(install, check=False, env=env, capture_output=True)
        found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI=true (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        # Real traffic first: the primary fails, so its error rate is real and the backup serves.
        running.primary.set_fault(FaultMode.ERROR_500)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(running.url + "/v1/chat/completions", json=hello()) as ans:
                    assert ans.status == 200
        # Wall time only to show "since 2 min ago" on the page: nothing here is timed by it.
        two_minutes_ago = time.time() - 120
        tripped = ProviderStatus(
            state=HealthState.TRIPPED,
            since=two_minutes_ago,
            reason="error rate 100% >= 50% over 3 requests",
            trip_count=1,
            traffic_share=0.0,
        )
        state = RoutingState().evolve(
            changed_by="operator",
            now=two_minutes_ago,
            providers={"primary-openai": tripped, "primary-anthropic/claude-big": tripped},
            kill_switch=KillSwitch(pin="backup-anthropic"),
        )
        running.state.publish(state)
        running.backend.alerts.append(
            {"time": two_minutes_ago, "severity": "warning", "text": "primary-openai tripped"}
        )
        yield running


async def _run(chromium: str, *args: str, profile: Path) -> str:
    """Run Chromium without blocking the event loop (the gateway under test lives on it)."""
    process = await asyncio.create_subprocess_exec(
        chromium,
        *BROWSER_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(90):
        out, _ = await process.communicate()
    assert process.returncode == 0, f"chromium exited with {process.returncode}"
    return out.decode("utf-8", errors="replace")


def _text(dom: str) -> str:
    """The visible text of a DOM dump, whitespace-normalised (tags removed)."""
    without_code = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", without_code)).split())


async def test_status_page_renders_routes_states_and_kill_switch(
    env: GatewayEnv, chromium: str, tmp_path: Path
) -> None:
    dom = await _run(chromium, "--dump-dom", f"{env.url}/status", profile=tmp_path / "profile")
    text = _text(dom)
    assert "KILL SWITCH ACTIVE" in text
    assert "pinned to backup-anthropic" in text
    for tier in ("frontier", "claude", "gated"):
        assert tier in text
    for provider in ("primary-openai", "backup-anthropic", "primary-anthropic", "gated"):
        assert provider in text
    assert "tripped" in text
    assert "healthy" in text
    assert "error rate 100.0% / threshold 50.0%" in text  # primary-openai: 3 of 3 failed
    assert "error rate 100% >= 50% over 3 requests" in text  # the controller's reason
    assert "primary-openai tripped" in text  # the alert
    assert "frontier: degraded by backup-anthropic" in text  # a routing event
    assert "since 2 min ago" in text
    assert "primary-anthropic/claude-big one model, judged alone tripped" in text
    assert "stalled after whole 2.0 s" in text  # the learned stall limit
    assert "live" in text  # the poll succeeded
    assert "kill switch pins backup-anthropic, which has no model for tier claude" in text
    # The pinned route: frontier is served by backup-anthropic now.
    assert re.search(r"frontier served by backup-anthropic", text)


async def test_status_page_screenshot_is_readable(
    env: GatewayEnv, chromium: str, tmp_path: Path
) -> None:
    shot = tmp_path / "status.png"
    await _run(
        chromium,
        f"--screenshot={shot}",
        "--window-size=1200,900",
        f"{env.url}/status",
        profile=tmp_path / "profile",
    )
    assert shot.exists()
    assert shot.stat().st_size > 10 * 1024
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if keep:  # for a person to look at: STATUS_PAGE_SCREENSHOT=/tmp/status.png pytest ...
        shutil.copy(shot, keep)


async def test_status_page_shows_the_newest_30_events_and_alerts_newest_first(
    chromium: str, tmp_path: Path
) -> None:
    """A runtime keeps its routing events and alerts newest first; with 45 of each the page
    lists the newest 30, the newest on top, and says which alerts were not sent."""
    text = DEMO_CONFIG.format(
        primary="http://127.0.0.1:9/v1", backup="http://127.0.0.1:9", state=tmp_path / "s.json"
    )
    clock = FakeClock()
    rt = Runtime(parse_config(text, source="demo"), env={}, clock=clock)
    try:
        for n in range(45):
            clock.advance(1.0)
            if n == 44:  # the last one comes too late: the dispatcher is stopping
                await rt.dispatcher.stop(timeout=0.5)
            rt.notify(dataclasses.replace(recovered(f"prov-{n:02}"), at=rt.controller.now()))
            # As Runtime._on_transition records a flip (45 real ones take 45 outage cycles).
            rt.events.appendleft({"time": rt.controller.now(), "text": f"flip-{n:02}"})
        app = create_app(rt, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as server:
            dom = await _run(chromium, "--dump-dom", f"{server.url}/status", profile=tmp_path / "p")
    finally:
        await rt.stop(grace=0.5)
    page = _text(dom)
    for name in ("flip", "prov"):
        shown = [int(n) for n in re.findall(rf"\b{name}-(\d\d)\b", page)]
        assert shown == list(range(44, 14, -1)), name
    assert "prov-44 provider recovered (not sent: shutting down)" in page
    assert "prov-43 provider recovered (not sent to log)" in page  # queued, cut at the stop
