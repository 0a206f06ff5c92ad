"""The rungs below a tier's own providers: the last good answer to the same request (an
exact-match cache) and a static answer, as whole answers or streams.

The cache is not an optimisation: it is read only when every provider a request could go to
has failed (``tiers.<name>.degrade.cache``), and written on the way out of every answer a
cache-enabled tier serves. It lives in memory (bounded by entries and bytes, entries expire)
and is copied to SQLite by a thread of its own, so a restart keeps it and the request path never
waits on the disk; a disk that fails is logged once and the cache goes on in memory. In fleet
mode the copy goes to the fleet's Redis instead (:mod:`._answers_redis`, the same thread
writes it), and a miss in memory asks Redis, on the cache rung only, with a short timeout: an
answer kept by one replica is served by all. Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import _json
from controller._clock import Clock, SystemClock
from controller.model import (
    FinishReason,
    Message,
    Request,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from controller.routing._answers_redis import RedisAnswers
    from controller.routing._records import Route
    from controller.routing.router import Router

__all__ = ["CACHE", "STATIC", "STEP_DOWN", "AnswerCache", "CannedStream", "static_answer"]

log = logging.getLogger(__name__)

# An answer to keep: its tier, its request, whose it is, and what reads it (off the loop).
_Keep = tuple[str, Request, str, "Callable[[], Response | None]"]
# The rungs, as x-failover-degraded and the route's ``degraded`` say them.
STEP_DOWN, CACHE, STATIC = "tier", "cache", "static"
# Members of a client's body that do not change the answer it asks for.
_NOT_THE_QUESTION = frozenset({"stream", "stream_options"})
_MAX_PENDING = 1024  # answers waiting for the SQLite thread; more are kept in memory only


class AnswerCache:
    """Recent good answers by request, for the cache rung. ``path`` None: memory only, or
    memory and the fleet's Redis (``shared``)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_entries: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 86400.0,
        clock: Clock | None = None,
        shared: RedisAnswers | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._shared = shared
        self._max_entries, self._max_bytes, self._ttl = max_entries, max_bytes, ttl
        self._entries: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self._bytes = 0
        self.dropped = 0  # answers the SQLite thread could not take (kept in memory)
        self.skipped = 0  # answers the keeper thread could not take (not kept)
        self._pending: queue.Queue[tuple[str, float, bytes] | None] = queue.Queue(_MAX_PENDING)
        # Answers to keep, read, hashed and stored by a thread of their own (see keep()); the
        # lock covers the memory side and an answer being kept.
        self._lock = threading.Lock()
        self._inbox: queue.Queue[_Keep | None] = queue.Queue(_MAX_PENDING)
        self._keeper = threading.Thread(
            target=self._keep_loop, name="failover-answer-keeper", daemon=True
        )
        self._keeper.start()
        self._path = Path(path) if path is not None else None
        self._writer: threading.Thread | None = None
        self._failed = False
        if self._path is not None:
            self._load(self._path)
        if self._path is not None and not self._failed:
            self._writer = threading.Thread(
                target=self._write_loop, name="failover-answer-cache", daemon=True
            )
            self._writer.start()
        elif shared is not None:
            self._writer = threading.Thread(
                target=self._share_loop, name="failover-answer-share", daemon=True
            )
            self._writer.start()

    @staticmethod
    def key(tier: str, request: Request, scope: str = "") -> str:
        """The request as a cache key: the client's body as it came (less what does not change
        the answer, such as ``stream``), else the decoded request; and ``scope``, whose answer
        it is (the client's key: only hashed, never kept)."""
        source = request.source
        if source is not None:
            body = {k: v for k, v in source.body.items() if k not in _NOT_THE_QUESTION}
            text = source.format.encode() + b"\0" + _json.dumps_sorted(body)
        else:
            fields = asdict(replace(request, stream=False, source=None))
            text = b"decoded\0" + _json.dumps_sorted(fields)
        if scope:
            text = scope.encode("utf-8", "surrogatepass") + b"\0" + text
        return hashlib.sha256(tier.encode() + b"\0" + text).hexdigest()

    def keep(
        self, tier: str, request: Request, scope: str, produce: Callable[[], Response | None]
    ) -> None:
        """Keep the answer ``produce`` makes (None: nothing to keep) for ``request`` on
        ``tier``, off the request path: the keeper thread reads the answer, computes the key
        (a big body's hash releases the GIL: the other core does it) and stores it; a
        :meth:`get` first keeps whatever is still waiting, so nothing served before is missed."""
        try:
            self._inbox.put_nowait((tier, request, scope, produce))
        except queue.Full:
            self.skipped += 1

    def get(self, key: str) -> Response | None:
        with self._lock:
            self._catch_up()
            found = self._entries.get(key)
            if found is None:
                return None
            stored_at, blob = found
            if self._clock.wall() - stored_at > self._ttl:
                self._drop(key)
                return None
        return _decoded(blob)

    async def lookup(self, key: str) -> Response | None:
        """The cache rung's read: this process's memory, else the fleet's Redis (bounded in
        time; Redis away: None, the rung is skipped)."""
        found = self.get(key)
        if found is not None or self._shared is None:
            return found
        blob = await self._shared.get(key)
        return None if blob is None else _decoded(blob)

    def put(self, key: str, response: Response) -> None:
        with self._lock:
            self._put(key, response)

    def _put(self, key: str, response: Response) -> None:
        blob = _encoded(response)
        if len(blob) > self._max_bytes:
            return
        now = self._clock.wall()
        self._store(key, now, blob)
        if self._writer is not None and not self._failed:
            try:
                self._pending.put_nowait((key, now, blob))
            except queue.Full:
                self.dropped += 1

    def __len__(self) -> int:
        with self._lock:
            self._catch_up()
            return len(self._entries)

    @property
    def max_bytes(self) -> int:
        """The most bytes of answers kept: a bigger answer is not kept at all."""
        return self._max_bytes

    def close(self) -> None:
        """Let the keeper keep, and the SQLite thread write, what they have, and stop."""
        with contextlib.suppress(queue.Full):
            self._inbox.put(None, timeout=5.0)
        self._keeper.join(timeout=5.0)
        writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():  # it stops by itself when SQLite fails
            with contextlib.suppress(queue.Full):
                self._pending.put(None, timeout=5.0)
            writer.join(timeout=5.0)
        if self._shared is not None:
            self._shared.close()

    # ------------------------------------------------------------------------- keeping
    def _keep_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            with self._lock:
                self._keep_one(item)

    def _catch_up(self) -> None:
        """Keep, in the caller's thread, what the keeper has not taken yet (lock held)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is None:  # closing: the keeper's signal goes back for it
                with contextlib.suppress(queue.Full):
                    self._inbox.put_nowait(None)
                return
            self._keep_one(item)

    def _keep_one(self, item: _Keep) -> None:
        tier, request, scope, produce = item
        try:
            response = produce()
        except Exception:  # a bug in reading an answer must not stop the keeper
            log.exception("answer cache: an answer could not be read; not kept")
            return
        if response is not None:
            self._put(self.key(tier, request, scope), response)

    # ------------------------------------------------------------------------- memory
    def _store(self, key: str, at: float, blob: bytes) -> None:
        self._drop(key)
        self._entries[key] = (at, blob)
        self._bytes += len(blob)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])

    # ------------------------------------------------------------------------- SQLite
    def _load(self, path: Path) -> None:
        try:
            with _connect(path) as db:
                rows = db.execute(
                    "SELECT key, stored_at, answer FROM answers WHERE stored_at > ? "
                    "ORDER BY stored_at DESC LIMIT ?",
                    (self._clock.wall() - self._ttl, self._max_entries),
                ).fetchall()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        for key, stored_at, blob in reversed(rows):
            self._store(key, stored_at, bytes(blob))

    def _write_loop(self) -> None:
        assert self._path is not None
        try:
            db = _connect(self._path)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        with db:
            while True:
                item = self._pending.get()
                if item is None:
                    return
                try:
                    db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", item)
                    db.execute(
                        "DELETE FROM answers WHERE key NOT IN (SELECT key FROM answers "
                        "ORDER BY stored_at DESC LIMIT ?)",
                        (self._max_entries,),
                    )
                    db.commit()
                except sqlite3.Error as exc:
                    self._fail(exc)
                    return

    def _share_loop(self) -> None:
        """The fleet's copy: each kept answer to Redis (a failure is the store's to log)."""
        assert self._shared is not None
        bounds = (self._max_entries, self._max_bytes)
        while True:
            item = self._pending.get()
            if item is None:
                return
            key, at, blob = item
            self._shared.put(key, at, blob, ttl=self._ttl, bounds=bounds)

    def _fail(self, exc: sqlite3.Error | OSError) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "answer cache %s: %s; cached answers are kept in memory only", self._path, exc
            )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # made for its owner alone (the answers it holds may say anything)
    db = sqlite3.connect(path, timeout=2.0, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS answers "
        "(key TEXT PRIMARY KEY, stored_at REAL NOT NULL, answer BLOB NOT NULL)"
    )
    return db


def _encoded(response: Response) -> bytes:
    message = response.message
    return _json.dumps(
        {
            "model": response.model,
            "provider": response.provider,
            "text": message.content,
            "calls": [[c.id, c.name, c.arguments] for c in message.tool_calls],
            "finish": response.finish_reason.value,
            "usage": [response.usage.input_tokens, response.usage.output_tokens],
        }
    )


def _decoded(blob: bytes) -> Response | None:
    try:
        data: dict[str, Any] = _json.loads(blob)
        calls = tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in data["calls"])
        return Response(
            id="",
            model=data["model"],
            message=Message(role="assistant", content=data["text"], tool_calls=calls),
            finish_reason=FinishReason(data["finish"]),
            usage=Usage(*data["usage"]),
            provider=data["provider"],
        )
    except (ValueError, KeyError, TypeError):
        return None  # written by another version: as if not cached


def static_answer(text: str, model: str) -> Response:
    """The tier's static answer, as if a model had said it."""
    return Response(
        id="",
        model=model,
        message=Message(role="assistant", content=text),
        finish_reason=FinishReason.STOP,
        usage=Usage(),
        provider=STATIC,
    )


