"""The ``models:`` shorthand (a tier in one line) and the targets ``failover check`` warns can
never be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller._errors import ConfigError
from controller.config import parse_config, unreachable
from controller.config._model import TargetConfig
from controller.routing.plan import Strategy
from tests.test_cli import run

PROVIDERS = """\
providers:
  openai: {kind: openai, api_key_env: OPENAI_API_KEY}
  anthropic: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}
"""


def test_a_model_in_one_line_is_a_tier_of_its_targets_in_order() -> None:
    config = parse_config(
        PROVIDERS
        + """\
models:
  gpt-5: [openai/gpt-5, anthropic/claude-sonnet-4-5]
  hosted: [openai/meta-llama/llama-3.3-70b]
aliases:
  "gpt-5*": gpt-5
"""
    )
    tier = config.tiers["gpt-5"]
    assert [(t.provider, t.model) for t in tier.targets] == [
        ("openai", "gpt-5"),
        ("anthropic", "claude-sonnet-4-5"),
    ]
    assert tier.strategy is Strategy.PRIORITY
    assert config.tiers["hosted"].targets[0].model == "meta-llama/llama-3.3-70b"  # first / only
    assert config.aliases == {"gpt-5*": "gpt-5"}


def test_the_long_form_takes_a_tiers_keys() -> None:
    config = parse_config(
        PROVIDERS
        + """\
tiers:
  plain: {targets: [{provider: openai, model: m}]}
models:
  fast:
    route: [openai/gpt-5-mini, anthropic/claude-haiku-4-5]
    context_fallback: anthropic/claude-sonnet-4-5
    strategy: least_latency
    hedge: {after: p95}
"""
    )
    fast = config.tiers["fast"]
    assert fast.context_fallback == TargetConfig(provider="anthropic", model="claude-sonnet-4-5")
    assert fast.strategy is Strategy.LEAST_LATENCY
    assert fast.hedge is not None
    assert fast.hedge.after == "p95"
    assert set(config.tiers) == {"plain", "fast"}


@pytest.mark.parametrize(
    ("models", "key", "line", "words"),
    [
        ("  gpt-5: [opnai/gpt-5]\n", "models.gpt-5.0", 5, "unknown provider 'opnai'"),
        ("  gpt-5: [openai/gpt-5, gpt-4o]\n", "models.gpt-5.1", 5, "expected provider/model"),
        ("  gpt-5: openai/gpt-5\n", "models.gpt-5", 5, "a list of provider/model"),
        ("  gpt-5:\n    route: []\n", "models.gpt-5.route", 6, "names no provider/model"),
        (
            "  fast:\n    route: [openai/m]\n    hedge: {after: -1}\n",
            "models.fast.hedge.after",
            7,
            "",
        ),
        (
            "  fast:\n    route: [openai/m]\n    stratgy: cost\n",
            "models.fast.stratgy",
            7,
            "unknown",
        ),
    ],
)
def test_errors_in_a_model_line_name_its_key_and_line(
    models: str, key: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(PROVIDERS + "models:\n" + models)
    assert caught.value.key == key
    assert caught.value.line == line
    assert words in str(caught.value)


def test_a_name_under_both_models_and_tiers_is_refused() -> None:
    text = PROVIDERS + "tiers:\n  m: {targets: [{provider: openai, model: x}]}\nmodels:\n"
    with pytest.raises(ConfigError, match="also under tiers") as caught:
        parse_config(text + "  m: [openai/y]\n")
    assert (caught.value.key, caught.value.line) == ("models.m", 7)


def test_targets_that_can_never_be_reached_are_named() -> None:
    config = parse_config(
        PROVIDERS
        + """\
routing: {max_attempts: 3}
kill_switch: {disable: [anthropic]}
models:
  a: [openai/x, openai/x, openai/y]
  b:
    route: [openai/x, openai/y, openai/z, openai/w]
    context_fallback: openai/x
  c: [openai/x, anthropic/y]
"""
    )
    assert unreachable(config) == [
        "tiers.a.targets.1 (openai/x): listed earlier in the tier; a second try is no fallback",
        "tiers.b.targets.3 (openai/w): past routing.max_attempts (3), never tried",
        "tiers.b.context_fallback: the tier's first target; the model that found the context "
        "too long is never asked again",
        "tiers.c.targets.1 (anthropic/y): its provider is disabled by kill_switch.disable",
    ]


def test_check_prints_the_expanded_routes_and_the_warnings(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(PROVIDERS + "models:\n  gpt-5: [openai/gpt-5, anthropic/c, openai/gpt-5]\n")
    result = run(
        "check", "--config", str(path), env={"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b"}
    )
    assert result.returncode == 0, result.stdout + result.stderr  # warnings are not problems
    assert "tier gpt-5" in result.stdout
    assert "openai/gpt-5 -> anthropic/c -> openai/gpt-5" in result.stdout
    assert "warning: tiers.gpt-5.targets.2 (openai/gpt-5): listed earlier" in result.stdout
