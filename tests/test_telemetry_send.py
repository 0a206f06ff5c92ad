"""The light path's OTLP/HTTP sender behaves as the SDK's client: retries, TLS, bounds.

A real HTTP(S) server on loopback answers with a scripted list of statuses; the sender posts
real bytes. Back-offs are kept short with ``Retry-After: 0`` (the collector's own word, which
the sender honours), so no test waits on the exponential back-off.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression

from controller.telemetry._send import HttpSender
from tests.http_client_support import self_signed


class Collector(ThreadingHTTPServer):
    def __init__(self, statuses: list[int], *, answer: bytes = b"") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses = statuses  # answered in order; 200 once they run out
        self.answer = answer
        self.bodies: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    server: Collector
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def serving(server: Collector) -> Iterator[Collector]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def sender(url: str, **options: Any) -> HttpSender:
    defaults: dict[str, Any] = {
        "headers": {},
        "timeout": 5.0,
        "compression": Compression.NoCompression,
    }
    return HttpSender(url, **{**defaults, **options})


def url(server: Collector, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}/v1/traces"


@pytest.mark.parametrize(
    ("statuses", "taken", "posts"),
    [
        ([], True, 1),
        ([503, 429, 502], True, 4),  # retried (Retry-After: 0) until taken
        ([400], False, 1),  # the collector refused it: not retried
        ([503] * 6, False, 6),  # six tries at most
    ],
)
def test_statuses_are_retried_as_the_sdk_retries_them(
    statuses: list[int], taken: bool, posts: int
) -> None:
    for collector in serving(Collector(list(statuses))):
        post = sender(url(collector))
        assert post(b"spans") is taken
        assert collector.bodies == [b"spans"] * posts
        post.close()


def test_a_long_answer_is_read_only_up_to_its_bound_and_the_connection_renewed() -> None:
    for collector in serving(Collector([], answer=b"x" * (200 * 1024))):
        post = sender(url(collector))
        assert post(b"one")
        assert post._connection is None  # dropped: the rest of the answer was not read
        assert post(b"two")
        assert collector.bodies == [b"one", b"two"]
        post.close()


def test_a_closed_port_fails_without_waiting_for_the_timeout() -> None:
    collector = Collector([])
    address = url(collector)
    collector.server_close()  # nothing listens there now
    post = sender(address, timeout=0.5)
    assert post(b"spans") is False
    post.close()


def test_tls_with_the_configured_certificate_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, name="collector", san="IP:127.0.0.1")
    server = Collector([])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for collector in serving(server):
        trusted = sender(url(collector, "https"), certificate_file=str(cert))
        assert trusted(b"spans")
        untrusted = sender(url(collector, "https"), timeout=1.0)
        assert untrusted(b"spans") is False  # a self-signed certificate is not trusted otherwise
        assert collector.bodies == [b"spans"]
        trusted.close()
        untrusted.close()


def test_gzip_and_the_sdk_headers_are_sent() -> None:
    seen: list[dict[str, str]] = []

    class Recording(_Handler):
        def do_POST(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            super().do_POST()

    server = Collector([])
    server.RequestHandlerClass = Recording
    for collector in serving(server):
        post = sender(url(collector), headers={"x-team": "a"}, compression=Compression.Gzip)
        assert post(b"spans")
        post.close()
    assert seen[0]["content-type"] == "application/x-protobuf"
    assert seen[0]["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
    assert seen[0]["content-encoding"] == "gzip"
    assert seen[0]["x-team"] == "a"