def chunks_of(response: Response) -> Iterator[StreamChunk]:
    """A whole answer as the chunks of a stream."""
    message = response.message
    if message.content:
        yield StreamChunk(text=message.content, model=response.model)
    for index, call in enumerate(message.tool_calls):
        yield StreamChunk(
            tool_call=ToolCallDelta(
                index=index, id=call.id, name=call.name, arguments=call.arguments
            )
        )
    yield StreamChunk(finish_reason=response.finish_reason, usage=response.usage)


class CannedStream:
    """A degraded answer (cached or static) served as a stream: what the gateway reads of a
    :class:`~controller.routing.router.RoutedStream`, from a whole answer."""

    relayed = False
    headers: tuple[tuple[str, str], ...] = ()
    continuable = False
    continued = 0

    def __init__(self, router: Router, route: Route, response: Response, rung: str) -> None:
        self.provider = response.provider
        self.model = response.model
        self.request_id = route.request_id
        self.degraded = rung
        self._router, self._route, self._response = router, route, response
        self._done = False

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamChunk]:
        try:
            for chunk in chunks_of(self._response):
                yield chunk
        except BaseException:
            await self.aclose()
            raise
        self._end(cancelled=False)

    async def aclose(self) -> None:
        self._end(cancelled=True)

    async def discard(self) -> None:
        self._end(cancelled=True)

    def _end(self, *, cancelled: bool) -> None:
        if not self._done:
            self._done = True
            self._router._finish(self._route, self.provider, None, cancelled=cancelled)
