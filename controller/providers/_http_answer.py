"""One answer of the provider client (:mod:`controller.providers._http`): status and headers at
once, the body as it arrives, bounded.

The connection feeds it body bytes (``_feed``), its end (``_finish``) or a failure (``_fail``);
whoever sent the request reads it (:meth:`HttpResponse.read`, :meth:`HttpResponse.readany`) and
then releases it. Unread bytes pause the socket past ``HIGH_WATER``; a compressed body is
decoded as it is read (:class:`~controller.providers._http_body.Inflater`); a body read whole
(``limit`` given) stops at ``limit`` and, with the other answers charged to the same ``budget``
(those of one provider), at the budget's cap: :class:`TooLarge`.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from multidict import CIMultiDictProxy

from controller.providers._http_body import HIGH_WATER as _HIGH_WATER
from controller.providers._http_body import Budget, Inflater, TurnBudget, give_back_memory
from controller.providers._http_connect import (
    BadResponse,
    ResponseCut,
    TooLarge,
    TransportError,
)

__all__ = ["Connection", "HttpResponse"]

# What one piece of a body may cost the loop: :meth:`HttpResponse.readany` hands out at most
# _PIECE bytes (a stream's reader parses every byte of it: 4 KiB of one-byte SSE lines is ~0.4
# ms), :meth:`HttpResponse.read` takes _WHOLE_PIECE at a time (joined, never parsed, until the
# end) and a compressed body is inflated _INFLATED_PIECE at a time (~20 us).
_PIECE = 4 * 1024
_PIECE_LINES = 64  # ... and about so many lines, once past _LINES_FROM bytes (4 KiB of
_LINES_FROM = 1024  # one-byte SSE lines, 512 of them, take ~0.4 ms to parse; 64 ~50 us)
_WHOLE_PIECE = 256 * 1024
_INFLATED_PIECE = 16 * 1024


class Connection(Protocol):
    """What an answer needs of the connection it arrives on."""

    loop: asyncio.AbstractEventLoop

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def finished(self, *, reusable: bool) -> None: ...


def mib(size: int) -> str:
    """``size`` in MiB when it is that large (the words of a limit in a message)."""
    return f"{size / (1024 * 1024):g} MiB" if size >= 1024 * 1024 else f"{size} bytes"


class HttpResponse:
    """One answer: status and headers at once, the body as it arrives.

    Read it with :meth:`read` (all of it) or :meth:`readany` (the next piece), then always call
    :meth:`release`: a connection whose answer was read to the end goes back to the pool, any
    other is closed.
    """

    __slots__ = (
        "_budget",
        "_charged",
        "_conn",
        "_decoder",
        "_done",
        "_error",
        "_hot",
        "_limit",
        "_out",
        "_pieces",
        "_size",
        "_turn",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(
        self,
        conn: Connection,
        status: int,
        headers: CIMultiDictProxy[str],
        limit: int | None = None,
        budget: Budget | None = None,
        turn: TurnBudget | None = None,
    ) -> None:
        self._conn: Connection | None = conn
        self._limit = limit  # body bytes (decoded) this answer may hand out
        self._budget = budget  # shared with the other answers being read whole
        self._turn = turn  # what compressed answers inflate per loop turn, together
        self._out = 0
        self._charged = 0  # of _out, what the budget was charged
        self.status = status
        self.headers = headers
        self._pieces: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._hot = False  # the last piece was handed out without waiting for it
        self._decoder = Inflater.for_encoding(headers.get("content-encoding", ""))

    async def read(self) -> bytes:
        """The rest of the body, read in pieces of ``_WHOLE_PIECE`` (see :meth:`readany`)."""
        parts = []
        held = 0
        try:
            while piece := await self.readany(_WHOLE_PIECE, lines=0):
                parts.append(piece)
                held += len(piece)
        except BaseException:
            parts.clear()  # not kept alive by the traceback, which outlives this call
            if held > _WHOLE_PIECE:  # refused, cut or cancelled: the heap hands it back too
                give_back_memory()
            raise
        return b"".join(parts)

    async def readany(self, limit: int = _PIECE, *, lines: int = _PIECE_LINES) -> bytes:
        """What has arrived of the body since the last read, waiting for something when
        nothing has; b"" at its end. At most ``limit`` bytes (decoded, when it was compressed)
        and, past 1 KiB, about ``lines`` lines (0: any number): whoever reads a stream parses
        each line of it.

        Pieces handed out back to back, without waiting (a body that came faster than it is
        read, a compression bomb inflating), let the loop turn between them, and compressed
        answers inflate at the pace of ``turn`` (``INFLATED_PER_TURN`` bytes every
        ``INFLATE_EVERY`` turns, all of them together):
        what a sender has queued never holds the other requests for more than a piece's
        work."""
        if self._hot:  # the last piece was there already: the loop turns before the next
            self._hot = False
            if self._pieces or self._decoder is not None:  # (none there: this waits anyway)
                await asyncio.sleep(0)
        small = min(limit, _LINES_FROM)
        waited = False
        while True:
            if self._error is not None:
                raise self._error
            if self._pieces and self._size <= small:
                return self._small()  # a stream's next event or so: all there is, at once
            if self._decoder is not None and self._turn is not None:
                await self._turn.wait()  # the inflating may be done for this turn
            try:
                data = self._take(limit, lines)
                if data:
                    self._hot = not waited
                    return data
                if self._done:
                    if self._decoder is not None:
                        self._decoder.finish()
                    return b""
            except BadResponse as exc:
                self._error = exc
                raise
            conn = self._conn
            if conn is None:
                raise ResponseCut("the answer was released before it was read to the end")
            self._waiter = conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            waited = True

    def _small(self) -> bytes:
        """The pieces held (undecoded), joined: what :meth:`_take` hands out when they come to
        no more than a piece may, without its splitting. Nothing more comes before the loop
        turns, so the next read waits: no need to yield first."""
        pieces = self._pieces
        data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self._size = 0
        self._out += len(data)
        if self._limit is not None:
            self._within(len(data))
        return data

    def _take(self, limit: int, lines: int) -> bytes:
        """The next piece there is to hand out (b"" when none), the socket resumed once what
        is held unread drops below ``_HIGH_WATER``."""
        was = self._size
        if self._decoder is not None:
            data = self._decoder.pull(min(limit, _INFLATED_PIECE))
            self._size = self._decoder.pending
            if self._turn is not None:
                self._turn.charge(len(data))
        elif self._pieces:
            data = self._next_piece(limit, lines)
        else:
            return b""
        self._out += len(data)
        if self._limit is not None:
            self._within(len(data))
        if was >= _HIGH_WATER and self._size < _HIGH_WATER and self._conn is not None:
            self._conn.resume()
        return data

    def _next_piece(self, limit: int, lines: int) -> bytes:
        """Up to ``limit`` bytes and about ``lines`` lines off the front of the undecoded
        pieces."""
        pieces = self._pieces
        if self._size <= limit:
            data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
        else:
            taken: list[bytes] = []
            size = 0
            while size < limit:
                piece = pieces.popleft()
                if size + len(piece) > limit:
                    cut = limit - size
                    pieces.appendleft(piece[cut:])
                    piece = piece[:cut]
                taken.append(piece)
                size += len(piece)
            data = taken[0] if len(taken) == 1 else b"".join(taken)
        if lines and len(data) > _LINES_FROM and data.count(b"\n") > lines:
            end = -1
            for _ in range(lines):
                end = data.find(b"\n", end + 1)
            pieces.appendleft(data[end + 1 :])
            data = data[: end + 1]
        self._size -= len(data)
        return data

    def _within(self, size: int) -> None:
        """Raises TooLarge when a body read whole passes its limit or its budget."""
        assert self._limit is not None
        if self._out > self._limit:
            self._pieces.clear()
            raise TooLarge(f"the provider's answer is over {mib(self._limit)}")
        budget = self._budget
        if budget is not None:
            if not budget.take(size, self._charged):
                self._pieces.clear()
                raise TooLarge(
                    f"the answers being read from the provider are over {mib(budget.cap)}"
                )
            self._charged += size

    def release(self) -> None:
        """Done with this answer (idempotent): its connection is reused or closed."""
        if self._budget is not None:
            self._budget.give(self._charged)
            self._charged = 0
        conn, self._conn = self._conn, None
        if self._decoder is not None:
            self._decoder.close()
        if conn is not None:
            conn.finished(reusable=self._done and self._error is None)

    # --- fed by the connection
    def _feed(self, data: bytes) -> None:
        """Body bytes off the wire: held as they came (still compressed, if they are) until
        read; the socket paused while ``_HIGH_WATER`` of them wait."""
        if not data or self._error is not None:
            return
        if self._decoder is not None:
            self._decoder.feed(data)
        else:
            self._pieces.append(data)
        self._size += len(data)
        if self._size >= _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: TransportError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
