"""Evaluating the PromQL tripwires (:mod:`controller.control.promql`) against a Prometheus.

A background task, never on the request path: every ``interval_seconds`` it sends each rule's
expression to ``/api/v1/query`` (all rules at once, each bounded by ``timeout_seconds`` on the
injected clock, and Prometheus told the same bound), and keeps per rule the latest
:class:`~controller.control.promql.PromqlSignal`. The controller reads :meth:`signals` at each
tick. Only a deciding replica evaluates (``deciding``: the leader of a fleet, a process on its
own, a replica deciding alone while Redis is away); the others' rules are unknown.

What counts as an answer: ``status: success`` with an instant vector (it holds with at least one
series) or a scalar (it holds when not 0). Anything else, a timeout, a refused connection, an
HTTP error, a body that is not that JSON or larger than :data:`MAX_ANSWER_BYTES`, is *unknown*:
it changes nothing (see the module above), is counted in ``failover.tripwire.promql.evaluations``
by result, and after ``unavailable_after`` in a row of any rule, ``on_unavailable(True, why)``
is called once (a warning alert); ``on_unavailable(False, ...)`` once every rule answers again.
What is said never holds the URL (it may carry a password): error types and HTTP statuses only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from opentelemetry.metrics import CallbackOptions, Counter, Meter, Observation

from controller._clock import Clock
from controller.control.promql import PromqlConfig, PromqlRule, PromqlSignal, RuleState

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4 * 1024 * 1024

METRIC_PROMQL_STATE = "failover.tripwire.promql.state"
METRIC_PROMQL_EVALUATIONS = "failover.tripwire.promql.evaluations"
ATTR_RULE = "rule"
ATTR_PROVIDER = "provider"
ATTR_STATE = "state"
ATTR_RESULT = "result"


class _Unusable(Exception):
    """No usable answer; ``result`` is the low-cardinality label, the message says more."""

    def __init__(self, result: str, message: str) -> None:
        self.result = result
        super().__init__(message)


@dataclass(slots=True)
class _Track:
    """One rule's memory between evaluations."""

    rule: PromqlRule
    signal: PromqlSignal
    holding_since: float | None = None  # monotonic time the expression started holding
    failures: int = 0  # evaluations in a row without a usable answer
    last_error: str = ""


