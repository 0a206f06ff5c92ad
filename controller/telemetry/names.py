"""Every span, attribute and metric name in one place.

Dashboards (``dashboards/``) and alert rules (``alerts/``) use the Prometheus form of these
names; a test keeps them in sync with what ``/metrics`` actually exposes. The OTel Prometheus
exporter turns dots into underscores, appends the unit (``_seconds``) and ``_total`` to counters.
"""

from __future__ import annotations

# --- spans -------------------------------------------------------------------------------------
SPAN_ROUTE = "failover.route"  # INTERNAL, one per routed request
OPERATION_COUNT_TOKENS = "count_tokens"  # CLIENT span "count_tokens {model}" (provider counts)
OPERATION_CHAT = "chat"  # gen_ai.operation.name; CLIENT span name is "chat {model}"

# --- attributes (OTel GenAI + server semantic conventions) ---------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # opt-in content capture only
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # opt-in content capture only
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# --- attributes (this project) -----------------------------------------------------------------
FAILOVER_PROVIDER = "failover.provider"  # configured provider name (kind is gen_ai.provider.name)
FAILOVER_ATTEMPT = "failover.attempt"
FAILOVER_REASON = "failover.reason"
FAILOVER_TIER = "failover.tier"
FAILOVER_OUTCOME = "failover.outcome"
FAILOVER_SERVED_BY = "failover.served_by"
FAILOVER_DEGRADED = "failover.degraded"  # the rung of the tier's ladder: tier, cache, static
FAILOVER_FRONT = "failover.front"  # the client's wire format: openai, anthropic, gemini, ...
FAILOVER_ATTEMPTS = "failover.attempts"
FAILOVER_PANIC = "failover.panic"
# Providers passed over because their format cannot carry what the client sent, and the
# features the serving one dropped as translation.droppable allows (route span, string arrays).
FAILOVER_SKIPPED = "failover.skipped"
FAILOVER_DROPPED = "failover.dropped"
# metric attribute keys
ATTR_TIER = "tier"
ATTR_OUTCOME = "outcome"
ATTR_SERVED_BY = "served_by"
ATTR_FROM = "from"
ATTR_TO = "to"
ATTR_REASON = "reason"
ATTR_PROVIDER = "provider"
ATTR_STATE = "state"
ATTR_CHANNEL = "channel"
ATTR_EVENT = "event"
ATTR_RESULT = "result"
ATTR_SOURCE = "source"

# --- error.type values that are not the provider's fault -----------------------------------------
# The tripwire does not count them on either side of faults / (successes + faults), so the
# fault-rate queries in dashboards/ and alerts/ leave out exactly these, from the numerator and the
# denominator (a test keeps the two in sync): caller errors (the request was wrong), attempts
# cut because the client went away (or the shutdown cut them), streams cut by our own
# ``stream_total`` cap, attempts abandoned because a hedge of the same request answered first,
# and attempts sent elsewhere because every connection to the provider stayed busy. Every other
# error.type on an attempt is a provider fault (``stalled`` among them).
NON_FAULT_ERROR_TYPES: tuple[str, ...] = (
    "caller_error",
    "bad_request",
    "context_too_long",
    "content_filtered",
    "cancelled",
    "stream_too_long",
    "outpaced",
    "pool_full",
)

# --- metrics: data plane -----------------------------------------------------------------------
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"  # s, histogram
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"  # {token}, histogram
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # s, histogram
METRIC_REQUESTS = "failover.requests"  # counter: tier, outcome, served_by, front
METRIC_FAILOVERS = "failover.failovers"  # counter: from, to, reason
METRIC_TOKEN_COUNTS = "failover.token_counts"  # counter: tier, source, provider, error.type
METRIC_FEATURES_DROPPED = "failover.features.dropped"  # counter: tier, feature, provider
ATTR_FEATURE = "feature"

