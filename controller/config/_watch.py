"""Watches the config file: a saved change is picked up within two polls (default 0.25 s each).

Polling (inode, mtime and size, then a content hash) needs no extra dependency, works on every
filesystem including bind mounts and ConfigMaps (which are swapped by symlink), and costs a
stat() per poll. SIGHUP (wired by the CLI) triggers a check at once via
:meth:`ConfigWatcher.poke`.

An editor or ``echo > file`` rewrites a file in place: truncate, then write. A poll that lands in
between sees an empty or half-written file, and rejecting that would send a false "config
rejected" alert. So a change is acted on only once its stamp has held still from one poll to the
next, and only if the stamp did not move while the file was being read. A poke skips the first
wait (whoever sends SIGHUP has finished writing) but not the second. A file that does not parse
is read once more a poll later and rejected only if the same bytes fail again: a writer that
paused longer than a poll half way through its file gets that long to finish (after a poke the
file is taken as finished).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from controller._clock import Clock
from controller._errors import ConfigError
from controller.config._model import Config, parse_config_bytes

log = logging.getLogger(__name__)

#: (inode, mtime_ns, size): moves on an in-place write, a rename over the file or a symlink swap.
Stamp = tuple[int, int, int]


class ConfigWatcher:
    """Calls ``on_change(config)`` for a valid new file and ``on_error(error)`` for a bad one.

    A rejected file is reported once per distinct content; the last good config stays in force.
    A file still being written is neither applied nor reported until it holds still. A file that
    parses to the config in force (a comment edit, say) is not reloaded. ``running`` is the config
    in force when watching starts; given, the file is read once it holds still, so an edit saved
    since that config was loaded is applied (without it, the file as it is now is the baseline).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        on_change: Callable[[Config], None],
        on_error: Callable[[ConfigError], None],
        interval: float = 0.25,
        running: Config | None = None,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._on_change = on_change
        self._on_error = on_error
        self._interval = interval
        self._seen = self._read_stamp()  # the stamp at the previous poll
        self._running = running  # the config last in force, as far as the watcher knows
        if running is None:  # the file as it is now is the baseline
            self._handled: Stamp | None = self._seen  # the stamp whose content was last read
            data = self._read_bytes()
            self._digest = None if data is None else _digest(data)  # the content last acted on
        else:  # the file may have been saved since ``running`` was loaded: read it once settled
            self._seen = self._handled = None  # so the first poll only notes the stamp
            self._digest = None
        self._doubt: str | None = None  # digest of content that failed once, to read again
        self._forced = False
        self._poked = asyncio.Event()
        self._stopping = False

    def _read_stamp(self) -> Stamp | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _read_bytes(self) -> bytes | None:
        try:
            return self._path.read_bytes()
        except OSError:
            return None

    def poke(self) -> None:
        """Check now (SIGHUP), reading the content even if the stamp did not move."""
        self._forced = True
        self._poked.set()

    def check(self) -> bool:
        """One poll. Returns True when a settled file brought new content (applied or rejected)."""
        forced, self._forced = self._forced, False
        stamp = self._read_stamp()
        previous, self._seen = self._seen, stamp
        if stamp is None:  # missing, or mid-swap: the running config stays
            return False
        if not forced and (stamp == self._handled or stamp != previous):
            return False  # nothing new, or changed since the last poll: wait until it holds still
        return self._take(stamp, sure=forced)

    def _take(self, stamp: Stamp, *, sure: bool) -> bool:
        data = self._read_bytes()
        if data is None or self._read_stamp() != stamp:
            return False  # written to while we read it: the next polls settle it
        digest = _digest(data)
        if digest == self._digest:
            self._handled = stamp
            return False
        try:
            config = parse_config_bytes(data, source=str(self._path))  # the bytes hashed
        except ConfigError as err:
            if self._doubt != digest and not sure:  # maybe half-written: read it again
                self._doubt = digest
                return False
            self._handled, self._digest, self._doubt = stamp, digest, None
            log.error("config reload rejected, keeping the running config: %s", err)
            self._on_error(err)
            return True
        self._handled, self._digest, self._doubt = stamp, digest, None
        if config == self._running:  # comments, formatting, or the file it was loaded from
            return False
        log.info("config reloaded from %s", self._path)
        self._on_change(config)
        self._running = config
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


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
