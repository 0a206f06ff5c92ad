"""A real gateway for tests: GatewayBackend over a REAL Router and REAL fake providers on loopback.

Two fake servers (``primary`` and ``backup``) each serve every wire format, so one fake backs two
providers of different formats, and faults set on a fake hit both::

    tier "frontier"  (alias "gpt-test"):    primary-openai    -> backup-anthropic
    tier "claude"    (alias "claude-test"): primary-anthropic -> backup-openai
    tier "gated"     (alias "gated-test"):  a GatedProvider whose stream waits for a release

so an OpenAI-format client is served by an Anthropic-format provider during an "OpenAI outage"
and the reverse. Spans go to an InMemorySpanExporter; events to a Recorder listener.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Self

import aiohttp
from aiohttp import web
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from controller.control.state import KillSwitch, RoutingState, StateHolder
from controller.events import Outcome
from controller.gateway import GatewayServer, GatewaySettings, create_admin_app, create_app
from controller.gateway._server import ConnectionLimits
from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    Untranslatable,
    Usage,
)
from controller.providers import Provider, Timeouts
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing.plan import Target, TierPlan, make_plan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry.otel import PresetIdGenerator, TelemetryListener
from tests.conftest import Recorder, adapter

TIMEOUTS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0, terminator_grace=0.1)
FAST_TIMEOUTS = Timeouts(connect=1.0, first_token=0.3, idle=0.3, total=0.5, terminator_grace=0.1)
ALIASES = {"gpt-test": "frontier", "claude-test": "claude", "gated-test": "gated"}
THRESHOLD = 0.5
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatedProvider:
    """A provider (the router's Provider seam) whose stream yields one chunk, then waits for
    :meth:`release` before finishing: an in-flight stream a test controls exactly."""

    kind = wire_format = "openai"
    server_address = "127.0.0.1"
    server_port = 0

    def __init__(self, name: str = "gated") -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    def release(self) -> None:
        self.gate.set()

    def unsupported(self, request: Request) -> tuple[Untranslatable, ...]:
        return ()

    async def complete(self, request: Request, model: str, timeouts: Timeouts) -> Response:
        await self.gate.wait()
        message = Message(role="assistant", content="gated answer")
        return Response(id="gated-1", model=model, message=message, finish_reason=FinishReason.STOP)

    async def stream(
        self, request: Request, model: str, timeouts: Timeouts
    ) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(text="first", model=model)
        self.started.set()
        await self.gate.wait()
        yield StreamChunk(text=" second")
        yield StreamChunk(finish_reason=FinishReason.STOP, usage=Usage(3, 2))

    async def close(self) -> None:
        return None


class GatewayTestBackend:
    """Implements controller.gateway.GatewayBackend over a real Router."""

    def __init__(self, *, router: Router, tracer: Tracer, meter: Meter, recorder: Recorder) -> None:
        self.router = router
        self.tracer = tracer
        self.meter = meter
        self.recorder = recorder
        self.readiness: tuple[bool, str] = (True, "every tier has a usable provider")
        self.drills: list[tuple[str, float]] = []
        self.switches: list[tuple[KillSwitch, str]] = []  # what the admin API set, and by whom
        self.alerts: list[dict[str, Any]] = []
        self.fakes: dict[str, FakeProvider] = {}
        self.retry_wait: float | None = None  # the controller's estimate retry_after answers
        self.retry_asked: list[tuple[str, ...]] = []  # the providers each call named

    def tier_for(self, model: str) -> str | None:
        if model in self.router.tiers:
            return model
        return ALIASES.get(model)

    def models(self) -> list[str]:
        return sorted({*ALIASES, *self.router.tiers})

    def ready(self) -> tuple[bool, str]:
        return self.readiness

    def retry_after(self, providers: Collection[str]) -> float | None:
        self.retry_asked.append(tuple(providers))
        return self.retry_wait

    def status(self) -> dict[str, Any]:
        state = self.router.state.current
        switch = state.kill_switch
        return {
            "version": state.version,
            "updated_at": state.updated_at,
            "changed_by": state.changed_by,
            "kill_switch": {
                "active": switch.active,
                "pin": switch.pin,
                "disable": list(switch.disable),
                "describe": switch.describe(),
            },
            "tiers": [self._tier(name, plan, state) for name, plan in self.router.tiers.items()],
            "providers": [self._provider(name, state) for name in self.router.providers],
            "models": [
                {
                    "name": name,
                    "state": s.state.value,
                    "since": s.since,
                    "reason": s.reason,
                    "traffic_share": s.traffic_share,
                }
                for name, s in sorted(state.providers.items())
                if "/" in name
            ],
            "events": [
                {
                    "time": route.start_wall + route.end - route.start,
                    "text": f"{route.tier}: {route.outcome} by {route.served_by}",
                }
                for route in self.recorder.routes
            ],
            "alerts": list(self.alerts),
        }

    def _tier(self, name: str, tier: TierPlan, state: RoutingState) -> dict[str, Any]:
        plan = make_plan(
            tier, state, default_models={}, rng=random.Random(0), latency_of=lambda _: None
        )
        route = [t.provider for t in plan.targets]
        serving = route[0] if route else None
        return {
            "name": name,
            "serving": serving,
            "route": route,
            "panic": plan.panic,
            "reason": plan.reason,
        }

    def _provider(self, name: str, state: RoutingState) -> dict[str, Any]:
        status = state.status(name)
        mine = [a for a in self.recorder.attempts if a.provider == name]
        faults = sum(1 for a in mine if a.outcome is Outcome.FAULT)
        return {
            "name": name,
            "kind": self.router.providers[name].kind,
            "state": status.state.value,
            "error_rate": faults / len(mine) if mine else 0.0,
            "threshold": THRESHOLD,
            "requests": len(mine),
            "since": status.since,
            "reason": status.reason,
            "trip_count": status.trip_count,
            "traffic_share": status.traffic_share,
            "waiting": len(self.router.inflight.waiting_on(name)),
            "stall_limit": {"whole": 2.0} if name == "backup-anthropic" else {},
        }

    def render_metrics(self) -> tuple[bytes, str]:
        counts = Counter(
            (r.tier, r.outcome.value, r.served_by or "none") for r in self.recorder.routes
        )
        lines = ["# TYPE failover_requests_total counter"]
        for (tier, outcome, served_by), n in sorted(counts.items()):
            labels = f'tier="{tier}",outcome="{outcome}",served_by="{served_by}"'
            lines.append(f"failover_requests_total{{{labels}}} {n}")
        return ("\n".join(lines) + "\n").encode(), PROMETHEUS_TYPE

    async def set_kill_switch(self, switch: KillSwitch, *, by: str) -> dict[str, Any]:
        for name in (switch.pin, *switch.disable):
            if name is not None and name not in self.router.providers:
                raise ValueError(f"unknown provider {name!r}")
        self.switches.append((switch, by))
        state = self.router.state
        state.publish(replace(state.current, kill_switch=switch, version=state.current.version + 1))
        return {"kill_switch": switch.describe()}

    async def drill(self, provider: str, seconds: float) -> dict[str, Any]:
        if provider not in self.router.providers:
            raise KeyError(provider)
        self.drills.append((provider, seconds))
        fake = self.fakes.get(provider.split("-")[0])
        if fake is not None:
            fake.set_fault(Fault(mode=FaultMode.ERROR_503))
        return {"drill": "started"}


@dataclass
class GatewayEnv:
    primary: FakeProvider
    backup: FakeProvider
    gated: GatedProvider
    backend: GatewayTestBackend
    server: GatewayServer
    admin: GatewayServer
    exporter: InMemorySpanExporter
    recorder: Recorder
    state: StateHolder
    metrics: InMemoryMetricReader

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin_url(self) -> str:
        return self.admin.url


def _router(
    primary: FakeProvider,
    backup: FakeProvider,
    gated: GatedProvider,
    *,
    telemetry: TelemetryListener,
    recorder: Recorder,
    state: StateHolder,
    timeouts: Timeouts,
) -> Router:
    providers: dict[str, Provider] = {
        "primary-openai": adapter(primary, "openai", "primary-openai"),
        "primary-anthropic": adapter(primary, "anthropic", "primary-anthropic"),
        "backup-openai": adapter(backup, "openai", "backup-openai"),
        "backup-anthropic": adapter(backup, "anthropic", "backup-anthropic"),
        "gated": gated,
    }

    def tier(name: str, *targets: tuple[str, str]) -> TierPlan:
        chosen = tuple(Target(provider=p, model=m) for p, m in targets)
        return TierPlan(name=name, targets=chosen)

    tiers = {
        "frontier": tier(
            "frontier", ("primary-openai", "gpt-big"), ("backup-anthropic", "claude-alt")
        ),
        "claude": tier("claude", ("primary-anthropic", "claude-big"), ("backup-openai", "gpt-alt")),
        "gated": tier("gated", ("gated", "gated-model")),
    }
    return Router(
        tiers=tiers,
        providers=providers,
        state=state,
        listeners=[recorder, telemetry],
        retry=never_retry,
        default_timeouts=timeouts,
        deadline=20.0,
        rng=random.Random(7),
    )


@asynccontextmanager
async def gateway_env(
    *,
    settings: GatewaySettings | None = None,
    admin_token: str | None = "admin-secret-token",
    timeouts: Timeouts = TIMEOUTS,
    grace: float = 5.0,
    router_for: Callable[..., Router] | None = None,
) -> AsyncIterator[GatewayEnv]:
    """Fakes, router, backend, gateway and admin listeners on 127.0.0.1 ephemeral ports.
    ``router_for`` builds the router instead of the tiers above (same arguments)."""
    exporter = InMemorySpanExporter()
    ids = PresetIdGenerator()  # the route span gets the ids the router chose for it
    provider = TracerProvider(id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.gateway")
    metrics = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[metrics])
    meter = meters.get_meter("tests.gateway")
    telemetry = TelemetryListener(tracer=tracer, meter=meter, ids=ids)
    recorder, state, gated = Recorder(), StateHolder(), GatedProvider()
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        router = (router_for or _router)(
            primary,
            backup,
            gated,
            telemetry=telemetry,
            recorder=recorder,
            state=state,
            timeouts=timeouts,
        )
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        backend.fakes = {"primary": primary, "backup": backup}
        app = create_app(backend, settings=settings or GatewaySettings())
        admin_app = create_admin_app(backend, admin_token=admin_token)
        server = GatewayServer(app, host="127.0.0.1", port=0, grace=grace)
        admin = GatewayServer(admin_app, host="127.0.0.1", port=0, grace=grace)
        async with server, admin:
            try:
                yield GatewayEnv(
                    primary,
                    backup,
                    gated,
                    backend,
                    server,
                    admin,
                    exporter,
                    recorder,
                    state,
                    metrics,
                )
            finally:
                gated.release()
        await router.aclose()
        telemetry.flush()
        provider.shutdown()
        meters.shutdown()


async def wait_for(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until ``condition()`` holds; for effects that cross a real socket (no clock to fake:
    the other side is a real server on loopback)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition is another process's effect
            await asyncio.sleep(0.01)


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    """POST ``body`` (JSON, or raw bytes as given); (status, parsed JSON answer, headers)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    async with http.post(url, data=data, headers=headers, **kw) as answer:
        raw = await answer.read()
        return answer.status, json.loads(raw), dict(answer.headers)


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    """GET ``url``; (status, the JSON answer parsed, or its text when it is not JSON)."""
    async with http.get(url, **kw) as answer:
        if answer.content_type == "application/json":
            return answer.status, await answer.json()
        return answer.status, await answer.text()


async def assert_still_serving(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    """A plain request still succeeds (after bad input, the gateway keeps serving)."""
    status, body, _ = await post(http, env.url + "/v1/chat/completions", hello())
    assert status == 200
    assert body["choices"][0]["message"]["content"].startswith("Hello from primary")


def status_with(backend: GatewayTestBackend, extra: dict[str, Any]) -> None:
    """Make ``backend.status()`` answer with ``extra``'s sections added, as the Runtime's does
    in some setups (``jobs`` with deferred jobs, ``fleet`` in fleet mode)."""
    plain = backend.status

    def status() -> dict[str, Any]:
        return plain() | extra

    backend.status = status  # type: ignore[method-assign]


def accepts(url: str) -> bool:
    """Whether something still listens at ``url`` (a plain connect, no request)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


async def read_stream(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, bytes]:
    """POST a streaming request; (status, whole raw body)."""
    async with http.post(url, json=body) as answer:
        return answer.status, await answer.read()


def sse_events(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) pairs of an SSE body."""
    events: list[tuple[str, str]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = "", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").strip())
        events.append((name, "\n".join(data)))
    return events


def hello(model: str = "gpt-test", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat body."""
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def hello_anthropic(model: str = "claude-test", **extra: Any) -> dict[str, Any]:
    """An Anthropic messages body."""
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
    return body | extra


__all__ = [
    "ALIASES",
    "FAST_TIMEOUTS",
    "GatedProvider",
    "GatewayEnv",
    "GatewayTestBackend",
    "accepts",
    "assert_still_serving",
    "gateway_env",
    "get",
    "hello",
    "hello_anthropic",
    "post",
    "read_stream",
    "sse_events",
    "wait_for",
]


@asynccontextmanager
async def tier_server(
    *providers: Provider,
    limits: Timeouts | None = None,
    grace: float = 2.0,
    connection: ConnectionLimits | None = None,
) -> AsyncIterator[tuple[GatewayServer, Recorder]]:
    """A real gateway whose tier ``t`` has ``providers`` in order (each serving model m-<n>,
    no retries, ``limits`` per attempt (the defaults if None), a 20 s deadline), with this
    shutdown ``grace`` and ``connection`` limits (the defaults if None): the server and the
    route recorder."""
    recorder = Recorder()
    targets = tuple(Target(provider=p.name, model=f"m-{n}") for n, p in enumerate(providers, 1))
    router = Router(
        tiers={"t": TierPlan(name="t", targets=targets)},
        providers={p.name: p for p in providers},
        listeners=[recorder],
        retry=never_retry,
        default_timeouts=limits or Timeouts(),
        deadline=20.0,
        rng=random.Random(7),
    )
    tracer = TracerProvider().get_tracer("tests.tier_gateway")
    meter = MeterProvider().get_meter("tests.tier_gateway")
    backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
    app = create_app(backend, settings=GatewaySettings())
    async with GatewayServer(
        app, host="127.0.0.1", port=0, grace=grace, limits=connection
    ) as server:
        yield server, recorder
    await router.aclose()


@asynccontextmanager
async def tier_gateway(
    *providers: Provider, limits: Timeouts
) -> AsyncIterator[tuple[str, Recorder]]:
    """:func:`tier_server`'s URL and route recorder."""
    async with tier_server(*providers, limits=limits) as (server, recorder):
        yield server.url, recorder


class LoopbackPost:
    """A provider's stand-in on 127.0.0.1 (a free port): every POST goes to :meth:`_answer`,
    which a test's subclass writes; ``url`` is its address once entered (``async with``)."""

    url = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, http: web.Request) -> web.StreamResponse:
        raise NotImplementedError
