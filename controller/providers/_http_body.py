"""Answer bodies for the provider client (:mod:`controller.providers._http`): the read-ahead
bound, and gzip/deflate decoding in bounded pieces.

The client asks for ``identity`` and real providers honour it; a server that compresses anyway
is decoded rather than refused. A few hundred KiB of gzip can inflate to gigabytes, so nothing
is inflated before it is read: :class:`Inflater` holds the compressed bytes (which the socket's
back-pressure bounds) and hands out at most ``HIGH_WATER`` decoded bytes per read, stopping at
``MAX_INFLATED`` in all. Many answers at once could each stay under that and still add up (eight
bombs, 512 MiB), so every decoded byte is also charged to one process-wide :class:`Budget`
(``INFLATED_IN_FLIGHT``) and given back when its answer is released: past it, the answer that
asked for more fails with :class:`TooLarge`. What they inflate is paced too, for the whole
process: ``INFLATED_PER_TURN`` bytes every ``INFLATE_EVERY`` turns of the loop (:data:`INFLATING`).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import math
import time
import zlib
from collections.abc import Callable

from controller.providers._http_connect import BadResponse, TooLarge

__all__ = [
    "HIGH_WATER",
    "INFLATED",
    "INFLATED_IN_FLIGHT",
    "INFLATED_PER_TURN",
    "INFLATE_EVERY",
    "INFLATING",
    "MAX_INFLATED",
    "MAX_RATIO",
    "RATIO_AFTER",
    "Budget",
    "Inflater",
    "TurnBudget",
    "give_back_memory",
]

HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
MAX_INFLATED = 64 * 1024 * 1024  # bytes a compressed body may inflate to
INFLATED_IN_FLIGHT = 128 * 1024 * 1024  # bytes all answers being read may inflate to together
_GATHER = 64 * 1024  # decoded bytes a read collects before it returns, when it can
# A body that has inflated past RATIO_AFTER bytes to more than MAX_RATIO times the compressed
# bytes it took is a compression bomb: refused then, not after inflating to MAX_INFLATED (eight
# zero-filled bombs at once held the loop 0.26 s). Text and JSON compress 5-20x; zeros ~1000x.
RATIO_AFTER = 1024 * 1024
MAX_RATIO = 200
_GZIP = 16 + zlib.MAX_WBITS
_SLICE = 4096  # compressed bytes handed to zlib at a time


def _corrupt() -> BadResponse:
    return BadResponse("the answer's compressed body is corrupt")


class Budget:
    """Bytes shared by every answer in the process: taken as they are decoded, given back
    when their answer is released. Single-threaded (the event loop's)."""

    __slots__ = ("cap", "used")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0

    def take(self, size: int, held: int = 0) -> bool:
        """Charge ``size`` bytes to a holder that has ``held`` of them; False (nothing charged)
        when that would pass the cap while others hold some (alone, a holder is bounded by its
        own limit: one answer is never refused for the budget's sake)."""
        if self.used + size > self.cap and self.used > held:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


INFLATED = Budget(INFLATED_IN_FLIGHT)  # the decoded bytes of compressed answers being read
INFLATED_PER_TURN = 32 * 1024  # bytes all compressed answers inflate together per grant ...
INFLATE_EVERY = 8  # ... made every so many turns of the loop (see TurnBudget)


class TurnBudget:
    """Bytes the compressed answers being read may inflate together per ``every`` turns of
    the event loop (:data:`INFLATING`, one for the process).

    Eight compression bombs read at once each inflated a piece in every turn, and the other
    requests waited for all eight; with ``cap`` bytes per turn between them, each turn still
    carried one piece (~25 us with the reader's steps), and a request needs several turns (its
    loop CPU at p99: 2.8-3.2x with the bombs). Granted only every ``every`` turns, a request
    meets a piece in about one of its turns in ``every`` (1.5-1.8x at 8). Charged as they are
    taken; refilled for the first answer waiting (in the order they came; one that goes on and
    comes back waits behind the rest)."""

    __slots__ = ("_loop", "_refill", "_spent", "_turns", "_waiters", "cap", "every")

    def __init__(self, cap: int, *, every: int = 1) -> None:
        self.cap = cap
        self.every = max(1, every)
        self._spent = 0
        self._turns = 0  # turns since the last refill
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refill: asyncio.Handle | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        """Returns once this turn has bytes left for the caller: at once when nobody waits
        and some are left, else on a later turn, the waiting answers taking turns."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a loop since gone never refills: start afresh
            self._loop, self._spent, self._refill, self._turns = loop, 0, None, 0
            self._waiters.clear()
        if self._spent < self.cap and not self._waiters:
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self._schedule(loop)
        await waiter  # woken by the refill: this turn's bytes are the caller's

    def charge(self, size: int) -> None:
        self._spent += size
        if self._loop is not None:
            self._schedule(self._loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._refill is None:
            self._refill = loop.call_soon(self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        self._turns += 1
        if self._turns < self.every and self._loop is not None:
            self._schedule(self._loop)  # not yet: the other requests get these turns
            return
        self._turns = 0
        self._spent = 0
        while self._waiters:  # the first still waiting goes on (a cancelled one is skipped)
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if self._waiters and self._loop is not None:
            self._schedule(self._loop)  # the next one, next turn


INFLATING = TurnBudget(INFLATED_PER_TURN, every=INFLATE_EVERY)  # every provider's, together


class Inflater:
    """Decodes one gzip or deflate body: :meth:`feed` the bytes as they come, :meth:`pull`
    decoded pieces as they are read, :meth:`finish` once the framing says the body is whole."""

    def __init__(self, *, gzip: bool, budget: Budget = INFLATED) -> None:
        self._gzip = gzip
        self._budget = budget
        # deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send it; the first
        # two bytes tell which, so the decompressor is made once they are in
        self._inflate = zlib.decompressobj(_GZIP) if gzip else None
        self._input: collections.deque[bytes | memoryview] = collections.deque()
        self._input_size = 0
        self._tail = b""  # input the decompressor has not taken yet
        self._full = False  # the last pull filled its piece: output may wait inside zlib
        self._fed = False
        self._ended = False  # the compressed stream reached its end
        self._total = 0
        self._charged = 0  # of _total, what the budget was charged
        self._received = 0  # compressed bytes fed, in all

    @classmethod
    def for_encoding(cls, encoding: str) -> Inflater | None:
        encoding = encoding.strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return cls(gzip=True)
        if encoding == "deflate":
            return cls(gzip=False)
        return None  # identity, or a coding nobody asked for: the codec sees the bytes

    @property
    def pending(self) -> int:
        """Compressed bytes fed and not yet decoded."""
        return self._input_size + len(self._tail)

    def feed(self, data: bytes) -> None:
        if data:
            self._input.append(data)
            self._input_size += len(data)
            self._received += len(data)
            self._fed = True

    def pull(self, limit: int = HIGH_WATER) -> bytes:
        """At most ``limit`` decoded bytes; b"" when it needs more input. Gathers at least
        ``_GATHER`` (or ``limit``) when the input allows (a stream of tiny chunks is not handed
        out eighty bytes at a time)."""
        parts: list[bytes] = []
        size = 0
        while size < min(_GATHER, limit):
            piece = self._pull_one(limit - size)
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pull_one(self, limit: int) -> bytes:
        while True:
            if not self._tail and not self._full:
                if not self._input:
                    return b""
                self._tail = self._next()
            if self._inflate is None and not self._choose():
                return b""
            inflate = self._inflate
            assert inflate is not None
            if self._ended:
                if not self._tail.strip(b"\0"):  # zero padding after the end, as gzip(1) allows
                    self._tail = b""
                    continue
                if not self._gzip:
                    raise BadResponse("the answer has bytes after its compressed body")
                inflate = self._inflate = zlib.decompressobj(_GZIP)  # the next gzip member
                self._ended = False
            try:
                out = inflate.decompress(self._tail, limit)
            except zlib.error:
                raise _corrupt() from None
            self._tail = inflate.unconsumed_tail
            self._full = len(out) >= limit and not inflate.eof
            if inflate.eof:
                self._ended = True
                self._tail = inflate.unused_data
            self._charge(len(out))
            if out:
                return out

    def _charge(self, size: int) -> None:
        self._total += size
        if self._total > MAX_INFLATED:
            raise TooLarge("the answer's compressed body inflates past 64 MiB")
        taken = self._received - self.pending  # compressed bytes the decompressor consumed
        if self._total > RATIO_AFTER and self._total > MAX_RATIO * max(1, taken):
            raise TooLarge(f"the answer's compressed body inflates over {MAX_RATIO}x")
        if not self._budget.take(size, self._charged):
            raise TooLarge(
                f"the compressed answers being read inflate past "
                f"{self._budget.cap // (1024 * 1024)} MiB together"
            )
        self._charged += size

    def close(self) -> None:
        """The answer is done with: its decoded bytes are given back to the budget."""
        self._budget.give(self._charged)
        self._charged = 0

    def finish(self) -> None:
        """Once :meth:`pull` gave b"" and the framing says the body is whole: raises when the
        compressed stream inside is not (an empty body marked gzip, a 204 say, is whole)."""
        if self._fed and (self._inflate is None or not self._ended):
            raise BadResponse("the answer's compressed body is cut short")

    def _next(self) -> bytes:
        """The next ``_SLICE`` bytes of input at most: zlib copies what a call leaves
        unconsumed (``unconsumed_tail``), so a bomb's whole read handed over at once would be
        copied again for every piece it inflates to."""
        data = self._input[0]
        if len(data) > _SLICE:
            view = memoryview(data)
            self._input[0] = view[_SLICE:]
            piece = bytes(view[:_SLICE])
        else:
            self._input.popleft()
            piece = bytes(data)  # no copy when it is bytes already
        self._input_size -= len(piece)
        return piece

    def _choose(self) -> bool:
        while len(self._tail) < 2 and self._input:
            self._tail += self._next()
        if len(self._tail) < 2:
            return False
        cmf, flg = self._tail[0], self._tail[1]
        wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return True


# ------------------------------------------------------------------------------- memory
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to hand back this way
        return None


class _Trim:
    """Hands the C heap's free pages back to the system: on the next loop iteration, and at
    most once per ``every`` seconds.

    The pieces of an answer refused for its size (up to ``max_response_bytes`` of them, or the
    whole inflated budget) are freed when the refusal unwinds, but glibc keeps blocks of their
    size in its heap for reuse: resident memory stayed at its peak. ``malloc_trim`` returns
    those pages; it runs on the next loop iteration, when the refused answer's frames are gone.
    It holds the loop ~1.1 ms per 32 MiB it returns: a provider refused again and again (an
    endless body on every call) gets one trim per ``every``, the later refusals' memory
    returned together by the trim due next (glibc reuses it for them meanwhile).
    """

    def __init__(
        self,
        trim: Callable[[int], int] | None,
        *,
        every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim = trim
        self.every = every
        self._clock = clock
        self._last = -math.inf  # when the last trim ran
        self._due: asyncio.Handle | None = None  # the trim scheduled, on _loop
        self._loop: asyncio.AbstractEventLoop | None = None

    def soon(self) -> None:
        if self._trim is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._due is not None and self._loop is loop:
            return  # one is due on this loop (one due on a loop since gone never runs)
        self._loop = loop
        wait = self._last + self.every - self._clock()
        if wait > 0:
            self._due = loop.call_later(wait, self._run)
        else:
            self._due = loop.call_soon(self._run)

    def _run(self) -> None:
        self._due = None
        self._last = self._clock()
        if self._trim is not None:
            self._trim(0)


_TRIM = _Trim(_malloc_trim())


def give_back_memory() -> None:
    """After an answer broke a size limit: its memory goes back to the system (see _Trim)."""
    _TRIM.soon()
