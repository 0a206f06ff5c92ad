"""Attacks on the standby features (issue 21 items 1, 2, 4), kept as regression tests: a warm
request must not cost its client, a stale idle-probe failure must not hide a primary's outage,
a rate-limit reset said to be far away must not keep a target away for good.

Real fake providers over HTTP on loopback, injected clocks (no test races a timer)."""

from __future__ import annotations

import math

import pytest

from controller._clock import FakeClock
from controller.model import Message, Request
from controller.signals.headroom import Headroom, parse_duration

HELLO = Request(messages=(Message(role="user", content="hello"),))


# ----------------------------------------------------------------------------- headroom
@pytest.mark.parametrize("reset", ["inf", "1e999", "9" * 400 + "s", "99999999h"])
def test_a_reset_said_to_be_far_away_holds_a_target_an_hour_at_most(reset: str) -> None:
    clock = FakeClock()
    headroom = Headroom(clock, below=0.1, hold_seconds=60)
    headers = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": reset,
    }
    headroom.observe("openai", "gpt", headers)
    assert headroom.is_low("openai", "gpt")
    clock.advance(3601)
    assert not headroom.is_low("openai", "gpt")
    for reading in headroom.snapshot()[("openai", "gpt")].values():
        assert reading.reset is None or math.isfinite(reading.reset)


def test_an_rfc3339_reset_in_the_year_9999_holds_a_target_an_hour_at_most() -> None:
    clock = FakeClock()
    headroom = Headroom(clock, below=0.1)
    headers = {
        "anthropic-ratelimit-requests-limit": "100",
        "anthropic-ratelimit-requests-remaining": "1",
        "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
    }
    headroom.observe("anthropic", "claude", headers)
    assert headroom.is_low("anthropic", "claude")
    clock.advance(3601)
    assert not headroom.is_low("anthropic", "claude")


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "9" * 400 + "s"])
def test_a_duration_that_is_not_finite_is_no_duration(text: str) -> None:
    found = parse_duration(text)
    assert found is None or math.isfinite(found)
