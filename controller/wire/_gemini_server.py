"""Server side of Gemini ``generateContent`` (the fake provider and the gateway): request URLs
and bodies → our Request, with Google's error wording; our answers → Gemini's bytes and events.

The body is read in :mod:`controller.wire._gemini_decode`, answers and errors encoded in
:mod:`controller.wire._gemini_answers`, thought signatures checked and placed by
:mod:`controller.wire._gemini_signatures`; this module is the codec that puts them together.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from typing import Any

from controller._errors import BadRequest, ProviderError
from controller.model import Origin, Request, Response
from controller.wire._common import retry_after_headers, status_for
from controller.wire._gemini_answers import (
    TO_GEMINI_FINISH,
    GeminiStreamEncoder,
    error_body,
    usage_metadata,
)
from controller.wire._gemini_common import model_parts
from controller.wire._gemini_decode import (
    decode_contents,
    decode_generation,
    decode_system,
    decode_tool_choice,
    decode_tools,
    request_notes,
)
from controller.wire._gemini_signatures import require_signatures, signed, validates_signatures

__all__ = ["WIRE_FORMAT", "GeminiServerCodec", "parse_path"]

WIRE_FORMAT = "gemini"

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/v1(?:beta)?/models/([^/:]+):(generateContent|streamGenerateContent)$")


def parse_path(path: str) -> tuple[str, bool] | None:
    """``(model, stream)`` for ``/v1beta/models/{model}:(stream)GenerateContent``, else None."""
    match = _PATH.match(path.split("?", 1)[0])
    if match is None:
        return None
    return urllib.parse.unquote(match.group(1)), match.group(2) == "streamGenerateContent"


class GeminiServerCodec:
    """Server side: Gemini request bodies → our Request; our answers → Gemini's bytes.

    ``sign_calls`` (the gateway's front; not the fake, which plays Gemini) puts Google's
    placeholder thought signature on the first function call of each answer it encodes."""

    def __init__(self, *, sign_calls: bool = False) -> None:
        self._sign = sign_calls

    def parse_request(
        self, body: Any, path_model: str | None = None, origin: Origin | None = None
    ) -> tuple[str, Request]:
        """The model comes from the URL path; the caller sets ``stream`` from the method name.

        Without ``origin`` this is the fake provider, which checks thought signatures as
        Gemini 3 does; with it, the gateway's front, whose request keeps its :class:`Source`
        (and what its translation cannot carry) and is judged by the provider that serves it."""
        data = body
        if isinstance(body, bytes | str):
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("Invalid JSON payload received.", status=400) from None
        if not isinstance(data, dict):
            raise BadRequest("Invalid JSON payload received: expected an object.", status=400)
        if not path_model:
            message = "model: name it in the path, models/{model}:generateContent"
            raise BadRequest(message, status=400)
        if origin is None and validates_signatures(path_model):
            require_signatures(data)
        source = None
        if origin is not None:
            source = origin.source(WIRE_FORMAT, data, path_model, request_notes(data).found())
        request = Request(
            messages=decode_contents(data),
            system=decode_system(data),
            tools=decode_tools(data),
            tool_choice=decode_tool_choice(data),
            **decode_generation(data),
            source=source,
        )
        return path_model, request

    def render_response(self, response: Response) -> dict[str, Any]:
        parts = model_parts(response.message, where=f"answer {response.id}", log=log)
        if self._sign:
            parts = signed(parts)
        candidate = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": TO_GEMINI_FINISH[response.finish_reason],
            "index": 0,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": usage_metadata(response.usage),
            "modelVersion": response.model,
            "responseId": response.id,
        }

    def stream_encoder(self, *, id: str, model: str) -> GeminiStreamEncoder:
        return GeminiStreamEncoder(id=id, model=model, sign_calls=self._sign)

    def render_error(self, err: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
        return status_for(err), error_body(err), retry_after_headers(err)
