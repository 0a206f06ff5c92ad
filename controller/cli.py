"""The ``failover`` command.

failover demo [--json]                      the whole story on loopback, no keys needed
failover serve --config FILE                gateway + embedded controller
failover check --config FILE [--live]       validate (and try each provider and channel)
failover status [--url URL]                 what a running gateway is doing
failover drill PROVIDER --seconds N         rehearse an outage on a running gateway
failover kill-switch --config FILE [show | pin P | disable P... | clear]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from controller._config import Config, load_config, resolve_secret
from controller._errors import ConfigError, FailoverError
from controller._loop import LOOPS, loop_factory
from controller._loop import run as run_loop
from controller.control.state import KillSwitch

DEFAULT_CONFIG = os.environ.get("FAILOVER_CONFIG", "failover.yaml")
DEFAULT_URL = os.environ.get("FAILOVER_URL", "http://127.0.0.1:8080")
DEFAULT_ADMIN_URL = os.environ.get("FAILOVER_ADMIN_URL", "http://127.0.0.1:9091")
CONFIG_HELP = "config file (default: $FAILOVER_CONFIG or %(default)s)"

_GC_GEN0_THRESHOLD = 10_000

log = logging.getLogger("failover")


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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        loop_name, _ = loop_factory(args.loop)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    return run_loop(_serve(config, args, loop_name), loop=args.loop)


async def _serve(config: Config, args: argparse.Namespace, loop_name: str) -> int:
    from controller.gateway import GatewaySettings, create_admin_app, create_app, serve
    from controller.runtime import Runtime

    gw = config.gateway
    keys = tuple(k.strip() for k in os.environ.get(gw.api_keys_env, "").split(",") if k.strip())
    runtime = Runtime(config, config_path=args.config)
    await runtime.start()
    settings = GatewaySettings(
        api_keys=keys,
        max_body_bytes=gw.max_body_bytes,
        shutdown_grace_seconds=gw.shutdown_grace_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if runtime.watcher is not None:
        loop.add_signal_handler(signal.SIGHUP, runtime.watcher.poke)
    host, port = args.host or gw.host, args.port if args.port is not None else gw.port
    admin = create_admin_app(runtime, admin_token=os.environ.get(gw.admin_token_env) or None)
    log.info(
        "gateway on http://%s:%d (client auth %s), admin on http://%s:%d, config %s, %s loop",
        host,
        port,
        "on" if keys else "OFF",
        gw.admin_host,
        gw.admin_port,
        args.config,
        loop_name,
    )
    grace = gw.shutdown_grace_seconds
    front = create_app(runtime, settings=settings)
    _tune_gc()
    try:
        await asyncio.gather(
            serve(front, host, port, grace=grace, stop=stop),
            serve(admin, gw.admin_host, gw.admin_port, grace=1.0, stop=stop),
        )
    finally:
        await runtime.stop(grace=min(grace, 5.0))
    log.info("stopped")
    return 0


def _tune_gc() -> None:
    """Garbage-collector settings for a long-running server, applied once start-up is done.

    ``gc.freeze()`` moves everything allocated so far (modules, config, OpenTelemetry and
    pydantic machinery: most of the heap) out of the collector's reach, so a full collection no
    longer rescans it; a gen-0 threshold of 10,000 instead of 700 stops the per-request objects
    (requests, events, futures, some in short-lived cycles) from triggering a young collection
    every few requests. Cyclic garbage is still collected, just in larger, rarer batches.
    Measured with ``python -m tests.bench.gateway``: see the README's performance section.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: valid")
    problems = _describe(config)
    if args.live:
        problems += asyncio.run(_live_check(config))
    for problem in problems:
        print(f"  problem: {problem}")
    return 1 if problems else 0


def _describe(config: Config) -> list[str]:
    problems: list[str] = []
    for name, provider in config.providers.items():
        key = provider.api_key_env
        try:
            resolve_secret(key, key=f"providers.{name}.api_key_env")
            have = f"key from ${key}" if key else "no key"
        except ConfigError:
            have = f"${key} NOT SET"
            problems.append(f"provider {name}: environment variable {key} is not set")
        print(f"  provider {name:16} {provider.kind.value:18} {provider.url}  ({have})")
    for name, tier in config.tiers.items():
        route = " -> ".join(f"{t.provider}/{t.model}" for t in tier.targets)
        print(f"  tier {name:20} {tier.strategy.value:14} {route}")
    print(f"  kill switch            {config.effective_kill_switch().describe()}")
    print(
        f"  tripwire               {config.controller.mode}, threshold "
        f"{config.controller.error_rate_threshold:.0%} over {config.controller.window_seconds:g} s"
    )
    from controller.notify import senders_from_env

    channels = sorted({s.channel for s in senders_from_env(config.notify, os.environ)})
    print(f"  alert channels         {', '.join(channels) or 'none'}")
    return problems


