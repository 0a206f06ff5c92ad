"""OpenAI Chat Completions (``POST {base}/chat/completions``) as a pure codec, both directions.

The client side also speaks to OpenAI-compatible servers (Azure, OpenRouter, Ollama, vLLM): they
differ in auth header, path and query, and often omit ids, usage or the ``[DONE]`` terminator, so
optional fields are tolerated while a missing ``choices``/``message`` is MalformedResponse.

OpenAI has no ``is_error`` flag on tool results. To keep a conversation lossless when it moves
between formats, a failed result is sent with :data:`TOOL_ERROR_PREFIX` before its content (which
also tells the model that the call failed) and the prefix is read back as the flag.

Images travel as ``image_url`` parts (a base64 data URL or a URL), documents as ``file`` parts
(``file_data``, a data URL, with a ``filename``). A tool message takes text only, so a tool
result's images and documents go in a user message right after the tool messages, each result's
introduced by a text naming its call. Chat Completions takes no file URL: a document given by
URL is what the codec's ``unsupported`` names (the router then skips the provider).
"""

from controller.wire._openai_client import OpenAIClientCodec, OpenAIStreamDecoder
from controller.wire._openai_common import TOOL_ERROR_PREFIX
from controller.wire._openai_server import (
    OpenAIServerCodec,
    OpenAIStreamEncoder,
    stream_usage_requested,
)

__all__ = [
    "TOOL_ERROR_PREFIX",
    "OpenAIClientCodec",
    "OpenAIServerCodec",
    "OpenAIStreamDecoder",
    "OpenAIStreamEncoder",
    "stream_usage_requested",
]
