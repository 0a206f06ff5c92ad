"""The audit trail: routing and kill-switch changes land in a JSON-lines file beside the state
file, survive a restart, stay bounded by rotation, hold no secret, and never fail routing when
the file cannot be written; ``failover history`` reads them back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from controller import cli
from controller._redact import hold
from controller.config import load_config
from controller.control.audit import AuditLog, audit_path, kill_switch_record, read_audit
from controller.control.state import HealthState, KillSwitch
from controller.providers.fake import FakeProvider, FaultMode
from controller.runtime import Runtime
from tests.test_runtime_e2e import RPS, steady_traffic, wait_for_state, write_config

SECRET = "sk-audit-secret-0123456789abcdef"

CONFIG = """
providers:
  a: {{kind: openai, base_url: "http://127.0.0.1:9/v1"}}
  b: {{kind: openai, base_url: "http://127.0.0.1:9/v1"}}
tiers:
  t: {{targets: [{{provider: a, model: m}}, {{provider: b, model: m}}]}}
state: {{path: "{state}"}}
{kill_switch}
"""


def _config_file(tmp_path: Path, kill_switch: str = "") -> Path:
    path = tmp_path / "failover.yaml"
    state = tmp_path / "state" / "failover-state.json"
    path.write_text(CONFIG.format(state=state, kill_switch=kill_switch))
    return path


def test_the_log_sits_beside_the_state_file() -> None:
    assert audit_path("/var/lib/failover/failover-state.json") == Path(
        "/var/lib/failover/failover-state.audit.jsonl"
    )


def test_records_are_rotated_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=4096, files=3)
    for n in range(200):
        assert log.append({"at": 1000.0 + n, "event": "routing", "n": n, "pad": "x" * 100})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    records = read_audit(path)
    numbers = [r["n"] for r in records]
    assert numbers == list(range(numbers[0], 200))  # the newest, in order, nothing in between lost
    assert [r["n"] for r in read_audit(path, last=5)] == [195, 196, 197, 198, 199]
    assert records[-1]["time"] == "1970-01-01T00:19:59.000Z"


def test_no_secret_reaches_the_file(tmp_path: Path) -> None:
    hold(SECRET)
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append(
        {"event": "routing", "reason": f"provider said: bad key {SECRET}; Authorization: Bearer x"}
    )
    text = path.read_text()
    assert SECRET not in text
    assert "***" in text


def test_an_unwritable_log_is_reported_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")  # its directory is a file: every write fails
    caplog.set_level(logging.WARNING)
    assert not log.append({"event": "routing"})
    assert not log.append({"event": "routing"})
    errors = [r for r in caplog.records if "cannot write the audit log" in r.getMessage()]
    assert len(errors) == 1
    blocker.unlink()
    assert log.append({"event": "routing"})  # once it can be written again, it is
    assert any("written again" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    assert not AuditLog(path).append({"event": "routing"})


async def test_kill_switch_changes_are_recorded_and_outlive_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway records the switch it applies (by ``config``), the ``kill-switch`` command
    records who ran it, and ``failover history`` shows both after the gateway is gone."""
    path = _config_file(tmp_path, "kill_switch: {pin: a}")
    config = load_config(path)
    runtime = Runtime(config, env={})
    await runtime.start()
    await runtime.stop(grace=0.1)

    os.environ.setdefault("USER", "tester")
    assert cli.main(["kill-switch", "--config", str(path), "clear"]) == 0
    capsys.readouterr()

    assert cli.main(["history", "--config", str(path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["event"], r["after"]) for r in records] == [
        ("kill_switch", "pinned to a"),
        ("kill_switch_command", "off"),
    ]
    assert records[0]["by"] == "config"
    assert records[0]["version"] >= 1
    assert records[1]["by"] == os.environ["USER"]
    assert records[1]["before"] == "pinned to a"

    assert cli.main(["history", "--config", str(path), "-n", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "kill-switch command: pinned to a -> off" in out[0]


def test_history_with_nothing_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_file(tmp_path)
    assert cli.main(["history", "--config", str(path)]) == 0
    assert "no changes recorded" in capsys.readouterr().out


def test_kill_switch_record_shape() -> None:
    record = kill_switch_record(
        KillSwitch(), KillSwitch(disable=("a", "b")), by="config", at=5.0, version=3
    )
    assert record == {
        "at": 5.0,
        "event": "kill_switch",
        "by": "config",
        "version": 3,
        "before": "off",
        "after": "disabled: a, b",
        "pin": None,
        "disable": ["a", "b"],
    }


async def test_a_trip_and_its_recovery_are_recorded_and_outlive_the_runtime(
    tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    """A real outage through the runtime (fake providers on loopback): the trip, the probe, the
    failback and the recovery are in the audit log, by ``controller``, with their numbers, and a
    new runtime on the same state file appends after them (nothing is lost on restart)."""
    path = tmp_path / "failover.yaml"
    write_config(path, primary, backup)
    env = {"PRIMARY_KEY": SECRET, "BACKUP_KEY": "sk-backup-secret-0123456789"}
    runtime = Runtime(load_config(path), config_path=path, env=env)
    await runtime.start()
    try:
        traffic = steady_traffic(runtime)
        load = asyncio.create_task(traffic.run(rate=RPS, max_seconds=9.0))
        primary.set_fault(FaultMode.ERROR_503)
        await wait_for_state(runtime, "primary", HealthState.TRIPPED, within=5.0)
        primary.clear_fault()
        await wait_for_state(runtime, "primary", HealthState.HEALTHY, within=8.0)
        await load
    finally:
        await runtime.stop(grace=1.0)
    log_path = audit_path(tmp_path / "state.json")
    changes = [(r["change"], r["from"], r["to"]) for r in read_audit(log_path)]
    assert changes[0] == ("trip", "healthy", "tripped")
    assert changes[-1][2] == "healthy"
    assert {"probe", "failback"} <= {c for c, _, _ in changes}
    trip = read_audit(log_path)[0]
    assert trip["by"] == "controller"
    assert trip["provider"] == "primary"
    assert trip["error_rate"] > 0 or trip["cause"] == "consecutive_failures"
    assert SECRET not in log_path.read_text()

    again = Runtime(load_config(path), config_path=path, env=env)
    await again.start()
    await again.stop(grace=0.1)
    assert again.audit is not None
    again.audit.append({"event": "note"})
    assert len(read_audit(log_path)) == len(changes) + 1
