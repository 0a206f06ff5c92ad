"""``telemetry.sampling.healthy_share`` reaches the runtime's telemetry as its tail sampler."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import load_config
from controller.runtime import Runtime

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: PRIMARY_KEY}}
tiers:
  frontier:
    targets: [{{provider: primary, model: big}}]
state: {{path: "{state}"}}
{telemetry}
"""


def runtime(tmp_path: Path, telemetry: str) -> Runtime:
    path = tmp_path / "failover.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "s.json", telemetry=telemetry))
    env = {"PRIMARY_KEY": "sk-x", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/t"}
    return Runtime(load_config(path), config_path=path, env=env)


def test_a_healthy_share_turns_the_tail_sampler_on(tmp_path: Path) -> None:
    sampled = runtime(tmp_path, "telemetry: {sampling: {healthy_share: 0.01}}").telemetry
    tail = sampled.tail_sampler
    assert tail is not None
    assert tail.healthy_kept(0)
    assert not tail.healthy_kept(2**63)
    assert sampled.shutdown(timeout=2)


def test_by_default_every_trace_is_kept_without_a_tail_sampler(tmp_path: Path) -> None:
    telemetry = runtime(tmp_path, "").telemetry
    assert telemetry.tail_sampler is None
    assert telemetry.shutdown(timeout=2)


def test_a_share_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"telemetry\.sampling\.healthy_share"):
        runtime(tmp_path, "telemetry: {sampling: {healthy_share: 1.5}}")
