"""Triage and deferred jobs at the gateway (issue 20): what a request gets while its tier is
degraded, the 202 of a deferred one, ``GET /v1/failover/jobs/{id}``, and how a job is replayed.

A request's priority: its ``x-failover-priority`` header (``critical``, ``defer``, ``drop``; any
other value is a 400 naming them), else the default of the client key it came with
(``gateway.client_priorities``), else its tier's (``tiers.<name>.degrade.priority``, default
critical). Only while ``router.degraded(tier)`` does it matter:

* ``critical`` goes on as any request (whatever capacity is left, in order);
* ``drop`` is refused at once: a 503 in the caller's format with a ``Retry-After`` from the
  controller's next look at the tier's providers;
* ``defer`` is written to the job store (SQLite on disk, fsynced; or the fleet's Redis) and
  only then answered ``202`` with the job's id, its idempotency key and where to fetch it (a
  store that fails or does not answer in time: refused as a drop is, 503 and ``Retry-After``).
  The replayer sends it once the tier is healthy again; the answer is kept for
  ``jobs.keep_results_seconds``.

The healthy path pays for none of this: with no header, no per-key defaults and a critical
tier, :meth:`Triage.admit` is two header lookups and a dict lookup, and ``router.degraded`` (a
routing plan) is asked only for a request that is not critical.

Every front is triaged, Gemini's too (its job keeps the model named in the path). A job belongs
to the client key that sent it (a SHA-256 digest of the key is kept, never the key; a Gemini
client's ``x-goog-api-key`` or ``?key=`` is the same key): another key asking for it gets the
same 404 as for an id that does not exist. A client's
``Idempotency-Key`` header names the job: sent again with the same key, the request is not
queued twice, the first job is answered again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from multidict import istr
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller import _json
from controller._clock import Clock
from controller._errors import BadRequest, FailoverError, Overloaded, ProviderFault
from controller.gateway._auth import bearer_token
from controller.gateway._formats import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    RESPONSES,
    Front,
    front_for_request,
    json_answer,
    public_error,
)
from controller.gateway.backend import GatewayBackend
from controller.jobs import (
    CallbackRefused,
    Done,
    HttpCallbackSender,
    Job,
    JobStore,
    NewJob,
    Outcome,
    QueueFull,
    Replayer,
    ReplayLimits,
    Retry,
    SqliteJobStore,
    check_callback,
    job_document,
    register_job_metrics,
)
from controller.jobs._job import JobStoreError
from controller.model import Origin, Request
from controller.routing.plan import Priority
from controller.routing.router import Router
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

__all__ = [
    "HEADER_CALLBACK",
    "HEADER_PRIORITY",
    "TRIAGE_KEY",
    "JobQueue",
    "JobRunner",
    "JobsEndpoint",
    "Triage",
    "client_priorities",
    "open_jobs",
]

log = logging.getLogger(__name__)

HEADER_PRIORITY = "x-failover-priority"
HEADER_CALLBACK = "x-failover-callback"
HEADER_JOB = "x-failover-job"
HEADER_IDEMPOTENCY = "Idempotency-Key"
_PRIORITY_NAME, _CALLBACK_NAME = istr(HEADER_PRIORITY), istr(HEADER_CALLBACK)  # folded once
JOBS_PATH = "/v1/failover/jobs"
_ALLOWED = ", ".join(p.value for p in Priority)
_FRONTS: Mapping[str, Front] = {f.name: f for f in (OPENAI, ANTHROPIC, RESPONSES, GEMINI)}
_IDEMPOTENCY = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII, as a header carries it
_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{16,64}")
# What triage does, by priority: deferred (kept, 202), full (not kept: over a limit, 503),
# dropped (503).
_ACTIONS = (("defer", "deferred"), ("defer", "full"), ("drop", "dropped"))
_NOT_AN_ANSWER = frozenset({"cache", "static"})  # ladder rungs (Response.degraded)


class Call(Protocol):
    """What triage reads of a decoded front request (``_chat._Call``)."""

    @property
    def body(self) -> Any: ...  # the parsed JSON body

    @property
    def model(self) -> str: ...  # the model name the client sent

    @property
    def tier(self) -> str: ...

    @property
    def request(self) -> Request: ...


@dataclass(kw_only=True)
class JobQueue:
    """The runtime's deferred jobs, as the gateway uses them: the store, its limits, the
    callback allowlist, the replayer (whose ``queues`` is the last view of each tier's queue)."""

    store: JobStore
    replayer: Replayer
    clock: Clock
    max_jobs: int = 100_000
    max_job_bytes: int = 1024 * 1024
    allow_hosts: frozenset[str] = frozenset()
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each tier's queue for the status document (``jobs``)."""
        now = self.clock.wall()
        return {
            tier: {
                "queued": q.queued,
                "running": q.running,
                "done": q.done,
                "dead": q.dead,
                "oldest_age_seconds": None
                if q.oldest_created_at is None
                else round(max(0.0, now - q.oldest_created_at), 1),
            }
            for tier, q in sorted(self.replayer.queues.items())
        }

    async def close(self) -> None:
        await self.replayer.stop()
        for closer in self.closers:
            await closer()
        await self.store.close()


def owner_of(key: str | None) -> str:
    """Whose a job is: a digest of the client key (never the key), "" without one."""
    if not key:
        return ""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def presented_key(http: web.Request) -> str | None:
    """The client key a request came with, as :mod:`._auth` accepts it (and the Gemini
    front's ``x-goog-api-key`` or ``?key=``: the same key, the same owner)."""
    headers = http.headers
    return (
        bearer_token(http)
        or headers.get("x-api-key")
        or headers.get("x-goog-api-key")
        or http.query.get("key")
        or None
    )


def client_priorities(
    entries: Iterable[tuple[str, Priority]], env: Mapping[str, str]
) -> tuple[tuple[str, ...], dict[str, Priority]]:
    """The keys of ``gateway.client_priorities`` (each an environment variable holding a
    comma-separated list, and its priority): (the keys, to accept as client keys; their
    digests → priority)."""
    keys: list[str] = []
    by_owner: dict[str, Priority] = {}
    for env_name, priority in entries:
        for key in (k.strip() for k in env.get(env_name, "").split(",")):
            if key:
                keys.append(key)
                by_owner[owner_of(key)] = priority
    return tuple(keys), by_owner


class Triage:
    """What a request gets while its tier is degraded (module docstring). :meth:`wants` is the
    healthy path's whole cost; :meth:`admit` runs only when it says True."""

    def __init__(
        self,
        backend: GatewayBackend,
        *,
        queue: JobQueue | None,
        by_owner: Mapping[str, Priority] | None = None,
    ) -> None:
        self._backend = backend
        self._queue = queue
        self._by_owner = dict(by_owner or {})
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (tier, priority, action)
        self._seen: Mapping[str, Any] | None = None  # the router's tiers _deferring is of
        self._deferring: frozenset[str] = frozenset()
        backend.meter.create_observable_counter(
            names.METRIC_TRIAGE,
            callbacks=[self._observe],
            unit=METRIC_UNITS[names.METRIC_TRIAGE],
            description="Requests triaged while their tier was degraded, by action",
        )

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        """Every tier's actions, 0 until they happen (a panel finds a series, not a gap)."""
        counts = dict(self.counts)
        tiers = {*self._backend.router.tiers, *(tier for tier, _, _ in counts)}
        for tier in sorted(tiers):
            for priority, action in _ACTIONS:
                value = counts.get((tier, priority, action), 0)
                attrs = {names.ATTR_TIER: tier, names.ATTR_PRIORITY: priority}
                yield Observation(value, attrs | {names.ATTR_ACTION: action})

    def wants(self, http: web.Request, tier: str) -> bool:
        """Whether the request may be anything but critical (then :meth:`admit` decides).
        Two header lookups by pre-folded names and a set lookup: the tiers whose default is
        not critical are worked out again only when the router's tiers change (a reload)."""
        if self._by_owner:
            return True
        headers = http.headers
        if _PRIORITY_NAME in headers or _CALLBACK_NAME in headers:
            return True
        tiers = self._backend.router.tiers
        if tiers is not self._seen:
            critical = Priority.CRITICAL
            self._deferring = frozenset(
                name for name, plan in tiers.items() if plan.degrade.priority is not critical
            )
            self._seen = tiers
        return tier in self._deferring

    async def admit(self, http: web.Request, front: Front, call: Call) -> web.Response | None:
        """None: route the request now. Else the answer: a 400 (a bad header), the drop's 503
        or the defer's 202."""
        tier = call.tier
        named = http.headers.get(HEADER_PRIORITY)
        callback = http.headers.get(HEADER_CALLBACK)
        try:
            priority = self._priority(named, http, tier)
            if callback is not None:
                queue = self._queue
                callback = check_callback(callback, queue.allow_hosts if queue else ())
        except (BadRequest, CallbackRefused) as exc:
            message = exc.message if isinstance(exc, BadRequest) else str(exc)
            return front.error(BadRequest(message, status=400))
        if priority is Priority.CRITICAL or not self._backend.router.degraded(tier):
            return None
        if priority is Priority.DEFER and self._queue is not None:
            return await self._defer(http, front, call, callback)
        if priority is Priority.DEFER:
            return None  # an app made without a job queue (library use): served as critical
        self._count(tier, priority, "dropped")
        why = f"tier {tier} is degraded and this request's priority is drop: refused at once"
        return self._unavailable(front, tier, why)

    def _priority(self, named: str | None, http: web.Request, tier: str) -> Priority:
        if named is not None:
            try:
                return Priority(named.strip().lower())
            except ValueError:
                shown = named[:50]
                message = f"{HEADER_PRIORITY}: unknown value {shown!r}; allowed: {_ALLOWED}"
                raise BadRequest(message, status=400) from None
        if self._by_owner:
            found = self._by_owner.get(owner_of(presented_key(http)))
            if found is not None:
                return found
        plan = self._backend.router.tiers.get(tier)
        return plan.degrade.priority if plan is not None else Priority.CRITICAL

    def _unavailable(self, front: Front, tier: str, why: str) -> web.Response:
        plan = self._backend.router.tiers.get(tier)
        providers = tuple(dict.fromkeys(t.provider for t in plan.targets)) if plan else ()
        wait = self._backend.retry_after(providers)
        return front.error(Overloaded(why, status=503), retry_after=wait)

    def _count(self, tier: str, priority: Priority, action: str) -> None:
        self.counts[(tier, priority.value, action)] += 1

    async def _defer(
        self, http: web.Request, front: Front, call: Call, callback: str | None
    ) -> web.Response:
        queue, tier = self._queue, call.tier
        assert queue is not None
        given = http.headers.get(HEADER_IDEMPOTENCY)
        if given is not None and not _IDEMPOTENCY.fullmatch(given):
            message = f"{HEADER_IDEMPOTENCY}: 1 to 200 visible ASCII characters"
            return front.error(BadRequest(message, status=400))
        stored = _json.dumps(_not_streaming(call.body))
        if len(stored) > queue.max_job_bytes:
            self._count(tier, Priority.DEFER, "full")
            why = f"not deferred: the request is over jobs.max_job_bytes ({queue.max_job_bytes})"
            return self._unavailable(front, tier, why)
        source = call.request.source
        job = NewJob(
            id="job_" + secrets.token_urlsafe(18),
            owner=owner_of(presented_key(http)),
            tier=tier,
            front=front.name,
            model=call.model,
            body=stored,
            headers=dict(source.headers) if source is not None else {},
            idempotency_key=given or "idem_" + secrets.token_urlsafe(18),
            callback=callback,
            created_at=queue.clock.wall(),
        )
        try:
            kept, created = await queue.store.add(job, max_jobs=queue.max_jobs)
        except (QueueFull, JobStoreError) as exc:
            self._count(tier, Priority.DEFER, "full")
            log.warning("deferred request not kept (tier %s): %s", tier, exc)
            return self._unavailable(front, tier, f"not deferred: {exc}")
        if created:
            self._count(tier, Priority.DEFER, "deferred")
        return _accepted(kept, now=queue.clock.wall())


TRIAGE_KEY: web.AppKey[Triage] = web.AppKey("failover_triage")


def _not_streaming(body: Any) -> Any:
    """The body a replay sends: a whole answer is kept, so no stream is asked for."""
    if isinstance(body, dict) and ("stream" in body or "stream_options" in body):
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return body


def _accepted(job: Job, *, now: float) -> web.Response:
    doc = job_document(job, now=now)
    doc["url"] = f"{JOBS_PATH}/{job.id}"
    headers = {
        "Location": f"{JOBS_PATH}/{job.id}",
        HEADER_JOB: job.id,
        HEADER_IDEMPOTENCY: job.idempotency_key,
    }
    return json_answer(doc, status=202, headers=headers)


class JobsEndpoint:
    """``GET /v1/failover/jobs/{id}``: the job and, once it has one, its answer."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    async def get(self, http: web.Request) -> web.StreamResponse:
        job_id = http.match_info.get("id", "")
        try:
            job = await self._queue.store.get(job_id) if _JOB_ID.fullmatch(job_id) else None
        except JobStoreError as exc:  # the fleet's Redis away: say so, fast, and when to retry
            why = Overloaded(f"the job store is unavailable ({exc}); retry shortly", status=503)
            return front_for_request(http).error(why, retry_after=5.0)
        owner = owner_of(presented_key(http))
        if job is None or (job.owner and not hmac.compare_digest(job.owner, owner)):
            message = f"no job {job_id[:80]!r} for this client key"
            return front_for_request(http).error(BadRequest(message, status=404))
        headers = {HEADER_IDEMPOTENCY: job.idempotency_key, HEADER_JOB: job.id}
        return json_answer(job_document(job, now=self._queue.clock.wall()), headers=headers)


class JobRunner:
    """One replay attempt of a job: decoded as its front decodes it, routed through
    ``router.complete`` on its tier, answered in its front's format. An answer from the
    ladder's cache or static rung is no answer to a job that chose to wait: it is tried again
    (a step-down tier's answer, a model's, is kept)."""

    def __init__(self, router: Router, *, max_result_bytes: int) -> None:
        self._router = router
        self._max_result = max_result_bytes

    async def __call__(self, job: Job) -> Outcome:
        front = _FRONTS.get(job.front)
        if front is None:
            return Retry(f"unknown front format {job.front!r}")
        try:
            origin = Origin(raw=job.body, headers=job.headers)
            asked = _json.loads(job.body)
            if front is GEMINI:  # Gemini names the model in the path: the job kept it
                _, request = GEMINI.codec.parse_request(asked, job.model, origin)
            else:
                _, request = front.parse(asked, origin)
            response = await self._router.complete(request, tier=job.tier)
        except FailoverError as exc:
            shown = public_error(exc)
            if shown.status is not None and 400 <= shown.status < 500 and shown.status != 429:
                answer = front.error(shown)  # the provider's refusal is the job's answer
                return Done(answer.status, _body_of(answer))
            return Retry(str(shown.message)[:500])
        if response.degraded in _NOT_AN_ANSWER:  # the job waits for a provider instead
            return Retry(f"served by the {response.degraded} rung of the ladder, not a provider")
        if response.raw is not None:
            body = bytes(response.raw)
        else:
            body = _json.dumps(front.render(response))
        if len(body) > self._max_result:
            too_big = ProviderFault("the answer is over jobs.max_result_bytes", status=502)
            answer = front.error(too_big)
            return Done(answer.status, _body_of(answer))
        return Done(200, body, degraded=response.degraded)  # "tier": a step-down tier's


def _body_of(answer: web.Response) -> bytes:
    body = answer.body
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


def open_jobs(
    *,
    path: str,
    store: JobStore | None = None,
    router: Router,
    clock: Clock,
    meter: Meter,
    limits: ReplayLimits,
    max_jobs: int,
    max_job_bytes: int,
    max_result_bytes: int,
    allow_hosts: Collection[str],
    callback_timeout: float,
    on_dead: Iterable[Callable[[Job, str], None]] = (),
) -> JobQueue:
    """The job queue of a runtime: ``store`` (a fleet's Redis), else the SQLite store at
    ``path``; a replayer through ``router`` (started by the runtime), its metrics."""
    store = store if store is not None else SqliteJobStore(path)
    sender = HttpCallbackSender(timeout=callback_timeout) if allow_hosts else None
    replayer = Replayer(
        store,
        run=JobRunner(router, max_result_bytes=max_result_bytes),
        degraded=router.degraded,
        clock=clock,
        limits=limits,
        tiers=lambda: router.tiers,
        on_dead=on_dead,
        send_callback=sender,
    )
    register_job_metrics(replayer, meter, tiers=lambda: router.tiers, now=clock.wall)
    queue = JobQueue(
        store=store,
        replayer=replayer,
        clock=clock,
        max_jobs=max_jobs,
        max_job_bytes=max_job_bytes,
        allow_hosts=frozenset(allow_hosts),
    )
    if sender is not None:
        queue.closers.append(sender.close)
    return queue
