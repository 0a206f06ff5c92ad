"""What the controller judges, read from the tiers' targets: providers, and models of them.

A tier's member is a target's key (``provider/model``, :func:`~controller.control.state.model_key`)
or a provider's bare name (then it stands for all that provider's models in the tier). A
provider that serves one model in every tier is judged as a whole. One that serves several also
gets a breaker per model: a model that fails is ejected while its siblings keep serving; when
every model with traffic fails, the provider trips as a whole (:mod:`controller.control.decide`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from controller.control.state import model_key, split_key

Target = tuple[str, str | None]  # (provider, model); model None: all of its models


class Members:
    """The tiers' targets, and the names (providers, then per-model keys) judged."""

    __slots__ = ("multi", "names", "tiers")

    def __init__(self, tiers: Mapping[str, Sequence[str]]) -> None:
        self.tiers: dict[str, tuple[Target, ...]] = {
            tier: tuple(split_key(member) for member in members) for tier, members in tiers.items()
        }
        models: dict[str, dict[str, None]] = {}
        for targets in self.tiers.values():
            for provider, model in targets:
                found = models.setdefault(provider, {})
                if model is not None:
                    found[model] = None
        self.multi = frozenset(p for p, ms in models.items() if len(ms) > 1)
        keys = [model_key(p, m) for p in models if p in self.multi for m in models[p]]
        self.names: tuple[str, ...] = (*models, *keys)

    def blocked_by(self, name: str) -> Iterator[tuple[str, list[Target]]]:
        """For each tier ``name`` (a provider, or a ``provider/model`` key) serves: the tier and
        its other targets (what is left there without it)."""
        provider, model = split_key(name)
        for tier, targets in self.tiers.items():
            hit = [t for t in targets if t[0] == provider and (model is None or t[1] == model)]
            if hit:
                yield tier, [t for t in targets if t not in hit]
