"""The event loop ``failover serve`` runs on.

uvloop (libuv under asyncio's interface) where it is installed, which the package's dependencies
do on Linux and macOS; asyncio's own selector loop otherwise, or when asked for with
``--loop asyncio``. Both run the same code: uvloop only makes the loop's own work (polling,
scheduling callbacks, socket reads and writes) cheaper: measured, 7% fewer instructions per
proxied request (``python -m tests.bench.instructions``) and about 15% less CPU per request at
concurrency 10 and 50 (``python -m tests.bench.gateway``; README, Performance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "loop_factory", "run"]

T = TypeVar("T")
LOOPS = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str = "auto") -> tuple[str, LoopFactory | None]:
    """The loop's name and factory for ``choice`` (None: asyncio's default loop).

    ``auto`` takes uvloop when it imports and asyncio's loop when it does not; ``uvloop`` insists
    on it and says how to get it when it is missing.
    """
    if choice not in LOOPS:
        raise ValueError(f"unknown event loop {choice!r} (choose from {', '.join(LOOPS)})")
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                "uvloop is not installed (pip install uvloop; not available on Windows)"
            ) from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``loop`` picks (see :func:`loop_factory`)."""
    _, factory = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
