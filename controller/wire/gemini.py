"""Google Gemini ``generateContent`` as a pure codec, both directions (no I/O).

Why this is more than a field rename:

* Gemini keys tool results by function *name*, our model by call *id*. Encoding looks the name
  up from the assistant turn that made the call; decoding pairs results to calls by id when
  Gemini sends one, else by name in order, and invents stable ids (``call_<n>``) where it sends
  none (responses too).
* Arguments are JSON *objects* on this wire and JSON *text* in our model: they are parsed on the
  way out and re-serialised compactly (key order kept) on the way in, so compact text
  round-trips byte for byte and other spellings of the same object come back compact.
* A response that calls functions still says ``finishReason: STOP``; our model says TOOL_CALLS.
* Thought signatures: Gemini 3 refuses a replayed function call of the current turn without the
  ``thoughtSignature`` its answer carried. Our model carries none (and calls another provider
  made never had one), so the first call of every
  replayed model turn carries Google's documented placeholder, which skips the check at some
  cost to the model's reasoning continuity. The server codec (the fake) checks like Gemini 3.
* Images and documents go as ``inlineData`` {mimeType, data} when the bytes are at hand and
  as ``fileData`` {mimeType, fileUri} for a URL (Gemini fetches public and signed URLs); a tool
  result's follow its ``functionResponse`` part in the same content, where decoding finds them
  again. A document's title has no place on this wire: the codec's ``unsupported`` says so.
* Streams have no terminator: every ``data:`` event is a whole response chunk, ``done`` never
  turns true, and completeness is judged (by the transport) from a finishReason having been seen.
"""

from controller.wire._gemini_client import GeminiClientCodec
from controller.wire._gemini_common import PROVIDER_KIND
from controller.wire._gemini_server import GeminiServerCodec, parse_path

__all__ = ["PROVIDER_KIND", "GeminiClientCodec", "GeminiServerCodec", "parse_path"]
