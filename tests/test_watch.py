"""Config hot reload: a file caught mid-write is neither applied nor rejected; a bad one is.

Each test drives the watcher over a real file. ``check()`` is one poll; the run loop is driven
by a FakeClock, so no test sleeps for real. Every write moves the file's mtime explicitly, so a
filesystem with coarse timestamps cannot hide a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import Config, ConfigWatcher, parse_config
from tests.config_support import rewrite_in_place

GOOD = """\
providers:
  openai: {kind: openai}
  anthropic: {kind: anthropic}
tiers:
  frontier:
    targets:
      - {provider: openai, model: gpt-4o}
      - {provider: anthropic, model: claude}
kill_switch: {pin: %s}
"""
OLD = GOOD % "null"
NEW = GOOD % "anthropic"
HALF = NEW[: len(NEW) // 2]  # ends inside a flow mapping: invalid YAML
BAD = OLD.replace("tiers:", "tiers:\n  broken: {targets: []}")


@dataclass
class Seen:
    """The watcher's two callbacks, recorded."""

    applied: list[Config] = field(default_factory=list)
    rejected: list[ConfigError] = field(default_factory=list)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "failover.yaml"
    path.write_text(OLD, encoding="utf-8")
    return path


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def watcher(path: Path, seen: Seen, clock: FakeClock) -> ConfigWatcher:
    return ConfigWatcher(
        path, clock=clock, on_change=seen.applied.append, on_error=seen.rejected.append
    )


def pins(seen: Seen) -> list[str | None]:
    return [config.kill_switch.pin for config in seen.applied]


