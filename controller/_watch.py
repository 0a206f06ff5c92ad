"""Watches the config file: a saved change is picked up within one poll (default 0.25 s).

Polling (mtime, size and a content hash) needs no extra dependency, works on every filesystem
including bind mounts and ConfigMaps (which are swapped by symlink), and costs a stat() per poll.
SIGHUP (wired by the CLI) triggers the same check at once via :meth:`ConfigWatcher.poke`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from controller._clock import Clock
from controller._config import Config, load_config
from controller._errors import ConfigError

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Calls ``on_change(config)`` for a valid new file and ``on_error(error)`` for a bad one.

    A rejected file is reported once per distinct content; the last good config stays in force.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        on_change: Callable[[Config], None],
        on_error: Callable[[ConfigError], None],
        interval: float = 0.25,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._on_change = on_change
        self._on_error = on_error
        self._interval = interval
        self._stamp = self._read_stamp()
        self._digest = self._read_digest()
        self._poked = asyncio.Event()
        self._stopping = False

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            return None

    def poke(self) -> None:
        """Check now (SIGHUP)."""
        self._poked.set()
        self._stamp = None  # force a content check even if mtime did not move

    def check(self) -> bool:
        """One poll. Returns True when the file's content changed."""
        stamp = self._read_stamp()
        if stamp is not None and stamp == self._stamp:
            return False
        self._stamp = stamp
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        try:
            config = load_config(self._path)
        except ConfigError as err:
            log.error("config reload rejected, keeping the running config: %s", err)
            self._on_error(err)
            return True
        log.info("config reloaded from %s", self._path)
        self._on_change(config)
        return True

    async def run(self) -> None:
        while not self._stopping:
            try:
                self.check()
            except Exception:  # a watcher bug must not end hot reload for good
                log.exception("config watcher: check of %s failed", self._path)
            sleep = asyncio.ensure_future(self._clock.sleep(self._interval))
            poke = asyncio.ensure_future(self._poked.wait())
            await asyncio.wait({sleep, poke}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sleep, poke):
                task.cancel()
            self._poked.clear()

    def stop(self) -> None:
        self._stopping = True
        self._poked.set()
