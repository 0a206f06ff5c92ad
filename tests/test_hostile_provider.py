"""A hostile provider cannot exhaust the gateway (issue 16, rows 1-6), over real loopback sockets.

Each test replays one attack from the hardening issue against the real provider client and
router, bounded in bytes (the servers in ``tests/hostile_support.py`` stop at 256 MiB) and time,
and reads this process's resident memory from /proc: the answer is cut at the documented limit,
the attempt is a provider fault (``error.type=response_too_large``) that fails over, and what it
took is given back. Row 6 (a 400 quoting the gateway's key) and the malformed client header are
in ``tests/test_redaction.py``; ``python -m tests.bench.hostile`` measures the same attacks.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from controller._errors import ResponseTooLarge
from controller.config import ProviderConfig
from controller.config._model import ProviderKind
from controller.events import AttemptReason, Outcome
from controller.model import Message, Request, StreamChunk
from controller.providers import HttpProvider, Timeouts
from controller.providers._http import BODIES_IN_FLIGHT, HttpClient
from controller.providers._http_body import (
    _TRIM,
    INFLATE_EVERY,
    INFLATED,
    INFLATED_IN_FLIGHT,
    INFLATED_PER_TURN,
    _Trim,
)
from controller.providers.base import MAX_RESPONSE_BYTES
from controller.providers.fake import FakeProvider
from controller.routing.plan import Target, TierPlan
from controller.routing.router import Router
from controller.runtime import build_provider
from controller.wire._sse import MAX_EVENT_BYTES, SSEParser
from tests.conftest import Recorder, adapter, drain
from tests.hostile_support import (
    OPENAI_CHUNK,
    SSE_HEAD,
    MiB,
    answering_gzip,
    dense_gzip,
    endless,
    endless_body,
    gzip_bomb,
    hostile,
    measured,
)
from tests.http_client_support import RawServer, answering, post, served

LIMITS = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=10.0)
HELLO = Request(messages=(Message(role="user", content="hello"),))
STREAM = Request(messages=HELLO.messages, stream=True)
# What a test may add to resident memory beyond the limit it exercises: the interpreter's own
# churn, the loopback server's buffers, the answer's pieces in flight.
SLACK = 48.0


@pytest.fixture(autouse=True)
def _trim_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each refusal's memory given back on the next turn, as when none came just before it
    (in a server, later ones within ``_TRIM.every`` wait for the trim due next: tested with a
    fake clock below)."""
    monkeypatch.setattr(_TRIM, "every", 0.0)


def _router(primary: HttpProvider, backup: HttpProvider, recorder: Recorder) -> Router:
    targets = (Target(provider=primary.name, model="m"), Target(provider=backup.name, model="m"))
    return Router(
        tiers={"t": TierPlan(name="t", targets=targets)},
        providers={primary.name: primary, backup.name: backup},
        listeners=[recorder],
        default_timeouts=LIMITS,
        rng=random.Random(1),
    )


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "close-delimited"])
async def test_an_endless_body_is_cut_at_the_cap_and_fails_over(declared: bool) -> None:
    """Row 1: a 200 whose body never ends. Before: 3.6 GB in 30 s, held after."""
    recorder = Recorder()
    async with (
        asyncio.timeout(20),
        RawServer(endless_body(declared=declared)) as server,
        FakeProvider(name="backup") as fake,
    ):
        primary, backup = hostile(server), adapter(fake, "openai", "backup")
        router = _router(primary, backup, recorder)
        with measured() as memory:
            response = await router.complete(HELLO, tier="t")
            await router.aclose()
    assert response.provider == "backup"
    first = recorder.attempts[0]
    assert (first.outcome, first.error_type) == (Outcome.FAULT, "response_too_large")
    cap = MAX_RESPONSE_BYTES / MiB
    assert memory.growth < 2 * cap + SLACK, memory  # the pieces, then nothing joined
    assert memory.after - memory.before < SLACK, memory  # given back at once


async def test_endless_bodies_at_once_share_their_providers_budget_only() -> None:
    """Row 1, many at once: each answer stops at 32 MiB, and those of one provider together
    at 256 MiB (12 of them would hold 384 MiB); another provider's answers are not touched."""
    async with (
        asyncio.timeout(30),
        RawServer(endless_body(declared=True)) as server,
        FakeProvider(name="other") as fake,
    ):
        provider, other = hostile(server), adapter(fake, "openai", "other")
        with measured() as memory:
            calls = [provider.complete(HELLO, "m", LIMITS) for _ in range(12)]
            outcomes = await asyncio.gather(
                *calls, other.complete(HELLO, "m", LIMITS), return_exceptions=True
            )
        await provider.close()
        await other.close()
    *refused, served = outcomes
    assert all(isinstance(o, ResponseTooLarge) for o in refused), refused
    assert any("being read from the provider are over 256 MiB" in str(o) for o in refused)
    assert not isinstance(served, BaseException), served
    assert memory.growth < BODIES_IN_FLIGHT / MiB + MAX_RESPONSE_BYTES / MiB + SLACK, memory
    assert memory.after - memory.before < SLACK, memory


