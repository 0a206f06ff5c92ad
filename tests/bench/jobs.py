"""Benchmark: deferred jobs (issue 20): what a defer costs, how fast a backlog drains into a
recovered provider with the rate limit respected, and what triage costs a healthy request.

    python -m tests.bench.jobs [--backlog 10000] [--rate 500] [--concurrency 32]
                               [--requests 20000] [--repeats 5] [--skip-replay] [--skip-lookup]
                               [--store sqlite|redis] [--replicas 2] [--appendfsync always]

``replay``: ``--backlog`` jobs (OpenAI chat bodies) are written into a fresh SQLite store one by
one, as the gateway writes each defer before its 202 (WAL, ``synchronous=FULL``): the time of
each write is the defer's own cost (p50/p99). Then the replayer (the runtime's, on the real
clock) sends them through a real Router and the job runner to a fake provider on loopback (the
recovered provider, in this process) at ``--rate`` jobs/s with at most ``--concurrency`` under
way. Reported: jobs/s from the first start to the last answer written, and the most jobs
started in any one-second window (the limit is ``rate`` per second plus a burst of
``rate * tick``). Every job must end ``done``.

``--store redis``: the same against the fleet's store (:class:`RedisJobStore`) on a
``redis-server`` started for the run (Debian's, on loopback, AOF on with ``--appendfsync``:
``always`` fsyncs each job before Redis answers, as the crash promise needs; ``no`` leaves it to
the OS), the writes spread over ``--replicas`` stores and the backlog drained by as many
replayers at once (one Redis token bucket: the rate is the fleet's, plus two ticks' worth).

``lookup``: the healthy path's triage cost, two ways. (1) :meth:`Triage.wants` alone, per
call, for a request without ``x-failover-priority`` on a critical tier (what every request
pays), and with ``gateway.client_priorities`` configured (a SHA-256 of the key per request).
(2) :mod:`tests.bench.hot_path`'s whole in-process request (client auth, decode, router with
every listener, codec, render), interleaved with triage in the app as ``failover serve`` builds
it and with it taken out (as before triage existed): µs per request, minimum of ``--repeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.metrics import MeterProvider

from controller._clock import SystemClock
from controller._loop import loop_factory
from controller.config import load_config
from controller.fleet import FleetConfig
from controller.gateway import GatewaySettings, create_app
from controller.gateway._formats import OPENAI
from controller.gateway._jobs import TRIAGE_KEY, JobRunner, Triage
from controller.jobs import (
    Job,
    JobState,
    JobStore,
    NewJob,
    Outcome,
    Replayer,
    ReplayLimits,
    SqliteJobStore,
)
from controller.jobs._redis import RedisJobStore
from controller.model import Request
from controller.providers import HttpProvider, Timeouts, codec_for
from controller.providers.fake import FakeProvider
from controller.routing.plan import Priority, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.runtime import Runtime
from tests.bench import hot_path
from tests.bench.gateway import API_KEY, GATEWAY_YAML, MODEL
from tests.live_support import free_port
from tests.redis_support import REDIS_BIN

BODY = {"model": "t", "messages": [{"role": "user", "content": "a deferred question"}]}
TIMEOUTS = Timeouts(connect=2.0, first_token=10.0, idle=10.0, total=30.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------------- replay
class _Redis:
    """A redis-server for the run: loopback, a free port, AOF with ``appendfsync``."""

    def __init__(self, workdir: Path, appendfsync: str) -> None:
        self.port = free_port()
        argv = [REDIS_BIN, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", appendfsync, "--dir", str(workdir)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        for _ in range(200):  # bounded: 10 s
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _stores(kind: str, tmp: str, url: str, replicas: int, rate: float) -> list[JobStore]:
    if kind == "sqlite":
        return [SqliteJobStore(Path(tmp) / "jobs.sqlite3")]
    cfg = FleetConfig(prefix="bench", timeout_seconds=2.0)
    env = {"FAILOVER_REDIS_URL": url}
    return [
        RedisJobStore.connect(cfg, env, per_second=rate, tick_seconds=0.1, lease_seconds=60.0)
        for _ in range(replicas)
    ]


async def replay(
    backlog: int,
    rate: float,
    concurrency: int,
    *,
    kind: str = "sqlite",
    replicas: int = 1,
    appendfsync: str = "always",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        server = _Redis(Path(tmp), appendfsync) if kind == "redis" else None
        if server is not None:
            await server.ready()
        try:
            return await _replay(
                backlog,
                rate,
                concurrency,
                _stores(kind, tmp, server.url if server else "", replicas, rate),
            )
        finally:
            if server is not None:
                server.stop()


async def _replay(
    backlog: int, rate: float, concurrency: int, stores: list[JobStore]
) -> dict[str, Any]:
    store = stores[0]
    body = json.dumps(BODY).encode()
    writes: list[float] = []
    for n in range(backlog):
        job = NewJob(
            id=f"job_{n:024d}",
            owner="",
            tier="t",
            front="openai",
            model="t",
            body=body,
            idempotency_key=f"idem-{n}",
            created_at=time.time(),
        )
        start = time.perf_counter()
        await stores[n % len(stores)].add(job, max_jobs=backlog + 1)
        writes.append(time.perf_counter() - start)
    async with FakeProvider(name="recovered", reply="replayed") as fake:
        provider = HttpProvider(
            name="recovered",
            codec=codec_for("openai"),
            base_url=fake.url("openai"),
            api_key="sk-bench-not-a-secret",
            max_connections=max(concurrency, 8),
        )
        tier = TierPlan(name="t", targets=(Target(provider="recovered", model="m"),))
        router = Router(
            tiers={"t": tier},
            providers={"recovered": provider},
            retry=never_retry,
            default_timeouts=TIMEOUTS,
        )
        started: list[float] = []
        runner = JobRunner(router, max_result_bytes=1 << 20)

        async def run(job: Job) -> Outcome:
            started.append(time.monotonic())
            return await runner(job)

        limits = ReplayLimits(per_second=rate, concurrency=concurrency, tick_seconds=0.1)
        replayers = [
            Replayer(s, run=run, degraded=lambda _: False, clock=SystemClock(), limits=limits)
            for s in stores
        ]
        for each in replayers:
            await each.start()
        replayer = replayers[0]
        tasks = [asyncio.create_task(each.run()) for each in replayers]
        begin = time.monotonic()
        deadline = begin + backlog / rate * 3 + 60  # bounded
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            queue = replayer.queues.get("t")
            if len(started) >= backlog and queue is not None and queue.done >= backlog:
                break
        elapsed = time.monotonic() - begin
        for each in replayers:
            await each.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        queues = await store.queues()
        sample = await store.get("job_" + "0" * 24)
        await router.aclose()
    for each_store in stores:
        await each_store.close()
    per_second = Counter(int(t - started[0]) for t in started) if started else Counter()
    done = queues["t"].done if "t" in queues else 0
    return {
        "store": type(store).__name__,
        "replayers": len(stores),
        "backlog": backlog,
        "rate_limit": rate,
        "burst": max(1.0, rate * limits.tick_seconds * (2 if store.shares_rate else 1)),
        "concurrency": concurrency,
        "defer_write_ms_p50": round(percentile(writes, 0.5) * 1e3, 3),
        "defer_write_ms_p99": round(percentile(writes, 0.99) * 1e3, 3),
        "done": done,
        "seconds": round(elapsed, 2),
        "jobs_per_second": round(done / (started[-1] - started[0] + 1e-9), 1) if started else 0,
        "max_started_in_one_second": max(per_second.values()) if per_second else 0,
        "sample_done": sample is not None and sample.state is JobState.DONE,
    }


# ---------------------------------------------------------------------------------- lookup
@dataclass(frozen=True)
class _Call:
    body: Any
    model: str
    tier: str
    request: Request


async def _triage_cost(calls: int) -> dict[str, float]:
    """ns per healthy request for triage: ``wants`` alone (no header, a critical tier: what
    every request pays), and ``wants`` + ``admit`` with ``gateway.client_priorities`` set (a
    SHA-256 of the key; the key has no default of its own, so the tier's critical is used)."""
    provider = HttpProvider(name="p", codec=codec_for("openai"), base_url="http://127.0.0.1:9")
    tier = TierPlan(name="t", targets=(Target(provider="p", model="m"),))
    router = Router(tiers={"t": tier}, providers={"p": provider})

    class Backend:
        meter = MeterProvider().get_meter("bench.jobs")

        def __init__(self) -> None:
            self.router = router

        def retry_after(self, providers: object) -> float | None:
            return None

    headers = {"Authorization": "Bearer sk-client-key", "Content-Type": "application/json"}
    request = make_mocked_request("POST", "/v1/chat/completions", headers=headers)
    backend = cast(Any, Backend())
    plain = Triage(backend, queue=None)
    keyed = Triage(backend, queue=None, by_owner={"0" * 64: Priority.DEFER})
    call = _Call(body=BODY, model="t", tier="t", request=Request(messages=()))
    best = {"wants_ns_plain": float("inf"), "wants_admit_ns_client_priorities": float("inf")}
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            plain.wants(request, "t")
        best["wants_ns_plain"] = min(best["wants_ns_plain"], (time.perf_counter() - start) / calls)
        start = time.perf_counter()
        for _ in range(calls):
            if keyed.wants(request, "t"):
                await keyed.admit(request, OPENAI, call)
        spent = (time.perf_counter() - start) / calls
        best["wants_admit_ns_client_priorities"] = min(
            best["wants_admit_ns_client_priorities"], spent
        )
    await router.aclose()
    return {name: round(seconds * 1e9, 1) for name, seconds in best.items()}


async def _hot_path(requests: int, repeats: int) -> dict[str, float]:
    """hot_path's request with triage in the app and without, interleaved; min µs each."""
    with tempfile.TemporaryDirectory(prefix="bench-jobs-hot-") as tmp:
        config = Path(tmp) / "failover.yaml"
        config.write_text(
            GATEWAY_YAML.format(
                upstream="http://127.0.0.1:9",
                model=MODEL,
                state=Path(tmp) / "state.json",
                port=0,
                admin_port=0,
            )
        )
        runtime = Runtime(load_config(config), config_path=config, env={"BENCH_UPSTREAM_KEY": "x"})
        runtime.providers["fake"].inner = hot_path.CannedProvider("fake")
        await runtime.start()
        try:
            settings = GatewaySettings(api_keys=(API_KEY,), max_body_bytes=1 << 20)
            with_triage = create_app(runtime, settings=settings, jobs=runtime.jobs)
            without = create_app(runtime, settings=settings)
            del without[TRIAGE_KEY]  # as before triage: the handler finds none
            apps = {"with_triage": with_triage, "without_triage": without}
            handlers = {name: _handler(app) for name, app in apps.items()}
            for name, app in apps.items():
                await hot_path._timed(handlers[name], min(requests, 2_000), app)
            best = dict.fromkeys(apps, float("inf"))
            for _ in range(repeats):
                for name, app in apps.items():
                    spent = await hot_path._timed(handlers[name], requests, app)
                    best[name] = min(best[name], spent / requests * 1e6)
        finally:
            await runtime.stop(grace=0.1)
    result = {f"hot_path_us_{name}": round(us, 2) for name, us in best.items()}
    result["hot_path_triage_share"] = round(best["with_triage"] / best["without_triage"] - 1.0, 4)
    return result


def _handler(app: web.Application) -> hot_path.Handler:
    return next(
        route.handler
        for route in app.router.routes()
        if route.method == "POST" and route.resource is not None
        if route.resource.canonical == "/v1/chat/completions"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="jobs/s per tier")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20_000, help="hot path, per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--replicas", type=int, default=2, help="redis: stores and replayers")
    parser.add_argument(
        "--appendfsync", choices=("always", "everysec", "no"), default="always", help="redis"
    )
    args = parser.parse_args()
    backlog = max(1, min(args.backlog, 1_000_000))
    _, factory = loop_factory("auto")
    report: dict[str, Any] = {}
    with asyncio.Runner(loop_factory=factory) as runner:
        if not args.skip_replay:
            replicas = max(1, min(args.replicas, 16)) if args.store == "redis" else 1
            report["replay"] = runner.run(
                replay(
                    backlog,
                    args.rate,
                    max(1, args.concurrency),
                    kind=args.store,
                    replicas=replicas,
                    appendfsync=args.appendfsync,
                )
            )
        if not args.skip_lookup:
            lookup = runner.run(_triage_cost(100_000))
            requests = max(1, min(args.requests, 200_000))
            lookup |= runner.run(_hot_path(requests, max(1, min(args.repeats, 50))))
            report["lookup"] = lookup
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for section, values in report.items():
        for key, value in values.items():
            print(f"{section:7} {key:32} {value}")


if __name__ == "__main__":
    main()