# --- metrics: control plane --------------------------------------------------------------------
METRIC_PROVIDER_STATE = "failover.provider.state"  # gauge, one-hot per state
METRIC_PROVIDER_ERROR_RATE = "failover.provider.error_rate"  # gauge, the tripwire's view
METRIC_PROVIDER_WAITING = "failover.provider.waiting"  # gauge: attempts waiting for an answer
METRIC_STALL_LIMIT = "failover.provider.stall_limit"  # gauge, s: provider, kind (learned)
METRIC_TRIPS = "failover.trips"  # counter: provider, cause (error_rate, stalled, ...)
METRIC_HEDGES = "failover.hedges"  # counter: tier, provider, result (started, won, wasted)
METRIC_EVENTS_SKIPPED = "failover.events.skipped"  # counter: provider (unparseable events)
ATTR_KIND = "kind"  # stream | whole
ATTR_CAUSE = "cause"
METRIC_TRIPWIRE_THRESHOLD = "failover.tripwire.threshold"  # gauge
METRIC_KILL_SWITCH_ACTIVE = "failover.kill_switch.active"  # gauge
METRIC_ALERTS = "failover.alerts"  # counter: channel, event, result
METRIC_STATE_VERSION = "failover.state.version"  # gauge
METRIC_CONTROLLER_LAST_TICK = "failover.controller.last_tick"  # gauge, unix seconds (dead-man)
METRIC_TELEMETRY_DROPPED = "failover.telemetry.dropped"  # counter: signal (spans/metrics lost)
ATTR_SIGNAL = "signal"

# --- the same metrics as Prometheus exposes them (dashboards/ and alerts/ use these) ------------
# OTel → Prometheus: dots → underscores, unit suffix (s → _seconds; {annotations} dropped),
# counters get _total, histograms _bucket/_sum/_count, attribute dots → underscores.
PROM_OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"  # _bucket/_sum/_count
PROM_TOKEN_USAGE = "gen_ai_client_token_usage"  # _bucket/_sum/_count, label gen_ai_token_type
PROM_TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
PROM_REQUESTS = "failover_requests_total"  # tier, outcome, served_by, front
METRIC_DEGRADED = "failover.degraded"  # counter: tier, rung (answers below the tier's own)
PROM_DEGRADED = "failover_degraded_total"  # tier, rung
ATTR_RUNG = "rung"
ATTR_FRONT = "front"  # the client's wire format (none: a request made in code)
PROM_FAILOVERS = "failover_failovers_total"  # from, to, reason
PROM_TOKEN_COUNTS = "failover_token_counts_total"  # tier, source, provider, error_type
PROM_FEATURES_DROPPED = "failover_features_dropped_total"  # tier, feature, provider
PROM_PROVIDER_STATE = "failover_provider_state"  # provider, state (one-hot: 1 for the current)
PROM_PROVIDER_ERROR_RATE = "failover_provider_error_rate"  # provider
PROM_PROVIDER_WAITING = "failover_provider_waiting"  # provider
PROM_STALL_LIMIT = "failover_provider_stall_limit_seconds"  # provider, kind
PROM_TRIPS = "failover_trips_total"  # provider, cause
PROM_HEDGES = "failover_hedges_total"  # tier, provider, result
PROM_EVENTS_SKIPPED = "failover_events_skipped_total"  # provider
PROM_TRIPWIRE_THRESHOLD = "failover_tripwire_threshold"  # provider
PROM_KILL_SWITCH_ACTIVE = "failover_kill_switch_active"  # (no labels) 1 when pin/disable set
PROM_ALERTS = "failover_alerts_total"  # channel, event, result
PROM_STATE_VERSION = "failover_state_version"
PROM_CONTROLLER_LAST_TICK = "failover_controller_last_tick_seconds"
PROM_TELEMETRY_DROPPED = "failover_telemetry_dropped_total"  # signal

# --- metrics: triage and deferred jobs (controller/jobs, controller/gateway/_jobs.py) -----------
METRIC_TRIAGE = "failover.triage"  # counter: tier, priority, action (deferred, dropped, full)
METRIC_JOBS_QUEUED = "failover.jobs.queued"  # gauge: tier (waiting + under way)
METRIC_JOBS_OLDEST_AGE = "failover.jobs.oldest_age"  # gauge, s: tier (oldest unfinished job)
METRIC_JOBS_REPLAYED = "failover.jobs.replayed"  # counter: tier, result (done, retry, dead)
METRIC_JOBS_DEAD = "failover.jobs.dead_letters"  # gauge: tier (dead letters kept)
PROM_TRIAGE = "failover_triage_total"  # tier, priority, action
PROM_JOBS_QUEUED = "failover_jobs_queued"  # tier
PROM_JOBS_OLDEST_AGE = "failover_jobs_oldest_age_seconds"  # tier
PROM_JOBS_REPLAYED = "failover_jobs_replayed_total"  # tier, result
PROM_JOBS_DEAD = "failover_jobs_dead_letters"  # tier
ATTR_PRIORITY = "priority"
ATTR_ACTION = "action"

