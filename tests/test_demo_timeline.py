"""The demo's timeline and numbers come from the times the records carry, not from its poll.

A real :class:`Runtime` with the demo's config on a :class:`FakeClock` (its fake providers are
never contacted): faults are fed to its signal windows and the controller ticks by hand, so the
trip, its routing record and its alert carry exact, known times. The demo's narrator then looks
*later* than they happened, as its 50 ms poll does, and the summary must not move. The alert's
delivery is timed by a real channel: a fake Telegram Bot API on loopback that asks for a retry.

The runtime's alert list (the demo's and the status page's) is checked here too: what it lists,
and how it marks an alert that was never sent.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from controller._clock import FakeClock
from controller._demo import DEMO_CONFIG, Narrator, Story, Tally, _Fresh, _summary
from controller.config import parse_config
from controller.control.decide import TransitionKind
from controller.control.state import HealthState
from controller.runtime import Runtime
from tests.fakes_chat import FakeTelegram, Fault
from tests.gateway_support import wait_for
from tests.notify_support import recovered
from tests.notify_support import tg as tg  # the fixture: the alias re-exports it for pytest
from tests.telemetry_support import FAILED


@asynccontextmanager
async def demo_runtime(
    tmp_path: Path, *, notify: str = "", env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    """The demo's runtime on a FakeClock; ``notify`` adds lines to its ``notify:`` section."""
    text = DEMO_CONFIG.format(
        primary="http://127.0.0.1:9/v1", backup="http://127.0.0.1:9", state=tmp_path / "s.json"
    )
    assert text.count("notify:\n") == 1
    text = text.replace("notify:\n", "notify:\n" + notify)
    clock = FakeClock()
    rt = Runtime(parse_config(text, source="demo"), env=dict(env or {}), clock=clock)
    try:
        yield rt, clock
    finally:
        await rt.stop(grace=0.5)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    async with demo_runtime(tmp_path) as running:
        yield running


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
    assert summary["alert_seconds_after_flip"] is None  # raised, but no channel has it yet
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


@pytest.mark.parametrize("log", [False, True], ids=["telegram-only", "log-too"])
async def test_alert_latency_is_from_the_flip_to_a_channel_taking_the_alert(
    tmp_path: Path, tg: FakeTelegram, log: bool
) -> None:
    """Telegram answers the alert with "retry after 2 s": the alert reaches it 2 s after the
    flip, and that is the number the demo reports (not the alert's own time, the flip's), also
    when the in-process log channel took it at once."""
    notify = f"  log: {'true' if log else 'false'}\n"
    async with demo_runtime(tmp_path, notify=notify, env=telegram_env(tg)) as (rt, clock):
        story = Story(start=rt.controller.now(), say=lambda line: None)
        narrator = Narrator(rt, story)
        rt.dispatcher.start()
        tg.push(Fault.rate_limited(2))
        tripped_at = trip_primary(rt, clock)
        await tg.wait_messages(1)
        await wait_for(lambda: clock.sleepers == 1)  # the worker waits out retry_after
        narrator.poll()
        assert rt.alerts[0]["delivered"].keys() == ({"log"} if log else set())
        clock.advance(2.0)
        await tg.wait_messages(2)
        await wait_for(lambda: "telegram" in rt.alerts[0]["delivered"])
        delivered = rt.status()["alerts"][0]["delivered"]
        assert delivered["telegram"] == pytest.approx(tripped_at + 2.0)
        narrator.poll()

    summary = _summary(story, Tally())
    assert summary["alert_seconds_after_flip"] == 2.0
    last = summary["timeline"][-1]
    assert last["event"] == "alert provider_tripped delivered (telegram)"
    assert last["t"] == pytest.approx(tripped_at + 2.0 - story.start)


async def test_a_repeat_within_the_cooldown_is_not_listed(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    """A repeat within the dispatcher's cooldown is counted as deduplicated there, not listed
    as if it had been sent (the earlier one is listed)."""
    rt, clock = runtime
    alert = recovered("primary")
    rt.notify(dataclasses.replace(alert, at=rt.controller.now()))
    clock.advance(1.0)
    rt.notify(dataclasses.replace(alert, at=rt.controller.now()))
    assert [a["event"] for a in rt.alerts] == ["provider_recovered"]


async def test_an_alert_dropped_by_a_full_queue_is_listed_as_not_sent(tmp_path: Path) -> None:
    async with demo_runtime(tmp_path, notify="  queue_size: 1\n") as (rt, _):
        rt.notify(recovered("primary"))  # not started: it stays queued, the queue is full
        rt.notify(recovered("backup"))
        dropped, queued = rt.status()["alerts"]  # newest first
    assert dropped["text"] == "backup provider recovered (not sent: alert queue full)"
    assert dropped["sent"] is False
    assert queued["text"] == "primary provider recovered"
    assert queued["sent"] is None


async def test_alerts_dropped_at_shutdown_are_listed_as_not_sent(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    rt, _ = runtime
    rt.notify(recovered("primary"))  # queued; the dispatcher stops before sending it
    await rt.dispatcher.stop(timeout=0.5)
    rt.notify(recovered("backup"))
    late, cut = rt.status()["alerts"]
    assert late["text"] == "backup provider recovered (not sent: shutting down)"
    assert late["sent"] is False
    assert cut["not_sent_to"] == ["log"]  # queued, then dropped by its channel's worker
    assert cut["delivered_at"] is None


def telegram_env(tg: FakeTelegram) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_CHAT_ID": "111",
        "TELEGRAM_API_BASE_URL": tg.url,
    }


async def test_with_only_the_log_its_delivery_is_the_alert_latency(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    """A plain `failover demo`: no phone channel, so the log's delivery is the figure."""
    rt, clock = runtime
    story = Story(start=rt.controller.now(), say=lambda line: None)
    narrator = Narrator(rt, story)
    rt.dispatcher.start()
    trip_primary(rt, clock)
    await wait_for(lambda: "log" in rt.alerts[0]["delivered"])
    narrator.poll()
    summary = _summary(story, Tally())
    assert summary["alert_seconds_after_flip"] == 0.0  # the fake clock did not move
    assert "alert provider_tripped delivered (log)" in [r["event"] for r in summary["timeline"]]


async def test_a_phone_channel_that_fails_leaves_no_alert_latency_and_says_so(
    tmp_path: Path, tg: FakeTelegram
) -> None:
    """Telegram set up but refusing: the log took the alert at once, but nobody's phone did, so
    the demo reports no latency (not the log's) and says the alert was not sent there."""
    async with demo_runtime(tmp_path, env=telegram_env(tg)) as (rt, clock):
        story = Story(start=rt.controller.now(), say=lambda line: None)
        narrator = Narrator(rt, story)
        rt.dispatcher.start()
        tg.push(Fault.error(400))
        trip_primary(rt, clock)
        await wait_for(lambda: "telegram" in rt.alerts[0]["not_sent_to"])
        await wait_for(lambda: "log" in rt.alerts[0]["delivered"])
        narrator.poll()
    summary = _summary(story, Tally())
    assert summary["alert_seconds_after_flip"] is None
    events = [row["event"] for row in summary["timeline"]]
    assert "alert provider_tripped delivered (log)" in events
    assert "alert provider_tripped NOT sent (telegram)" in events
