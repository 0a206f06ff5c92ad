"""Fleet mode's audit trail: the leader writes the fleet's routing decisions to its file audit
log (each record naming the replica), followers write none, a fleet-wide kill switch is in the
leader's log as applied and in Redis as the operator's; ``failover history`` shows both, and
with Redis away this replica's log alone (never the URL). Real redis-server; whole Runtimes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.control.audit import audit_path, read_audit
from controller.control.state import HealthState, KillSwitch
from controller.fleet import set_fleet_kill_switch
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.fakes_chat import FakeTelegram
from tests.fleet_support import Fleet, eventually, state_of
from tests.redis_support import RedisServer
from tests.traffic import Traffic

ROOT = Path(__file__).resolve().parent.parent
FAILOVER = [sys.executable, "-m", "controller.cli"]


@pytest.fixture
async def fleet(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> AsyncIterator[Fleet]:
    redis = RedisServer(tmp_path)
    await redis.start()
    async with FakeTelegram() as tg:
        group = Fleet(redis=redis, primary=primary, backup=backup, tg=tg, workdir=tmp_path)
        try:
            yield group
        finally:
            await group.stop()
            redis.stop()


def log_of(runtime: Runtime) -> list[dict[str, object]]:
    return read_audit(audit_path(runtime.config.state.path))


async def history(config: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *FAILOVER,
        "history",
        "--config",
        str(config),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_leader_audits_the_fleet_and_history_shows_it(
    fleet: Fleet, primary: FakeProvider
) -> None:
    leader = await fleet.add("gw-a")
    await eventually(lambda: fleet.leaders() == [leader], within=10, what="gw-a leading")
    follower = await fleet.add("gw-b")
    traffic = Traffic(fleet.send())
    load = asyncio.create_task(traffic.run(rate=30, max_seconds=4.0))
    primary.set_fault(FaultMode.ERROR_503)
    await eventually(lambda: state_of(follower) is HealthState.TRIPPED, within=10, what="trip")
    await load
    primary.clear_fault()

    [trip, *_] = [r for r in log_of(leader) if r["event"] == "routing"]
    assert (trip["change"], trip["provider"], trip["replica"]) == ("trip", "primary", "gw-a")
    assert isinstance(trip["version"], int)
    assert 1 < trip["version"] <= leader.holder.current.version
    assert [r for r in log_of(follower) if r["event"] == "routing"] == []  # it decided nothing

    assert leader.fleet is not None
    await set_fleet_kill_switch(leader.fleet.link, KillSwitch(pin="backup"), by="alice")
    await eventually(
        lambda: any(r["event"] == "kill_switch" for r in log_of(leader)),
        within=10,
        what="the leader auditing the fleet switch",
    )
    [applied] = [r for r in log_of(leader) if r["event"] == "kill_switch"]
    assert (applied["by"], applied["after"], applied["replica"]) == (
        "operator:alice",
        "pinned to backup",
        "gw-a",
    )

    env = {"FAILOVER_REDIS_URL": fleet.redis.url}
    code, out, err = await history(fleet.config_path("gw-a"), env)
    assert code == 0, err
    lines = out.splitlines()
    assert any("primary: healthy -> tripped" in line and "[replica gw-a]" in line for line in lines)
    assert any("fleet kill switch: off -> pinned to backup" in line for line in lines), out
    assert any(
        "alice" in line and "fleet kill switch" in line for line in lines
    )  # the operator's own record, from Redis

    fleet.redis.stop()
    code, out, err = await history(fleet.config_path("gw-a"), env)
    assert code == 0
    assert "primary: healthy -> tripped" in out  # this replica's log still reads
    assert "did not answer" in err
    assert "$FAILOVER_REDIS_URL" in err
    assert fleet.redis.url not in out + err
