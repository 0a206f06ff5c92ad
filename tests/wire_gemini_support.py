"""Shared pieces of the Gemini codec tests: the codecs, the tools and the stream helpers.

The ``test_wire_gemini_*`` files pin the Gemini wire format from several sides (golden answers,
golden requests and building, round trips, bad input); the model name, the two codecs, the tool
definitions, the SSE helpers and the documented golden request they all lean on live here.
"""

from __future__ import annotations

import json

from controller.model import Request, StreamChunk, ToolDefinition
from controller.wire._sse import SSEParser
from controller.wire.gemini import GeminiClientCodec, GeminiServerCodec

MODEL = "gemini-2.5-flash"
CLIENT = GeminiClientCodec()
SERVER = GeminiServerCodec()

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
CLOCK = ToolDefinition(name="get_time")  # no parameters at all


def decode_stream(raw: bytes, model: str = MODEL) -> list[StreamChunk]:
    decoder = CLIENT.stream_decoder(model)
    chunks: list[StreamChunk] = []
    for event in SSEParser().feed(raw):
        chunks.extend(decoder.feed(event))
    assert decoder.done is False
    return chunks


def wire_round_trip(request: Request) -> Request:
    call = CLIENT.build(request, MODEL, "test-key")
    body = json.dumps(call.body).encode()
    model, decoded = SERVER.parse_request(body, MODEL)
    assert model == MODEL
    return decoded


GOLDEN_REQUEST = b"""{
  "systemInstruction": {"parts": [{"text": "You are a helpful lighting system bot."}]},
  "contents": [
    {"role": "user", "parts": [{"text": "Turn the lights down to a romantic level"}]},
    {
      "role": "model",
      "parts": [
        {"functionCall": {"name": "set_light_values", "args": {"brightness": 25, "color_temp": "warm"}}}
      ]
    },
    {
      "role": "user",
      "parts": [
        {"functionResponse": {"name": "set_light_values", "response": {"brightness": 25, "colorTemperature": "warm"}}}
      ]
    }
  ],
  "tools": [
    {
      "functionDeclarations": [
        {
          "name": "set_light_values",
          "description": "Sets the brightness and color temperature of a light.",
          "parameters": {
            "type": "object",
            "properties": {
              "brightness": {"type": "integer", "description": "Light level from 0 to 100."},
              "color_temp": {"type": "string", "enum": ["daylight", "cool", "warm"]}
            },
            "required": ["brightness", "color_temp"]
          }
        }
      ]
    }
  ],
  "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["set_light_values"]}},
  "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256, "stopSequences": ["END"], "candidateCount": 1},
  "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
}"""  # noqa: E501
