"""The OpenAI Responses API (``POST /v1/responses``) as a pure codec, both directions: the
server side the gateway's front speaks (requests → our Request, answers → the ``response``
object and its event stream) and the client side an OpenAI provider with ``api: responses``
uses. See :mod:`controller.wire._responses_request` for how items fold into turns and what a
translation cannot carry."""

from controller.wire._responses_client import ResponsesClientCodec, ResponsesStreamDecoder
from controller.wire._responses_request import WIRE_FORMAT
from controller.wire._responses_server import ResponsesServerCodec, ResponsesStreamEncoder

__all__ = [
    "WIRE_FORMAT",
    "ResponsesClientCodec",
    "ResponsesServerCodec",
    "ResponsesStreamDecoder",
    "ResponsesStreamEncoder",
]
