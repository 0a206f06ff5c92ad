"""``failover check``: validate a config file, describe what it sets up, list its problems.

It prints the providers (and whether their key variables are set), tiers, kill switch,
tripwire, limits, alert channels, the fleet's Redis and the PromQL rules; with ``--live`` it
also sends a tiny request to each provider, asks Prometheus each PromQL rule once (a rule it
refuses, say a syntax error, is a problem) and sends a test message to each alert channel. The
verdict agrees with the exit code. ``controller/cli.py`` wires it to the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING

from controller._errors import ConfigError, ProviderError
from controller.config import (
    Config,
    load_config,
    readiness_problems,
    resolve_secret,
    unreachable,
)

if TYPE_CHECKING:
    from controller.control._promql_eval import PromqlTripwires


def cmd_check(args: argparse.Namespace) -> int:
    """Describe, list the problems, then a verdict that agrees with the exit code (a file that
    parses but names an unset key variable is not "valid" for what the operator asked)."""
    config = load_config(args.config)
    problems = _describe(config)
    problems += [str(problem) for problem in readiness_problems(config, args.config)]
    problems += _check_state(config)
    if args.live:
        problems += asyncio.run(_live_check(config))
    for problem in problems:
        print(f"  problem: {problem}")
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(f"{args.config}: NOT ready: {count} (the file parses; fix the above)")
        return 1
    print(f"{args.config}: valid{' and live checks passed' if args.live else ''}")
    return 0


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
        if tier.hedge is not None:
            wait, most = _hedge_wait(tier.hedge.after), tier.hedge.per_second
            print(f"{'':28}hedge after {wait}, at most {most:g} a second")
    print(f"  kill switch            {config.effective_kill_switch(warn=False).describe()}")
    for warning in unreachable(config):
        print(f"  warning: {warning}")
    trip = config.controller
    threshold = f"threshold {trip.error_rate_threshold:.0%} over {trip.window_seconds:g} s"
    print(f"  tripwire               {trip.mode}, {threshold}")
    _describe_limits(config)
    from controller.notify import senders_from_env

    channels = sorted({s.channel for s in senders_from_env(config.notify, os.environ)})
    print(f"  alert channels         {', '.join(channels) or 'none'}")
    from controller.notify._bot_runtime import describe_commands

    try:
        print(f"  telegram commands      {describe_commands(config.notify.telegram, os.environ)}")
    except ConfigError as err:
        problems.append(f"telegram commands: {err}")
    return problems


def _check_state(config: Config) -> list[str]:
    """Fleet mode: whether the fleet's Redis answers (bounded); PromQL tripwires: where from."""
    from controller.fleet import check_fleet
    from controller.fleet.config import state_backend

    problems: list[str] = []
    try:
        backend = state_backend(config.state.backend, os.environ)
    except ConfigError as err:
        return [str(err)]
    if backend == "redis":
        cfg = config.state.redis
        said, problem = check_fleet(cfg, os.environ)
        print(f"  state                  fleet on Redis (prefix {cfg.prefix}): {said}")
        problems += [problem] if problem else []
    promql = config.promql
    if promql.rules:
        url = promql.resolve_url(os.environ)
        source = f"${promql.url_env}" if os.environ.get(promql.url_env) else "promql.url"
        print(f"  promql tripwires       {len(promql.rules)} rule(s), Prometheus from {source}")
        if url is None:
            problems.append(f"promql.url: set it or ${promql.url_env}: the rules need a Prometheus")
    return problems


def _hedge_wait(after: float | str) -> str:
    return f"{after:g} s" if isinstance(after, float | int) else f"the target's {after}"


def _describe_limits(config: Config) -> None:
    """How long an attempt may wait: the configured timeouts until a provider has answered
    enough to learn from, then the learned stall limit as well."""
    stall = config.controller.stall
    if stall.enabled:
        learned = (
            f"{stall.factor:g} x p{stall.quantile * 100:g} of its times to answer, "
            f"{stall.floor_seconds:g}-{stall.ceiling_seconds:g} s, after {stall.min_samples}"
        )
        print(f"  stalled when waiting   {learned} answers (README: How the tripwire works)")
    else:
        print("  stalled when waiting   off (controller.stall.enabled: false)")
    for name, provider in config.providers.items():
        t = provider.timeouts.limits()
        print(
            f"  limits {name:16} connect {t.connect:g} s, first chunk {t.first_token:g} s, "
            f"answer {t.total:g} s, idle {t.idle:g} s, stream {t.stream_total:g} s"
        )


async def _live_check(config: Config, within: float = 15.0) -> list[str]:
    from controller.model import Message, Request
    from controller.notify.alert import Alert, AlertEvent, Severity
    from controller.runtime import Runtime, probe_models

    problems: list[str] = []
    runtime = Runtime(config, config_path=None)
    tiny = Request(messages=(Message(role="user", content="ping"),), max_tokens=1)
    try:
        for name, model in sorted(probe_models(config).items()):
            why = ""
            try:  # the adapter itself, not router.probe: its error says why (phase, status...)
                timeouts = runtime.router.timeouts_for(name).bounded(within)
                await runtime.providers[name].complete(tiny, model, timeouts)
            except ProviderError as err:
                why = config.explain_failure(name, err, within=within, env=runtime.env)
            print(f"  live: provider {name} ({model}): {'FAILED: ' + why if why else 'ok'}")
            if why:
                problems.append(f"provider {name} did not answer a tiny request: {why}")
        if runtime.promql is not None:
            problems += await _live_promql(runtime.promql)
        runtime.dispatcher.start()
        note = "test message from `failover check --live`"
        test = Alert(
            event=AlertEvent.TEST, severity=Severity.INFO, at=runtime.clock.wall(), detail=note
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


async def _live_promql(promql: PromqlTripwires) -> list[str]:
    """Each PromQL rule asked of its Prometheus once, as the controller will: a syntax error,
    an unknown metric function or a Prometheus away shows now, not at the first evaluation in
    production (a rule whose condition holds right now is reported, not a problem)."""
    from controller.control.promql import RuleState

    try:
        signals = await promql.evaluate()
    finally:
        await promql.aclose()
    problems: list[str] = []
    for signal in signals:
        print(
            f"  live: promql rule {signal.rule} ({signal.target}): {signal.state.value}, "
            f"{signal.detail}"
        )
        if signal.state is RuleState.UNKNOWN:
            problems.append(f"promql rule {signal.rule}: {signal.detail}")
    return problems
