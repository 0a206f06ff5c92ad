"""Retry policy: when retrying the *same* provider helps, and how long to wait first.

Small composable pieces over a frozen :class:`RetryState`, in the manner of tenacity: the router
asks ``policy(state)`` and gets a delay in seconds, or ``None`` to move on to the next provider.
Anything not worth retrying here (timeouts, malformed answers, auth) fails over at once: a
backup answers sooner than a sick provider recovers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from controller._errors import ConnectionFailed, Overloaded, ProviderError, RateLimited


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    error: ProviderError
    tries_here: int  # attempts already made on this provider in this request (>= 1)
    remaining: float  # seconds left before the request's deadline
    has_alternative: bool  # another provider is still to be tried


RetryPolicy = Callable[[RetryState], float | None]


def exponential_jitter(
    tries: int, *, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(tries-1))]."""
    return rng() * min(cap, base * 2.0 ** (tries - 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultRetryPolicy:
    """The documented default.

    * 429 with Retry-After: wait exactly that long (never sooner) when it is short
      (``wait_retry_after_under``, even with another provider waiting: the same model soon beats
      a different one now), or when no other provider is waiting and it is at most
      ``max_retry_after``; otherwise fail over rather than stall;
    * 429 without Retry-After, one transient 5xx, or a reset connection: one retry with
      exponential backoff and full jitter, when the wait fits the deadline;
    * everything else: no retry here.
    """

    max_tries_per_provider: int = 2
    max_retry_after: float = 5.0
    wait_retry_after_under: float = 3.0
    backoff_base: float = 0.2
    backoff_cap: float = 2.0
    rng: Callable[[], float] = random.random

    def __call__(self, state: RetryState) -> float | None:
        if state.tries_here >= self.max_tries_per_provider:
            return None
        delay = self._delay(state)
        if delay is None or delay >= state.remaining:
            return None
        return delay

    def _delay(self, state: RetryState) -> float | None:
        err = state.error
        if isinstance(err, RateLimited) and err.retry_after is not None:
            if err.retry_after <= self.wait_retry_after_under:
                return err.retry_after
            if state.has_alternative or err.retry_after > self.max_retry_after:
                return None
            return err.retry_after
        if isinstance(err, RateLimited | Overloaded | ConnectionFailed):
            return exponential_jitter(
                state.tries_here, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng
            )
        return None


def never_retry(state: RetryState) -> float | None:
    """A policy that always moves on (useful for probes and benchmarks)."""
    return None