class PromqlTripwires:
    """The rules of one config, their latest answers, and the task that refreshes them."""

    def __init__(
        self,
        cfg: PromqlConfig,
        *,
        url: str,
        clock: Clock,
        deciding: Callable[[], bool] | None = None,
        on_unavailable: Callable[[bool, str], None] | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.cfg = cfg
        self._url = url.rstrip("/") + "/api/v1/query"
        self._clock = clock
        self._deciding = deciding
        self._on_unavailable = on_unavailable
        self._tracks = [
            _Track(rule, PromqlSignal(rule=rule.name, target=rule.target, state=RuleState.UNKNOWN))
            for rule in cfg.rules
        ]
        self._unavailable = False
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._last_round = -math.inf
        self.rounds = 0  # evaluation rounds completed
        self._counter: Counter | None = None
        if meter is not None:
            self._register(meter)

    # --- what the controller reads ------------------------------------------------------------
    def signals(self) -> tuple[PromqlSignal, ...]:
        return tuple(track.signal for track in self._tracks)

    @property
    def unavailable(self) -> bool:
        return self._unavailable

    def describe(self) -> list[dict[str, Any]]:
        """Each rule as the status document lists it."""
        return [
            {
                "rule": t.rule.name,
                "target": t.rule.target,
                "state": t.signal.state.value,
                "held": t.signal.held,
                "value": t.signal.value,
                "detail": t.signal.detail or t.last_error,
            }
            for t in self._tracks
        ]

    # --- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Evaluate every ``interval_seconds`` while deciding; looks at the role at least
        every second, so a replica that just became the leader evaluates at once."""
        self._stopping = False
        while not self._stopping:
            deciding = self._deciding is None or self._deciding()
            due = self._clock.monotonic() - self._last_round >= self.cfg.interval_seconds
            if deciding and due:
                try:
                    await self.evaluate()
                except Exception:  # a bug in one round must not end the tripwires for good
                    log.exception("PromQL tripwire evaluation failed")
            elif not deciding and self._last_round > -math.inf:
                self._forget()  # another replica decides: what this one saw gets old
            await self._clock.sleep(min(self.cfg.interval_seconds, 1.0))

    def stop(self) -> None:
        self._stopping = True

    async def aclose(self) -> None:
        self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _forget(self) -> None:
        self._last_round = -math.inf
        for track in self._tracks:
            track.signal = replace(track.signal, state=RuleState.UNKNOWN, held=False, detail="")
            track.holding_since = None
            track.failures = 0

    # --- one round ----------------------------------------------------------------------------
    async def evaluate(self) -> tuple[PromqlSignal, ...]:
        """Ask Prometheus about every rule once (concurrently, each bounded)."""
        self._last_round = self._clock.monotonic()
        await asyncio.gather(*(self._evaluate(track) for track in self._tracks))
        self._announce()
        self.rounds += 1
        return self.signals()

    async def _evaluate(self, track: _Track) -> None:
        try:
            holds, value, series = await self._bounded(track.rule.expr)
        except _Unusable as exc:
            self._count(track.rule, exc.result)
            track.failures += 1
            track.last_error = str(exc)
            if track.failures == 1 or track.failures == self.cfg.unavailable_after:
                log.warning("PromQL rule %s: no usable answer (%s)", track.rule.name, exc)
            held = track.signal.holds_out
            track.signal = replace(
                track.signal, state=RuleState.UNKNOWN, held=held, detail=str(exc)
            )
            return
        track.failures = 0
        track.last_error = ""
        now = self._clock.monotonic()
        if not holds:
            track.holding_since = None
        elif track.holding_since is None:
            track.holding_since = now
        held_for = now - track.holding_since if track.holding_since is not None else 0.0
        firing = holds and held_for >= track.rule.for_seconds
        state = RuleState.FIRING if firing else RuleState.CLEAR
        self._count(track.rule, state.value)
        track.signal = PromqlSignal(
            rule=track.rule.name,
            target=track.rule.target,
            state=state,
            held=firing,
            value=value,
            series=series,
            detail=_said(holds, value, series, held_for, track.rule.for_seconds),
        )

    async def _bounded(self, expr: str) -> tuple[bool, float | None, int]:
        """One query, given up after ``timeout_seconds`` on the injected clock."""
        query = asyncio.ensure_future(self._query(expr))
        timer = asyncio.ensure_future(self._clock.sleep(self.cfg.timeout_seconds))
        try:
            done, _ = await asyncio.wait({query, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not query.done():
                query.cancel()
        if query not in done or query.cancelled():
            raise _Unusable("timeout", f"no answer within {self.cfg.timeout_seconds:g}s")
        return query.result()

    async def _query(self, expr: str) -> tuple[bool, float | None, int]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds + 1.0)
            )
        # Prometheus takes a duration in whole units: milliseconds, rounded up
        params = {"query": expr, "timeout": f"{math.ceil(self.cfg.timeout_seconds * 1000)}ms"}
        try:
            async with self._session.get(self._url, params=params) as answer:
                body = await answer.content.read(MAX_ANSWER_BYTES + 1)
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _Unusable(
                "unreachable", f"Prometheus unreachable ({type(exc).__name__})"
            ) from None
        if len(body) > MAX_ANSWER_BYTES:
            raise _Unusable("unreadable", f"answer larger than {MAX_ANSWER_BYTES} bytes")
        return _read(status, body)

    def _announce(self) -> None:
        failing = [t for t in self._tracks if t.failures >= self.cfg.unavailable_after]
        now_unavailable = bool(failing)
        if now_unavailable == self._unavailable:
            return
        self._unavailable = now_unavailable
        if now_unavailable:
            why = "; ".join(f"{t.rule.name}: {t.last_error}" for t in failing)
        else:
            why = f"all {len(self._tracks)} rule(s) answered again"
        if self._on_unavailable is not None:
            try:
                self._on_unavailable(now_unavailable, why)
            except Exception:
                log.exception("PromQL unavailable callback failed")

    # --- metrics ------------------------------------------------------------------------------
    def _count(self, rule: PromqlRule, result: str) -> None:
        if self._counter is not None:
            attrs = {ATTR_RULE: rule.name, ATTR_PROVIDER: rule.target, ATTR_RESULT: result}
            self._counter.add(1, attrs)

    def _register(self, meter: Meter) -> None:
        def state(_: CallbackOptions) -> Iterable[Observation]:
            for track in self._tracks:
                for candidate in RuleState:
                    yield Observation(
                        1 if track.signal.state is candidate else 0,
                        {
                            ATTR_RULE: track.rule.name,
                            ATTR_PROVIDER: track.rule.target,
                            ATTR_STATE: candidate.value,
                        },
                    )

        meter.create_observable_gauge(
            METRIC_PROMQL_STATE,
            callbacks=[state],
            unit="",
            description="1 for each PromQL tripwire rule's state (firing, clear, unknown)",
        )
        self._counter = meter.create_counter(
            METRIC_PROMQL_EVALUATIONS,
            unit="{evaluation}",
            description="PromQL tripwire evaluations by result (firing, clear, or why unusable)",
        )


def _read(status: int, body: bytes) -> tuple[bool, float | None, int]:
    """(holds, largest value, series) of a ``/api/v1/query`` answer, or :class:`_Unusable`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        what = f"HTTP {status}" if status != 200 else "not JSON"
        raise _Unusable("unreadable" if status == 200 else "http_error", what) from None
    if not isinstance(doc, dict):
        raise _Unusable("unreadable", "not a Prometheus API answer")
    if doc.get("status") != "success":
        error = str(doc.get("errorType", f"HTTP {status}"))[:40]
        message = str(doc.get("error", ""))[:200]
        raise _Unusable("query_error", f"Prometheus refused the query: {error}: {message}")
    data = doc.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    try:
        if kind == "vector" and isinstance(result, list):
            values = [float(sample["value"][1]) for sample in result]
            finite = [v for v in values if not math.isnan(v)]
            return bool(values), max(finite) if finite else None, len(values)
        if kind == "scalar" and isinstance(result, list):
            value = float(result[1])
            return (not math.isnan(value) and value != 0.0), value, 1
    except (KeyError, IndexError, TypeError, ValueError):
        raise _Unusable("unreadable", f"malformed {kind} result") from None
    raise _Unusable(
        "unreadable", f"the expression must give an instant vector or a scalar, not {kind}"
    )


def _said(holds: bool, value: float | None, series: int, held_for: float, hold: float) -> str:
    if not holds:
        return "no data: the condition does not hold"
    shown = f", value {value:.4g}" if value is not None else ""
    what = f"{series} series{shown}"
    if held_for < hold:
        return f"{what}; holding {held_for:.0f}s of {hold:g}s"
    return what + (f", for {held_for:.0f}s" if hold else "")
