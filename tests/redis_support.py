"""A real ``redis-server`` (Debian package ``redis-server``) on loopback, for the fleet tests.

Started on an ephemeral 127.0.0.1 port with no persistence, in a directory the test owns;
stopped (SIGTERM, then SIGKILL after a bound) by the test that started it. ``freeze``/``thaw``
send SIGSTOP/SIGCONT (a Redis that accepts connections and never answers); ``kill`` and
``start`` again on the same port model an outage and a restart that lost everything.
Missing, the binary skips the test locally and fails it under ``CI=true`` (tests/run installs it).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.live_support import LOOPBACK, free_port, require_binary

REDIS_BIN = "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary(REDIS_BIN, "redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self, *, within: float = 10.0) -> None:
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.tail()}")
            if _answers_ping(self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server not ready within {within}s: {self.tail()}")

    def _spawn(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def tail(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """SIGKILL: gone at once, with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            if self.frozen:
                self.thaw()
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.frozen:
            self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
