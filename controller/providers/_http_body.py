"""Answer bodies for the provider client (:mod:`controller.providers._http`): the read-ahead
bound, and gzip/deflate decoding in bounded pieces.

The client asks for ``identity`` and real providers honour it; a server that compresses anyway
is decoded rather than refused. A few hundred KiB of gzip can inflate to gigabytes, so nothing
is inflated before it is read: :class:`Inflater` holds the compressed bytes (which the socket's
back-pressure bounds) and hands out at most ``HIGH_WATER`` decoded bytes per read, stopping at
``MAX_INFLATED`` in all.
"""

from __future__ import annotations

import collections
import zlib

from controller.providers._http_connect import BadResponse

__all__ = ["HIGH_WATER", "MAX_INFLATED", "Inflater"]

HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
MAX_INFLATED = 64 * 1024 * 1024  # bytes a compressed body may inflate to
_GATHER = 64 * 1024  # decoded bytes a read collects before it returns, when it can
_GZIP = 16 + zlib.MAX_WBITS


def _corrupt() -> BadResponse:
    return BadResponse("the answer's compressed body is corrupt")


class Inflater:
    """Decodes one gzip or deflate body: :meth:`feed` the bytes as they come, :meth:`pull`
    decoded pieces as they are read, :meth:`finish` once the framing says the body is whole."""

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        # deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send it; the first
        # two bytes tell which, so the decompressor is made once they are in
        self._inflate = zlib.decompressobj(_GZIP) if gzip else None
        self._input: collections.deque[bytes] = collections.deque()
        self._input_size = 0
        self._tail = b""  # input the decompressor has not taken yet
        self._full = False  # the last pull filled its piece: output may wait inside zlib
        self._fed = False
        self._ended = False  # the compressed stream reached its end
        self._total = 0

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
            self._fed = True

    def pull(self) -> bytes:
        """At most ``HIGH_WATER`` decoded bytes; b"" when it needs more input. Gathers at
        least ``_GATHER`` when the input allows (a stream of tiny chunks is not handed out
        eighty bytes at a time)."""
        parts: list[bytes] = []
        size = 0
        while size < _GATHER:
            piece = self._pull_one(HIGH_WATER - size)
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
            self._total += len(out)
            if self._total > MAX_INFLATED:
                raise BadResponse("the answer's compressed body inflates past 64 MiB")
            if out:
                return out

    def finish(self) -> None:
        """Once :meth:`pull` gave b"" and the framing says the body is whole: raises when the
        compressed stream inside is not (an empty body marked gzip, a 204 say, is whole)."""
        if self._fed and (self._inflate is None or not self._ended):
            raise BadResponse("the answer's compressed body is cut short")

    def _next(self) -> bytes:
        data = self._input.popleft()
        self._input_size -= len(data)
        return data

    def _choose(self) -> bool:
        while len(self._tail) < 2 and self._input:
            self._tail += self._next()
        if len(self._tail) < 2:
            return False
        cmf, flg = self._tail[0], self._tail[1]
        wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return True
