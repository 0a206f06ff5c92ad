"""The ``failover`` command.

failover demo [--json]                      the whole story on loopback, no keys needed
failover serve --config FILE                gateway + embedded controller
failover check --config FILE [--live]       validate (and try each provider and channel)
failover status [--url URL]                 what a running gateway is doing
failover drill PROVIDER --seconds N         rehearse an outage on a running gateway
failover kill-switch --config FILE [--fleet] [show | pin P | disable P... | clear]
failover history --config FILE [-n N] [--json]   routing and kill-switch changes (audit log)
failover run claude|codex|gemini [--gateway URL | --config FILE] [-- ARGS]   a coding CLI
                                            pointed at the gateway (controller/_run.py)

This module is the command line itself: the parser, the help text, logging, exit codes. Each
command's work is in a module of its own: ``_demo.py``, ``_cli_serve.py``, ``_cli_check.py``,
``_cli_status.py``, ``_cli_kill_switch.py``, ``_cli_history.py`` and ``_run.py``; ``drill``, a
single call to the admin API, is here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from controller import _run
from controller._cli_check import cmd_check
from controller._cli_history import _history_line as _history_line  # tests import it here
from controller._cli_history import cmd_history
from controller._cli_kill_switch import cmd_kill_switch
from controller._cli_serve import cmd_serve
from controller._cli_status import cmd_status
from controller._errors import ConfigError, FailoverError
from controller._gateway_client import call_json
from controller._loop import LOOPS
from controller.gateway._ops import MAX_DRILL_SECONDS

DEFAULT_CONFIG = os.environ.get("FAILOVER_CONFIG", "failover.yaml")
DEFAULT_URL = os.environ.get("FAILOVER_URL", "http://127.0.0.1:8080")
DEFAULT_ADMIN_URL = os.environ.get("FAILOVER_ADMIN_URL", "http://127.0.0.1:9091")
CONFIG_HELP = "config file (default: %(default)s; $FAILOVER_CONFIG sets the default)"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The OTLP exporter logs every failed batch; our own drop counter and log say it once.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    os.environ.setdefault("PTB_TIMEDELTA", "true")  # python-telegram-bot: no deprecation noise


# ---------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from controller._demo import main as demo_main

    logging.getLogger().setLevel(logging.ERROR)  # the demo narrates what matters
    return demo_main(as_json=args.json)


def cmd_drill(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= MAX_DRILL_SECONDS:  # the gateway's limit; also false for nan
        print(f"error: --seconds must be > 0 and <= {MAX_DRILL_SECONDS:g}", file=sys.stderr)
        return 2
    token = os.environ.get(args.token_env)
    if not token:
        print(f"error: set {args.token_env} to the gateway's admin token", file=sys.stderr)
        return 2
    url = args.admin_url.rstrip("/") + "/admin/drill"
    result = call_json(url, data={"provider": args.provider, "seconds": args.seconds}, token=token)
    print(
        f"drill started: {args.provider} is failing for {args.seconds:g} s "
        f"({result}). Watch `failover status` and your alert channels."
    )
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


# ---------------------------------------------------------------------------------- parser
_EPILOG = """\
environment:
  FAILOVER_CONFIG       default for --config (now: {config})
  FAILOVER_URL          default for status --url (now: {url})
  FAILOVER_ADMIN_URL    default for drill --admin-url (now: {admin_url})
  FAILOVER_ADMIN_TOKEN  admin token: drill sends it (see --token-env), serve expects it
                        (or the variable named by gateway.admin_token_env)
  FAILOVER_API_KEYS     serve: comma-separated client keys (gateway.api_keys_env); unset: no auth
  FAILOVER_KILL_SWITCH_PIN, FAILOVER_KILL_SWITCH_DISABLE: a kill switch that wins over the file's
  provider API keys are read from the variables named by each provider's api_key_env

