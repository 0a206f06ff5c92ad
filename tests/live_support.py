"""Real outside components for the live tests: Prometheus, Alertmanager, rotel, an OTLP sink.

Each runs as a subprocess (or, for the sink, an aiohttp server) on an ephemeral 127.0.0.1 port
with its files in a temp dir the test owns, and is stopped by the test that started it. Every
wait here is bounded; a component that does not come up fails the test with the tail of its log.

Binaries come from Debian (``prometheus``, ``prometheus-alertmanager``) and PyPI (``rotel``,
whose wheel ships the ``rotel-agent`` binary). Missing, they skip the test locally and fail it
under ``CI=true``: the suite's entry point installs them, so absence there is a bug.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import os
import re
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOOPBACK = "127.0.0.1"
PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
T = TypeVar("T")


# --- finding binaries -----------------------------------------------------------------------------
def missing(what: str) -> None:
    """Skip locally, fail under CI (where tests/run must have installed ``what``)."""
    message = f"{what} is not installed (see tests/run)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(path: str, package: str) -> str:
    """``path`` if it is an executable file, else skip/fail naming the Debian ``package``."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        missing(f"{path} (Debian package {package})")
    return path


def rotel_binary() -> str:
    """The ``rotel-agent`` executable shipped inside the ``rotel`` wheel (or one on PATH)."""
    spec = importlib.util.find_spec("rotel")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "rotel-agent"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("rotel-agent") or shutil.which("rotel")
    if found is None:
        missing("rotel (pip package rotel)")
    assert found is not None
    return found


def free_port() -> int:
    """A loopback port free right now (bound then released; the small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


# --- waiting --------------------------------------------------------------------------------------
async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
    every: float = 0.2,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds.

    The other side is a real process with its own clock (scrape and evaluation intervals), so
    there is no clock to fake: the bound keeps the test finite, the message says what was late.
    """
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")


async def _http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as answer:
            return answer.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


# --- subprocesses ---------------------------------------------------------------------------------
def _log_file(path: Path) -> IO[bytes]:
    return path.open("wb")


@dataclass
class Process:
    """A started subprocess whose output goes to ``log``; ``stop()`` is bounded and idempotent."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    _sink: IO[bytes]

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], *, workdir: Path) -> Process:
        log = workdir / f"{name}.log"
        sink = _log_file(log)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=sink, stderr=asyncio.subprocess.STDOUT, cwd=workdir
        )
        return cls(name=name, proc=proc, log=log, _sink=sink)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, *, grace: float = 5.0) -> None:
        if self.running:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._sink.close()

    async def wait_ready(self, ready: Callable[[], Awaitable[bool]], *, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.running:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if await ready():
                return
            await asyncio.sleep(0.1)
        await self.stop()
        pytest.fail(f"{self.name} not ready within {within}s:\n{self.tail()}")


# --- Prometheus -----------------------------------------------------------------------------------
def shorten_for(rules_yaml: str, durations: dict[str, str], *, default: str) -> str:
    """``rules_yaml`` with each alert's ``for:`` replaced: ``durations[alert]`` or ``default``.

    Text substitution, not a YAML round trip, so the rule file is otherwise byte-for-byte the
    one users deploy.
    """
    out: list[str] = []
    current = ""
    for line in rules_yaml.splitlines():
        alert = re.match(r"\s*- alert:\s*(\w+)", line)
        if alert:
            current = alert.group(1)
        found = re.match(r"(\s*)for:\s*\S+\s*$", line)
        if found and current:
            line = f"{found.group(1)}for: {durations.get(current, default)}"
        out.append(line)
    return "\n".join(out) + "\n"


def prometheus_config(*, targets: Sequence[str], rules: Path, alertmanager: str) -> str:
    """A prometheus.yml scraping ``targets`` as job ``failover-gateway`` every second."""
    quoted = ", ".join(f'"{t}"' for t in targets)
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 900ms\n"
        "  evaluation_interval: 1s\n"
        f"rule_files: ['{rules}']\n"
        "alerting:\n"
        "  alertmanagers:\n"
        f"    - static_configs: [{{targets: ['{alertmanager}']}}]\n"
        "scrape_configs:\n"
        "  - job_name: failover-gateway\n"
        "    metrics_path: /metrics\n"
        f"    static_configs: [{{targets: [{quoted}]}}]\n"
    )


@dataclass
class Prometheus:
    process: Process
    url: str
    session: aiohttp.ClientSession

    @classmethod
    async def start(
        cls,
        *,
        workdir: Path,
        config: str,
        session: aiohttp.ClientSession,
        port: int | None = None,
    ) -> Prometheus:
        """``port``: one picked before (what is configured to query it needs its URL first)."""
        binary = require_binary(PROMETHEUS_BIN, "prometheus")
        (workdir / "prometheus.yml").write_text(config)
        port = port or free_port()
        argv = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ]
        process = await Process.start("prometheus", argv, workdir=workdir)
        url = f"http://{LOOPBACK}:{port}"
        await process.wait_ready(lambda: _http_ok(session, url + "/-/ready"), within=30)
        return cls(process=process, url=url, session=session)

    async def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        async with self.session.get(self.url + path, params=params) as answer:
            body = await answer.json()
        assert body.get("status") == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a scalar result becomes one sample)."""
        data = await self._api("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    async def label_values(self, selector: str, label: str) -> list[str]:
        values: list[str] = await self._api(f"/api/v1/label/{label}/values", {"match[]": selector})
        return values

    async def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self._api("/api/v1/alerts"))["alerts"]
        return alerts

    async def firing(self, name: str, **labels: str) -> list[dict[str, Any]]:
        """Alerts named ``name`` in state firing whose labels include ``labels``."""
        return [
            a
            for a in await self.alerts()
            if a["labels"].get("alertname") == name
            and a["state"] == "firing"
            and labels.items() <= a["labels"].items()
        ]


