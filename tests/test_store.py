"""State stores: atomic file round trip, corrupt files, restart resumes the decision."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import MappingProxyType

import pytest

from controller._clock import FakeClock
from controller.control.config import TripwireConfig
from controller.control.loop import Controller
from controller.control.state import (
    HealthState,
    KillSwitch,
    ProviderStatus,
    RoutingState,
    StateHolder,
)
from controller.control.store import (
    SCHEMA_VERSION,
    FileStateStore,
    MemoryStateStore,
    StateStore,
    decode_state,
    encode_state,
)
from controller.signals import SignalWindows


def sample_state() -> RoutingState:
    return RoutingState(
        version=12,
        updated_at=1_800_000_123.5,
        changed_by="controller",
        providers=MappingProxyType(
            {
                "anthropic": ProviderStatus(
                    state=HealthState.RECOVERING,
                    since=1_800_000_100.0,
                    reason="3 probes in a row succeeded",
                    trip_count=2,
                    traffic_share=0.5,
                ),
                "openai": ProviderStatus(),
            }
        ),
        kill_switch=KillSwitch(disable=("gemini",)),
    )


def test_file_round_trip(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    store.save(sample_state())
    assert FileStateStore(tmp_path / "state.json").load() == sample_state()


def test_file_is_versioned_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    FileStateStore(path).save(sample_state())
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["version"] == 12
    assert doc["providers"]["anthropic"]["state"] == "recovering"
    assert doc["kill_switch"] == {"pin": None, "disable": ["gemini"]}


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = FileStateStore(path)
    store.save(RoutingState(version=1))
    inode_before = path.stat().st_ino
    store.save(sample_state())
    assert path.stat().st_ino != inode_before  # a new file was renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert store.load().version == 12


def test_failed_save_raises_and_cleans_up_its_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # os.replace cannot put a file over a directory (even as root)
    (path / "keep").write_text("x")
    with pytest.raises(IsADirectoryError):
        FileStateStore(path).save(sample_state())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert (path / "keep").read_text() == "x"


def test_missing_file_is_a_fresh_state(tmp_path: Path) -> None:
    assert FileStateStore(tmp_path / "nope.json").load() == RoutingState()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema": 99}', "unknown schema 99"),
        (
            encode_state(sample_state()).replace('"recovering"', '"sleeping"'),
            "bad field",
        ),
        (encode_state(sample_state()).replace('"version": 12', '"version": "12"'), "bad field"),
        (encode_state(sample_state()).replace("0.5", "7.5"), "outside"),
    ],
)
def test_corrupt_file_gives_fresh_state_and_keeps_a_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, problem: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with caplog.at_level(logging.ERROR, logger="controller.control.store"):
        state = FileStateStore(path).load()
    assert state == RoutingState()
    assert (tmp_path / "state.json.corrupt").read_text() == content
    (record,) = caplog.records
    assert str(path) in record.getMessage()
    assert problem in record.getMessage()


def test_unreadable_file_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with caplog.at_level(logging.ERROR):
        assert FileStateStore(path).load() == RoutingState()
    assert "cannot read it" in caplog.text


def test_decode_rejects_a_boolean_where_a_number_belongs() -> None:
    text = encode_state(sample_state()).replace('"trip_count": 2', '"trip_count": true')
    with pytest.raises(ValueError, match="trip_count"):
        decode_state(text)


def test_memory_store_round_trip() -> None:
    store: StateStore = MemoryStateStore()
    assert store.load() == RoutingState()
    store.save(sample_state())
    assert store.load() == sample_state()


def make_controller(store: StateStore, holder: StateHolder, clock: FakeClock) -> Controller:
    return Controller(
        clock=clock,
        windows=SignalWindows(clock=clock),
        holder=holder,
        store=store,
        cfg=TripwireConfig(),
        tiers={"frontier": ("openai", "anthropic")},
    )


def test_restart_resumes_the_saved_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    clock = FakeClock()
    first = make_controller(FileStateStore(path), StateHolder(), clock)
    first.resume()
    saved = first.set_kill_switch(KillSwitch(pin="openai"), changed_by="operator")
    assert saved.version == 1

    holder = StateHolder()
    second = make_controller(FileStateStore(path), holder, FakeClock())
    second.resume()
    assert holder.current == saved
    assert holder.current.kill_switch.pin == "openai"
    assert holder.current.changed_by == "operator"
