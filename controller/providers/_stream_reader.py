"""A provider stream's reading: the machinery behind :meth:`HttpProvider.stream
<controller.providers.base.HttpProvider.stream>`, on the path of every relayed chunk.

:class:`_Reader` bounds each read of the answer's body (:class:`_StreamLimits`, one timer per
stream), parses the bytes into events and decodes them into chunks; a same-format stream's
events go on with them as they came (:class:`_Relayed`; runs of text events as one chunk:
:class:`_TextRun`). Unparseable events are skipped and counted (:class:`_BadEvents`), the
provider's key is masked in what a client reads (:func:`_masked`; written with JSON escapes
too: the reader takes no quick read of an event that may hold it so, see
:func:`~controller.wire._relay.escape_hints`), and transport failures are
translated into the error tree (:func:`_transport_error`, the table in
:mod:`controller.providers.base`). The names are imported from here directly: nothing on a
chunk's way goes through a module attribute or an added call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from controller._errors import (
    ConnectionFailed,
    MalformedEvent,
    MalformedResponse,
    PoolFull,
    ProviderError,
    ProviderTimeout,
    ResponseTooLarge,
    StreamTooLong,
)
from controller._frozen import quick_init
from controller._redact import MASK
from controller.model import Message, StreamChunk, ToolCall, ToolCallDelta, relayed_text
from controller.providers._http import (
    BadResponse,
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    HttpResponse,
    PoolExhausted,
    ResponseCut,
    TooLarge,
    TransportError,
)
from controller.wire import SSEEvent
from controller.wire._relay import Relay, answer_headers, escape_hints, hinted, unescaped_masked
from controller.wire._shape import TextShape
from controller.wire._sse import SSEParser

if TYPE_CHECKING:
    from controller.providers.base import HttpProvider, Timeouts

# The name this machinery has always logged under (in base.py before it had a module of its
# own): a logging configuration that names it keeps working.
log = logging.getLogger("controller.providers.base")
MAX_BAD_EVENTS = 16  # unparseable events a stream may skip before most of it being bad fails it
# The most a same-format stream may send before its first content (message_start, pings, block
# openings) while it is held back so that a failure there can still fail over.
_MAX_HELD = 1024 * 1024


@quick_init
@dataclass(frozen=True, slots=True)
class _StreamLimits:
    """When a stream's waits end, on the monotonic clock: its first chunk by ``first_by``
    (``first_token`` or ``total``, the sooner, named by ``first_phase``: pings do not restart
    it); after that no gap longer than ``idle`` and nothing past ``until`` (``stream_total``)."""

    timeouts: Timeouts
    first_by: float
    first_phase: str
    until: float

    @classmethod
    def starting(cls, start: float, timeouts: Timeouts) -> _StreamLimits:
        first, phase = timeouts.first_token, "first_token"
        if timeouts.total < first:
            first, phase = timeouts.total, "total"
        return cls(timeouts, start + first, phase, start + timeouts.stream_total)

    def wait(self, now: float, *, started: bool, finished: bool) -> tuple[float, str]:
        """How long the next read may wait, and the phase that limit belongs to."""
        if finished:
            return min(self.timeouts.terminator_grace, self.until - now), "grace"
        if not started:
            return self.first_by - now, self.first_phase
        left = self.until - now
        if left < self.timeouts.idle:
            return left, "stream_total"
        return self.timeouts.idle, "idle"


class _ReadExpired(TransportError):
    """A stream read that outlived its wait (set on the answer by :class:`_Reader`'s timer)."""


class _Reader:
    """One stream's reading: each read bounded by :meth:`_StreamLimits.wait`, the bytes
    parsed into events, decoded into chunks (and, relayed, given the events' bytes).

    The wait of each read is kept by one timer per stream, not a timeout per read (building
    and cancelling one cost ~7% of a relayed chunk): a read notes when it must end; the timer,
    when due, re-arms itself at that time if a later read has moved it on, and ends the read
    still waiting past it by failing the answer's read (:class:`_ReadExpired`)."""

    __slots__ = (
        "_as_came",
        "_bad",
        "_decoder",
        "_due",
        "_ends",
        "_failed",
        "_first",
        "_frame",
        "_hint",
        "_hints",
        "_idle",
        "_key",
        "_limits",
        "_line",
        "_loop",
        "_model",
        "_own",
        "_parser",
        "_provider",
        "_quick",
        "_quotes",
        "_reading",
        "_relayed",
        "_resp",
        "_secret",
        "_shape",
        "_shape_keys",
        "_shape_misses",
        "_timer",
        "done",
        "finished",
        "started",
    )

    def __init__(
        self,
        provider: HttpProvider,
        resp: HttpResponse,
        model: str,
        limits: _StreamLimits,
        relay: Relay | None,
    ) -> None:
        self._provider, self._resp, self._model, self._limits = provider, resp, model, limits
        self._idle = limits.timeouts.idle  # a flowing stream's usual wait (see read)
        self._parser = SSEParser(max_event_bytes=provider._max_event)
        self._decoder = provider._codec.stream_decoder(model)
        self._relayed = _Relayed(relay) if relay is not None else None
        # The decoder's quick read of a text-only event (see StreamDecoder), where relayed.
        self._quick = getattr(self._decoder, "quick", None) if relay is not None else None
        self._frame = relay.event if relay is not None else None
        # ... and of a read that is one whole event of one data line (or a name and one data
        # line), from its bytes: no event built, the read relayed as it came when the relay
        # would (Relay.plain).
        self._line = getattr(self._decoder, "quick_data", None) if relay is not None else None
        # ... when the relay sends such an event as it came (Relay.plain, inline): no model to
        # rename; and, unless _key is empty, the event does not quote the provider's key.
        self._as_came = relay is not None and relay.echo_model is None
        # ... and the shape of its text events, learned from one such read, to take the next
        # ones from their bytes (TextShape); forgotten whenever an event is read otherwise.
        keys = getattr(self._decoder, "shape_keys", None) if self._line is not None else None
        self._shape_keys: tuple[bytes, bytes] | None = keys if self._as_came else None
        self._shape: TextShape | None = None
        self._shape_misses = 0  # text reads in a row that no shape fitted
        self._key = relay.key if relay is not None else b""
        # ... nor written with escapes (a decoder turns them into the key): an event that holds
        # _hint (the one escape_hints of a usual key; else any escape) is read quick only when
        # its data decodes to no key (_quotes); the shape's events hold no escape at all.
        hints = relay.hints if relay is not None else ()
        self._hint = hints[0] if len(hints) == 1 else b"\\"
        self._quotes = relay.quotes if relay is not None else _quotes_nothing
        # A stream decoded for a client of another format: the provider's key masked in its
        # chunks all the same (a relayed one's are masked as the relay masks the bytes).
        self._secret = relay.secret if relay is not None else provider._secret
        self._own = provider._secret_bytes if relay is None else b""
        self._hints = escape_hints(provider._secret) if self._own and provider._secret else ()
        self._first = relay is not None  # its first chunk carries the answer's headers
        self._bad = _BadEvents(provider, model)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._due = self._ends = 0.0  # when the timer fires; when the current read must end
        self._reading = False
        self._failed: ProviderError | None = None  # raised by the next read
        self.started = self.finished = self.done = False

    async def read(self) -> bytes | None:
        """The next bytes of the body; b"" at its end; None when a finished stream went quiet
        (or reached ``stream_total`` while waiting for its terminator)."""
        if self._failed is not None:
            raise self._failed
        now = self._loop.time()  # the monotonic clock (uvloop's, to the millisecond)
        ends = now + self._idle
        if not self.started or self.finished or ends > self._limits.until:
            wait = self._limits.wait(now, started=self.started, finished=self.finished)[0]
            ends = now + max(0.0, wait)
        self._ends, self._reading = ends, True
        if self._timer is None or self._due > ends:
            self._arm(ends)
        try:
            return await self._resp.readany()
        except _ReadExpired:
            if self.finished:
                return None
            phase = self._limits.wait(now, started=self.started, finished=False)[1]
            error = _read_timeout(phase, self._limits.timeouts)
            raise self._provider._tag(error, self._model) from None
        except TransportError as exc:
            if self.finished:
                return None
            raise self._provider._tag(_transport_error(exc), self._model) from None
        finally:
            self._reading = False

    def _arm(self, ends: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due = ends
        self._timer = self._loop.call_at(ends, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._reading:
            return  # the next read arms it again
        if self._loop.time() < self._ends:  # reads since it was set moved the end on
            self._due = self._ends
            self._timer = self._loop.call_at(self._ends, self._fire)
            return
        self._resp._fail(_ReadExpired("the read's wait ended"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _learn(self, data: bytes, text: str) -> None:
        """Take the shape of ``data``, read as ``text``; after ``_SHAPE_TRIES`` reads in a
        row that no shape fitted (a provider whose events vary otherwise), stop trying for
        this stream."""
        self._shape_misses += 1
        if self._shape_misses > _SHAPE_TRIES:
            self._shape_keys, self._shape = None, None
            return
        key, vary = self._shape_keys  # type: ignore[misc]  # (set: the caller checked)
        limit = self._provider._max_event  # the parser's bound on an event
        self._shape = TextShape.learn(data, text, key, vary, limit=limit)

    def _learn_from_run(self, data: bytes, last: SSEEvent, run: _TextRun) -> None:
        """After a read of text events only, each read quick (a relay behind reads several at
        once, and may never read one alone until it has caught up): the shape of the last, as
        a read of that event alone would have taught it. The decoder's state is what that read
        leaves, and the parser holds nothing; not when the relay changed the event's bytes."""
        if (
            run.raws[-1] is last.raw
            and self._parser.empty
            and not (self._key and data.find(self._key) >= 0)
        ):
            self._learn(last.raw, run.texts[-1])

    def chunks(self, data: bytes | None) -> list[StreamChunk]:
        """What ``data`` (a read's bytes) decodes to; sets :attr:`done` at the stream's end."""
        relayed = self._relayed
        if not data and (self.finished or data is None):  # the end, or no terminator in time
            self.done = True
            return [relayed.ending()] if relayed is not None else []
        if not data:  # end of body
            raise self._provider._tag(
                MalformedResponse("stream ended before the answer was complete"), self._model
            )
        quick, frame = self._quick, self._frame  # both set on a relayed stream only
        held = relayed.pending if relayed is not None else _NO_EVENTS
        line = self._line
        if line is not None and not held:  # a stream's usual read: one text event, whole
            shape = self._shape
            if shape is not None:  # shaped as the last one (or a run of such events): its
                text = shape.text(data)  # text without a JSON parse (the key: find, not
                if text is not None and not (self._key and data.find(self._key) >= 0):
                    self._shape_misses = 0  # ``in``, see _anthropic_server)
                    self._bad.good += shape.events
                    return [relayed_text(text, data)]  # (started; not the first chunk)
            whole = self._parser.whole(data)
            if (
                whole is not None
                and self._as_came
                and not (
                    self._key
                    and (
                        data.find(self._key) >= 0
                        or (data.find(self._hint) >= 0 and self._quotes(data, whole[1]))
                    )
                )
            ):
                text = line(*whole)
                if text:
                    self._bad.good += 1
                    self.started = True
                    if self._shape_keys is not None:
                        self._learn(data, text)
                    if self._first:
                        self._first = False
                        headers = answer_headers(self._resp.headers)
                        return [StreamChunk(text=text, raw=data, headers=headers)]
                    return [relayed_text(text, data)]
        self._shape = None  # the parser or the decoder may change: a shape holds no longer
        out: list[StreamChunk] = []
        run = _TextRun()  # the read's text events one after another: one chunk, one write
        try:
            events = self._parser.feed(data)
            for event in events:
                if quick is not None and frame is not None and not held:
                    text = quick(event)  # most events: a piece of text, read in one step
                    if text:
                        self._bad.good += 1
                        self.started = True
                        raw = frame(event, _NO_CHUNKS)
                        if raw is not event.raw and self._secret and self._secret in text:
                            text = text.replace(self._secret, MASK)  # as the relay masked it
                        run.add(text, raw)
                        continue
                run.flush(out)
                try:
                    chunks = self._decoder.feed(event)
                except MalformedEvent as exc:
                    self._bad.skip(exc)  # not decoded, not relayed: as if it never came
                    continue
                self._bad.good += 1
                if relayed is not None:
                    chunks = relayed.attach(event, chunks, started=self.started)
                elif (
                    self._own
                    and chunks
                    and (self._own in event.raw or hinted(event.raw, self._hints))
                ):
                    chunks = _masked(chunks, self._secret or "")  # (escaped: decoded, in them)
                if chunks:
                    self.started = True
                    if not self.finished:
                        for chunk in chunks:
                            if chunk.finish_reason is not None:
                                self.finished = True
                    out += chunks
                if self._decoder.done:
                    if not self.finished:
                        raise MalformedResponse("stream terminated without a finish reason")
                    if relayed is not None and relayed.pending:
                        out.append(relayed.flush())
                    self.done = True
                    break
            if self._shape_keys is not None and run.raws and len(run.raws) == len(events):
                self._learn_from_run(data, events[-1], run)
        except ProviderError as exc:
            run.flush(out)
            error = self._provider._tag(exc, self._model)
            if not out:
                raise error from None
            self._failed = error  # the chunks before it go first; the next read raises it
        run.flush(out)
        if self._first and out:
            self._first = False
            out[0] = out[0].adding(headers=answer_headers(self._resp.headers))
        return out


_NO_CHUNKS: list[StreamChunk] = []


def _quotes_nothing(raw: bytes, data: str | bytes) -> bool:
    """:meth:`Relay.quotes` of a stream that is not relayed (its reader never asks)."""
    return False


_SHAPE_TRIES = 8
_NO_EVENTS: list[bytes] = []


class _TextRun:
    """Text events that came one after another in one read, relayed as one chunk: their
    texts joined, their bytes joined. A proxy that falls behind reads several events at once;
    passed on one by one, each would cost its own trip through the routed stream and its own
    write to the client (a system call), so the more it fell behind the more it would spend per
    event. The floor writes what it read in one go; so does this, for the events a client
    sees no difference in (text only: nothing ends, no usage, no tool call)."""

    __slots__ = ("raws", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.raws: list[bytes] = []

    def add(self, text: str, raw: bytes) -> None:
        self.texts.append(text)
        self.raws.append(raw)

    def flush(self, out: list[StreamChunk]) -> None:
        """The run, if any, as one chunk onto ``out``; the run empty after."""
        texts, raws = self.texts, self.raws
        if not texts:
            return
        if len(texts) == 1:
            out.append(relayed_text(texts[0], raws[0]))
        else:
            out.append(relayed_text("".join(texts), b"".join(raws)))
        texts.clear()
        raws.clear()


class _Relayed:
    """The events of a same-format stream, handed on with the chunks they decode to.

    Events that decode to nothing (``message_start``, a ping, a block opening) wait for the next
    chunk until the stream has started: a provider that opens a message and fails before its
    first token still fails over, with nothing sent to the client. After that they go at once,
    on a chunk of their own that carries nothing else.
    """

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self.pending: list[bytes] = []  # changed in place only: the reader holds it
        self._held = 0  # bytes in pending

    def attach(
        self, event: SSEEvent, chunks: list[StreamChunk], *, started: bool
    ) -> list[StreamChunk]:
        relay = self._relay
        framed = relay.event(event, chunks)
        if (
            framed is not event.raw
            and relay.key
            and chunks
            and (relay.key in event.raw or hinted(event.raw, relay.hints))
        ):
            chunks = _masked(chunks, relay.secret or "")  # the key (decoded), masked as in bytes
        if len(chunks) == 1 and not self.pending:  # most events: one chunk, nothing held
            return [chunks[0].relaying(framed)]
        if framed:
            self._held += len(framed)
            if self._held > _MAX_HELD:  # e.g. endless pings instead of a first token
                raise MalformedResponse(f"over {_MAX_HELD} bytes of events before any content")
            self.pending.append(framed)
        if not chunks:
            begins = started or self._relay.starts(event)
            return [self.flush()] if begins and self.pending else []
        raw = self._take()
        *before, last = chunks
        return [*(c.relaying(b"") for c in before), last.relaying(raw)]

    def flush(self) -> StreamChunk:
        return StreamChunk(raw=self._take())

    def ending(self) -> StreamChunk:
        """The last chunk of a stream that ended without its terminator (after its finish)."""
        return StreamChunk(raw=self._take() + self._relay.terminator)

    def _take(self) -> bytes:
        """The held events' bytes; nothing held after."""
        raw = b"".join(self.pending)
        self.pending.clear()
        self._held = 0
        return raw


def _masked(chunks: list[StreamChunk], secret: str) -> list[StreamChunk]:
    """``chunks`` of an event that quotes the provider's key, the key masked in them as the
    relay masks it in the bytes: their text is what the client reads (a continuation is told
    it, the answer cache keeps it, a stream of another format, or a continuation, goes to the
    client encoded from it)."""
    out = []
    for chunk in chunks:
        call = chunk.tool_call
        if call is not None:
            call = _masked_call(call, secret)
        text = _masked_text(chunk.text, secret)
        if text is not chunk.text or call is not chunk.tool_call:
            chunk = replace(chunk, text=text, tool_call=call)
        out.append(chunk)
    return out


def _masked_text(text: str, secret: str) -> str:
    """``text`` with the provider's key masked where it quotes it, or where it is a JSON
    document that quotes it with escapes (tool arguments, an answer in JSON: a client parses
    them); ``text`` itself when it quotes none."""
    if secret in text:
        text = text.replace(secret, MASK)
    if "\\" in text:
        text = unescaped_masked(text, secret) or text
    return text


_Call = TypeVar("_Call", ToolCall, ToolCallDelta)


def _masked_call(call: _Call, secret: str) -> _Call:
    """``call`` with the provider's key masked in its id, name and arguments (itself when it
    quotes none)."""
    arguments = _masked_text(call.arguments, secret)
    if arguments is call.arguments and secret not in f"{call.id}{call.name}":
        return call
    return replace(
        call,
        id=call.id and call.id.replace(secret, MASK),
        name=call.name and call.name.replace(secret, MASK),
        arguments=arguments,
    )


def _masked_message(message: Message, secret: str) -> Message:
    """A whole answer's ``message`` with the provider's key masked (see :func:`_masked`)."""
    calls = tuple(_masked_call(c, secret) for c in message.tool_calls)
    return replace(message, content=_masked_text(message.content, secret), tool_calls=calls)


def _read_timeout(phase: str, timeouts: Timeouts) -> ProviderError:
    """The error for a stream read that ran out of time in ``phase``."""
    if phase == "stream_total":
        return StreamTooLong(
            f"the answer was still streaming after {timeouts.stream_total:g} s, the gateway's "
            "limit (timeouts.stream_total): it is incomplete"
        )
    return ProviderTimeout(f"no stream data ({phase})", phase=phase)


class _BadEvents:
    """A stream's unparseable events: each is skipped and counted (``skipped_events`` on the
    provider, the ``failover.events.skipped`` metric), the first logged; a stream in which
    more than :data:`MAX_BAD_EVENTS` came, and more of them than good ones, fails as malformed."""

    __slots__ = ("_model", "_provider", "count", "good")

    def __init__(self, provider: HttpProvider, model: str) -> None:
        self._provider, self._model = provider, model
        self.count = self.good = 0  # events skipped, events read

    def skip(self, exc: MalformedEvent) -> None:
        self.count += 1
        self._provider.skipped_events += 1
        if self.count == 1:
            log.warning(
                "%s/%s: skipped an unparseable stream event (%s); later ones in this stream "
                "are counted, not logged",
                self._provider.name,
                self._model,
                exc.message,
            )
        if self.count > MAX_BAD_EVENTS and self.count > self.good:
            raise MalformedResponse(
                f"stream events unparseable: {self.count} of {self.count + self.good}"
            )


def _transport_error(exc: TransportError) -> ProviderError:
    """Translate a transport failure. Messages are generic: URLs may carry keys (Azure, Gemini)."""
    if isinstance(exc, ConnectTimeout):
        return ProviderTimeout("connect timed out", phase="connect")
    if isinstance(exc, ConnectFailed):
        return ConnectionFailed(f"could not connect: {exc.reason}")
    if isinstance(exc, TooLarge):
        return ResponseTooLarge(str(exc))
    if isinstance(exc, PoolExhausted):
        return PoolFull(str(exc))
    if isinstance(exc, Disconnected | ResponseCut):
        return ConnectionFailed(str(exc))
    if isinstance(exc, BadResponse):
        return ConnectionFailed(f"HTTP transport error ({exc})")
    return ConnectionFailed(f"HTTP transport error ({type(exc).__name__})")
