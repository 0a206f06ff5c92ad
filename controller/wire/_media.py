"""Images and documents, as every wire format needs them: data URLs (OpenAI's way of sending
bytes inline), plain-text documents (Anthropic sends their text, the others base64), file names
and URL media types. :class:`~controller.model.ImagePart` and
:class:`~controller.model.DocumentPart` hold base64 bytes whatever the format said."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import urllib.parse
from collections.abc import Iterator

from controller.model import DocumentPart, ImagePart, Message

__all__ = [
    "PDF",
    "TEXT",
    "data_url",
    "file_name",
    "media_of",
    "parse_data_url",
    "text_data",
    "text_of",
    "url_media_type",
]

PDF = "application/pdf"
TEXT = "text/plain"
# data:<media type>[;<parameter>...];base64,<data>; a data URL not in base64 does not match.
_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*);base64,(.*)", re.DOTALL)


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 data URL; None for any other URL."""
    match = _DATA_URL.fullmatch(url)
    return None if match is None else (match.group(1), match.group(3))


def text_data(text: str) -> str:
    """A plain-text document's text as the base64 :class:`DocumentPart` holds."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def text_of(document: DocumentPart) -> str:
    """A plain-text document's text (bytes that are not UTF-8 are replaced, not refused)."""
    try:
        raw = base64.b64decode(document.data)
    except (binascii.Error, ValueError):
        return document.data  # not base64 after all: the client's text as it came
    return raw.decode("utf-8", errors="replace")


def file_name(document: DocumentPart) -> str:
    """The file name to send where one is required (OpenAI): the client's, else its title, else
    a neutral one with the media type's extension."""
    if document.name or document.title:
        return document.name or document.title
    return "document" + (mimetypes.guess_extension(document.media_type) or "")


def url_media_type(url: str, media_type: str = "") -> str:
    """``media_type``, else what the URL's path ends in says (``.png``), else ""."""
    if media_type:
        return media_type
    guessed, _ = mimetypes.guess_type(urllib.parse.urlsplit(url).path)
    return guessed or ""


def media_of(messages: tuple[Message, ...]) -> Iterator[ImagePart | DocumentPart]:
    """Every image and document of a conversation, in order."""
    for message in messages:
        for part in message.parts:
            if isinstance(part, ImagePart | DocumentPart):
                yield part
