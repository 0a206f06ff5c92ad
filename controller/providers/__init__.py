"""Provider adapters: one :class:`HttpProvider` per configured provider, each with its codec."""

from __future__ import annotations

from collections.abc import Mapping

from controller.providers.base import CountsTokens, HttpProvider, Provider, Timeouts
from controller.wire import ClientCodec
from controller.wire.anthropic import AnthropicClientCodec
from controller.wire.gemini import GeminiClientCodec
from controller.wire.openai import OpenAIClientCodec
from controller.wire.responses import ResponsesClientCodec

__all__ = ["CountsTokens", "HttpProvider", "Provider", "Timeouts", "codec_for"]


def codec_for(
    kind: str,
    *,
    provider_name: str | None = None,
    auth: str = "bearer",
    path: str = "/chat/completions",
    query: Mapping[str, str] | None = None,
    stream_usage: bool = True,
    organization: str | None = None,
    project: str | None = None,
    api: str = "chat",
) -> ClientCodec:
    """The client codec for a provider kind (``openai``, ``anthropic``, ``gemini``,
    ``openai_compatible``). ``organization`` and ``project`` go to OpenAI-format providers as
    ``OpenAI-Organization`` and ``OpenAI-Project``; ``api="responses"`` makes an ``openai``
    provider call the Responses API (``/responses``) instead of chat completions."""
    named = (("OpenAI-Organization", organization), ("OpenAI-Project", project))
    account = {header: value for header, value in named if value}
    if kind == "anthropic":
        return AnthropicClientCodec()
    if kind == "gemini":
        return GeminiClientCodec()
    if kind == "openai" and api == "responses":
        return ResponsesClientCodec(account=account)
    if kind == "openai":
        return OpenAIClientCodec(token_limit="max_completion_tokens", account=account)
    if kind == "openai_compatible":
        if auth not in ("bearer", "api-key", "none"):
            raise ValueError(f"unknown auth style {auth!r}")
        return OpenAIClientCodec(
            provider_kind=provider_name or "openai_compatible",
            auth=auth,  # type: ignore[arg-type]
            path=path,
            query=query,
            include_usage_option=stream_usage,
            account=account,
        )
    raise ValueError(f"unknown provider kind {kind!r}")
