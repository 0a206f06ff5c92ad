"""The config of triage and deferred jobs: ``jobs:`` and ``gateway.client_priorities``, read
into typed values; a bad one refused at its key and line; per-key priorities from the
environment (the keys become client keys, only their digests map to a priority)."""

from __future__ import annotations

import pytest

from controller._errors import ConfigError
from controller.config import parse_config
from controller.gateway._jobs import client_priorities, owner_of
from controller.routing.plan import Priority

BASE = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t: {targets: [{provider: a, model: m}], degrade: {priority: drop}}
"""


def test_jobs_and_client_priorities_are_read() -> None:
    config = parse_config(
        BASE
        + """\
gateway:
  client_priorities:
    - {keys_env: BATCH_KEYS, priority: defer}
jobs:
  path: /var/lib/failover/jobs.sqlite3
  replay_per_second: 20
  max_tries: 3
  callbacks: {allow_hosts: [Hooks.Example.com, 127.0.0.1]}
"""
    )
    (entry,) = config.gateway.client_priorities
    assert (entry.keys_env, entry.priority) == ("BATCH_KEYS", Priority.DEFER)
    assert config.jobs.path == "/var/lib/failover/jobs.sqlite3"
    assert (config.jobs.replay_per_second, config.jobs.max_tries) == (20, 3)
    assert config.jobs.callbacks.allow_hosts == ("hooks.example.com", "127.0.0.1")
    assert parse_config(BASE).jobs.path is None  # beside the state file


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            "jobs: {callbacks: {allow_hosts: ['https://hooks.example.com/x']}}\n",
            "config:5: jobs.callbacks.allow_hosts: 'https://hooks.example.com/x' is not a host",
        ),
        (
            "gateway: {client_priorities: [{keys_env: BATCH, priority: later}]}\n",
            "config:5: gateway.client_priorities.0.priority: Input should be 'critical', "
            "'defer' or 'drop'",
        ),
        ("jobs: {replay_per_second: 0}\n", "config:5: jobs.replay_per_second: "),
        ("jobs: {max_bytes: 1000}\n", "config:5: jobs.max_bytes: "),
    ],
)
def test_a_bad_jobs_setting_is_refused_at_its_key(extra: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE + extra)
    assert str(refused.value).startswith(says)


def test_client_priorities_map_digests_of_the_keys_in_each_variable() -> None:
    env = {"BATCH_KEYS": " sk-batch-1 , sk-batch-2,", "NOISY_KEYS": "sk-noisy"}
    keys, by_owner = client_priorities(
        [("BATCH_KEYS", Priority.DEFER), ("NOISY_KEYS", Priority.DROP), ("UNSET", Priority.DROP)],
        env,
    )
    assert keys == ("sk-batch-1", "sk-batch-2", "sk-noisy")
    assert by_owner == {
        owner_of("sk-batch-1"): Priority.DEFER,
        owner_of("sk-batch-2"): Priority.DEFER,
        owner_of("sk-noisy"): Priority.DROP,
    }
    assert "sk-batch-1" not in repr(by_owner)  # digests only
