"""Data-plane metric instruments, created once per meter and fed from the router's events.

Instruments are created up front (never per call) because this runs on every provider attempt.
The units in :data:`METRIC_UNITS` are part of the contract: the Prometheus exporter appends the
unit to the name (``s`` → ``_seconds``, ``{annotation}`` and ``1`` → nothing), so a wrong unit
here silently renames a series that dashboards and alert rules query by its ``PROM_*`` name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.util.types import AttributeValue

from controller.events import PROBE_TIER, AttemptEvent, AttemptReason, Outcome, RouteEvent
from controller.telemetry import names
from controller.telemetry._hot import HotMetrics, SeriesKey, series_key

Attributes = dict[str, AttributeValue]

# The unit each instrument must be created with so that its Prometheus name is the PROM_* one.
# The control plane creates its own instruments from ``Telemetry.meter`` with these units.
METRIC_UNITS: Mapping[str, str] = MappingProxyType(
    {
        names.METRIC_OPERATION_DURATION: "s",
        names.METRIC_TOKEN_USAGE: "{token}",
        names.METRIC_TIME_TO_FIRST_CHUNK: "s",
        names.METRIC_REQUESTS: "{request}",
        names.METRIC_FAILOVERS: "{failover}",
        names.METRIC_PROVIDER_STATE: "1",
        names.METRIC_PROVIDER_ERROR_RATE: "1",
        names.METRIC_PROVIDER_WAITING: "{attempt}",
        names.METRIC_STALL_LIMIT: "s",
        names.METRIC_TRIPS: "{trip}",
        names.METRIC_HEDGES: "{attempt}",
        names.METRIC_EVENTS_SKIPPED: "{event}",
        names.METRIC_TRIPWIRE_THRESHOLD: "1",
        names.METRIC_KILL_SWITCH_ACTIVE: "1",
        names.METRIC_ALERTS: "{alert}",
        names.METRIC_STATE_VERSION: "{version}",
        names.METRIC_CONTROLLER_LAST_TICK: "s",
        names.METRIC_TELEMETRY_DROPPED: "{item}",
        names.METRIC_TOKEN_COUNTS: "{count}",
        names.METRIC_FEATURES_DROPPED: "{request}",
        names.METRIC_DEGRADED: "{request}",
        names.METRIC_TRIAGE: "{request}",
        names.METRIC_JOBS_QUEUED: "{job}",
        names.METRIC_JOBS_OLDEST_AGE: "s",
        names.METRIC_JOBS_REPLAYED: "{job}",
        names.METRIC_JOBS_DEAD: "{job}",
        names.METRIC_COST: "{USD}",
        names.METRIC_BUDGET_USED: "1",
        names.METRIC_SHADOW_REQUESTS: "{request}",
        names.METRIC_SHADOW_AGREEMENT: "{request}",
        names.METRIC_SHADOW_DURATION: "s",
        names.METRIC_SHADOW_LENGTH_RATIO: "1",
        names.METRIC_SHADOW_COST: "{USD}",
        names.METRIC_STANDBY: "{attempt}",
        names.METRIC_RATELIMIT_REMAINING: "{count}",
        names.METRIC_RATELIMIT_LIMIT: "{count}",
        names.METRIC_RATELIMIT_LOW: "1",
    }
)

_FAILOVER_REASONS = frozenset(
    {
        AttemptReason.FAILOVER,
        AttemptReason.CONTEXT_FALLBACK,
        AttemptReason.RESCUE,
        AttemptReason.CONTINUATION,
        AttemptReason.WARM,  # the first choice moved to the next target (routing._standby)
        AttemptReason.HEADROOM,
        AttemptReason.BUDGET,  # from the over-budget provider, reason "budget"
    }
)
_OUTPACED = "outpaced"  # the error.type of an attempt a hedge (or the hedged one) beat
_UNKNOWN = "_OTHER"  # the semantic conventions' fallback for an unknown error.type
_NONE = "none"


def failure_type(event: AttemptEvent) -> str | None:
    """The ``error.type`` of a failed attempt, or None when it succeeded.

    Every non-success counts here (fault, caller error, cancellation): the span and the duration
    histogram say the call did not produce an answer; *which* failures trip a provider is the
    signal windows' business, and ``error.type`` keeps them apart on dashboards.
    """
    if event.outcome is Outcome.SUCCESS:
        return None
    return event.error_type or _UNKNOWN


def common_attributes(event: AttemptEvent, error_type: str | None) -> Attributes:
    """Attributes shared by the attempt span and the duration/TTFC histograms (low cardinality)."""
    attrs: Attributes = {
        names.GEN_AI_OPERATION_NAME: names.OPERATION_CHAT,
        names.GEN_AI_PROVIDER_NAME: event.provider_kind,
        names.GEN_AI_REQUEST_MODEL: event.model,
        names.FAILOVER_PROVIDER: event.provider,
        names.FAILOVER_TIER: event.tier,
    }
    if event.response_model:
        attrs[names.GEN_AI_RESPONSE_MODEL] = event.response_model
    if event.server_address:
        attrs[names.SERVER_ADDRESS] = event.server_address
    if event.server_port:
        attrs[names.SERVER_PORT] = event.server_port
    if error_type is not None:
        attrs[names.ERROR_TYPE] = error_type
    return attrs


_MAX_ATTRIBUTE_SETS = 1024  # distinct attempts' attribute combinations kept (then cleared)


class AttemptAttributes:
    """The attribute sets of one kind of attempt, built once and shared (never mutated): the
    span's and the histograms' (:func:`common_attributes`), and the token histogram's two, each
    with its series key for :class:`~controller.telemetry._hot.HotHistogram`. Building and
    hashing them again for every attempt was a measurable part of a request's cost."""

    __slots__ = (
        "common",
        "common_key",
        "encoded",
        "tokens_in",
        "tokens_in_key",
        "tokens_out",
        "tokens_out_key",
    )

    def __init__(self, common: Attributes) -> None:
        tokens = {k: v for k, v in common.items() if k != names.ERROR_TYPE}  # whatever the outcome
        self.common = common
        self.encoded: bytes | None = None  # ``common`` as OTLP attributes, once a span needs it
        self.tokens_in = {**tokens, names.GEN_AI_TOKEN_TYPE: "input"}
        self.tokens_out = {**tokens, names.GEN_AI_TOKEN_TYPE: "output"}
        self.common_key = series_key(common)
        self.tokens_in_key = series_key(self.tokens_in)
        self.tokens_out_key = series_key(self.tokens_out)


