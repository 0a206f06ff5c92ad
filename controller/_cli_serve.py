"""``failover serve``: the gateway with its embedded controller, until SIGINT or SIGTERM.

The runtime starts first, then the client-facing listener and the admin listener; whatever
fails, what was started is stopped (a port in use is one clear error). SIGHUP makes the config
watcher look at once. Once everything is up, the garbage collector is tuned for a long-running
server. ``controller/cli.py`` wires it to the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from controller._errors import FailoverError
from controller._loop import loop_factory
from controller._loop import run as run_loop
from controller.config import Config, load_config

if TYPE_CHECKING:
    from aiohttp import web

    from controller.config._model import GatewayConfig
    from controller.gateway import GatewayServer, GatewaySettings
    from controller.gateway._server import ConnectionLimits
    from controller.routing.plan import Priority
    from controller.runtime import Runtime

_GC_GEN0_THRESHOLD = 2_000

log = logging.getLogger("failover")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        loop_name, _ = loop_factory(args.loop)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    return run_loop(_serve(config, args, loop_name), loop=args.loop)


async def _serve(config: Config, args: argparse.Namespace, loop_name: str) -> int:
    """Start the runtime, then each listener in turn; whatever fails, stop what was started
    (a port in use is one clear error, not a traceback with the other listener left running)."""
    from controller.gateway import create_admin_app, create_app
    from controller.runtime import Runtime

    gw = config.gateway
    settings, priorities = gateway_settings(gw, os.environ)
    host, port = args.host or gw.host, args.port if args.port is not None else gw.port
    grace = gw.shutdown_grace_seconds
    runtime = Runtime(config, config_path=args.config)
    await runtime.start()
    servers: list[GatewayServer] = []
    try:
        stop = _stop_on_signals(runtime)
        front = create_app(runtime, settings=settings, jobs=runtime.jobs, priorities=priorities)
        admin = create_admin_app(runtime, admin_token=os.environ.get(gw.admin_token_env) or None)
        limits = connection_limits(gw)
        servers.append(await _listen(front, host, port, grace=grace, limits=limits))
        servers.append(await _listen(admin, gw.admin_host, gw.admin_port, grace=1.0))
        urls = (server.url for server in servers)
        what = "gateway on %s, admin on %s, client auth %s, config %s, %s loop"
        log.info(what, *urls, "on" if settings.api_keys else "OFF", args.config, loop_name)
        _tune_gc()
        await stop.wait()
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
        await runtime.stop(grace=min(grace, 5.0))
    log.info("stopped")
    return 0


def gateway_settings(
    gw: GatewayConfig, env: Mapping[str, str]
) -> tuple[GatewaySettings, dict[str, Priority]]:
    """The front's settings: the client keys (``gateway.api_keys_env``, then those of
    ``gateway.client_priorities``, each once) and the priority each of the latter gives.
    ``failover run``'s own gateway takes them from here too."""
    from controller.gateway import GatewaySettings
    from controller.gateway._jobs import client_priorities

    keys = tuple(k.strip() for k in env.get(gw.api_keys_env, "").split(",") if k.strip())
    listed = ((c.keys_env, c.priority) for c in gw.client_priorities)
    more_keys, priorities = client_priorities(listed, env)  # client keys too
    keys += tuple(k for k in more_keys if k not in keys)
    settings = GatewaySettings(
        api_keys=keys,
        max_body_bytes=gw.max_body_bytes,
        shutdown_grace_seconds=gw.shutdown_grace_seconds,
        echo_requested_model=gw.echo_requested_model,
    )
    return settings, priorities


def connection_limits(gw: GatewayConfig) -> ConnectionLimits:
    """The client-facing listener's limits on connections and how long each may dawdle."""
    from controller.gateway._server import ConnectionLimits

    return ConnectionLimits(
        max_connections=gw.max_connections,
        idle=gw.idle_timeout_seconds,
        header=gw.header_timeout_seconds,
        body=gw.body_timeout_seconds,
        send=gw.send_timeout_seconds,
    )


def _stop_on_signals(runtime: Runtime) -> asyncio.Event:
    """An event SIGINT and SIGTERM set; SIGHUP makes the config watcher look at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if runtime.watcher is not None:
        loop.add_signal_handler(signal.SIGHUP, runtime.watcher.poke)
    return stop


async def _listen(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace: float,
    limits: ConnectionLimits | None = None,
) -> GatewayServer:
    """Start one listener; a bind failure (port in use, address not local) becomes one line."""
    from controller.gateway import GatewayServer

    try:
        return await GatewayServer(app, host=host, port=port, grace=grace, limits=limits).start()
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise FailoverError(f"cannot listen on {where}: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    """ "Address already in use", not asyncio's and uvloop's "error while attempting to bind
    on address ('127.0.0.1', 8080): address already in use": the errno gives the short text."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return str(exc.strerror or exc)
    return os.strerror(exc.errno)


def _tune_gc() -> None:
    """Garbage-collector settings for a long-running server, applied once start-up is done.

    ``gc.freeze()`` moves everything allocated so far (modules, config, OpenTelemetry and
    pydantic machinery: most of the heap) out of the collector's reach, so a full collection no
    longer rescans it; a gen-0 threshold of 2,000 instead of 700 keeps the per-request objects
    (requests, events, futures, some in short-lived cycles) from triggering a young collection
    every few requests. Not larger: every tenth young collection also scans generation 1, which
    holds what ten of them kept; with 10,000, 900-1,000 long streams (each holding its objects
    for seconds) made those pauses 22-33 ms, which every stream waits out at once; with 2,000
    they were 5-14 ms (``python -m tests.bench.streams --rounds 3``, a ``gc.callbacks`` probe;
    the README's performance section).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
