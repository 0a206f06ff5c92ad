"""``failover run``'s own gateway triages as ``failover serve``'s does: a request a coding CLI
sends with ``x-failover-priority: defer`` while its tier is degraded is answered 202 and kept
in the config's job store (beside the state file), where the next gateway on that config finds
it after the CLI and its gateway have exited. The CLI is a stand-in
(``tests/jobs_run_client.py``) using the official anthropic SDK as Claude Code reads its
variables; the gateway is a real ``failover run`` process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from controller.jobs import JobState, SqliteJobStore
from controller.providers.fake import FakeProvider

FAILOVER = [sys.executable, "-m", "controller.cli"]
ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-run-client-key-0002"
CONFIG = """
providers:
  oa: {{kind: openai, base_url: "{primary}/v1", api_key_env: RUN_FAKE_KEY}}
  an: {{kind: anthropic, base_url: "{backup}", api_key_env: RUN_FAKE_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: oa, model: gpt-big}}
      - {{provider: an, model: claude-alt}}
    degrade: {{healthy_below: 0.6}}
aliases: {{"claude-*": frontier}}
kill_switch: {{disable: [oa]}}
state: {{path: "{state}"}}
gateway: {{api_keys_env: RUN_CLIENT_KEYS}}
"""


async def test_failover_runs_gateway_keeps_a_deferred_request_for_the_next_gateway(
    tmp_path: Path,
) -> None:
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        config = tmp_path / "failover.yaml"
        config.write_text(
            CONFIG.format(
                primary=primary.url("openai"),
                backup=backup.url("anthropic"),
                state=tmp_path / "state.json",
            )
        )
        env = dict(os.environ) | {
            "RUN_FAKE_KEY": "sk-fake-provider",
            "RUN_CLIENT_KEYS": KEY,
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        env.pop("FAILOVER_API_KEY", None)
        argv = [*FAILOVER, "run", "claude", "--config", str(config)]
        argv += ["--log", str(tmp_path / "gw.log")]
        argv += ["--command", f"{sys.executable} -m tests.jobs_run_client"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        status, job_id = out.decode().split()
        assert status == "202"  # one of two targets in rotation, under the 0.6 share: degraded
        assert primary.requests == backup.requests == 0  # kept, not sent
    store = SqliteJobStore(tmp_path / "state.jobs.sqlite3")
    try:
        job = await store.get(job_id)
        assert job is not None
        assert (job.state, job.tier, job.front) == (JobState.QUEUED, "frontier", "anthropic")
    finally:
        await store.close()
