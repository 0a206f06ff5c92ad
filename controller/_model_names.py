"""Which tier a front model name routes to: exact names, then glob patterns, then a default.

The config's ``aliases:`` map takes exact names (``gpt-4o: frontier``) and fnmatch-style
patterns (``claude-*: frontier``). A key holding ``*`` or ``?`` is a pattern (``[seq]`` works
inside one); any other key is an exact name, so ``sonnet[1m]`` stays a name. Matching is
case-sensitive, as the vendors' model ids are. A name is looked up in this order:

1. an exact name: an alias, else a tier's own name (an alias spelled like a tier wins);
2. the patterns, the longest (most specific) first, patterns of equal length in file order;
3. ``default_tier``, when the config sets one.

Anything else routes nowhere (the gateway's 404 lists :meth:`ModelNames.known`). The patterns
are compiled once per config: the lookup is on every request's path, a dict hit for an exact name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping

__all__ = ["ModelNames", "is_pattern"]

_Match = Callable[[str], object]


def is_pattern(name: str) -> bool:
    """Whether an ``aliases:`` key is a glob pattern rather than a model name."""
    return "*" in name or "?" in name


class ModelNames:
    """The model names one config routes: built once per config, then only read."""

    __slots__ = ("_default", "_exact", "_patterns")

    def __init__(
        self,
        aliases: Mapping[str, str],
        tiers: Iterable[str],
        *,
        default_tier: str | None = None,
    ) -> None:
        exact = {tier: tier for tier in tiers}
        exact.update((name, tier) for name, tier in aliases.items() if not is_pattern(name))
        self._exact = exact
        patterns = [(name, tier) for name, tier in aliases.items() if is_pattern(name)]
        patterns.sort(key=lambda pair: -len(pair[0]))  # stable: equal lengths keep file order
        self._patterns: tuple[tuple[_Match, str, str], ...] = tuple(
            (re.compile(fnmatch.translate(name)).match, name, tier) for name, tier in patterns
        )
        self._default = default_tier

    def tier_for(self, model: str) -> str | None:
        """The tier ``model`` routes to, or None when nothing matches and there is no default."""
        tier = self._exact.get(model)
        if tier is not None:
            return tier
        for match, _, tier in self._patterns:
            if match(model):
                return tier
        return self._default

    def exact(self) -> list[str]:
        """The model ids a client may ask for by name (tier names and exact aliases), sorted."""
        return sorted(self._exact)

    def known(self) -> list[str]:
        """What a client may send, for an answer to an unknown name: :meth:`exact` and then the
        patterns, most specific first."""
        return [*self.exact(), *(name for _, name, _ in self._patterns)]
