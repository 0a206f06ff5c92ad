"""The gateway's own settings: one frozen, keyword-only object validated once."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_BODY_BYTES", "GatewaySettings"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """How the HTTP front behaves.

    ``api_keys`` are the keys clients must present (``Authorization: Bearer`` or ``x-api-key``);
    an empty tuple turns client auth off, which suits a gateway bound to loopback. The keys are
    kept out of the repr so that logging the settings never leaks one.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    shutdown_grace_seconds: float = 10.0
    # Answer with the model name the client sent instead of the model that served.
    echo_requested_model: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.api_keys, tuple):  # a lone string is a classic slip
            raise ValueError("api_keys must be a tuple of keys")
        if any(not key for key in self.api_keys):
            raise ValueError("api_keys must not contain an empty key")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.shutdown_grace_seconds < 0:
            raise ValueError("shutdown_grace_seconds must not be negative")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)