def grafana_query(expr: str, instance: str) -> str:
    """A dashboard query as Grafana would send it: its variables substituted (every provider
    and tier, the one gateway ``instance``, a 1m rate interval)."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    expr = expr.replace("$__range", "1h").replace("$instance", instance)
    return re.sub(r"\$\{?(provider|tier)\}?", ".*", expr)


def exposed_metric_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (``/metrics``)."""
    return {
        match.group(1)
        for line in text.splitlines()
        if (match := re.match(r"([a-zA-Z_:][\w:]*)[{ ]", line)) and not line.startswith("#")
    }


# --- Alertmanager ---------------------------------------------------------------------------------
def fast_alertmanager_config(text: str) -> str:
    """alerts/alertmanager.yml with its waits cut to a second (routing is otherwise unchanged)."""
    text = re.sub(r"group_wait:\s*\S+", "group_wait: 1s", text)
    return re.sub(r"group_interval:\s*\S+", "group_interval: 1s", text)


@dataclass
class Alertmanager:
    process: Process
    url: str

    @classmethod
    async def start(
        cls, *, workdir: Path, config: Path, session: aiohttp.ClientSession
    ) -> Alertmanager:
        binary = require_binary(ALERTMANAGER_BIN, "prometheus-alertmanager")
        port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--cluster.listen-address=",  # no gossip port on 0.0.0.0
            "--log.level=warn",
        ]
        process = await Process.start("alertmanager", argv, workdir=workdir)
        url = f"http://{LOOPBACK}:{port}"
        await process.wait_ready(lambda: _http_ok(session, url + "/-/ready"), within=30)
        return cls(process=process, url=url)


# --- rotel (OTLP collector) -----------------------------------------------------------------------
@dataclass
class Rotel:
    process: Process
    http_port: int

    @property
    def endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/<signal>)."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @classmethod
    async def start(cls, *, workdir: Path, export_to: str) -> Rotel:
        """OTLP/HTTP in on a free port, OTLP/HTTP out to ``export_to`` (uncompressed)."""
        binary = rotel_binary()
        http_port, grpc_port = free_port(), free_port()
        argv = [
            binary,
            "start",
            f"--otlp-http-endpoint={LOOPBACK}:{http_port}",
            f"--otlp-grpc-endpoint={LOOPBACK}:{grpc_port}",
            "--exporter=otlp",
            f"--otlp-exporter-endpoint={export_to}",
            "--otlp-exporter-protocol=http",
            "--otlp-exporter-compression=none",
            "--batch-timeout=100ms",
            f"--pid-file={workdir / 'rotel.pid'}",
            f"--log-file={workdir / 'rotel-agent.log'}",
        ]
        process = await Process.start("rotel", argv, workdir=workdir)

        async def listening() -> bool:
            return _port_open(http_port)

        await process.wait_ready(listening, within=15)
        return cls(process=process, http_port=http_port)


# --- the OTLP sink --------------------------------------------------------------------------------
@dataclass
class OtlpSink:
    """An OTLP/HTTP (protobuf) receiver: keeps every decoded export request it is sent."""

    traces: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def __aenter__(self) -> OtlpSink:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await _body(request))
        self.traces.append(message)
        return _protobuf(ExportTraceServiceResponse().SerializeToString())

    async def _metrics(self, request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await _body(request))
        self.metrics.append(message)
        return _protobuf(ExportMetricsServiceResponse().SerializeToString())

    def spans(self) -> list[Any]:
        """Every span received so far, flattened over resources and scopes."""
        return [
            span
            for request in self.traces
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for request in self.metrics
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


async def _body(request: web.Request) -> bytes:
    raw = await request.read()
    # aiohttp already inflates a declared Content-Encoding; this covers a gzip body sent without
    # one (seen from collectors that compress by default).
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _protobuf(payload: bytes) -> web.Response:
    return web.Response(body=payload, content_type="application/x-protobuf")


def attributes(item: Any) -> dict[str, Any]:
    """An OTLP KeyValue list (span or data point attributes) as a plain dict."""
    out: dict[str, Any] = {}
    for kv in item.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


__all__ = [
    "LOOPBACK",
    "Alertmanager",
    "OtlpSink",
    "Process",
    "Prometheus",
    "Rotel",
    "attributes",
    "exposed_metric_names",
    "fast_alertmanager_config",
    "free_port",
    "grafana_query",
    "missing",
    "prometheus_config",
    "require_binary",
    "rotel_binary",
    "shorten_for",
    "wait_until",
]
