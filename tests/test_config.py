"""Config: typed and frozen; errors name the key and the line; env overrides for the switch."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller._errors import ConfigError
from controller.config import load_config, parse_config, resolve_secret
from controller.control.state import KillSwitch
from controller.routing.plan import Strategy

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "failover.example.yaml"

MINIMAL = """\
providers:
  openai:
    kind: openai
    api_key_env: OPENAI_API_KEY
  anthropic:
    kind: anthropic
tiers:
  frontier:
    targets:
      - {provider: openai, model: gpt-4o}
      - {provider: anthropic, model: claude}
"""


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.tiers["frontier"].targets[0].provider == "openai"
    assert config.tiers["fast"].strategy is Strategy.LEAST_LATENCY
    assert config.aliases["gpt-4o"] == "frontier"
    assert config.aliases["claude-*"] == "frontier"
    assert config.default_tier is None  # shown, commented out: off unless configured
    assert config.providers["local"].url == "http://127.0.0.1:11434/v1"


def test_aliases_take_patterns_and_a_default_tier() -> None:
    text = (
        MINIMAL + "aliases:\n  gpt-4o: frontier\n  'claude-*': frontier\ndefault_tier: frontier\n"
    )
    config = parse_config(text)
    assert config.aliases == {"gpt-4o": "frontier", "claude-*": "frontier"}
    assert config.default_tier == "frontier"
    assert parse_config(MINIMAL).default_tier is None  # off unless configured


def test_defaults_and_frozen() -> None:
    config = parse_config(MINIMAL)
    assert config.providers["openai"].url == "https://api.openai.com/v1"
    assert config.providers["anthropic"].url == "https://api.anthropic.com"
    assert config.routing.max_attempts == 6
    assert config.controller.error_rate_threshold == 0.5
    assert config.telemetry.capture_content is False
    with pytest.raises(ValidationError):
        config.routing.max_attempts = 3


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        (
            MINIMAL.replace("provider: anthropic", "provider: anthropc"),
            "tiers.frontier.targets.1.provider",
            11,
            "unknown provider 'anthropc'",
        ),
        (
            MINIMAL.replace("kind: anthropic", "kind: anthropik"),
            "providers.anthropic.kind",
            6,
            "openai",
        ),
        (MINIMAL + "routing:\n  max_attempts: 0\n", "routing.max_attempts", 13, "greater"),
        (MINIMAL + "routng: {}\n", "routng", 12, "unknown key"),
        (
            MINIMAL + "kill_switch:\n  disable: [openai, nope]\n",
            "kill_switch.disable.1",
            13,
            "unknown provider 'nope'",
        ),
        (MINIMAL + "aliases:\n  gpt: frontir\n", "aliases.gpt", 13, "unknown tier"),
        (  # a dot inside a name or pattern does not lose the line
            MINIMAL + "aliases:\n  gpt-4o: frontier\n  gpt-4.1*: frontir\n",
            "aliases.gpt-4.1*",
            14,
            "unknown tier 'frontir' (known: frontier)",
        ),
        (
            MINIMAL + "aliases: {gpt-4o: frontier}\ndefault_tier: fast\n",
            "default_tier",
            13,
            "unknown tier 'fast' (known: frontier)",
        ),
        (
            MINIMAL.replace(
                "    targets:\n      - {provider: openai, model: gpt-4o}\n"
                "      - {provider: anthropic, model: claude}\n",
                "    strategy: priority\n",
            ),
            "tiers.frontier.targets",
            8,
            "missing",
        ),
    ],
)
def test_errors_name_the_key_and_line(text: str, key: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="failover.yaml")
    err = caught.value
    assert err.key == key
    assert err.line == line
    assert words in str(err)
    assert str(err).startswith(f"failover.yaml:{line}: {key}: ")


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("providers:\n  openai: [unclosed\n", source="f.yaml")
    assert caught.value.line is not None
    assert "invalid YAML" in str(caught.value)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config("- a\n- b\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_compatible_provider_needs_a_base_url() -> None:
    text = MINIMAL.replace("kind: anthropic", "kind: openai_compatible")
    with pytest.raises(ConfigError, match="base_url is required") as caught:
        parse_config(text)
    assert caught.value.key == "providers.anthropic"


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("127.0.0.1:11434/v1", "must be an http:// or https:// URL with a host"),
        ("ftp://models.example/v1", "must be an http:// or https:// URL with a host"),
        ("https://user:sk-pasted@models.example/v1", "must not hold a user name or password"),
        ("https://models.example:99999/v1", "has a port that is not a number"),
        ("https://models.example:0/v1", "has a port that is not a number"),
        ("https://api..example.com/v1", "has a host name that is not valid"),
    ],
)
def test_a_base_url_the_client_cannot_call_is_refused_unshown(base_url: str, words: str) -> None:
    """Refused when the config is read (it was a 500 on every request), never repeated: a URL
    may hold a key."""
    text = MINIMAL.replace("kind: anthropic", f'kind: anthropic\n    base_url: "{base_url}"')
    with pytest.raises(ConfigError, match=words) as caught:
        parse_config(text)
    assert caught.value.key == "providers.anthropic.base_url"
    assert caught.value.line == 7  # the base_url line
    assert base_url not in str(caught.value)
    assert "sk-pasted" not in str(caught.value)


def test_kill_switch_environment_overrides_win() -> None:
    config = parse_config(MINIMAL + "kill_switch:\n  disable: [openai]\n")
    assert config.effective_kill_switch({}) == KillSwitch(disable=("openai",))
    env = {"FAILOVER_KILL_SWITCH_PIN": "anthropic", "FAILOVER_KILL_SWITCH_DISABLE": ""}
    assert config.effective_kill_switch(env) == KillSwitch(pin="anthropic", disable=())
    with pytest.raises(ConfigError, match="unknown provider 'opena'") as caught:
        config.effective_kill_switch({"FAILOVER_KILL_SWITCH_DISABLE": "opena"})
    assert caught.value.key == "FAILOVER_KILL_SWITCH_DISABLE"


def test_secret_resolution_names_the_variable_not_the_value() -> None:
    assert resolve_secret("K", key="providers.x.api_key_env", env={"K": "sk-live-123"}) == (
        "sk-live-123"
    )
    with pytest.raises(ConfigError) as caught:
        resolve_secret("OPENAI_API_KEY", key="providers.openai.api_key_env", env={})
    assert "OPENAI_API_KEY is not set" in str(caught.value)
    assert caught.value.key == "providers.openai.api_key_env"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(MINIMAL.encode() + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_a_key_given_twice_in_one_mapping_is_refused_naming_both_lines() -> None:
    # YAML itself keeps the last one: the first tier (or kill switch) would silently not count.
    text = MINIMAL + "  frontier:\n    targets:\n      - {provider: openai, model: gpt-4.1}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="f.yaml")
    assert str(info.value) == (
        "f.yaml:12: tiers.frontier: duplicate key (first on line 8; YAML keeps only one)"
    )
    twice = "providers:\n  a: {kind: openai, kind: anthropic}\n"
    with pytest.raises(ConfigError, match=r"f.yaml:2: providers.a.kind: duplicate key"):
        parse_config(twice, source="f.yaml")


def test_a_misspelled_key_is_named_before_the_required_key_it_leaves_missing() -> None:
    text = MINIMAL.replace("tiers:", "tier:")
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="f.yaml")
    assert str(info.value).startswith("f.yaml:7: tier: unknown key (check the spelling")
    assert "(and 1 more problem)" in str(info.value)


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("    api_key_env: OPENAI_API_KEY\n", "sk-proj-AbC123secretvalue"),
        ("    kind: anthropic\n", "sk-ant-api03-secretvalue"),  # a new key, added after kind
    ],
)
def test_a_secret_pasted_where_its_variable_name_belongs_is_refused_unshown(
    key: str, secret: str
) -> None:
    line = f"    api_key_env: {secret}\n"
    text = MINIMAL.replace(key, line if "api_key_env" in key else key + line)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="f.yaml")
    message = str(info.value)
    assert "api_key_env: must be the name of an environment variable" in message
    assert secret not in message


def test_notify_and_gateway_variable_names_are_checked_the_same_way() -> None:
    for block in (
        "notify:\n  telegram: {bot_token_env: '123456:ABC-secret'}\n",
        "notify:\n  slack: {webhook_url_env: 'https://hooks.slack.com/services/T/B/x'}\n",
        "gateway: {admin_token_env: 'not a name'}\n",
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(MINIMAL + block, source="f.yaml")
        assert "must be the name of an environment variable" in str(info.value)
        assert "ABC-secret" not in str(info.value)
        assert "hooks.slack" not in str(info.value)
    ok = parse_config(MINIMAL + "notify:\n  telegram: {bot_token_env: MY_BOT_TOKEN_2}\n")
    assert ok.notify.telegram.bot_token_env == "MY_BOT_TOKEN_2"


@pytest.mark.parametrize(
    ("timeouts", "cap", "first"),
    [
        ("{first_token: 20, total: 120, stream_total: 5}", "5 s must", "20"),
        ("{total: 8, stream_total: 8}", "8 s must", "8"),
        ("{first_token: 900, total: 900}", "600 s, the default, must", "900"),  # checked too
    ],
)
def test_a_stream_cap_no_longer_than_the_wait_for_its_first_chunk_is_refused(
    timeouts: str, cap: str, first: str
) -> None:
    """stream_total counts from the attempt's start: a cap inside the first-chunk wait would cut
    a stream that starts late but healthy at once, past the point where it could fail over."""
    text = f"""providers:
  a:
    kind: openai
    timeouts: {timeouts}
tiers:
  t:
    targets: [{{provider: a, model: m}}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.yaml")
    assert str(caught.value) == (
        f"f.yaml:4: providers.a.timeouts.stream_total: {cap} be longer than the wait for a "
        f"stream's first chunk ({first} s: the shorter of first_token and total)"
    )


def test_an_invalid_first_token_is_the_only_error_reported() -> None:
    text = """providers:
  a:
    kind: openai
    timeouts: {first_token: abc, stream_total: 100}
tiers:
  t:
    targets: [{provider: a, model: m}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.yaml")
    assert str(caught.value).startswith("f.yaml:4: providers.a.timeouts.first_token: ")
    assert "more problem" not in str(caught.value)
