"""Anthropic Messages API (``POST /v1/messages``) as a pure codec, in both directions.

Why the translation looks the way it does:

* Anthropic keeps the system prompt top-level and tool results inside *user* turns, where our
  model has ``role="tool"`` messages. Consecutive tool results become blocks of one user turn,
  and a user text right after them joins that same turn (the API wants results first, then
  text). Decoding splits such a turn back into tool messages followed by one user message.
* Tool arguments are JSON text in our model but objects on this wire: parsed on the way out and
  serialised with ``json.dumps(..., ensure_ascii=False)`` on the way in. That spacing is the one
  Anthropic uses in ``input_json_delta``, so a streamed and a whole answer give the same text.
* Images and documents (``base64``, ``url`` and, for a document, ``text`` sources) become
  ``Message.parts``, in a user turn or a tool result's content; a document's ``title`` travels
  with it. What a translation cannot carry is noted, not lost: a ``file`` source (``file_id``:
  a file uploaded to Anthropic), a document of content blocks, ``citations``, ``context``.
* Blocks our model cannot carry: ``thinking`` / ``redacted_thinking`` are dropped (the model's
  scratch work, not conversation content); server tools and other blocks in a *request* are
  noted as untranslatable (a provider of another format is then skipped); unknown block and
  event types in a *response* are skipped, as Anthropic's versioning policy asks of clients.
* Text joins: several assistant text blocks join with "" (what streaming yields); several user or
  system text blocks join with "\\n" so words from separate blocks never run together.
* Token counting (``POST /v1/messages/count_tokens``) takes the same body without the
  generation settings (no ``max_tokens``, sampling, stop sequences or ``stream``) and answers
  ``{"input_tokens": N}``: ``build_count`` / ``parse_count`` on the client side,
  ``parse_count_request`` / ``render_count`` on the server side.
"""

from controller.wire._anthropic_client import RELAYED_HEADERS, AnthropicClientCodec
from controller.wire._anthropic_common import (
    API_VERSION,
    COUNT_TOKENS_PATH,
    DEFAULT_MAX_TOKENS,
    MESSAGES_PATH,
    PROVIDER_KIND,
)
from controller.wire._anthropic_server import AnthropicServerCodec

__all__ = [
    "API_VERSION",
    "COUNT_TOKENS_PATH",
    "DEFAULT_MAX_TOKENS",
    "MESSAGES_PATH",
    "PROVIDER_KIND",
    "RELAYED_HEADERS",
    "AnthropicClientCodec",
    "AnthropicServerCodec",
]