exit status: 0 ok; 1 a problem found or an operation failed (cannot connect, cannot write,
cannot listen); 2 a usage or config error. `failover COMMAND --help` explains each command.
"""

_DESCRIPTIONS = {
    "demo": "Run the whole story on loopback in under a minute, with no API keys and no network: "
    "two fake providers behind the real gateway and controller take steady traffic, the primary "
    "goes down, the tripwire trips, traffic moves to the backup, an alert fires, the primary "
    "recovers and traffic fails back; then a timeline and a summary.",
    "serve": "Run the gateway (OpenAI- and Anthropic-compatible endpoints, /status, /metrics) with "
    "the failover controller embedded, until SIGINT or SIGTERM, and the admin API (state, drills) "
    "on gateway.admin_host:admin_port. A saved config edit applies within a second (at once on "
    "SIGHUP); an invalid one is rejected and the running config keeps serving.",
    "check": "Validate a config file and describe what it sets up: providers (and whether their "
    "API key variables are set), tiers, kill switch, tripwire and alert channels. With --live, "
    "also send a tiny request to each provider and a test message to each alert channel. Exits 0 "
    "with no problem, 1 with problems, 2 when the file is invalid.",
    "status": "Show what a running gateway is doing, from its /status.json: the routing state "
    "version and mode, the kill switch, each tier's current route, each provider's state and "
    "error rate against the threshold, and the latest alerts.",
    "drill": "Rehearse an outage on a running gateway: through its admin API, every attempt at "
    f"PROVIDER fails at once, without network, for --seconds (at most {MAX_DRILL_SECONDS:g}). "
    "The tripwire trips, traffic fails over and the alert goes out as in a real outage; then "
    "probes succeed and traffic fails back. Needs the admin token (see --token-env).",
    "history": "Show the routing changes (trips, probes, failbacks, recoveries, panics) and "
    "kill-switch changes, and who made them, from the audit log beside the state file "
    "(state.path, e.g. failover-state.audit.jsonl, and its rotated files), oldest first.",
    "run": _run.DESCRIPTION,
    "kill-switch": "Show or change the kill switch in the config file, which overrides the "
    "controller: pin every route to one provider, remove providers from every route, or clear "
    "it. Only the kill_switch block is rewritten (comments and line endings stay), the file is "
    "validated first and written in place; a running gateway applies it within a second.",
}


def _subcommand(sub: Any, name: str, summary: str, func: Any) -> argparse.ArgumentParser:
    """A subcommand with its description, and -v/--verbose accepted after its name too."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=_DESCRIPTIONS[name]
    )
    # SUPPRESS: when -v is not repeated here, the top-level value (before COMMAND) stands.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover",
        description="Observability-first failover for LLM providers: route across providers,\n"
        "trip on error rate, alert a phone, override with a kill switch.",
        epilog=_EPILOG.format(config=DEFAULT_CONFIG, url=DEFAULT_URL, admin_url=DEFAULT_ADMIN_URL),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:  # in this order in `failover --help`
        add(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = _subcommand(
        sub, "demo", "run the embedded demo (no keys, no network, < 1 min)", cmd_demo
    )
    demo.add_argument("--json", action="store_true", help="print only the summary, as JSON")


def _add_serve(sub: Any) -> None:
    serve = _subcommand(sub, "serve", "run the gateway with its embedded controller", cmd_serve)
    serve.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    serve.add_argument("--host", help="listen address (default: gateway.host from the config)")
    serve.add_argument("--port", type=int, help="listen port (default: gateway.port)")
    serve.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop where installed, or asyncio's own (default: %(default)s)",
    )


def _add_check(sub: Any) -> None:
    check = _subcommand(sub, "check", "validate a config file and list its problems", cmd_check)
    check.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    check.add_argument(
        "--live",
        action="store_true",
        help="also send a tiny request to each provider and a test message to each alert channel",
    )


def _add_status(sub: Any) -> None:
    status = _subcommand(sub, "status", "show what a running gateway is doing", cmd_status)
    status.add_argument(
        "--url", default=DEFAULT_URL, help="gateway URL (default: %(default)s; $FAILOVER_URL)"
    )
    status.add_argument("--json", action="store_true", help="print the raw status document")


def _add_drill(sub: Any) -> None:
    drill = _subcommand(
        sub, "drill", "simulate an outage of one provider on a running gateway", cmd_drill
    )
    drill.add_argument("provider", help="name of the provider to fail, as in the config")
    drill.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help=f"how long the outage lasts, at most {MAX_DRILL_SECONDS:g} (default: %(default)g)",
    )
    drill.add_argument(
        "--admin-url",
        default=DEFAULT_ADMIN_URL,
        help="the gateway's admin API (default: %(default)s; $FAILOVER_ADMIN_URL)",
    )
    drill.add_argument(
        "--token-env",
        default="FAILOVER_ADMIN_TOKEN",
        help="variable holding the admin token (default: %(default)s)",
    )


def _add_kill_switch(sub: Any) -> None:
    ks = _subcommand(
        sub, "kill-switch", "show, set or clear the kill switch in the config", cmd_kill_switch
    )
    ks.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    ks.add_argument(
        "action",
        nargs="?",
        default="show",
        choices=["show", "pin", "disable", "clear"],
        help="show: print it (the default); pin P: send everything to P only; disable P...: "
        "remove the providers from every route; clear: turn the kill switch off",
    )
    ks.add_argument(
        "providers",
        nargs="*",
        metavar="PROVIDER",
        help="provider name(s): exactly one for pin, one or more for disable, none otherwise",
    )
    ks.add_argument(
        "--fleet",
        action="store_true",
        help="show or set the fleet's kill switch in Redis (state.backend: redis): every "
        "replica obeys within a second; the config file is left alone",
    )
    ks.set_defaults(usage_error=ks.error)


def _add_history(sub: Any) -> None:
    history = _subcommand(
        sub, "history", "show routing and kill-switch changes from the audit log", cmd_history
    )
    history.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    history.add_argument(
        "-n",
        "--last",
        type=_positive,
        default=20,
        metavar="N",
        help="the last N changes (default 20)",
    )
    history.add_argument("--json", action="store_true", help="a JSON array of the records")


def _add_run(sub: Any) -> None:
    run = _subcommand(
        sub, "run", "run Claude Code, Codex CLI or Gemini CLI through the gateway", _run.cmd_run
    )
    _run.add_arguments(run, DEFAULT_CONFIG)


_SUBCOMMANDS = (
    _add_demo,
    _add_serve,
    _add_check,
    _add_status,
    _add_drill,
    _add_kill_switch,
    _add_history,
    _add_run,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except FailoverError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
