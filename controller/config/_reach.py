"""Targets a valid config can never send a request to: ``failover check`` warns about them.

Not errors (the gateway runs, and an operator may mean it for later), but each is a fallback
someone wrote down and would count on in an outage:

* a target listed twice in one tier (the second try of it is no fallback);
* a target past ``routing.max_attempts`` (every earlier target takes at least one attempt);
* a ``context_fallback`` that is the tier's first target (the one that answered "context too
  long" is never asked again);
* a target whose provider the kill switch in the file disables.
"""

from __future__ import annotations

from controller.config._model import Config, TierConfig


def unreachable(config: Config) -> list[str]:
    """One line per target that can never be reached, naming its key."""
    found: list[str] = []
    disabled = set(config.kill_switch.disable)
    most = config.routing.max_attempts
    for name, tier in config.tiers.items():
        found += _in_tier(name, tier, most, disabled)
    return found


def _in_tier(name: str, tier: TierConfig, most: int, disabled: set[str]) -> list[str]:
    found = []
    seen: set[tuple[str, str]] = set()
    for i, target in enumerate(tier.targets):
        where = f"tiers.{name}.targets.{i} ({target.provider}/{target.model})"
        key = (target.provider, target.model)
        if key in seen:
            found.append(f"{where}: listed earlier in the tier; a second try is no fallback")
        elif i >= most:
            found.append(f"{where}: past routing.max_attempts ({most}), never tried")
        elif target.provider in disabled:
            found.append(f"{where}: its provider is disabled by kill_switch.disable")
        seen.add(key)
    fallback = tier.context_fallback
    first = tier.targets[0]
    if fallback is not None and (fallback.provider, fallback.model) == (
        first.provider,
        first.model,
    ):
        found.append(
            f"tiers.{name}.context_fallback: the tier's first target; the model that found "
            "the context too long is never asked again"
        )
    return found