def test_a_file_caught_mid_rewrite_is_not_rejected(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    rewrite_in_place(path, "")
    assert watcher.check() is False  # truncated
    rewrite_in_place(path, HALF)
    assert watcher.check() is False  # half written
    rewrite_in_place(path, NEW)
    assert watcher.check() is False  # complete, but not yet seen to hold still
    assert watcher.check() is True
    assert seen.rejected == []
    assert pins(seen) == ["anthropic"]
    assert watcher.check() is False  # applied once


def test_a_rewrite_back_to_the_same_content_does_nothing(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    rewrite_in_place(path, "")
    watcher.check()
    rewrite_in_place(path, OLD)
    watcher.check()
    watcher.check()
    assert seen == Seen()


@pytest.mark.parametrize("bad", [BAD, HALF, ""], ids=["invalid", "half-written", "empty"])
def test_a_bad_file_that_holds_still_is_rejected_once_and_the_old_config_kept(
    path: Path, watcher: ConfigWatcher, seen: Seen, bad: str
) -> None:
    rewrite_in_place(path, bad)
    watcher.check()
    assert watcher.check() is False  # read once: maybe still being written
    assert seen.rejected == []
    assert watcher.check() is True  # the same bytes a poll later: rejected
    assert len(seen.rejected) == 1
    assert str(path) in str(seen.rejected[0])
    assert seen.applied == []
    for _ in range(3):
        assert watcher.check() is False  # reported once, not on every poll
    assert len(seen.rejected) == 1

    rewrite_in_place(path, NEW)  # the fix is applied as usual
    watcher.check()
    watcher.check()
    assert pins(seen) == ["anthropic"]


def test_a_writer_that_pauses_half_way_longer_than_a_poll_is_not_rejected(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    rewrite_in_place(path, HALF)
    watcher.check()
    assert watcher.check() is False  # the half it sees fails to parse: not reported yet
    with path.open("a") as f:  # the writer goes on, a poll later (HALF is NEW's first half)
        f.write(NEW[len(HALF) :])
    watcher.check()
    assert watcher.check() is True
    assert seen.rejected == []
    assert pins(seen) == ["anthropic"]


def test_poke_applies_a_finished_edit_without_waiting_for_a_second_poll(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    rewrite_in_place(path, NEW)
    watcher.poke()
    assert watcher.check() is True
    assert pins(seen) == ["anthropic"]


def test_poke_rejects_a_finished_bad_edit_at_once(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    rewrite_in_place(path, BAD)
    watcher.poke()
    assert watcher.check() is True
    assert len(seen.rejected) == 1
    assert seen.applied == []


def test_a_write_that_lands_while_the_file_is_read_is_not_rejected(
    path: Path, watcher: ConfigWatcher, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP while the editor has truncated but not yet written: the read sees an empty file,
    the write lands before the watcher acts on it, and the empty read must not be reported."""
    rewrite_in_place(path, "")
    read = watcher._read_bytes

    def read_then_the_writer_finishes() -> bytes | None:
        data = read()
        rewrite_in_place(path, NEW)
        return data

    monkeypatch.setattr(watcher, "_read_bytes", read_then_the_writer_finishes)
    watcher.poke()
    assert watcher.check() is False
    monkeypatch.undo()
    assert seen.rejected == []
    assert watcher.check() is False  # the finished write is new: it must hold still first
    assert watcher.check() is True
    assert pins(seen) == ["anthropic"]
    assert seen.rejected == []


def test_a_missing_file_keeps_the_running_config_silently(
    path: Path, watcher: ConfigWatcher, seen: Seen
) -> None:
    path.unlink()
    watcher.check()
    watcher.check()
    assert seen == Seen()


# ------------------------------------------------------------------------ the run loop


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (bounded: no real sleep, no hang)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("condition not reached")


@pytest.fixture
async def running(watcher: ConfigWatcher, clock: FakeClock) -> AsyncIterator[ConfigWatcher]:
    task = asyncio.create_task(watcher.run())
    await until(lambda: clock.sleepers == 1)  # first poll done, sleeping
    yield watcher
    watcher.stop()
    await asyncio.wait_for(task, timeout=1.0)


async def poll(clock: FakeClock) -> None:
    """One interval passes; returns once the loop has polled and gone back to sleep."""
    clock.advance(0.25)
    await until(lambda: clock.sleepers == 1)


async def test_a_saved_edit_is_applied_within_two_polls(
    path: Path, running: ConfigWatcher, clock: FakeClock, seen: Seen
) -> None:
    rewrite_in_place(path, "")  # an editor mid-save as the poll lands
    await poll(clock)
    rewrite_in_place(path, NEW)
    await poll(clock)
    assert seen == Seen()
    await poll(clock)  # 0.5 s after the save finished
    assert pins(seen) == ["anthropic"]
    assert seen.rejected == []


async def test_sighup_applies_at_once_without_time_passing(
    path: Path, running: ConfigWatcher, clock: FakeClock, seen: Seen
) -> None:
    rewrite_in_place(path, NEW)
    running.poke()
    await until(lambda: bool(seen.applied))
    assert pins(seen) == ["anthropic"]
    assert clock.monotonic() == FakeClock().monotonic()


def running_watcher(path: Path, seen: Seen, clock: FakeClock, running: str) -> ConfigWatcher:
    """A watcher told which config is in force (as the runtime does), not the file as it is."""
    return ConfigWatcher(
        path,
        clock=clock,
        on_change=seen.applied.append,
        on_error=seen.rejected.append,
        running=parse_config(running, source=str(path)),
    )


def test_an_edit_saved_between_loading_and_watching_is_applied(
    path: Path, seen: Seen, clock: FakeClock
) -> None:
    rewrite_in_place(path, NEW)  # saved after the runtime loaded OLD, before its watcher started
    watcher = running_watcher(path, seen, clock, OLD)
    watcher.check()
    watcher.check()
    assert pins(seen) == ["anthropic"]
    assert seen.rejected == []


def test_the_file_in_force_and_comment_only_edits_are_not_reloaded(
    path: Path, seen: Seen, clock: FakeClock
) -> None:
    watcher = running_watcher(path, seen, clock, OLD)
    for _ in range(3):
        watcher.check()
    rewrite_in_place(path, "# a comment, nothing else changed\n" + OLD)
    for _ in range(3):
        watcher.check()
    assert seen == Seen()
    rewrite_in_place(path, NEW)
    watcher.check()
    watcher.check()
    assert pins(seen) == ["anthropic"]
