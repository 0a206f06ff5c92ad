"""``failover run claude|codex|gemini [-- args]``: a coding CLI pointed at the gateway.

The gateway sees the whole conversation, so a coding session that moves from one provider to
another during an outage keeps its full context. This command sets each CLI's base URL and key
the way that CLI reads them, then runs it (interactive or not, its own terminal):

======  ===========================================================================
claude  ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_AUTH_TOKEN`` (a bearer key: no "use this API
        key?" prompt); ``ANTHROPIC_API_KEY`` is taken out so it is not preferred
codex   ``-c model_providers.failover={..., wire_api="responses"}`` and
        ``-c model_provider="failover"`` before the CLI's own arguments, the key in
        ``FAILOVER_RUN_KEY`` (the provider block's ``env_key``)
gemini  ``GOOGLE_GEMINI_BASE_URL``, ``GEMINI_API_KEY``, and the API-key auth selected by
        a settings file (in ``~/.cache/failover``) named in
        ``GEMINI_CLI_SYSTEM_SETTINGS_PATH`` (the CLI's highest
        settings layer; a user's "Login with Google" would otherwise bypass the gateway;
        left alone when that variable is set already); ``GOOGLE_API_KEY`` and Vertex
        settings are taken out
======  ===========================================================================

With ``--gateway URL`` it uses a running gateway; otherwise it starts one on 127.0.0.1 (a free
port) from ``--config``, logging to a file (the CLI owns the terminal), and stops it when the
CLI exits; that gateway triages requests as ``failover serve``'s does (a deferred one is kept
in the config's job store and replayed; one left waiting at exit, by the next gateway on that
config). The key is ``$FAILOVER_API_KEY``, else the first of the gateway's client keys
(``gateway.api_keys_env``), else a placeholder when the gateway takes none. Before the CLI
starts, one line per model the CLI asks for says which tier serves it (and that tier's route),
or that the gateway does not route it. The exit status is the CLI's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from controller.config import Config, load_config

__all__ = ["DESCRIPTION", "TOOLS", "Tool", "add_arguments", "cmd_run", "tool_environment"]

log = logging.getLogger("failover")

KEY_ENV = "FAILOVER_API_KEY"  # the client key a CLI presents to the gateway
CODEX_KEY_ENV = "FAILOVER_RUN_KEY"  # the variable codex's provider block names
_PLACEHOLDER = "failover-gateway-no-client-auth"  # the CLIs refuse to start without a key


@dataclass(frozen=True, slots=True)
class Tool:
    command: str  # the executable
    models: tuple[str, ...]  # what the CLI asks for when not told (reported before it starts)
    model_flag: str  # how the CLI is told its model


TOOLS = {
    # Claude Code's default ids change every release (an alias pattern claude-* covers them).
    "claude": Tool("claude", ("claude-sonnet-4-5", "claude-haiku-4-5"), "--model"),
    "codex": Tool("codex", ("gpt-5-codex",), "--model"),
    "gemini": Tool("gemini", ("gemini-2.5-pro", "gemini-2.5-flash"), "--model"),
}

DESCRIPTION = (
    "Run a coding CLI (Claude Code, Codex CLI, Gemini CLI) with its base URL and key pointed at "
    "the gateway, so the session survives a provider outage with its whole context: at a "
    "running gateway (--gateway URL) or at one started on 127.0.0.1 from --config for as long "
    "as the CLI runs. Arguments after -- go to the CLI. Prints which tier the CLI's models "
    "route to first. Exits with the CLI's status."
)


def add_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    parser.add_argument("tool", choices=sorted(TOOLS), help="the coding CLI to run")
    parser.add_argument(
        "--gateway", help="URL of a running gateway (default: start one from --config)"
    )
    parser.add_argument(
        "--config",
        default=default_config,
        help="config of the gateway to start (default: %(default)s)",
    )
    parser.add_argument("--model", help="the model the CLI asks for (default: the CLI's own)")
    parser.add_argument(
        "--command",
        help="run this instead of the CLI's executable (e.g. 'npx @openai/codex'); split as a "
        "shell would, no shell is run",
    )
    parser.add_argument(
        "--log", help="the started gateway's log file (default: failover-run-PID.log in $TMPDIR)"
    )
    parser.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="these options may also follow the CLI's name; after --: the CLI's arguments",
    )
    parser.set_defaults(run_parser=parser)


def tool_environment(
    tool: str, url: str, key: str, env: Mapping[str, str], model: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """(the CLI's environment, the arguments to put before its own) pointing ``tool`` at the
    gateway at ``url`` with client key ``key``."""
    out = dict(env)
    url = url.rstrip("/")
    args: list[str] = []
    if tool == "claude":
        out.pop("ANTHROPIC_API_KEY", None)
        out |= {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": key}
    elif tool == "codex":
        block = (
            f'{{name="failover gateway", base_url="{url}/v1", env_key="{CODEX_KEY_ENV}", '
            'wire_api="responses"}'
        )
        out[CODEX_KEY_ENV] = key
        args = ["-c", f"model_providers.failover={block}", "-c", 'model_provider="failover"']
    elif tool == "gemini":
        for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
            out.pop(name, None)
        out |= {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": key}
        if "GEMINI_CLI_SYSTEM_SETTINGS_PATH" not in out:
            out["GEMINI_CLI_SYSTEM_SETTINGS_PATH"] = _gemini_settings(env)
    else:
        raise ValueError(f"unknown tool {tool!r}")
    if model is not None:
        args += [TOOLS[tool].model_flag, model]
    return out, args


def _gemini_settings(env: Mapping[str, str]) -> str:
    """A settings file that selects Gemini CLI's API-key auth (its headless mode reads no
    variable for that), under ``$XDG_CACHE_HOME`` (else ``~/.cache``): the CLI skips a settings
    file with a directory on its path that others can write, as /tmp is."""
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(cache, "failover")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, "gemini-cli-settings.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"security": {"auth": {"selectedType": "gemini-api-key"}}}, out)
    return path


def _client_key(config: Config | None, env: Mapping[str, str]) -> str:
    if env.get(KEY_ENV):
        return env[KEY_ENV]
    names = [config.gateway.api_keys_env] if config is not None else ["FAILOVER_API_KEYS"]
    for name in names:
        keys = [k.strip() for k in env.get(name, "").split(",") if k.strip()]
        if keys:
            return keys[0]
    return _PLACEHOLDER


def cmd_run(args: argparse.Namespace) -> int:
    from controller._loop import run as run_loop

    rest = list(args.args)
    cut = rest.index("--") if "--" in rest else len(rest)
    ours, rest = rest[:cut], rest[cut + 1 :]
    if ours:  # options after the CLI's name: read as if they came before it
        args = args.run_parser.parse_args([*ours, args.tool], namespace=args)
    return run_loop(_run(args, rest))


async def _run(args: argparse.Namespace, rest: list[str]) -> int:
    tool = TOOLS[args.tool]
    models = (args.model,) if args.model else tool.models
    command = shlex.split(args.command) if args.command else [tool.command]
    if args.gateway:
        key = _client_key(None, os.environ)
        for line in await _remote_routes(args.gateway, key, models):
            print(f"failover run: {line}", file=sys.stderr)
        return await _spawn(args.tool, command, args.gateway, key, rest, args.model)
    config = load_config(args.config)
    return await _with_own_gateway(args, config, command, rest, models)


async def _with_own_gateway(
    args: argparse.Namespace,
    config: Config,
    command: list[str],
    rest: list[str],
    models: Sequence[str],
) -> int:
    from controller._cli_serve import connection_limits, gateway_settings
    from controller.gateway import GatewayServer, create_app
    from controller.runtime import Runtime

    logfile = args.log or os.path.join(tempfile.gettempdir(), f"failover-run-{os.getpid()}.log")
    _log_to(logfile)
    settings, priorities = gateway_settings(config.gateway, os.environ)
    runtime = Runtime(config, config_path=args.config)
    await runtime.start()
    try:
        # Triaged as failover serve triages: a deferred request is kept in the runtime's job
        # store (beside the state file, or the fleet's Redis) and replayed while this gateway
        # runs; one still waiting when the CLI exits is replayed by the next failover serve or
        # run on the same config (and fetched there).
        app = create_app(runtime, settings=settings, jobs=runtime.jobs, priorities=priorities)
        limits = connection_limits(config.gateway)  # the config's, as failover serve's
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0, limits=limits) as server:
            print(f"failover run: gateway on {server.url} (log: {logfile})", file=sys.stderr)
            for line in _local_routes(runtime, models):
                print(f"failover run: {line}", file=sys.stderr)
            key = _client_key(config, os.environ)
            return await _spawn(args.tool, command, server.url, key, rest, args.model)
    finally:
        await runtime.stop(grace=1.0)


def _log_to(path: str) -> None:
    """The gateway's log goes to a file: the CLI owns the terminal."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)