async def test_the_body_limit_is_the_configured_one() -> None:
    config = ProviderConfig(kind=ProviderKind.OPENAI, max_response_bytes=MiB)
    async with asyncio.timeout(20), RawServer(endless_body(declared=False)) as server:
        provider = build_provider("small", config, {}, base_url=server.url + "/v1")
        with pytest.raises(ResponseTooLarge, match=r"answer is over 1 MiB"):
            await provider.complete(HELLO, "m", LIMITS)
        await provider.close()


@pytest.mark.parametrize(
    "line", [b"data: x\n", b"data: " + b"y" * 65536 + b"\n"], ids=["many-lines", "long-lines"]
)
async def test_an_event_without_end_is_refused_after_the_first_chunk(line: bytes) -> None:
    """Row 2: one valid chunk, then data lines and never the blank line that ends an event.
    Before: 6.9 GB in 60 s."""
    async with (
        asyncio.timeout(20),
        RawServer(endless(SSE_HEAD + OPENAI_CHUNK, line)) as server,
    ):
        provider = hostile(server)
        chunks: list[StreamChunk] = []
        with measured() as memory, pytest.raises(ResponseTooLarge, match="stream event over"):
            await drain(provider.stream(STREAM, "m", LIMITS), chunks)
        await provider.close()
    assert [c.text for c in chunks] == ["hi"]
    assert memory.growth < 3 * MAX_EVENT_BYTES / MiB + SLACK, memory


async def test_probes_of_a_gzip_bomb_fail_and_give_the_memory_back() -> None:
    """Row 3: a tripped provider answering every probe with a gzip bomb (256 MiB inflated).
    Before: 718 MB to 3.0 GB in 50 s of probes, with no client traffic at all."""
    recorder = Recorder()
    async with (
        asyncio.timeout(30),
        RawServer(answering_gzip(gzip_bomb())) as server,
        FakeProvider(name="backup") as fake,
    ):
        bomb, backup = hostile(server), adapter(fake, "openai", "backup")
        router = _router(bomb, backup, recorder)
        with measured() as memory:
            results = [await router.probe(bomb.name, "m") for _ in range(5)]
        await router.aclose()
    assert results == [False] * 5
    assert {(e.reason, e.error_type) for e in recorder.attempts} == {
        (AttemptReason.PROBE, "response_too_large")
    }
    assert memory.growth < 2 * MAX_RESPONSE_BYTES / MiB + SLACK, memory
    assert memory.after - memory.before < SLACK, memory
    assert INFLATED.used == 0


