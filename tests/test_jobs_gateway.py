"""Triage through the gateway, with the official SDKs over real HTTP: while a tier is degraded,
critical is served, drop refused at once with Retry-After, defer answered 202 and kept; after
recovery the replayer sends the deferred jobs and their answers are fetched (or POSTed to an
allowlisted callback). Bad input: an unknown priority, another key's job, a callback host not
allowed. The replayer runs on a fake clock, one tick at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider

from controller._clock import FakeClock
from controller.control.state import HealthState, ProviderStatus, RoutingState, StateHolder
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.gateway._jobs import JobQueue, JobRunner, client_priorities
from controller.jobs import (
    Done,
    HttpCallbackSender,
    Job,
    JobState,
    Replayer,
    ReplayLimits,
    Retry,
    SqliteJobStore,
)
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing.plan import Degrade, Priority, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry import names
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS, GatewayTestBackend

KEY_A, KEY_B, KEY_BATCH = "sk-client-a", "sk-client-b", "sk-client-batch"
PRIORITY = "x-failover-priority"
REPLY = "A deferred question, answered once the tier was back."


@dataclass
class Env:
    url: str
    primary: FakeProvider
    backup: FakeProvider
    state: StateHolder
    recorder: Recorder
    replayer: Replayer
    clock: FakeClock
    store: SqliteJobStore
    metrics: InMemoryMetricReader
    dead: list[str] = field(default_factory=list)

    def outage(self) -> None:
        """The primary is tripped: 1 of 2 targets in rotation, under the 0.6 healthy share."""
        tripped = ProviderStatus(state=HealthState.TRIPPED, traffic_share=0.0)
        statuses = {"primary-openai": tripped, "primary-anthropic": tripped}
        self.state.publish(RoutingState(providers=MappingProxyType(statuses), version=2))
        self.primary.set_fault(FaultMode.ERROR_503)

    def recover(self) -> None:
        self.state.publish(RoutingState(version=3))
        self.primary.clear_fault()

    async def replay(self, ticks: int = 4) -> None:
        for _ in range(ticks):
            self.clock.advance(0.5)
            await self.replayer.tick()
            await self.replayer.settle()

    def triaged(self) -> dict[tuple[str, str], int]:
        data = self.metrics.get_metrics_data()
        found: dict[tuple[str, str], int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == names.METRIC_TRIAGE:
                        for point in metric.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            attrs = point.attributes or {}
                            key = (str(attrs["priority"]), str(attrs["action"]))
                            if point.value:
                                found[key] = int(point.value)
        return found


def _router(
    primary: FakeProvider, backup: FakeProvider, state: StateHolder, rec: Recorder
) -> Router:
    def tier(name: str, default: Priority, *targets: tuple[str, str]) -> TierPlan:
        chosen = tuple(Target(provider=p, model=m) for p, m in targets)
        degrade = Degrade(priority=default, healthy_below=0.6)
        return TierPlan(name=name, targets=chosen, degrade=degrade)

    providers = {
        "primary-openai": adapter(primary, "openai", "primary-openai"),
        "primary-anthropic": adapter(primary, "anthropic", "primary-anthropic"),
        "backup-openai": adapter(backup, "openai", "backup-openai"),
        "backup-anthropic": adapter(backup, "anthropic", "backup-anthropic"),
    }
    tiers = {
        "frontier": tier(
            "frontier",
            Priority.CRITICAL,
            ("primary-openai", "gpt-big"),
            ("backup-anthropic", "claude-alt"),
        ),
        "claude": tier(
            "claude",
            Priority.CRITICAL,
            ("primary-anthropic", "claude-big"),
            ("backup-openai", "gpt-alt"),
        ),
        "batch": tier(
            "batch", Priority.DEFER, ("primary-openai", "gpt-big"), ("backup-openai", "gpt-alt")
        ),
    }
    return Router(
        tiers=tiers,
        providers=providers,
        state=state,
        listeners=[rec],
        retry=never_retry,
        default_timeouts=TIMEOUTS,
    )


@asynccontextmanager
async def triage_env(
    tmp_path: Path, *, allow_hosts: frozenset[str] = frozenset()
) -> AsyncIterator[Env]:
    recorder, state, clock = Recorder(), StateHolder(), FakeClock(wall_start=1_800_000_000.0)
    metrics = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[metrics]).get_meter("tests.jobs")
    tracer = TracerProvider().get_tracer("tests.jobs")
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    async with (
        FakeProvider(name="primary", reply=REPLY) as primary,
        FakeProvider(name="backup", reply=REPLY) as backup,
    ):
        router = _router(primary, backup, state, recorder)
        dead: list[str] = []
        sender = HttpCallbackSender(timeout=2.0)
        replayer = Replayer(
            store,
            run=JobRunner(router, max_result_bytes=1024 * 1024),
            degraded=router.degraded,
            clock=clock,
            limits=ReplayLimits(per_second=10.0, concurrency=4, max_tries=2),
            on_dead=[lambda job, error: dead.append(job.id)],
            send_callback=sender,
        )
        await replayer.start()
        queue = JobQueue(store=store, replayer=replayer, clock=clock, allow_hosts=allow_hosts)
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        backend.retry_wait = 7.0
        more, priorities = client_priorities(
            [("BATCH_KEYS", Priority.DEFER)], {"BATCH_KEYS": KEY_BATCH}
        )
        settings = GatewaySettings(api_keys=(KEY_A, KEY_B, *more))
        app = create_app(backend, settings=settings, jobs=queue, priorities=priorities)
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
            yield Env(
                server.url, primary, backup, state, recorder, replayer, clock, store, metrics, dead
            )
        await replayer.stop()
        await sender.close()
        await store.close()
        await router.aclose()


def _openai(env: Env, key: str = KEY_A) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=key, max_retries=0)


def _ask(text: str = "hello") -> Any:
    return [{"role": "user", "content": text}]


async def _job(env: Env, job_id: str, key: str = KEY_A) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{env.url}/v1/failover/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        ) as answer,
    ):
        return answer.status, await answer.json()


async def test_during_an_outage_critical_is_served_drop_refused_and_defer_kept_then_replayed(
    tmp_path: Path,
) -> None:
    async with triage_env(tmp_path) as env, _openai(env) as client:
        env.outage()
        served = await client.chat.completions.create(model="frontier", messages=_ask())
        assert served.choices[0].message.content == REPLY  # critical: the backup answered
        attempts_before = len(env.recorder.attempts)

        with pytest.raises(openai.InternalServerError) as dropped:
            await client.chat.completions.create(
                model="frontier", messages=_ask(), extra_headers={PRIORITY: "drop"}
            )
        assert dropped.value.status_code == 503
        assert dropped.value.response.headers["Retry-After"] == "7"
        assert "priority is drop" in dropped.value.message
        assert len(env.recorder.attempts) == attempts_before  # refused without a provider call

        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask("later please"), extra_headers={PRIORITY: "defer"}
        )
        assert raw.status_code == 202
        accepted = raw.http_response.json()
        job_id = accepted["id"]
        assert raw.headers["Location"] == f"/v1/failover/jobs/{job_id}"
        assert raw.headers["Idempotency-Key"] == accepted["idempotency_key"]
        assert accepted["status"] == "queued"
        assert len(env.recorder.attempts) == attempts_before  # kept, not sent
        assert (await _job(env, job_id))[1]["status"] == "queued"

        await env.replay()  # still degraded: nothing is replayed
        assert (await _job(env, job_id))[1]["status"] == "queued"

        env.recover()
        await env.replay()
        status, doc = await _job(env, job_id)
        assert status == 200
        assert (doc["status"], doc["attempts"], doc["result_status"]) == ("done", 1, 200)
        assert doc["result"]["object"] == "chat.completion"
        assert doc["result"]["choices"][0]["message"]["content"] == REPLY
        last = env.recorder.routes[-1]
        assert (last.tier, last.served_by) == ("frontier", "primary-openai")
        assert env.triaged() == {("drop", "dropped"): 1, ("defer", "deferred"): 1}


async def test_a_deferred_stream_of_the_anthropic_sdk_is_replayed_as_a_whole_message(
    tmp_path: Path,
) -> None:
    async with (
        triage_env(tmp_path) as env,
        anthropic.AsyncAnthropic(base_url=env.url, api_key=KEY_A, max_retries=0) as client,
    ):
        env.outage()
        raw = await client.messages.with_raw_response.create(
            model="claude",
            max_tokens=64,
            messages=_ask(),
            stream=True,
            extra_headers={PRIORITY: "defer"},
        )
        assert raw.status_code == 202
        job_id = raw.headers["x-failover-job"]
        env.recover()
        await env.replay()
        _, doc = await _job(env, job_id)
        assert doc["status"] == "done"
        assert doc["result"]["type"] == "message"  # whole: a job's answer is not a stream
        assert doc["result"]["content"][0]["text"] == REPLY


async def test_outside_a_degraded_period_defer_and_drop_are_served(tmp_path: Path) -> None:
    async with triage_env(tmp_path) as env, _openai(env) as client:
        for priority in ("defer", "drop"):
            raw = await client.chat.completions.with_raw_response.create(
                model="frontier", messages=_ask(), extra_headers={PRIORITY: priority}
            )
            assert raw.status_code == 200
            assert raw.parse().choices[0].message.content == REPLY
        assert env.triaged() == {}


async def test_a_client_keys_default_priority_and_its_idempotency_key(tmp_path: Path) -> None:
    async with triage_env(tmp_path) as env, _openai(env, KEY_BATCH) as client:
        env.outage()
        headers = {"Idempotency-Key": "order-42"}
        first = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(), extra_headers=headers
        )
        again = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(), extra_headers=headers
        )
        assert (first.status_code, again.status_code) == (202, 202)  # the key's default: defer
        assert first.headers["x-failover-job"] == again.headers["x-failover-job"]
        assert first.headers["Idempotency-Key"] == "order-42"
        critical = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(), extra_headers={PRIORITY: "critical"}
        )
        assert critical.status_code == 200  # the header wins over the key's default
    async with triage_env(tmp_path / "b") as env, _openai(env, KEY_A) as client:
        env.outage()
        tiers_default = await client.chat.completions.with_raw_response.create(
            model="batch", messages=_ask()
        )
        assert tiers_default.status_code == 202  # tier batch defers by default


async def test_an_unknown_priority_is_a_400_naming_the_allowed_values(tmp_path: Path) -> None:
    async with (
        triage_env(tmp_path) as env,
        _openai(env) as client,
        anthropic.AsyncAnthropic(base_url=env.url, api_key=KEY_A, max_retries=0) as claude,
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="frontier", messages=_ask(), extra_headers={PRIORITY: "urgent"}
            )
        assert "allowed: critical, defer, drop" in refused.value.message
        with pytest.raises(anthropic.BadRequestError) as refused_too:
            await claude.messages.create(
                model="claude", max_tokens=8, messages=_ask(), extra_headers={PRIORITY: "soon"}
            )
        assert "allowed: critical, defer, drop" in refused_too.value.message
        assert env.recorder.attempts == []


async def test_another_keys_job_is_a_404_like_one_that_does_not_exist(tmp_path: Path) -> None:
    async with triage_env(tmp_path) as env, _openai(env) as client:
        env.outage()
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(), extra_headers={PRIORITY: "defer"}
        )
        job_id = raw.headers["x-failover-job"]
        assert (await _job(env, job_id, KEY_A))[0] == 200
        status, other = await _job(env, job_id, KEY_B)
        assert status == 404
        assert job_id in other["error"]["message"]
        assert (await _job(env, "job_" + "x" * 24, KEY_A))[0] == 404
        assert (await _job(env, job_id, "sk-not-a-key"))[0] == 401


async def test_a_callback_host_not_allowlisted_is_a_400_and_an_allowed_one_gets_the_result(
    tmp_path: Path,
) -> None:
    got: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.json()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    async with (
        GatewayServer(receiver, host="127.0.0.1", port=0, grace=1.0) as hooks,
        triage_env(tmp_path, allow_hosts=frozenset({"127.0.0.1"})) as env,
        _openai(env) as client,
    ):
        env.outage()
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="frontier",
                messages=_ask(),
                extra_headers={PRIORITY: "defer", "x-failover-callback": "https://evil.test/x"},
            )
        assert "host 'evil.test' is not allowed" in refused.value.message
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier",
            messages=_ask(),
            extra_headers={PRIORITY: "defer", "x-failover-callback": f"{hooks.url}/hook"},
        )
        job_id = raw.headers["x-failover-job"]
        env.recover()
        for _ in range(10):  # bounded: the POST goes out on a tick after the answer is written
            await env.replay(1)
            if got:
                break
            await asyncio.sleep(0.01)
        ((headers, body),) = got
        assert headers["x-failover-job"] == job_id
        assert headers["Idempotency-Key"] == raw.headers["Idempotency-Key"]
        assert body["result"]["choices"][0]["message"]["content"] == REPLY
        _, doc = await _job(env, job_id)
        assert doc["callback"] == {"state": "delivered", "attempts": 1}


async def test_a_job_the_providers_keep_failing_goes_to_the_dead_letters(tmp_path: Path) -> None:
    async with triage_env(tmp_path) as env, _openai(env) as client:
        env.outage()
        raw = await client.chat.completions.with_raw_response.create(
            model="frontier", messages=_ask(), extra_headers={PRIORITY: "defer"}
        )
        job_id = raw.headers["x-failover-job"]
        env.recover()
        env.primary.set_fault(FaultMode.ERROR_500)  # healthy to the router, failing every call
        env.backup.set_fault(FaultMode.ERROR_500)
        for _ in range(40):  # 2 tries, 5 s backoff between: bounded ticks of 0.5 s
            await env.replay(1)
            if env.dead:
                break
        assert env.dead == [job_id]
        _, doc = await _job(env, job_id)
        assert (doc["status"], doc["attempts"]) == ("dead", 2)
        assert "every provider failed" in doc["error"]


async def test_a_replay_answered_by_the_ladders_static_rung_is_tried_again() -> None:
    async with FakeProvider(name="down") as down:
        down.set_fault(FaultMode.ERROR_500)
        ladder = Degrade(static="We are degraded; try later.")
        tier = TierPlan(name="t", targets=(Target(provider="down", model="m"),), degrade=ladder)
        router = Router(
            tiers={"t": tier},
            providers={"down": adapter(down, "openai", "down")},
            retry=never_retry,
            default_timeouts=TIMEOUTS,
        )
        job = Job(
            id="job_" + "s" * 24,
            owner="",
            tier="t",
            front="openai",
            model="t",
            body=b'{"model": "t", "messages": [{"role": "user", "content": "hi"}]}',
            headers={},
            idempotency_key="k",
            callback=None,
            state=JobState.RUNNING,
            attempts=1,
            created_at=0.0,
            next_at=0.0,
        )
        try:
            outcome = await JobRunner(router, max_result_bytes=1 << 20)(job)
            assert outcome == Retry("served by the static rung of the ladder, not a provider")
            down.clear_fault()
            served = await JobRunner(router, max_result_bytes=1 << 20)(job)
            assert isinstance(served, Done)
            assert served.status == 200
        finally:
            await router.aclose()


async def test_a_replay_a_step_down_tier_answered_is_kept_and_says_so() -> None:
    async with FakeProvider(name="down") as down, FakeProvider(name="cheap", reply=REPLY) as up:
        down.set_fault(FaultMode.ERROR_500)
        tiers = {
            "t": TierPlan(
                name="t",
                targets=(Target(provider="down", model="m"),),
                degrade=Degrade(step_down="cheap"),
            ),
            "cheap": TierPlan(name="cheap", targets=(Target(provider="up", model="small"),)),
        }
        router = Router(
            tiers=tiers,
            providers={"down": adapter(down, "openai", "down"), "up": adapter(up, "openai", "up")},
            retry=never_retry,
            default_timeouts=TIMEOUTS,
        )
        job = Job(
            id="job_" + "d" * 24,
            owner="",
            tier="t",
            front="openai",
            model="t",
            body=b'{"model": "t", "messages": [{"role": "user", "content": "hi"}]}',
            headers={},
            idempotency_key="k",
            callback=None,
            state=JobState.RUNNING,
            attempts=1,
            created_at=0.0,
            next_at=0.0,
        )
        try:
            outcome = await JobRunner(router, max_result_bytes=1 << 20)(job)
        finally:
            await router.aclose()
    assert isinstance(outcome, Done)
    assert (outcome.status, outcome.degraded) == (200, "tier")
    assert REPLY in outcome.body.decode()
