"""A stand-in for Claude Code that asks to be deferred, for ``failover run``'s triage test: it
reads the variables Claude Code reads (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_AUTH_TOKEN``), sends
one Messages request with ``x-failover-priority: defer`` through the official anthropic SDK,
prints ``<status> <job id>`` and exits 0.

``python -m tests.jobs_run_client [CLI ARGS...]``
"""

from __future__ import annotations

import os

import anthropic


def main() -> None:
    client = anthropic.Anthropic(
        base_url=os.environ["ANTHROPIC_BASE_URL"],
        auth_token=os.environ["ANTHROPIC_AUTH_TOKEN"],
        max_retries=0,
    )
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "refactor this when you can"}],
        extra_headers={"x-failover-priority": "defer"},
    )
    print(raw.status_code, raw.headers.get("x-failover-job", "-"))


if __name__ == "__main__":
    main()
