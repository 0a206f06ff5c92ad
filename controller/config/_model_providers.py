"""``providers.<name>``: what a provider is (its kind, URL, key variable, account), how long
each attempt may take (``timeouts``) and how much of an answer it may hold."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from controller._env_name import EnvName
from controller._urls import http_url
from controller.config._model_base import AtField, Frozen, Seconds
from controller.providers.base import Timeouts


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OPENAI_COMPATIBLE = "openai_compatible"


DEFAULT_BASE_URLS: dict[ProviderKind, str] = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
}


class TimeoutsConfig(Frozen):
    """A provider's per-attempt limits, in seconds (what each bounds: :class:`Timeouts`).

    ``total`` bounds a non-streaming answer and a stream's wait for its first chunk; a stream
    already flowing is bounded by ``idle`` and ``stream_total`` instead.
    """

    connect: Seconds = 5.0
    pool: Seconds = 1.0
    first_token: Seconds = 20.0
    idle: Seconds = 30.0
    total: Seconds = 120.0
    stream_total: Seconds = 600.0

    @model_validator(mode="after")
    def _stream_cap_past_the_first_wait(self) -> TimeoutsConfig:
        """A stream's length counts from its attempt's start, so a cap no longer than the wait
        for its first chunk would cut a stream that starts late but healthy right away. After
        validation, so the default 600 s is checked against a long first_token / total too."""
        first = min(self.first_token, self.total)
        if self.stream_total <= first:
            given = "" if "stream_total" in self.model_fields_set else ", the default,"
            raise AtField(
                "stream_total",
                f"{self.stream_total:g} s{given} must be longer than the wait for a stream's "
                f"first chunk ({first:g} s: the shorter of first_token and total)",
            )
        return self

    def limits(self) -> Timeouts:
        """These limits as the router and the adapters take them."""
        return Timeouts(
            connect=self.connect,
            pool=self.pool,
            first_token=self.first_token,
            idle=self.idle,
            total=self.total,
            stream_total=self.stream_total,
        )


class ProviderConfig(Frozen):
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: EnvName | None = None
    default_model: str | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    # Connections open to the provider at once; 0: no limit. A stream holds its connection for
    # its whole length, so this is also the provider's concurrent streams (README "Limits").
    max_connections: Annotated[int, Field(ge=0)] = 4096
    # What the gateway holds of one answer: a whole body, one stream event (README "Limits").
    max_response_bytes: Annotated[int, Field(ge=64 * 1024)] = 32 * 1024 * 1024
    max_event_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024
    # An http:// proxy URL, or "none" to ignore HTTPS_PROXY / HTTP_PROXY (README "Egress proxy").
    proxy: str | None = None
    # Continues an answer from a trailing assistant turn; None: by kind (README "Continuation").
    prefill: bool | None = None
    # openai_compatible only:
    provider_name: str | None = None  # gen_ai.provider.name, e.g. "ollama", "openrouter"
    auth: Literal["bearer", "api-key", "none"] = "bearer"
    path: str = "/chat/completions"
    query: dict[str, str] = Field(default_factory=dict)
    stream_usage: bool = True
    # openai and openai_compatible: the organization and project calls are billed to
    organization: str | None = None
    project: str | None = None
    # openai only: "responses" calls the Responses API (models offered only there, and the
    # /v1/responses front's requests pass through as they came); "chat": chat completions
    api: Literal["chat", "responses"] = "chat"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """A URL the provider client can call; the message never repeats it (it may hold a key)."""
        if value is None:
            return value
        parts = http_url(
            value,
            example=", e.g. https://api.openai.com/v1",
            credentials="secrets come from the environment (api_key_env)",
        )
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        try:
            (parts.hostname or "").encode("idna")  # a host: http_url checked it
        except UnicodeError:
            raise ValueError(
                "has a host name that is not valid (an empty or too long label)"
            ) from None
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        """An http:// URL without credentials (those come from the environment), or none."""
        if value is None or value.strip().lower() == "none":
            return value
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("must be an http:// URL with a host (e.g. http://proxy:3128) or none")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not hold a user name or password: a proxy that needs them is set with "
                "HTTPS_PROXY / HTTP_PROXY in the environment"
            )
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        return value

    @model_validator(mode="after")
    def _base_url_known(self) -> Self:
        if self.base_url is None and self.kind is ProviderKind.OPENAI_COMPATIBLE:
            raise ValueError("base_url is required for kind openai_compatible")
        return self

    @model_validator(mode="after")
    def _responses_for_openai(self) -> Self:
        if self.api == "responses" and self.kind is not ProviderKind.OPENAI:
            raise AtField("api", f"responses is offered by kind openai, not {self.kind.value}")
        return self

    @model_validator(mode="after")
    def _account_where_it_is_sent(self) -> Self:
        """organization / project are OpenAI headers: set elsewhere, they would do nothing."""
        openai = (ProviderKind.OPENAI, ProviderKind.OPENAI_COMPATIBLE)
        for key in ("organization", "project"):
            value = getattr(self, key)
            if value is not None and self.kind not in openai:
                raise AtField(
                    key, f"is sent only to kind openai or openai_compatible, not {self.kind.value}"
                )
            if value is not None and (not value.strip() or any(c in value for c in "\r\n")):
                raise AtField(key, "must be one line of text (it goes into a header)")
        return self

    @property
    def takes_prefill(self) -> bool:
        """Anthropic's API and most OpenAI-compatible servers continue a trailing assistant
        turn; OpenAI's own API and Gemini's answer it as a new turn instead."""
        if self.prefill is not None:
            return self.prefill
        return self.kind in (ProviderKind.ANTHROPIC, ProviderKind.OPENAI_COMPATIBLE)

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.kind]
