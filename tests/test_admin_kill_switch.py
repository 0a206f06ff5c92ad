"""POST /admin/kill-switch: the kill switch from the admin API, written where `failover
kill-switch` writes it (the config file's flag; the fleet's in Redis in fleet mode) and audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.config import load_config
from controller.control.state import KillSwitch
from controller.fleet import fleet_audit
from controller.gateway import GatewayServer, create_admin_app
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime
from tests.fleet_support import Fleet, eventually
from tests.gateway_support import GatewayEnv, gateway_env
from tests.test_fleet import fleet, three  # noqa: F401 - fixtures and the three replicas

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env(admin_token=TOKEN) as running:
        yield running


async def _post(url: str, body: Any, headers: dict[str, str] = AUTH) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/admin/kill-switch", data=json.dumps(body), headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def test_the_admin_api_sets_and_clears_the_kill_switch(env: GatewayEnv) -> None:
    status, said = await _post(env.admin_url, {"pin": "backup-anthropic"})
    assert (status, said["ok"]) == (200, True)
    assert env.state.current.kill_switch == KillSwitch(pin="backup-anthropic")
    assert env.backend.switches[-1][1].startswith("admin-api 127.0.0.1")
    assert (await _post(env.admin_url, {"disable": ["primary-openai"]}))[0] == 200
    assert env.state.current.kill_switch.disable == ("primary-openai",)
    assert (await _post(env.admin_url, {"clear": True}))[0] == 200
    assert not env.state.current.kill_switch.active


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        "pin",
        {"pin": ""},
        {"pin": 3},
        {"disable": []},
        {"disable": [1]},
        {"clear": False},
        {"pin": "a", "clear": True},
    ],
)
async def test_a_body_that_asks_for_no_switch_is_a_400_saying_what_to_send(
    env: GatewayEnv, body: Any
) -> None:
    status, said = await _post(env.admin_url, body)
    assert status == 400
    assert '{"pin": "<provider>"}' in said["error"]
    assert env.backend.switches == []


async def test_an_unknown_provider_and_a_missing_token_change_nothing(env: GatewayEnv) -> None:
    status, said = await _post(env.admin_url, {"pin": "nobody"})
    assert (status, said["error"]) == (409, "unknown provider 'nobody'")
    assert (await _post(env.admin_url, {"pin": "backup-anthropic"}, headers={}))[0] == 401
    assert not env.state.current.kill_switch.active


async def test_the_flag_is_written_to_the_config_file_and_audited(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    path = tmp_path / "failover.yaml"
    path.write_text(
        f"""\
providers:
  primary: {{kind: openai, base_url: "{primary.url("openai")}", api_key_env: P_KEY}}
  backup: {{kind: anthropic, base_url: "{backup.url("anthropic")}", api_key_env: B_KEY}}
tiers:
  frontier:
    targets: [{{provider: primary, model: big}}, {{provider: backup, model: alt}}]
state: {{path: "{tmp_path / "state.json"}"}}
"""
    )
    runtime = Runtime(load_config(path), config_path=path, env={"P_KEY": "sk-p", "B_KEY": "sk-b"})
    await runtime.start()
    try:
        admin = create_admin_app(runtime, admin_token=TOKEN)
        async with GatewayServer(admin, host="127.0.0.1", port=0, grace=1.0) as server:
            status, said = await _post(server.url, {"pin": "backup"})
        assert status == 200
        assert said["kill_switch"] == "pinned to backup"
        assert said["routes"] == {"frontier": ["backup"]}
        assert runtime.holder.current.kill_switch.pin == "backup"
        assert load_config(path).kill_switch.pin == "backup"  # the flag on disk is the truth
        lines = (tmp_path / "state.audit.jsonl").read_text().splitlines()
        audit = [json.loads(line) for line in lines]
        (command,) = [r for r in audit if r.get("event") == "kill_switch_command"]
        assert str(command["by"]).startswith("admin-api 127.0.0.1")
        assert command["after"] == "pinned to backup"
    finally:
        await runtime.stop(grace=1.0)


async def test_in_fleet_mode_it_is_the_fleets_switch(fleet: Fleet) -> None:  # noqa: F811
    await three(fleet)
    source = fleet.replicas[0]
    admin = create_admin_app(source, admin_token=TOKEN)
    async with GatewayServer(admin, host="127.0.0.1", port=0, grace=1.0) as server:
        status, _ = await _post(server.url, {"pin": "backup"})
    assert status == 200
    for replica in fleet.replicas:
        await eventually(
            lambda r=replica: r.holder.current.kill_switch.pin == "backup",  # type: ignore[misc]
            within=10.0,
            what="every replica pinned",
        )
    assert source.fleet is not None
    records = await fleet_audit(source.fleet.link)
    assert str(records[0]["by"]).startswith("admin-api 127.0.0.1")
