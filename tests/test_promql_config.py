"""The ``promql:`` config section: a bad rule names its key and line; the URL comes from the
file or the environment and is never repeated in an error."""

from __future__ import annotations

import pytest

from controller._errors import ConfigError
from controller.config import parse_config
from controller.control.promql import PromqlConfig
from controller.runtime import Runtime

BASE = """\
providers:
  a: {kind: openai, base_url: "http://127.0.0.1:1"}
  b: {kind: openai, base_url: "http://127.0.0.1:2"}
tiers:
  t:
    targets:
      - {provider: a, model: m}
      - {provider: b, model: m}
state: {path: ""}
"""


def error(promql: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + promql, source="f.yaml")
    return caught.value


def test_a_valid_section_is_read() -> None:
    config = parse_config(
        BASE
        + "promql:\n  url: http://prom:9090/\n  rules:\n"
        + "    - {name: slo, target: a, expr: ' up == 0 ', for_seconds: 30}\n"
        + "    - {name: model, target: b/m, expr: 'x > 1'}\n"
    )
    [slo, model] = config.promql.rules
    assert (slo.target, slo.expr, slo.for_seconds) == ("a", "up == 0", 30.0)
    assert model.target == "b/m"
    assert config.promql.resolve_url({}) == "http://prom:9090"
    assert config.promql.resolve_url({"FAILOVER_PROMETHEUS_URL": "http://u:p@other:9090/"}) == (
        "http://u:p@other:9090"
    )


@pytest.mark.parametrize(
    ("promql", "key", "line", "says"),
    [
        (
            "promql:\n  rules:\n    - {name: x, target: c, expr: up}\n",
            "promql.rules.0.target",
            12,
            "unknown provider 'c' (known: a, b)",
        ),
        (
            "promql:\n  rules:\n    - {name: x, target: a/other, expr: up}\n",
            "promql.rules.0.target",
            12,
            "unknown provider/model 'a/other' (known: a/m, b/m)",
        ),
        (
            "promql:\n  rules:\n    - {name: x, target: a, expr: up}\n"
            "    - {name: x, target: b, expr: up}\n",
            "promql.rules.1.name",
            13,
            "duplicate rule name 'x'",
        ),
        (
            "promql:\n  rules:\n    - {name: x, target: a, expr: '  '}\n",
            "promql.rules.0.expr",
            12,
            "must be a PromQL expression, not blank",
        ),
        (
            "promql:\n  url: http://user:hunter2@prom:9090\n",
            "promql.url",
            11,
            "must not hold a user name or password",
        ),
        (
            "promql:\n  interval_seconds: 5\n  timeout_seconds: 10\n",
            "promql",
            10,
            "timeout_seconds (10) must not exceed interval_seconds (5)",
        ),
        ("promql:\n  rules:\n    - {name: x, target: a}\n", "promql.rules.0.expr", 12, "missing"),
    ],
)
def test_a_bad_section_names_the_key_and_line(promql: str, key: str, line: int, says: str) -> None:
    found = error(promql)
    assert (found.key, found.line) == (key, line)
    assert says in str(found)
    assert "hunter2" not in str(found)


def test_rules_without_a_url_are_refused_at_start_naming_both_places() -> None:
    config = parse_config(BASE + "promql:\n  rules:\n    - {name: x, target: a, expr: up}\n")
    with pytest.raises(ConfigError) as caught:
        Runtime(config, env={})
    assert caught.value.key == "promql.url"
    assert "$FAILOVER_PROMETHEUS_URL" in str(caught.value)


def test_no_rules_no_tripwires() -> None:
    assert PromqlConfig().rules == ()
    assert Runtime(parse_config(BASE), env={}).promql is None
