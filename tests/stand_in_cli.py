"""A stand-in for a coding CLI, for ``failover run``'s tests: reads the variables (and, for
codex, the ``-c`` provider block) that the real CLI reads, calls the gateway once with the
official SDK the real CLI's wire format belongs to, prints the answer's text and exits 0.

``python -m tests.stand_in_cli claude|codex|gemini [CLI ARGS...]``
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tomllib
from typing import Any


def _codex(args: list[str]) -> str:
    import openai

    settings: dict[str, Any] = {}
    for flag, value in itertools.pairwise(args):
        if flag == "-c":
            key, _, raw = value.partition("=")
            settings[key] = tomllib.loads(f"v = {raw}")["v"]
    assert settings["model_provider"] == "failover"
    block = settings["model_providers.failover"]
    assert block["wire_api"] == "responses"
    client = openai.OpenAI(
        base_url=block["base_url"], api_key=os.environ[block["env_key"]], max_retries=0
    )
    model = args[args.index("--model") + 1] if "--model" in args else "gpt-5-codex"
    with client.responses.stream(model=model, input="hello from codex") as stream:
        return stream.get_final_response().output_text


def _claude(args: list[str]) -> str:
    import anthropic

    assert "ANTHROPIC_API_KEY" not in os.environ
    client = anthropic.Anthropic(
        base_url=os.environ["ANTHROPIC_BASE_URL"],
        auth_token=os.environ["ANTHROPIC_AUTH_TOKEN"],
        max_retries=0,
    )
    answer = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello from claude"}],
    )
    return "".join(block.text for block in answer.content if block.type == "text")


def _gemini(args: list[str]) -> str:
    from google import genai
    from google.genai import types

    with open(os.environ["GEMINI_CLI_SYSTEM_SETTINGS_PATH"], encoding="utf-8") as settings:
        assert json.load(settings)["security"]["auth"]["selectedType"] == "gemini-api-key"
    options = types.HttpOptions(
        base_url=os.environ["GOOGLE_GEMINI_BASE_URL"],
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    client = genai.Client(api_key=os.environ["GEMINI_API_KEY"], http_options=options)
    answer = client.models.generate_content(model="gemini-2.5-pro", contents="hello from gemini")
    return answer.text or ""


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    text = {"codex": _codex, "claude": _claude, "gemini": _gemini}[tool](args)
    print(f"stand-in {tool} got: {text}")
    print("args: " + " ".join(a for a in args if not re.match(r"model_provider", a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
