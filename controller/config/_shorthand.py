"""``models:``, the one-line form of a tier: a model name clients send, and what serves it.

::

    models:
      gpt-5: [openai/gpt-5, anthropic/claude-sonnet-4-5]     # gpt-5, then Claude if it fails
      fast:                                                  # the long form takes a tier's keys
        route: [openai/gpt-5-mini, gemini/gemini-2.5-flash]
        context_fallback: gemini/gemini-2.5-pro
        hedge: {after: p95}

Each entry becomes the tier of that name (so the name is what a client sends as ``model``, and
aliases may point at it), its targets the ``provider/model`` strings in order: the first ``/``
ends the provider's name, a model name may hold more (``openrouter/meta-llama/llama-3``). The
long form's other keys are a tier's (``strategy``, ``context_fallback`` as ``provider/model``,
``hedge``). The expansion happens before validation, so everything else sees ordinary tiers;
an error in an expanded tier is reported at its line under ``models:``.
"""

from __future__ import annotations

from typing import Any

ROUTE = "route"


class ShorthandError(ValueError):
    """A ``models:`` entry that cannot be expanded; ``loc`` is its key path in the file."""

    def __init__(self, loc: list[str], message: str) -> None:
        self.loc = loc
        super().__init__(message)


def expand(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    """``data`` with its ``models:`` entries turned into ``tiers:``, and for each tier made so
    whether it came from the long form (its targets are under ``route``)."""
    models = data.get("models")
    if models is None:
        return data, {}
    if not isinstance(models, dict):
        raise ShorthandError(["models"], "expected a mapping of model name to its route")
    tiers = data.get("tiers") or {}
    if not isinstance(tiers, dict):
        return data, {}  # validation reports the malformed tiers: key
    providers = data.get("providers")
    known = set(providers) if isinstance(providers, dict) else None
    made: dict[str, Any] = {}
    long_form: dict[str, bool] = {}
    for name, entry in models.items():
        key = str(name)
        if key in tiers:
            raise ShorthandError(["models", key], f"{key!r} is also under tiers: define it once")
        made[key], long_form[key] = _tier(key, entry, known)
    out = {k: v for k, v in data.items() if k != "models"}
    out["tiers"] = {**tiers, **made}
    return out, long_form


def origin(loc: list[str], long_form: dict[str, bool]) -> list[str]:
    """Where in the file an error at ``loc`` in an expanded tier belongs."""
    if len(loc) < 2 or loc[0] != "tiers" or loc[1] not in long_form:
        return loc
    rest = loc[2:]
    if rest[:1] == ["targets"]:
        rest = [ROUTE, *rest[1:2]] if long_form[loc[1]] else rest[1:2]
    elif rest[:1] == ["context_fallback"]:
        rest = rest[:1]
    return ["models", loc[1], *rest]


def _tier(name: str, entry: Any, known: set[str] | None) -> tuple[dict[str, Any], bool]:
    if isinstance(entry, list):
        return {"targets": _targets(["models", name], entry, known)}, False
    if not isinstance(entry, dict) or ROUTE not in entry:
        raise ShorthandError(
            ["models", name], "expected a list of provider/model, or a mapping with route:"
        )
    tier = {k: v for k, v in entry.items() if k != ROUTE}
    route = entry[ROUTE]
    if not isinstance(route, list):
        raise ShorthandError(["models", name, ROUTE], "expected a list of provider/model")
    tier["targets"] = _targets(["models", name, ROUTE], route, known)
    fallback = tier.get("context_fallback")
    if isinstance(fallback, str):
        tier["context_fallback"] = _target(["models", name, "context_fallback"], fallback, known)
    return tier, True


def _targets(loc: list[str], route: list[Any], known: set[str] | None) -> list[dict[str, str]]:
    if not route:
        raise ShorthandError(loc, "names no provider/model")
    return [_target([*loc, str(i)], item, known) for i, item in enumerate(route)]


def _target(loc: list[str], item: Any, known: set[str] | None) -> dict[str, str]:
    provider, _, model = item.partition("/") if isinstance(item, str) else ("", "", "")
    if not provider or not model:
        raise ShorthandError(loc, f"expected provider/model, got {item!r}")
    if known is not None and provider not in known:
        names = ", ".join(sorted(known)) or "none"
        raise ShorthandError(loc, f"unknown provider {provider!r} (known: {names})")
    return {"provider": provider, "model": model}