# --- metrics: standby health and rate-limit headroom (controller/routing/_standby.py,
# controller/signals/headroom.py) ------------------------------------------------------------------
METRIC_STANDBY = "failover.standby"  # counter: provider, reason (warm, probe), outcome
METRIC_RATELIMIT_REMAINING = "failover.ratelimit.remaining"  # gauge: provider, model, kind
METRIC_RATELIMIT_LIMIT = "failover.ratelimit.limit"  # gauge: provider, model, kind
METRIC_RATELIMIT_LOW = "failover.ratelimit.low"  # gauge: provider, model (1: shifted away)
PROM_STANDBY = "failover_standby_total"  # provider, reason, outcome
PROM_RATELIMIT_REMAINING = "failover_ratelimit_remaining"  # provider, model, kind
PROM_RATELIMIT_LIMIT = "failover_ratelimit_limit"  # provider, model, kind
PROM_RATELIMIT_LOW = "failover_ratelimit_low"  # provider, model
ATTR_MODEL = "model"

# --- metrics: spend and shadow comparison (controller/routing/_spend.py, _shadow.py) ----------
METRIC_COST = "failover.cost"  # counter, USD: tier, provider, model (the user's prices)
METRIC_BUDGET_USED = "failover.budget.used"  # gauge: scope (provider|tier), name; 1 = all
METRIC_SHADOW_REQUESTS = "failover.shadow.requests"  # counter: tier, provider, result
METRIC_SHADOW_AGREEMENT = "failover.shadow.agreement"  # counter: tier, provider, check, result
METRIC_SHADOW_DURATION = "failover.shadow.duration"  # s, histogram: tier, provider, role
METRIC_SHADOW_LENGTH_RATIO = "failover.shadow.length_ratio"  # histogram: tier, provider
METRIC_SHADOW_COST = "failover.shadow.cost"  # counter, USD: tier, provider, model
PROM_COST = "failover_cost_total"  # tier, provider, model (USD)
PROM_BUDGET_USED = "failover_budget_used"  # scope, name
PROM_SHADOW_REQUESTS = "failover_shadow_requests_total"  # tier, provider, result
PROM_SHADOW_AGREEMENT = "failover_shadow_agreement_total"  # tier, provider, check, result
PROM_SHADOW_DURATION = "failover_shadow_duration_seconds"  # _bucket/_sum/_count; role
PROM_SHADOW_LENGTH_RATIO = "failover_shadow_length_ratio"  # _bucket/_sum/_count
PROM_SHADOW_COST = "failover_shadow_cost_total"  # tier, provider, model (USD)
ATTR_MODEL = "model"
ATTR_SCOPE = "scope"
ATTR_NAME = "name"
ATTR_CHECK = "check"  # text | tool_calls
ATTR_ROLE = "role"  # served | shadow

# --- metrics: fleet and PromQL tripwires (controller/fleet/_metrics.py, control/_promql_eval.py)
PROM_FLEET_LEADER = "failover_fleet_leader"  # failover_fleet_replica (1 on the lease holder)
PROM_FLEET_ROLE = "failover_fleet_role"  # failover_fleet_replica, failover_fleet_role
PROM_FLEET_REDIS_UP = "failover_fleet_redis_up"  # failover_fleet_replica
PROM_FLEET_REPLICAS = "failover_fleet_replicas"  # failover_fleet_replica (the counting one)
PROM_FLEET_VERSION = "failover_fleet_version"  # failover_fleet_replica (Redis's, as seen)
PROM_FLEET_HEARTBEAT_AGE = "failover_fleet_heartbeat_age_seconds"  # failover_fleet_replica
PROM_FLEET_APPLIED_VERSION = "failover_fleet_applied_version"  # failover_fleet_replica
ATTR_FLEET_REPLICA = "failover.fleet.replica"
ATTR_FLEET_ROLE = "failover.fleet.role"
PROM_PROMQL_STATE = "failover_tripwire_promql_state"  # rule, provider, state (one-hot)
PROM_PROMQL_EVALUATIONS = "failover_tripwire_promql_evaluations_total"  # rule, provider, result
ATTR_RULE = "rule"

# Candidate length / served length (characters of text and tool-call arguments).
RATIO_BUCKETS: tuple[float, ...] = (0.25, 0.5, 0.8, 0.95, 1.05, 1.25, 2.0, 4.0)

# Explicit bucket boundaries (seconds) for duration histograms: 0.01 … 81.92, doubling.
DURATION_BUCKETS: tuple[float, ...] = tuple(0.01 * 2**i for i in range(14))
# Token counts: 1 … 4^13 (67M), as the GenAI semantic conventions advise.
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(14))