async def _live_check(config: Config) -> list[str]:
    from controller.notify.alert import Alert, AlertEvent, Severity
    from controller.runtime import Runtime, probe_models

    problems: list[str] = []
    runtime = Runtime(config, config_path=None)
    try:
        for name, model in sorted(probe_models(config).items()):
            ok = await runtime.router.probe(name, model, within=15.0)
            print(f"  live: provider {name} ({model}): {'ok' if ok else 'FAILED'}")
            if not ok:
                problems.append(f"provider {name} did not answer a tiny request")
        runtime.dispatcher.start()
        test = Alert(
            event=AlertEvent.TEST,
            severity=Severity.INFO,
            at=runtime.clock.wall(),
            detail="test message from `failover check --live`",
        )
        runtime.dispatcher.submit(test)
        await runtime.dispatcher.stop(timeout=15.0)
        for (channel, _event, result), count in sorted(runtime.dispatcher.counts().items()):
            print(f"  live: alert channel {channel}: {result} ({count})")
            if result != "sent":
                problems.append(f"alert channel {channel}: {result}")
    finally:
        await runtime.router.aclose()
        runtime.telemetry.shutdown(timeout=2.0)
    return problems


def _http_json(url: str, *, data: dict[str, Any] | None = None, token: str | None = None) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise FailoverError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FailoverError(f"{url}: cannot connect ({exc}). Is the gateway running?") from None


def cmd_status(args: argparse.Namespace) -> int:
    status = _http_json(args.url.rstrip("/") + "/status.json")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    switch = status.get("kill_switch", {})
    print(
        f"state version {status.get('version')}  mode {status.get('mode')}  "
        f"kill switch: {switch.get('describe', 'off')}"
    )
    for tier in status.get("tiers", []):
        panic = "  PANIC: all tripped" if tier.get("panic") else ""
        print(
            f"  tier {tier['name']:14} -> {' -> '.join(tier.get('route', [])) or 'nothing'}{panic}"
        )
    for p in status.get("providers", []):
        print(
            f"  {p['name']:16} {p['state']:10} error rate {p['error_rate']:.0%} "
            f"(threshold {p['threshold']:.0%}, {p['requests']} req)  {p.get('reason', '')}"
        )
    for alert in status.get("alerts", [])[:5]:
        print(f"  alert {alert['severity']:8} {alert['text']}")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env)
    if not token:
        print(f"error: set {args.token_env} to the gateway's admin token", file=sys.stderr)
        return 2
    url = args.admin_url.rstrip("/") + "/admin/drill"
    result = _http_json(url, data={"provider": args.provider, "seconds": args.seconds}, token=token)
    print(
        f"drill started: {args.provider} is failing for {args.seconds:g} s "
        f"({result}). Watch `failover status` and your alert channels."
    )
    return 0


def cmd_kill_switch(args: argparse.Namespace) -> int:
    from controller._kill_switch_file import set_kill_switch

    config = load_config(args.config)
    current = config.effective_kill_switch({})
    if args.action == "show":
        print(f"kill switch in {args.config}: {current.describe()}")
        env = config.effective_kill_switch()
        if env != current:
            print(f"environment override in force: {env.describe()}")
        return 0
    if args.action == "pin":
        new = KillSwitch(pin=_one(args.providers))
    elif args.action == "disable":
        new = KillSwitch(disable=tuple(args.providers))
    else:
        new = KillSwitch()
    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"
    set_kill_switch(args.config, new, who=who)
    print(
        f"kill switch now {new.describe()} (was {current.describe()}); "
        "a running gateway applies it within a second"
    )
    return 0


def _one(providers: Sequence[str]) -> str:
    if len(providers) != 1:
        raise FailoverError("pin takes exactly one provider")
    return providers[0]


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover",
        description="Observability-first failover for LLM providers: route across providers, "
        "trip on error rate, alert a phone, override with a kill switch.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded demo (no keys, no network, < 1 min)")
    demo.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="run the gateway with its embedded controller")
    serve.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
    serve.add_argument("--host", help="listen address (default: gateway.host from the config)")
    serve.add_argument("--port", type=int, help="listen port (default: gateway.port)")
    serve.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop where installed (auto, the default), or asyncio's own",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config file")
    check.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
    check.add_argument(
        "--live",
        action="store_true",
        help="also send a tiny request to each provider and a test message to each alert channel",
    )
    check.set_defaults(func=cmd_check)

    status = sub.add_parser("status", help="show what a running gateway is doing")
    status.add_argument("--url", default=DEFAULT_URL, help="gateway URL (default: %(default)s)")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(func=cmd_status)

    drill = sub.add_parser("drill", help="simulate an outage of one provider on a running gateway")
    drill.add_argument("provider")
    drill.add_argument("--seconds", type=float, default=60.0, help="how long (default: 60)")
    drill.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="default: %(default)s")
    drill.add_argument(
        "--token-env", default="FAILOVER_ADMIN_TOKEN", help="variable holding the admin token"
    )
    drill.set_defaults(func=cmd_drill)

    ks = sub.add_parser("kill-switch", help="show, set or clear the kill switch in the config")
    ks.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    ks.add_argument(
        "action", nargs="?", default="show", choices=["show", "pin", "disable", "clear"]
    )
    ks.add_argument("providers", nargs="*", help="provider(s) for pin / disable")
    ks.set_defaults(func=cmd_kill_switch)
    return parser


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
