"""The check every configured URL to call passes: http(s), a host, no credentials in it."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def http_url(value: str, *, example: str = "", credentials: str) -> SplitResult:
    """``value`` split, when it is an http:// or https:// URL with a host and no user name or
    password; else ValueError (a pydantic validator's message: ``example`` follows the first
    sentence, ``credentials`` says where they belong). No message repeats the URL: it may hold a
    secret."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host{example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not hold a user name or password: {credentials}")
    return parts
