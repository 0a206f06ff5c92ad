"""Images and documents across the three formats: decoded into ``Message.parts`` by the server
codecs (no longer noted as untranslatable), encoded by every client codec, and noted only where
a target genuinely cannot take them.

Golden bodies are written the way each vendor documents its parts: OpenAI ``image_url`` (data
URL or URL) and ``file`` (``file_data`` data URL with ``filename``); Anthropic ``image`` and
``document`` blocks (``base64``, ``url`` and ``text`` sources), also inside ``tool_result``;
Gemini ``inlineData`` {mimeType, data} and ``fileData`` {mimeType, fileUri}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from controller._errors import BadRequest
from controller.model import (
    DocumentPart,
    ImagePart,
    Message,
    Part,
    Request,
    TextPart,
    ToolCall,
    Untranslatable,
    parts_message,
)
from controller.wire.anthropic import AnthropicClientCodec, AnthropicServerCodec
from controller.wire.gemini import GeminiClientCodec, GeminiServerCodec
from controller.wire.openai import OpenAIClientCodec, OpenAIServerCodec

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
PDF = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K"
NOTES = "Meeting notes: ship on Friday."
NOTES_B64 = base64.b64encode(NOTES.encode()).decode()
IMAGE_URL = "https://example.com/cat.png"
PDF_URL = "https://example.com/report.pdf"

OPENAI_SERVER = OpenAIServerCodec()
ANTHROPIC_SERVER = AnthropicServerCodec()
GEMINI_SERVER = GeminiServerCodec()
OPENAI = OpenAIClientCodec()
ANTHROPIC = AnthropicClientCodec()
GEMINI = GeminiClientCodec()


def _translated(request: Request) -> Request:
    """``request`` as a provider of another format gets it: nothing noted as untranslatable."""
    assert request.source is not None
    assert request.source.untranslatable == ()
    return request


def _from_openai(messages: list[dict[str, Any]]) -> Request:
    return _translated(OPENAI_SERVER.parse_request({"model": "gpt", "messages": messages})[1])


def _from_anthropic(messages: list[dict[str, Any]], **extra: Any) -> Request:
    body = {"model": "claude", "max_tokens": 100, "messages": messages, **extra}
    return ANTHROPIC_SERVER.parse_request(body)[1]


def _body(codec: Any, request: Request, model: str = "m") -> dict[str, Any]:
    body: dict[str, Any] = codec.build(request, model, "key").body
    return body


# ---------------------------------------------------------------- OpenAI client → the others

OPENAI_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in the picture, and what does the report say?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "auto"}},
            {
                "type": "file",
                "file": {
                    "filename": "report.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF}",
                },
            },
        ],
    }
]


def test_openai_images_and_pdf_decode_into_parts_in_order() -> None:
    request = _from_openai(OPENAI_MESSAGES)
    assert request.messages == (
        Message(
            role="user",
            content="What is in the picture, and what does the report say?",
            parts=(
                TextPart("What is in the picture, and what does the report say?"),
                ImagePart(media_type="image/png", data=PNG),
                ImagePart(url=IMAGE_URL),
                DocumentPart(media_type="application/pdf", data=PDF, name="report.pdf"),
            ),
        ),
    )


def test_openai_image_and_pdf_golden_to_anthropic() -> None:
    body = _body(ANTHROPIC, _from_openai(OPENAI_MESSAGES))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in the picture, and what does the report say?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "report.pdf",
                },
            ],
        }
    ]


def test_openai_image_and_pdf_golden_to_gemini() -> None:
    body = _body(GEMINI, _from_openai(OPENAI_MESSAGES))
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is in the picture, and what does the report say?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}},
                {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
            ],
        }
    ]


def test_openai_file_data_without_a_data_url_is_a_pdf() -> None:
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}}
    request = _from_openai([{"role": "user", "content": [part]}])
    assert request.messages[0].parts == (DocumentPart(data=PDF, name="a.pdf"),)


def test_openai_what_only_openai_honours_is_still_noted() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/svg+xml;utf8,<svg/>"}},
                {"type": "file", "file": {"file_id": "file-123"}},
            ],
        }
    ]
    request = OPENAI_SERVER.parse_request({"model": "gpt", "messages": messages})[1]
    assert request.source is not None
    assert request.source.untranslatable == (
        Untranslatable("image_detail", "messages[0].content[0].image_url.detail"),
        Untranslatable("image", "messages[0].content[1]"),  # a data URL not in base64
        Untranslatable("file_id", "messages[0].content[2].file.file_id"),
    )
    assert request.messages[0].parts == (ImagePart(url=IMAGE_URL),)


# ---------------------------------------------------------------- Anthropic client → the others


def _image_block(**source: Any) -> dict[str, Any]:
    return {"type": "image", "source": source}


ANTHROPIC_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            _image_block(type="base64", media_type="image/png", data=PNG),
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            },
            {"type": "document", "source": {"type": "url", "url": PDF_URL}},
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": NOTES},
                "citations": {"enabled": False},  # the default: asks for nothing
            },
            {"type": "text", "text": "Compare these, then take a screenshot."},
        ],
    },
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "the screen"},
                    _image_block(type="base64", media_type="image/jpeg", data=PNG),
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    },
                ],
            },
            {"type": "text", "text": "What do you see?"},
        ],
    },
]
ANTHROPIC_MODEL_MESSAGES = (
    Message(
        role="user",
        content="Compare these, then take a screenshot.",
        parts=(
            ImagePart(media_type="image/png", data=PNG),
            DocumentPart(data=PDF),
            DocumentPart(url=PDF_URL),
            DocumentPart(media_type="text/plain", data=NOTES_B64),
            TextPart("Compare these, then take a screenshot."),
        ),
    ),
    Message(role="assistant", tool_calls=(ToolCall(id="toolu_1", name="screenshot"),)),
    Message(
        role="tool",
        content="the screen",
        tool_call_id="toolu_1",
        parts=(
            TextPart("the screen"),
            ImagePart(media_type="image/jpeg", data=PNG),
            DocumentPart(data=PDF),
        ),
    ),
    Message(role="user", content="What do you see?"),
)


def test_anthropic_images_and_documents_decode_into_parts_also_in_tool_results() -> None:
    request = _translated(_from_anthropic(ANTHROPIC_MESSAGES))
    assert request.messages == ANTHROPIC_MODEL_MESSAGES


def test_anthropic_images_and_documents_golden_to_gemini() -> None:
    body = _body(GEMINI, _from_anthropic(ANTHROPIC_MESSAGES))
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": PDF_URL}},
                {"inlineData": {"mimeType": "text/plain", "data": NOTES_B64}},
                {"text": "Compare these, then take a screenshot."},
            ],
        },
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "screenshot", "args": {}, "id": "toolu_1"},
                    "thoughtSignature": "skip_thought_signature_validator",
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "screenshot",
                        "response": {"content": "the screen"},
                        "id": "toolu_1",
                    }
                },
                {"inlineData": {"mimeType": "image/jpeg", "data": PNG}},
                {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
            ],
        },
        {"role": "user", "parts": [{"text": "What do you see?"}]},
    ]


def _without_url_document(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = {**messages[0], "content": [b for i, b in enumerate(messages[0]["content"]) if i != 2]}
    return [first, *messages[1:]]


def test_anthropic_images_and_documents_golden_to_openai() -> None:
    """A tool message takes text only: the result's image and PDF follow the tool messages in a
    user message, introduced by the call they belong to."""
    request = _translated(_from_anthropic(_without_url_document(ANTHROPIC_MESSAGES)))
    body = _body(OPENAI, request)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {
                    "type": "file",
                    "file": {
                        "filename": "document.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                },
                {
                    "type": "file",
                    "file": {
                        "filename": "document.txt",
                        "file_data": f"data:text/plain;base64,{NOTES_B64}",
                    },
                },
                {"type": "text", "text": "Compare these, then take a screenshot."},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "screenshot", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "the screen"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Attached to the result of tool call toolu_1:"},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                {
                    "type": "file",
                    "file": {
                        "filename": "document.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                },
            ],
        },
        {"role": "user", "content": "What do you see?"},
    ]


def test_a_pdf_url_cannot_go_to_openai_and_skips_it_only() -> None:
    """Chat Completions takes no file URL: the OpenAI codec says so (the router then skips an
    OpenAI provider for this request), the Anthropic and Gemini ones take it."""
    request = _translated(_from_anthropic(ANTHROPIC_MESSAGES))
    assert OPENAI.unsupported(request) == (Untranslatable("document_url", "messages"),)
    assert ANTHROPIC.unsupported(request) == ()
    assert GEMINI.unsupported(request) == ()
    with pytest.raises(BadRequest, match="document given by URL"):
        OPENAI.build(request, "gpt", "key")


def test_anthropic_document_options_not_carried_are_noted() -> None:
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "Q3 report",
            "context": "from the finance team",
            "citations": {"enabled": True},
            "cache_control": {"type": "ephemeral"},
        },
        _image_block(type="file", file_id="file_011"),
        {"type": "document", "source": {"type": "content", "content": [{"type": "text"}]}},
    ]
    request = _from_anthropic([{"role": "user", "content": content}])
    assert request.source is not None
    assert request.source.untranslatable == (
        Untranslatable("context", "messages.0.content.0.context"),
        Untranslatable("citations", "messages.0.content.0.citations"),
        Untranslatable("cache_control", "messages.0.content.0.cache_control"),
        Untranslatable("file_id", "messages.0.content.1.source"),
        Untranslatable("document source content", "messages.0.content.2.source"),
    )
    assert request.messages[0].parts == (DocumentPart(data=PDF, title="Q3 report"),)


def test_a_document_title_goes_to_anthropic_and_openai_but_not_gemini() -> None:
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "Q3 report",
        }
    ]
    request = _translated(_from_anthropic([{"role": "user", "content": content}]))
    assert GEMINI.unsupported(request) == (Untranslatable("document_title", "messages"),)
    assert OPENAI.unsupported(request) == ()
    file = _body(OPENAI, request)["messages"][0]["content"][0]["file"]
    assert file["filename"] == "Q3 report"


def test_anthropic_takes_documents_that_are_pdf_or_plain_text_only() -> None:
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    part = {"type": "file", "file": {"filename": "a.docx", "file_data": f"data:{docx};base64,UEs="}}
    request = _from_openai([{"role": "user", "content": [part]}])
    assert ANTHROPIC.unsupported(request) == (Untranslatable("document_type", "messages"),)
    assert GEMINI.unsupported(request) == ()


# ---------------------------------------------------------------- round trips


def _conversation() -> Request:
    """History with images and documents in user turns and in tool results."""
    return Request(
        messages=(
            parts_message(
                "user",
                [
                    TextPart("Look:"),
                    ImagePart(media_type="image/png", data=PNG),
                    ImagePart(url=IMAGE_URL),
                    DocumentPart(data=PDF, title="Report"),
                    DocumentPart(media_type="text/plain", data=NOTES_B64),
                    TextPart("and call the tool."),
                ],
            ),
            Message(role="assistant", tool_calls=(ToolCall(id="call_1", name="shot"),)),
            parts_message(
                "tool",
                [TextPart("done"), ImagePart(media_type="image/webp", data=PNG)],
                tool_call_id="call_1",
            ),
            parts_message("user", [DocumentPart(url=PDF_URL), TextPart("Thanks.")]),
        )
    )


def test_round_trip_through_anthropic() -> None:
    request = _conversation()
    _, back = ANTHROPIC_SERVER.parse_request(_body(ANTHROPIC, request))
    assert back.messages == request.messages


def _mapped(messages: tuple[Message, ...], change: Callable[[Part], Part]) -> tuple[Message, ...]:
    return tuple(replace(m, parts=tuple(change(p) for p in m.parts)) for m in messages)


def test_round_trip_through_gemini() -> None:
    """Back as they went, but that Gemini carries no title (its codec's unsupported() says so
    for a client's request) and a URL's media type is named from its path."""

    def gemini(part: Part) -> Part:
        if isinstance(part, DocumentPart):
            return replace(part, title="")
        if isinstance(part, ImagePart) and part.url:
            return replace(part, media_type="image/png")
        return part

    request = _conversation()
    _, back = GEMINI_SERVER.parse_request(_body(GEMINI, request), "gemini-2.5-pro")
    assert back.messages == _mapped(request.messages, gemini)


def test_round_trip_through_openai() -> None:
    """User turns come back as they went, a document's title as its file name; a tool result's
    image comes back in the user message after the tool messages (where Chat Completions can
    carry it)."""

    def openai(part: Part) -> Part:
        if isinstance(part, DocumentPart):
            return replace(part, title="", name=part.title or "document.txt")
        return part

    user = _conversation().messages[0]
    _, back = OPENAI_SERVER.parse_request(_body(OPENAI, Request(messages=(user,))))
    assert back.messages == _mapped((user,), openai)
    tool_turns = _conversation().messages[1:3]
    _, back = OPENAI_SERVER.parse_request(_body(OPENAI, Request(messages=tool_turns)))
    assert back.messages[1:] == (
        Message(role="tool", content="done", tool_call_id="call_1"),
        parts_message(
            "user",
            [
                TextPart("Attached to the result of tool call call_1:"),
                ImagePart(media_type="image/webp", data=PNG),
            ],
        ),
    )


def test_gemini_server_reads_inline_and_file_data() -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "see"},
                    {"inlineData": {"mimeType": "image/gif", "data": PNG}},
                    {"fileData": {"mimeType": "application/pdf", "fileUri": PDF_URL}},
                    {"fileData": {"fileUri": IMAGE_URL}},
                ],
            }
        ]
    }
    _, request = GEMINI_SERVER.parse_request(body, "gemini-2.5-flash")
    assert request.messages[0].parts == (
        TextPart("see"),
        ImagePart(media_type="image/gif", data=PNG),
        DocumentPart(url=PDF_URL),
        ImagePart(url=IMAGE_URL),
    )


def test_gemini_server_refuses_inline_data_without_a_media_type() -> None:
    body = {"contents": [{"parts": [{"inlineData": {"data": PNG}}]}]}
    with pytest.raises(BadRequest, match="mimeType"):
        GEMINI_SERVER.parse_request(body, "gemini-2.5-flash")
