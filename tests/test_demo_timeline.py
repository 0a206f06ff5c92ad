"""The demo's timeline and numbers come from the times the records carry, not from its poll.

A real :class:`Runtime` with the demo's config on a :class:`FakeClock` (its fake providers are
never contacted): faults are fed to its signal windows and the controller ticks by hand, so the
trip, its routing record and its alert carry exact, known times. The demo's narrator then looks
*later* than they happened, as its 50 ms poll does, and the summary must not move.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller._clock import FakeClock
from controller._config import parse_config
from controller._demo import DEMO_CONFIG, Narrator, Story, Tally, _Fresh, _summary
from controller.control.decide import TransitionKind
from controller.control.state import HealthState
from controller.runtime import Runtime
from tests.notify_support import recovered
from tests.telemetry_support import FAILED


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    text = DEMO_CONFIG.format(
        primary="http://127.0.0.1:9/v1", backup="http://127.0.0.1:9", state=tmp_path / "s.json"
    )
    clock = FakeClock()
    rt = Runtime(parse_config(text, source="demo"), env={}, clock=clock)
    yield rt, clock
    await rt.stop(grace=0.5)


def trip_primary(rt: Runtime, clock: FakeClock) -> float:
    """Five faults 0.1 s apart, then a tick: the trip. Returns the trip's own time."""
    for _ in range(5):
        clock.advance(0.1)
        rt.windows.on_attempt(dataclasses.replace(FAILED, provider="primary"))
    (trip,) = rt.controller.tick().events
    assert (trip.kind, trip.to_state) == (TransitionKind.TRIP, HealthState.TRIPPED)
    return trip.at


async def test_timeline_uses_recorded_times_not_poll_times(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    rt, clock = runtime
    printed: list[str] = []
    story = Story(start=rt.controller.now(), say=printed.append)
    narrator = Narrator(rt, story)
    clock.advance(4.0)
    story.add(rt.controller.now(), "outage", "primary is DOWN")
    tripped_at = trip_primary(rt, clock)
    assert tripped_at == pytest.approx(story.start + 4.5)
    assert rt.holder.current.status("primary").since == tripped_at  # the routing state's time
    story.add(tripped_at, "tripped", "traffic now goes to backup")
    clock.advance(3.0)
    story.add(rt.controller.now(), "back", "primary is back up")  # before the poll looks
    clock.advance(2.0)
    rt.notify(dataclasses.replace(recovered("primary"), at=rt.controller.now()))
    clock.advance(0.05)  # the poll notices everything late, and all at once
    narrator.poll()

    summary = _summary(story, Tally())
    assert summary["detection_seconds"] == 0.5
    assert summary["alert_seconds_after_flip"] == 0.0  # raised in the tick that flipped
    assert summary["alerts"] == ["provider_tripped", "provider_recovered"]  # sending order
    assert summary["tripped"] is True
    timeline = [(row["t"], row["event"].split(":")[0]) for row in summary["timeline"]]
    assert timeline == [
        (4.0, "primary is DOWN"),
        (4.5, "traffic now goes to backup"),
        (4.5, "routing"),
        (4.5, "ALERT [warning] primary provider tripped"),
        (7.5, "primary is back up"),
        (9.5, "ALERT [info] primary provider recovered"),
    ]
    assert printed[-3].startswith("[  4.50s] routing: primary: healthy -> tripped")
    assert printed[-1].startswith("[  9.50s] ALERT [info] primary provider recovered")


def test_fresh_finds_new_records_once_the_history_is_full() -> None:
    history: collections.deque[dict[str, Any]] = collections.deque(maxlen=3)
    fresh = _Fresh(history)
    for n in range(3):
        history.appendleft({"n": n})
    assert [item["n"] for item in fresh()] == [0, 1, 2]
    assert fresh() == []
    history.appendleft({"n": 3})
    history.appendleft({"n": 4})  # full: the length stays 3
    assert [item["n"] for item in fresh()] == [3, 4]


async def test_an_alert_the_dispatcher_does_not_queue_is_not_listed(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    """The demo's and the status page's alert list shows what went out: a repeat within the
    dispatcher's cooldown is counted as deduplicated there, not listed as if it had been sent."""
    rt, clock = runtime
    alert = recovered("primary")
    rt.notify(dataclasses.replace(alert, at=rt.controller.now()))
    clock.advance(1.0)
    rt.notify(dataclasses.replace(alert, at=rt.controller.now()))
    assert [a["event"] for a in rt.alerts] == ["provider_recovered"]
