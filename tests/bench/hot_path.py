"""Benchmark: the gateway's own CPU per request, in process, with the network left out.

    python -m tests.bench.hot_path [--requests 20000] [--repeats 5] [--profile 25]

:mod:`tests.bench.gateway` measures the whole proxy over loopback, where the gateway's own code
is a third of the CPU and the virtual machine's noise moves a run by 10-20%. This measures that
third alone: the OpenAI front's handler as ``failover serve`` builds it (client auth, decode,
the router with every listener of the runtime: telemetry with the Prometheus reader, signal
windows, latency tracking, the drill wrapper; the adapter's codec and orjson; render and the
aiohttp ``Response``), called in a loop with one thing swapped: the provider behind the drill
wrapper is :class:`CannedProvider`, which builds the real request body with the OpenAI client
codec, waits one loop turn inside the same per-attempt timeout as the HTTP adapter, and parses a
canned answer with the codec instead of sending anything. Not measured: aiohttp's server, the
provider HTTP client (:mod:`tests.bench.upstream_client` measures it) and the sockets, which
:mod:`tests.bench.gateway` covers.

Each repeat times ``--requests`` requests (one event-loop turn after each, so the deferred
telemetry runs and is counted); the minimum over repeats is the figure (noise only adds time).
``--profile N`` then runs the requests once more under cProfile and prints the N functions with
the most own time (cProfile inflates small functions; read the ranking, not the microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from controller import _json
from controller._loop import loop_factory
from controller.config import load_config
from controller.gateway import GatewaySettings, create_app
from controller.model import Request, Response, StreamChunk, Untranslatable
from controller.providers import Timeouts, codec_for
from controller.runtime import Runtime
from tests.bench.gateway import API_KEY, BODY, GATEWAY_YAML, MODEL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how are you?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


class CannedProvider:
    """An OpenAI-format provider that answers ``ANSWER`` without a network: the codec's work and
    the adapter's timeout, none of the transport's."""

    kind = wire_format = "openai"
    server_address = "127.0.0.1"
    server_port = 9

    def __init__(self, name: str) -> None:
        self.name = name
        self._codec = codec_for("openai")

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return ()

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
        call = self._codec.build(request, model, "sk-bench")
        if call.content is None:  # the translated route encodes; the same-format one relays
            _json.dumps(call.body)
        async with asyncio.timeout(timeouts.total):
            await asyncio.sleep(0)  # the answer "arrives" one loop turn later, as over a socket
        response = self._codec.parse_response(ANSWER, model)
        if call.relay is not None:  # as HttpProvider does: read for telemetry, sent as it came
            response = replace(response, raw=call.relay.whole(ANSWER))
        return response

    def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError("the hot-path benchmark sends non-streaming requests")

    async def close(self) -> None:
        return None


class _FrontRequest:
    """The four things the front handler reads from its aiohttp request (``app``: its triage,
    controller/gateway/_jobs.py)."""

    __slots__ = ("app", "headers", "path")

    def __init__(self, app: web.Application) -> None:
        auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        self.headers = CIMultiDictProxy(CIMultiDict(auth))
        self.path = "/v1/chat/completions"
        self.app = app

    async def read(self) -> bytes:
        return _BODY


_BODY = json.dumps(BODY).encode()


async def _timed(handler: Handler, requests: int, app: web.Application) -> float:
    """Seconds spent on ``requests`` requests, each followed by one loop turn."""
    call = cast(web.Request, _FrontRequest(app))
    spent = 0.0
    for _ in range(requests):
        start = time.perf_counter()
        answer = await handler(call)
        await asyncio.sleep(0)  # the telemetry drain runs here, as after a real response
        spent += time.perf_counter() - start
        if answer.status != 200:
            raise RuntimeError(f"the gateway answered {answer.status}")
    return spent


async def run(requests: int, repeats: int, profile: int) -> list[float]:
    """µs per request for each repeat (and the profile printed, when asked)."""
    with tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp:
        config = Path(tmp) / "failover.yaml"
        config.write_text(
            GATEWAY_YAML.format(
                upstream="http://127.0.0.1:9",  # never contacted: the canned provider answers
                model=MODEL,
                state=Path(tmp) / "state.json",
                port=0,
                admin_port=0,
            )
        )
        # A clean environment, as the gateway benchmark gives `failover serve`: no OTEL_*
        # settings from the caller's shell (so no OTLP export), only the key the config names.
        env = {"BENCH_UPSTREAM_KEY": "sk-bench-not-a-secret"}
        runtime = Runtime(load_config(config), config_path=config, env=env)
        runtime.providers["fake"].inner = CannedProvider("fake")
        await runtime.start()
        try:
            return await _measure(runtime, requests, repeats, profile)
        finally:
            await runtime.stop(grace=0.1)


async def _measure(runtime: Runtime, requests: int, repeats: int, profile: int) -> list[float]:
    settings = GatewaySettings(
        api_keys=(API_KEY,), max_body_bytes=1 << 20, shutdown_grace_seconds=1.0
    )
    app = create_app(runtime, settings=settings)
    handler = next(
        route.handler
        for route in app.router.routes()
        if route.method == "POST" and route.resource is not None
        if route.resource.canonical == "/v1/chat/completions"
    )
    await _timed(handler, min(requests, 2_000), app)  # warm up code paths and series
    per_request = [await _timed(handler, requests, app) / requests * 1e6 for _ in range(repeats)]
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await _timed(handler, requests, app)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(profile)
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per repeat (bounded)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the minimum counts")
    parser.add_argument("--profile", type=int, default=0, help="print the top N under cProfile")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args()
    requests = max(1, min(args.requests, 200_000))
    name, factory = loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        times = runner.run(run(requests, max(1, min(args.repeats, 50)), args.profile))
    shown = " ".join(f"{t:.0f}" for t in times)
    print(f"gateway hot path ({name} loop): {min(times):.0f} µs per request (runs: {shown})")


if __name__ == "__main__":
    main()