async def test_concurrent_gzip_bombs_share_one_budget() -> None:
    """Row 4: gzip bombs on 8 concurrent requests. Before: 64 MiB each and nothing capped the
    sum (1.04 GB, held). Dense ones (~30x, not refused by their ratio) meet the shared budget."""
    body = dense_gzip(64 * MiB)
    async with asyncio.timeout(30), RawServer(answering_gzip(body)) as server:
        provider = hostile(server)
        with measured() as memory:
            calls = [provider.complete(HELLO, "m", LIMITS) for _ in range(8)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await provider.close()
    assert all(isinstance(o, ResponseTooLarge) for o in outcomes), outcomes
    # 8 answers of 32 MiB each would be 256 MiB: the shared budget stopped them at 128 MiB
    assert any("together" in str(o) for o in outcomes), outcomes
    assert memory.growth < 2 * INFLATED_IN_FLIGHT / MiB + SLACK, memory
    assert INFLATED.used == 0


def test_an_endless_line_is_scanned_once() -> None:
    """Row 5: a line that never ends, arriving 4 KiB at a time. Before: each read copied and
    searched the whole line so far (938 KiB took 415 ms; the loop slowed 100x for all)."""
    parser = SSEParser()
    parser.feed(OPENAI_CHUNK)
    pieces = [b"z" * 4096] * (MAX_EVENT_BYTES // 4096 + 1)
    started = time.process_time()
    with pytest.raises(ResponseTooLarge, match="stream event over"):
        _feed_all(parser, pieces)
    spent = time.process_time() - started
    # linear: 8 MiB in 2,049 reads is a few ms; rescanning would copy ~8 GiB (seconds)
    assert spent < 0.5, spent


async def test_an_endless_line_in_a_stream_is_a_fault_and_others_are_served() -> None:
    """Row 5 over the wire: the stream fails at the event limit, while other requests on the
    same loop keep being answered quickly."""
    async with (
        asyncio.timeout(20),
        RawServer(endless(SSE_HEAD + OPENAI_CHUNK + b"data: ", b"z" * 4096)) as server,
        FakeProvider(name="other") as fake,
    ):
        provider, other = hostile(server), adapter(fake, "openai", "other")
        attack = asyncio.ensure_future(_drain(provider))
        waits: list[float] = []
        while not attack.done() and len(waits) < 200:
            started = time.monotonic()
            await other.complete(HELLO, "m", LIMITS)
            waits.append(time.monotonic() - started)
        with pytest.raises(ResponseTooLarge):
            await attack
        await provider.close()
        await other.close()
    assert sorted(waits)[len(waits) // 2] < 0.1, waits  # the median; before: 524 ms


async def _drain(provider: HttpProvider) -> None:
    await drain(provider.stream(STREAM, "m", LIMITS), [])


def _feed_all(parser: SSEParser, pieces: list[bytes]) -> None:
    for piece in pieces:
        parser.feed(piece)


async def test_memory_is_given_back_at_most_once_per_interval() -> None:
    """malloc_trim holds the loop ~1 ms per 32 MiB it returns: a provider refused on every
    call gets one trim per ``every`` seconds, not one per refusal; none is lost."""
    now = [100.0]
    trims: list[float] = []

    def malloc_trim(pad: int) -> int:
        trims.append(now[0])
        return 0

    trim = _Trim(malloc_trim, every=0.5, clock=lambda: now[0])
    trim.soon()
    trim.soon()  # the same turn: one trim
    await asyncio.sleep(0)
    assert trims == [100.0]
    now[0] = 100.2
    trim.soon()  # 0.2 s after the last: due 0.3 s later, not now
    trim.soon()
    await asyncio.sleep(0)
    assert trims == [100.0]
    due = trim._due
    assert isinstance(due, asyncio.TimerHandle)
    assert due.when() - asyncio.get_running_loop().time() == pytest.approx(0.3, abs=0.05)
    due.cancel()
    trim._run()  # what the loop does at that time, without waiting for it
    assert len(trims) == 2
    now[0] = 101.0
    trim.soon()
    await asyncio.sleep(0)
    assert len(trims) == 3


class _Turns:
    """Counts the event loop's turns (a task that yields once per turn), bounded."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        for _ in range(1_000_000):
            self.count += 1
            await asyncio.sleep(0)

    def __enter__(self) -> _Turns:
        self._task = asyncio.ensure_future(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_flood_of_stream_lines_is_handed_out_a_bounded_piece_per_turn() -> None:
    """Row 5's neighbour: what a stream's reader parses between two turns of the loop is at
    most 4 KiB and, past 1 KiB, 64 lines (one-byte SSE lines cost ~0.7 us each to parse), so
    a provider that floods lines holds the other requests for ~50 us at a time, not for all
    it queued (10,000 lines: 7.5 ms)."""
    flood = SSE_HEAD + b"data: x\n" * 20_000
    async with asyncio.timeout(20), served(answering(flood, cut=True)) as (_, client):
        resp = await post(client)
        pieces: list[bytes] = []
        try:
            with _Turns() as turns:
                while piece := await resp.readany():
                    pieces.append(piece)
        finally:
            resp.release()
    assert b"".join(pieces) == flood[len(SSE_HEAD) :]
    assert max(len(p) for p in pieces) <= 4096
    # 64 lines past 1 KiB; 1 KiB of these 8-byte lines is 128 (4 KiB of them would be 512)
    assert max(p.count(b"\n") for p in pieces) <= 128
    assert turns.count >= len(pieces) - 1  # the loop turned between every two pieces


async def test_compressed_answers_inflate_a_bounded_amount_every_few_turns_together() -> None:
    """Row 4: eight bombs read at once each inflated a piece in every turn (eight pieces'
    work between two turns for everyone else); then one provider's inflated 32 KiB a turn
    together, still a piece in every turn a request needs (its loop CPU at p99 about 3x). Now
    all compressed answers, of every provider, inflate at most INFLATED_PER_TURN (and one piece
    over) per INFLATE_EVERY turns: here eight answers from two providers at once."""
    body = dense_gzip(2 * MiB)
    async with (
        asyncio.timeout(60),
        served(answering_gzip(body, 4096)) as (_, one),
        served(answering_gzip(body, 4096)) as (_, two),
    ):
        per_turn: dict[int, int] = {}
        with _Turns() as turns:

            async def read_one(client: HttpClient) -> None:
                resp = await post(client)
                try:
                    while piece := await resp.readany(256 * 1024):
                        per_turn[turns.count] = per_turn.get(turns.count, 0) + len(piece)
                finally:
                    resp.release()

            await asyncio.gather(*(read_one(c) for c in (one, two) * 4))
    assert sum(per_turn.values()) == 8 * 2 * MiB
    windows = [sum(per_turn.get(turn + i, 0) for i in range(INFLATE_EVERY)) for turn in per_turn]
    assert max(windows) <= INFLATED_PER_TURN + 16 * 1024, max(windows)
