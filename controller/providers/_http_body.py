"""Answer bodies for the provider client (:mod:`controller.providers._http`): the read-ahead
bound, and gzip/deflate decoding in bounded pieces.

The client asks for ``identity`` and real providers honour it; a server that compresses anyway
is decoded rather than refused, but a few hundred KiB of gzip can inflate to gigabytes, so the
output comes out in pieces of at most ``HIGH_WATER`` bytes and stops at ``MAX_INFLATED``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from controller.providers._http_connect import BadResponse

__all__ = ["HIGH_WATER", "MAX_INFLATED", "Inflater"]

HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
MAX_INFLATED = 64 * 1024 * 1024  # bytes a compressed body may inflate to


class Inflater:
    """Decodes a gzip or deflate body in bounded pieces."""

    def __init__(self, wbits: int, *, raw_fallback: bool) -> None:
        self._inflate = zlib.decompressobj(wbits)
        self._raw_fallback = raw_fallback  # deflate: servers that send raw deflate exist
        self._fed = False
        self._total = 0

    @classmethod
    def for_encoding(cls, encoding: str) -> Inflater | None:
        encoding = encoding.strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return cls(16 + zlib.MAX_WBITS, raw_fallback=False)
        if encoding == "deflate":
            return cls(zlib.MAX_WBITS, raw_fallback=True)
        return None  # identity, or a coding nobody asked for: the codec sees the bytes

    def inflate(self, data: bytes) -> Iterable[bytes]:
        """The decoded pieces of ``data``, each at most ``HIGH_WATER`` bytes."""
        first, self._fed = not self._fed, True
        try:
            piece = self._inflate.decompress(data, HIGH_WATER)
        except zlib.error:
            if not (first and self._raw_fallback):
                raise BadResponse("the answer's compressed body is corrupt") from None
            self._raw_fallback = False
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            yield from self.inflate(data)
            return
        while True:
            self._total += len(piece)
            if self._total > MAX_INFLATED:
                raise BadResponse("the answer's compressed body inflates past 64 MiB")
            yield piece
            tail = self._inflate.unconsumed_tail
            if not tail:
                return
            try:
                piece = self._inflate.decompress(tail, HIGH_WATER)
            except zlib.error:
                raise BadResponse("the answer's compressed body is corrupt") from None

    def finish(self) -> bytes:
        """The last bytes; raises when the compressed stream is not complete."""
        tail = self._inflate.flush()
        if self._fed and not self._inflate.eof:  # framing says whole, the stream does not
            raise BadResponse("the answer's compressed body is cut short")
        return tail  # an empty body (a 204, Content-Length 0) marked gzip is just empty
