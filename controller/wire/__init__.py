"""Wire formats as pure codecs (no I/O).

Each format module offers both directions:

* a client codec (:class:`ClientCodec`): our :class:`~controller.model.Request` → HTTP call, and
  the provider's answer / stream events / errors → our types. Provider adapters use it.
* a server codec (:class:`ServerCodec`): the provider's request body → our Request, and our
  Response / stream chunks / errors → the provider's bytes. Used by the fake and the gateway.

A client codec whose API can count input tokens also implements :class:`TokenCountCodec`.
"""

from controller.wire._base import (
    ClientCodec,
    HttpCall,
    ServerCodec,
    SSEEvent,
    StreamDecoder,
    StreamEncoder,
    TokenCountCodec,
)

__all__ = [
    "ClientCodec",
    "HttpCall",
    "SSEEvent",
    "ServerCodec",
    "StreamDecoder",
    "StreamEncoder",
    "TokenCountCodec",
]
