"""What every part of the config model is built from: the frozen base that refuses unknown
keys, and the errors a model's own check raises that carry where in the file the problem is
(read back by :func:`controller.config._model_yaml.config_error` to name the key and line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from controller.config._model_tiers import TargetConfig


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Seconds = Annotated[float, Field(gt=0)]


class AtField(ValueError):
    """A model's own check about one of its fields: the error points at that field's line."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class Ref(ValueError):
    """A dangling reference; carries its key so the error can point at its line. A dotted
    string, or the parts as a tuple where a part may hold a dot (``aliases.gpt-4.1*``)."""

    def __init__(
        self, key: str | tuple[str, ...], value: str, known: str, what: str = "provider"
    ) -> None:
        self.loc = key.split(".") if isinstance(key, str) else list(key)
        super().__init__(f"unknown {what} {value!r} (known: {known or 'none'})")


class At(Ref):
    """A problem at a key, in its own words (not a dangling reference)."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        self.loc = list(key)
        ValueError.__init__(self, message)


class Unpriced(Ref):
    """A shadow's daily_usd allowance for a target that has no price to count it by."""

    def __init__(self, key: tuple[str, ...], target: TargetConfig) -> None:
        self.loc = list(key)
        ValueError.__init__(
            self,
            f"needs a price for {target.provider} {target.model!r} in spend.prices (or "
            f"{target.provider} '*') to count the shadow's spend by",
        )


class Loop(Ref):
    """A ladder of tiers that steps down in a loop (``step_down``), at the key that closes it."""

    def __init__(self, key: tuple[str, ...], loop: str) -> None:
        self.loc = list(key)
        ValueError.__init__(self, f"steps down in a loop ({loop}): a ladder must end")