class AttributeCache:
    """:class:`AttemptAttributes` by what :func:`common_attributes` reads of an event (bounded:
    past :data:`_MAX_ATTRIBUTE_SETS` combinations it starts over)."""

    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: dict[tuple[object, ...], AttemptAttributes] = {}

    def of(self, event: AttemptEvent, error_type: str | None) -> AttemptAttributes:
        key = (
            event.provider_kind,
            event.model,
            event.provider,
            event.tier,
            event.response_model,
            event.server_address,
            event.server_port,
            error_type,
        )
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= _MAX_ATTRIBUTE_SETS:
                self._sets.clear()
            found = self._sets[key] = AttemptAttributes(common_attributes(event, error_type))
        return found


class _Tally:
    """A monotonic counter kept in a dict and reported through an observable counter.

    The SDK's synchronous ``Counter.add`` validates, copies and hashes its attribute dict on
    every call (tens of microseconds); here one request costs a tuple and a dict update, and the
    attribute dicts are built only when a reader collects. Exported the same way (a cumulative
    monotonic sum: ``<name>_total`` in Prometheus). Collection may run on an exporter thread,
    so it reads a copy (``dict.copy`` runs under the GIL, atomically).
    """

    __slots__ = ("_counts", "_keys")

    def __init__(self, meter: Meter, name: str, description: str, keys: tuple[str, ...]) -> None:
        self._keys = keys
        self._counts: dict[tuple[str, ...], int] = {}
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=METRIC_UNITS[name], description=description
        )

    def add(self, key: tuple[str, ...]) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        keys = self._keys
        return [
            Observation(count, dict(zip(keys, values, strict=True)))
            for values, count in self._counts.copy().items()
        ]


class _Recorder(Protocol):
    """What both histogram kinds offer: :class:`HotHistogram` and the SDK's (:class:`_Sdk`)."""

    def record(
        self, amount: float, attributes: Attributes, key: SeriesKey | None = None
    ) -> None: ...


class _Sdk:
    """The SDK's own histogram, which finds its series itself (``key`` is not used)."""

    __slots__ = ("_histogram",)

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def record(self, amount: float, attributes: Attributes, key: SeriesKey | None = None) -> None:
        self._histogram.record(amount, attributes)


