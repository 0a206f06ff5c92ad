"""``failover check`` in fleet mode: the fleet's Redis answers or the check fails saying so,
naming the variable and never printing the URL or its password; a PromQL section says where its
Prometheus comes from. ``failover check`` runs as a real process; Redis is a real redis-server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.live_support import free_port
from tests.redis_support import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FAILOVER = [sys.executable, "-m", "controller.cli"]
CONFIG = """\
providers:
  a: {{kind: openai, base_url: "http://127.0.0.1:1"}}
tiers:
  t: {{targets: [{{provider: a, model: m}}]}}
state:
  backend: redis
  path: "{state}"
  redis: {{prefix: check-test}}
promql:
  rules: [{{name: slo, target: a, expr: up == 0}}]
"""


async def check(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    path = tmp_path / "failover.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state.json"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    proc = await asyncio.create_subprocess_exec(
        *FAILOVER,
        "check",
        "--config",
        str(path),
        cwd=ROOT,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_reachable_redis_passes(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        env = {"FAILOVER_REDIS_URL": redis.url, "FAILOVER_PROMETHEUS_URL": "http://p:9090"}
        code, out = await check(tmp_path, env)
    finally:
        redis.stop()
    assert code == 0, out
    assert "fleet on Redis (prefix check-test): Redis at $FAILOVER_REDIS_URL: answers" in out
    assert "no fleet state yet, leader none" in out
    assert "promql tripwires       1 rule(s), Prometheus from $FAILOVER_PROMETHEUS_URL" in out


async def test_an_unreachable_redis_fails_the_check_without_its_url(tmp_path: Path) -> None:
    url = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"  # nothing listens there
    code, out = await check(tmp_path, {"FAILOVER_REDIS_URL": url})
    assert code == 1
    assert "Redis at $FAILOVER_REDIS_URL: NOT reachable" in out
    assert "the fleet's Redis ($FAILOVER_REDIS_URL) did not answer within 1 s" in out
    assert "promql.url: set it or $FAILOVER_PROMETHEUS_URL" in out
    assert "s3cret" not in out
    assert str(url) not in out
    assert "NOT ready: 2 problems" in out


async def test_an_unset_or_malformed_url_names_the_variable(tmp_path: Path) -> None:
    code, out = await check(tmp_path, {})
    assert code == 1
    assert "state.redis.url_env: environment variable FAILOVER_REDIS_URL is not set" in out
    code, out = await check(tmp_path, {"FAILOVER_REDIS_URL": "http://s3cret@host"})
    assert code == 1
    assert (
        "FAILOVER_REDIS_URL must be a redis://, rediss:// or unix:// URL (value not shown)" in out
    )
    assert "s3cret" not in out
