"""Sliding windows of attempt outcomes → frozen snapshots the controller decides on."""

from controller.signals.window import (
    MAX_TRACE_IDS,
    BucketCounts,
    ProviderSignals,
    SignalSnapshot,
    SignalWindows,
)

__all__ = ["MAX_TRACE_IDS", "BucketCounts", "ProviderSignals", "SignalSnapshot", "SignalWindows"]