class DataPlaneMetrics:
    """The five data-plane instruments and how one event maps onto them.

    With ``hot`` the three histograms are aggregated in place (:mod:`._hot`; much cheaper per
    request) and reach only the readers that merge ``hot`` in; without it they are the SDK's own
    instruments on ``meter``, which every reader of that meter sees.
    """

    __slots__ = (
        "_degraded",
        "_dropped",
        "_duration",
        "_failovers",
        "_hedges",
        "_requests",
        "_tokens",
        "_ttfc",
    )

    def __init__(self, *, meter: Meter, hot: HotMetrics | None = None) -> None:
        self._duration = _histogram(
            meter,
            hot,
            names.METRIC_OPERATION_DURATION,
            names.DURATION_BUCKETS,
            "GenAI operation duration.",
        )
        self._tokens = _histogram(
            meter,
            hot,
            names.METRIC_TOKEN_USAGE,
            names.TOKEN_BUCKETS,
            "Tokens used, by token type.",
        )
        self._ttfc = _histogram(
            meter,
            hot,
            names.METRIC_TIME_TO_FIRST_CHUNK,
            names.DURATION_BUCKETS,
            "Time to the first chunk of a streamed response.",
        )
        self._requests = _Tally(
            meter,
            names.METRIC_REQUESTS,
            "Routed requests by tier, outcome, serving provider and the client's wire format.",
            (names.ATTR_TIER, names.ATTR_OUTCOME, names.ATTR_SERVED_BY, names.ATTR_FRONT),
        )
        self._failovers = _Tally(
            meter,
            names.METRIC_FAILOVERS,
            "Moves from one provider to the next within a request.",
            (names.ATTR_FROM, names.ATTR_TO, names.ATTR_REASON),
        )
        self._hedges = _Tally(
            meter,
            names.METRIC_HEDGES,
            "Hedges: started, won (answered first), wasted (attempts a faster one made useless).",
            (names.ATTR_TIER, names.ATTR_PROVIDER, names.ATTR_RESULT),
        )
        self._degraded = _Tally(
            meter,
            names.METRIC_DEGRADED,
            "Requests served below their tier's own providers, by the rung of its ladder: "
            "tier (its step-down tier), cache (the last good answer), static.",
            (names.ATTR_TIER, names.ATTR_RUNG),
        )
        self._dropped = _Tally(
            meter,
            names.METRIC_FEATURES_DROPPED,
            "Requests served by a provider of another format without a feature the client "
            "sent, as translation.droppable allows.",
            (names.ATTR_TIER, names.ATTR_FEATURE, names.ATTR_PROVIDER),
        )

    def record_attempt(self, event: AttemptEvent, attrs: AttemptAttributes) -> None:
        """Record one attempt with its attribute sets (:class:`AttributeCache`; not mutated:
        the SDK may keep a reference to one as the series' attribute set)."""
        self._duration.record(event.duration, attrs.common, attrs.common_key)
        usage = event.usage
        if usage is not None:  # tokens are counted, whatever the outcome
            self._tokens.record(usage.input_tokens, attrs.tokens_in, attrs.tokens_in_key)
            self._tokens.record(usage.output_tokens, attrs.tokens_out, attrs.tokens_out_key)
        if event.stream and event.time_to_first_chunk is not None:
            self._ttfc.record(event.time_to_first_chunk, attrs.common, attrs.common_key)
        if event.reason in _FAILOVER_REASONS:
            cause = event.failover_cause or _UNKNOWN
            self._failovers.add((event.failover_from or _NONE, event.provider, cause))
        elif event.reason is AttemptReason.HEDGE:
            self._hedges.add((event.tier, event.provider, "started"))
            if event.outcome is Outcome.SUCCESS:
                self._hedges.add((event.tier, event.provider, "won"))
        if event.error_type == _OUTPACED:
            self._hedges.add((event.tier, event.provider, "wasted"))

    def record_route(self, event: RouteEvent) -> None:
        if event.tier == PROBE_TIER:  # health probes are not requests anyone made
            return
        served_by, front = event.served_by or _NONE, event.front or _NONE
        self._requests.add((event.tier, event.outcome.value, served_by, front))
        if event.degraded:
            self._degraded.add((event.tier, event.degraded))
        for feature in event.dropped:
            self._dropped.add((event.tier, feature, event.served_by or _NONE))


def _histogram(
    meter: Meter,
    hot: HotMetrics | None,
    name: str,
    buckets: tuple[float, ...],
    description: str,
) -> _Recorder:
    unit = METRIC_UNITS[name]
    if hot is not None:
        return hot.histogram(name, unit=unit, description=description, boundaries=buckets)
    return _Sdk(
        meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
        )
    )