def _local_routes(runtime: Any, models: Sequence[str]) -> list[str]:
    routes = {tier["name"]: tier.get("route", []) for tier in runtime.status().get("tiers", [])}
    lines = []
    for model in models:
        tier = runtime.tier_for(model)
        if tier is None:
            lines.append(f"{model}: not routed by this config (the CLI will get a 404)")
            continue
        route = " -> ".join(routes.get(tier, [])) or "no provider"
        lines.append(f"{model} -> tier {tier} ({route})")
    return lines


async def _remote_routes(url: str, key: str, models: Sequence[str]) -> list[str]:
    """Whether a running gateway routes each model (``GET /v1/models/{model}``)."""
    headers = {"Authorization": f"Bearer {key}"}
    lines = []
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for model in models:
                async with http.get(f"{url.rstrip('/')}/v1/models/{model}", headers=headers) as r:
                    found = r.status == 200
                    what = "routed" if found else f"NOT routed (HTTP {r.status})"
                    lines.append(f"{model}: {what} by {url}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        lines.append(f"cannot reach {url} ({type(exc).__name__}); starting the CLI anyway")
    return lines


async def _spawn(
    tool: str, command: list[str], url: str, key: str, rest: list[str], model: str | None
) -> int:
    """Run the CLI on this terminal until it exits. Ctrl-C is the CLI's to handle: this
    process ignores it meanwhile (as a shell does for its foreground job)."""
    env, before = tool_environment(tool, url, key, os.environ, model)
    try:
        child = await asyncio.create_subprocess_exec(*command, *before, *rest, env=env)
    except FileNotFoundError:
        hint = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex"}
        package = hint.get(tool, "@google/gemini-cli")
        print(
            f"failover run: {command[0]!r} not found; install it (npm i -g {package}) "
            "or name it with --command",
            file=sys.stderr,
        )
        return 127
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, lambda: None)
    try:
        return await child.wait()
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
