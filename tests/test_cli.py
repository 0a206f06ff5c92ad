"""The `failover` command as a user runs it: subprocesses, real files, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller._loop import loop_factory
from controller.config import load_config
from controller.config._kill_switch_file import rewrite
from controller.control.state import KillSwitch
from controller.providers.fake import FakeProvider
from tests.config_support import example_copy
from tests.fakes_chat import unused_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "failover.example.yaml"
FAILOVER = [sys.executable, "-m", "controller.cli"]


async def status_lines(url: str) -> list[str]:
    """``failover status --url URL``, a real process, as the lines it printed (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(
        *FAILOVER,
        "status",
        "--url",
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FAILOVER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


def test_help_explains_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "serve", "check", "status", "drill", "kill-switch"):
        assert command in result.stdout


def test_demo_json_reports_trip_alert_recovery_and_no_errors() -> None:
    result = run("demo", "--json", timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["tripped"] is True
    assert summary["recovered"] is True
    assert summary["client_errors"] == 0
    assert summary["served"] == summary["requests"] > 50
    assert summary["served_by"]["backup"] > 0
    assert summary["served_by"]["primary"] > 0
    assert "provider_tripped" in summary["alerts"]
    assert "provider_recovered" in summary["alerts"]
    assert 0 < summary["detection_seconds"] <= 1.0


def test_check_validates_and_names_missing_keys() -> None:
    keys = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c"}
    ok = run("check", "--config", str(EXAMPLE), env=keys)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid" in ok.stdout
    assert "tier frontier" in ok.stdout
    missing = run("check", "--config", str(EXAMPLE), env={"GEMINI_API_KEY": ""})
    assert missing.returncode == 1
    assert "GEMINI_API_KEY is not set" in missing.stdout
    assert ": valid" not in missing.stdout  # the verdict agrees with the exit code


def test_check_reports_a_bad_file_with_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("strategy: least_latency", "strategy: fastest"))
    result = run("check", "--config", str(bad))
    assert result.returncode == 2
    assert "tiers.fast.strategy" in result.stderr
    assert f"{bad}:" in result.stderr


def test_kill_switch_rewrite_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = example_copy(tmp_path)
    assert run("kill-switch", "--config", str(path), "pin", "anthropic").returncode == 0
    text = path.read_text()
    assert load_config(path).kill_switch.pin == "anthropic"
    assert "# failover.yaml — the whole configuration" in text  # comments survive
    assert "context_fallback: {provider: gemini" in text
    assert run("kill-switch", "--config", str(path), "disable", "openai", "gemini").returncode == 0
    assert load_config(path).kill_switch.disable == ("openai", "gemini")
    shown = run("kill-switch", "--config", str(path))
    assert "disabled: openai, gemini" in shown.stdout
    before = path.read_text()
    typo = run("kill-switch", "--config", str(path), "pin", "opneai")
    assert typo.returncode == 2
    assert "unknown provider 'opneai'" in typo.stderr
    assert path.read_text() == before  # a rejected edit leaves the file alone
    assert run("kill-switch", "--config", str(path), "clear").returncode == 0
    assert not load_config(path).effective_kill_switch({}).active


def test_rewrite_appends_a_block_when_there_is_none() -> None:
    text = "providers: {}\ntiers: {}\n"
    out = rewrite(text, KillSwitch(pin="x"), who="me", at=0)
    assert out.startswith(text)
    assert 'pin: "x"' in out


CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}"}}
  backup: {{kind: gemini, base_url: "{backup}"}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
controller: {{cooloff_seconds: 60}}
state: {{path: "{state}"}}
gateway: {{port: {port}, admin_port: {admin}}}
"""


@pytest.fixture(params=["auto", "asyncio"])
async def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    """``failover serve`` on uvloop (auto) and on asyncio's own loop."""
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        port, admin = unused_port(), unused_port()
        path = tmp_path / "failover.yaml"
        path.write_text(
            CONFIG.format(
                primary=primary.url("openai"),
                backup=backup.url("gemini"),
                state=tmp_path / "state.json",
                port=port,
                admin=admin,
            )
        )
        env = {**os.environ, "FAILOVER_ADMIN_TOKEN": "adm-token-123"}
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            proc = await asyncio.create_subprocess_exec(
                *FAILOVER,
                *("serve", "--config", str(path), "--loop", request.param),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
            )
        url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        deadline = time.monotonic() + 20
        while (await asyncio.to_thread(run, "status", "--url", url)).returncode != 0:
            assert proc.returncode is None, log.read_text()
            assert time.monotonic() < deadline, "gateway did not come up: " + log.read_text()
            await asyncio.sleep(0.2)
        expected = "asyncio loop" if request.param == "asyncio" else "uvloop loop"
        assert expected in log.read_text()
        yield proc, url, admin_url
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def status_of(url: str) -> dict[str, Any]:
    result = await asyncio.to_thread(run, "status", "--url", url, "--json")
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


async def test_serve_status_drill_and_graceful_stop(
    served: tuple[asyncio.subprocess.Process, str, str],
) -> None:
    proc, url, admin_url = served
    status = await asyncio.to_thread(run, "status", "--url", url)
    assert "tier frontier" in status.stdout
    assert "primary" in status.stdout
    assert "healthy" in status.stdout
    # 5 failures in a row trip the primary, one per round of the loop below, and each round
    # runs `failover status` as a process: a few seconds each under a CPU hog, so a 30 s drill
    # ran out before the fifth (seen once). The drill outlasts the loop; the stop ends it.
    drill = ("drill", "primary", "--seconds", "300", "--admin-url", admin_url)
    no_token = await asyncio.to_thread(run, *drill, env={"FAILOVER_ADMIN_TOKEN": ""})
    assert no_token.returncode == 2
    started = await asyncio.to_thread(run, *drill, env={"FAILOVER_ADMIN_TOKEN": "adm-token-123"})
    assert started.returncode == 0, started.stderr
    body = {"model": "frontier", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # traffic during the drill trips the primary (bounded)
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200  # served by the backup: the drill is invisible
            doc = await status_of(url)
            states = {p["name"]: p["state"] for p in doc["providers"]}
            if states["primary"] == "tripped":
                break
        else:
            pytest.fail("the drill did not trip the primary")
    assert doc["tiers"][0]["serving"] == "backup"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0


def test_rewrite_keeps_comments_before_the_next_key() -> None:
    text = "kill_switch:\n  pin: null\n\n# ---- tiers ----\ntiers: {}\n# trailing note\n"
    out = rewrite(text, KillSwitch(disable=("a",)), who="me", at=0)
    assert "# ---- tiers ----\ntiers: {}" in out
    assert "# trailing note" in out
    assert 'disable: ["a"]' in out
    last = rewrite(
        "providers: {}\nkill_switch:\n  pin: null\n# the end\n", KillSwitch(), who="me", at=0
    )
    assert last.rstrip().endswith("# the end")


def test_loop_choice_is_checked_and_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop_factory("asyncio") == ("asyncio", None)
    name, factory = loop_factory("auto")
    assert name == "uvloop"  # a dependency of the package wherever the tests run (Linux)
    assert factory is not None
    assert type(factory()).__module__.startswith("uvloop")
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        loop_factory("trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(RuntimeError, match="pip install uvloop"):
        loop_factory("uvloop")
