"""The model-name lookup as a table: exact names, then glob patterns, then a default tier."""

from __future__ import annotations

import pytest

from controller._model_names import ModelNames, is_pattern

TIERS = ("frontier", "fast", "cheap", "claude-fast")
ALIASES = {
    "claude-haiku-4-5": "frontier",  # an exact name beats every pattern that matches it
    "claude-*": "frontier",
    "claude-haiku-*": "fast",  # longer: more specific than claude-*
    "gpt-?-mini": "cheap",  # two patterns of one length: the first in the file wins
    "gpt-5-mi*i": "fast",
    "sonnet[1m]": "frontier",  # brackets alone do not make a pattern: an exact name
    "claude-[0-9]*": "cheap",  # a pattern may use [seq]
    "fast": "frontier",  # an alias spelled like a tier wins over the tier
}
NAMES = ModelNames(ALIASES, TIERS)


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("claude-haiku-4-5", "frontier"),
        ("claude-haiku-4-5-20251001", "fast"),
        ("claude-opus-4-8", "frontier"),
        ("claude-sonnet-5", "frontier"),
        ("claude-3-opus", "cheap"),  # claude-[0-9]* is longer than claude-*
        ("claude-fast", "claude-fast"),  # a tier's own name is exact: it beats claude-*
        ("gpt-5-mini", "cheap"),  # gpt-?-mini and gpt-5-mi*i both match; gpt-?-mini came first
        ("gpt-4-mini", "cheap"),
        ("gpt-5-mixi", "fast"),
        ("sonnet[1m]", "frontier"),
        ("sonnet1", None),
        ("fast", "frontier"),
        ("frontier", "frontier"),
        ("Claude-opus-4-8", None),  # case-sensitive, as the vendors' ids are
        ("gpt-4o", None),
        ("", None),
    ],
)
def test_lookup_order(model: str, tier: str | None) -> None:
    assert NAMES.tier_for(model) == tier


def test_the_default_tier_takes_what_nothing_else_matches() -> None:
    names = ModelNames(ALIASES, TIERS, default_tier="cheap")
    assert names.tier_for("gpt-4o") == "cheap"
    assert names.tier_for("Claude-opus-4-8") == "cheap"
    assert names.tier_for("claude-opus-4-8") == "frontier"  # a pattern still comes first
    assert names.tier_for("frontier") == "frontier"


def test_ties_between_equal_patterns_go_by_file_order() -> None:
    first = ModelNames({"gpt-?-mini": "cheap", "gpt-5-mi*i": "fast"}, TIERS)
    second = ModelNames({"gpt-5-mi*i": "fast", "gpt-?-mini": "cheap"}, TIERS)
    assert (first.tier_for("gpt-5-mini"), second.tier_for("gpt-5-mini")) == ("cheap", "fast")


def test_known_lists_exact_names_then_patterns_most_specific_first() -> None:
    assert NAMES.exact() == sorted(
        {*TIERS, "claude-haiku-4-5", "sonnet[1m]"}  # "fast" is a tier and an alias: once
    )
    patterns = NAMES.known()[len(NAMES.exact()) :]
    assert patterns == ["claude-haiku-*", "claude-[0-9]*", "gpt-?-mini", "gpt-5-mi*i", "claude-*"]
    assert all(is_pattern(p) for p in patterns)
    assert not any(is_pattern(n) for n in NAMES.exact())


def test_without_aliases_only_the_tiers_route() -> None:
    names = ModelNames({}, TIERS)
    assert names.tier_for("fast") == "fast"
    assert names.tier_for("gpt-4o") is None
    assert names.known() == sorted(TIERS)
