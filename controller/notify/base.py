"""The sender seam: one narrow protocol per outside channel, and the result it reports.

Senders only send (like an OpenTelemetry exporter): no retry, no dedup, no queue. They never
raise for a delivery problem; they return a :class:`SendResult` that tells the dispatcher whether
a retry can help and how long the far side asked us to wait. Error text in a result is short and
never contains a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controller.notify.alert import Alert


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What one send attempt came to."""

    channel: str
    ok: bool
    retryable: bool = True
    retry_after: float | None = None  # seconds the far side asked us to wait (429)
    error: str | None = None

    @classmethod
    def sent(cls, channel: str) -> SendResult:
        return cls(channel=channel, ok=True)

    @classmethod
    def failed(
        cls,
        channel: str,
        error: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> SendResult:
        return cls(
            channel=channel,
            ok=False,
            retryable=retryable,
            retry_after=retry_after,
            error=error,
        )


class Sender(Protocol):
    """Delivers an alert to one destination (one chat, one webhook, the log)."""

    @property
    def channel(self) -> str:
        """Low-cardinality channel for metrics: ``telegram`` | ``slack`` | ``log``."""
        ...

    @property
    def name(self) -> str:
        """This destination for logs, secret-free (e.g. ``telegram:-1001234``)."""
        ...

    async def send(self, alert: Alert) -> SendResult: ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...
