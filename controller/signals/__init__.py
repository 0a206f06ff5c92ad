"""Sliding windows of attempt outcomes and the attempts still waiting → frozen snapshots the
controller decides on."""

from controller.signals.inflight import InFlight, Waiter, Waits, WaitSignals
from controller.signals.window import (
    MAX_TRACE_IDS,
    BucketCounts,
    ProviderSignals,
    SignalSnapshot,
    SignalWindows,
)

__all__ = [
    "MAX_TRACE_IDS",
    "BucketCounts",
    "InFlight",
    "ProviderSignals",
    "SignalSnapshot",
    "SignalWindows",
    "WaitSignals",
    "Waiter",
    "Waits",
]
