"""``failover run`` end to end: the command starts its gateway on loopback from a config whose
providers are fakes, runs a stand-in CLI (``tests/stand_in_cli.py``: it reads the variables the
real CLI reads and calls the gateway with the official SDK of that CLI's wire format), and
exits with the CLI's status. The primary fails, so each answer also shows the failover."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller._run import tool_environment
from controller.providers.fake import FakeProvider, FaultMode

FAILOVER = [sys.executable, "-m", "controller.cli"]
STAND_IN = f"{sys.executable} -m tests.stand_in_cli"
ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-run-client-key-0001"
CONFIG = """
providers:
  oa:
    kind: openai
    base_url: {primary}/v1
    api_key_env: RUN_FAKE_KEY
  an:
    kind: anthropic
    base_url: {backup}
    api_key_env: RUN_FAKE_KEY
tiers:
  frontier:
    targets:
      - {{provider: oa, model: gpt-big}}
      - {{provider: an, model: claude-alt}}
aliases:
  "claude-*": frontier
  "gpt-5*": frontier
  "gemini-2.5-pro": frontier
state:
  path: {state}
gateway:
  api_keys_env: RUN_CLIENT_KEYS
"""


@pytest.fixture
async def config(tmp_path: Path) -> AsyncIterator[Path]:
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        primary.set_fault(FaultMode.ERROR_503)  # down for the whole session: the backup serves
        path = tmp_path / "failover.yaml"
        path.write_text(
            CONFIG.format(
                primary=primary.url("anthropic"),
                backup=backup.url("anthropic"),
                state=tmp_path / "state.json",
            )
        )
        yield path


async def _run(tool: str, config: Path, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    return await _run_command(tool, config, tmp_path, f"{STAND_IN} {tool}", *extra)


async def _run_command(
    tool: str, config: Path, tmp_path: Path, command: str, *extra: str
) -> tuple[int, str, str]:
    env = dict(os.environ)
    env |= {
        "RUN_FAKE_KEY": "sk-fake-provider",
        "RUN_CLIENT_KEYS": KEY,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "ANTHROPIC_API_KEY": "sk-ant-users-own-key",  # taken out for claude
    }
    env.pop("FAILOVER_API_KEY", None)
    argv = [*FAILOVER, "run", tool, "--config", str(config), "--log", str(tmp_path / "gw.log")]
    argv += ["--command", command]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        *extra,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("tool", ["codex", "claude", "gemini"])
async def test_the_cli_reaches_the_gateway_and_survives_the_outage(
    tool: str, config: Path, tmp_path: Path
) -> None:
    code, out, err = await _run(tool, config, tmp_path, "--", "--flag-for-the-cli")
    assert code == 0, err
    assert f"stand-in {tool} got: Hello from backup" in out
    assert "--flag-for-the-cli" in out
    assert "-> tier frontier (oa -> an)" in err
    assert KEY not in out + err


async def test_a_model_no_tier_routes_is_named_before_the_cli_starts(
    config: Path, tmp_path: Path
) -> None:
    code, _, err = await _run("codex", config, tmp_path, "--model", "o3-unknown")
    assert "o3-unknown: not routed by this config" in err
    assert code != 0  # the stand-in's call got the gateway's 404


def test_each_cli_is_pointed_at_the_gateway(tmp_path: Path) -> None:
    home = {"ANTHROPIC_API_KEY": "mine", "GOOGLE_API_KEY": "g", "XDG_CACHE_HOME": str(tmp_path)}
    env, args = tool_environment("claude", "http://127.0.0.1:1/", "k", home)
    assert (env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_AUTH_TOKEN"], args) == (
        "http://127.0.0.1:1",
        "k",
        [],
    )
    assert "ANTHROPIC_API_KEY" not in env
    env, args = tool_environment("codex", "http://127.0.0.1:1", "k", home, model="gpt-5")
    assert args[-2:] == ["--model", "gpt-5"]
    assert 'base_url="http://127.0.0.1:1/v1"' in args[1]
    assert env["FAILOVER_RUN_KEY"] == "k"
    env, _ = tool_environment("gemini", "http://127.0.0.1:1", "k", home)
    assert "GOOGLE_API_KEY" not in env
    assert env["GEMINI_CLI_SYSTEM_SETTINGS_PATH"].startswith(str(tmp_path))


LIMITED = """
import os, socket, urllib.parse
url = urllib.parse.urlparse(os.environ["ANTHROPIC_BASE_URL"])
held = socket.create_connection((url.hostname, url.port))  # the one connection allowed
second = socket.create_connection((url.hostname, url.port))
second.settimeout(20)
print("second:", second.recv(200).split(b"\\r\\n")[0].decode())
"""


@pytest.fixture
def limited(config: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The config with ``gateway.max_connections: 1``, and a command that opens two."""
    path = tmp_path / "limited.yaml"
    path.write_text(config.read_text() + "  max_connections: 1\n")
    script = tmp_path / "two_connections.py"
    script.write_text(LIMITED)
    return path, script


async def test_the_gateway_it_starts_keeps_the_config_s_connection_limits(
    limited: tuple[Path, Path], tmp_path: Path
) -> None:
    """``gateway.max_connections`` (and the other connection limits) hold for ``failover
    run``'s gateway as for ``failover serve``'s: here one connection, so a second is refused."""
    path, script = limited
    code, out, err = await _run_command("claude", path, tmp_path, f"{sys.executable} {script}")
    assert code == 0, err
    assert "second: HTTP/1.1 503 Service Unavailable" in out
