"""Log-spaced latency bins (ratio 2**0.25, ~9% error at a bin's middle), shared by the signal
windows' percentiles and the in-flight registry's baselines: bounded memory per histogram."""

from __future__ import annotations

import math

# Bin 0 holds everything <= 1 ms; bin i holds (LAT_MIN*f**(i-1), LAT_MIN*f**i].
LAT_MIN = 0.001
LAT_FACTOR = 2**0.25
LAT_BINS = 84  # the last bin tops out near 1,600 s and also holds anything longer
_LOG_FACTOR = math.log(LAT_FACTOR)


def latency_bin(seconds: float) -> int:
    """The histogram bin of one latency."""
    if seconds <= LAT_MIN:
        return 0
    index = math.ceil(math.log(seconds / LAT_MIN) / _LOG_FACTOR - 1e-9)
    return min(index, LAT_BINS - 1)


def bin_value(index: int) -> float:
    """A representative latency for a bin: its geometric middle."""
    if index == 0:
        return LAT_MIN
    return float(LAT_MIN * LAT_FACTOR ** (index - 0.5))
