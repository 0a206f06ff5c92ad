"""Shadow comparison (issue 21 item 3): a share of a tier's requests is sent again to a
candidate after the primary answered; agreement, latency, errors and cost are recorded, and
nothing of it reaches the client or the request path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller.config import parse_config
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import Message, ToolCall
from controller.providers.fake import FakeProvider, Fault, FaultMode
from controller.routing._degrade import AnswerCache
from controller.routing._shadow import SPAN_SHADOW, Shadow, ShadowPlan, agreement
from controller.routing._spend import Price, Prices
from controller.routing.plan import Degrade, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry import names
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS, GatewayTestBackend, wait_for

REPLY = "The answer is forty two and nothing else"
OTHER = "Forty two"
PROMPT = "what is six times seven"


# --- agreement ----------------------------------------------------------------------------------
def _said(text: str = "", *calls: tuple[str, str]) -> Message:
    tool_calls = tuple(ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls))
    return Message(role="assistant", content=text, tool_calls=tool_calls)


def test_agreement_compares_text_exactly_and_tool_calls_as_json_values() -> None:
    same = agreement(_said("forty two"), _said("forty two"))
    assert (same.text_equal, same.tools_equal, same.length_ratio) == (True, None, 1.0)
    other = agreement(_said("forty two"), _said("Forty two."))
    assert other.text_equal is False
    assert other.length_ratio == pytest.approx(10 / 9)
    # the same call, its arguments spaced and ordered differently: equal as JSON values
    calls = agreement(
        _said("", ("get_weather", '{"city": "Oslo", "unit": "C"}')),
        _said("", ("get_weather", '{"unit":"C","city":"Oslo"}')),
    )
    assert (calls.text_equal, calls.tools_equal) == (True, True)
    differ = agreement(
        _said("", ("get_weather", '{"city": "Oslo"}')), _said("", ("get_weather", '{"city": 1}'))
    )
    assert differ.tools_equal is False
    renamed = agreement(_said("", ("a", "{}")), _said("", ("b", "{}")))
    assert renamed.tools_equal is False
    only_text = agreement(_said("", ("a", "{}")), _said("I would call a"))
    assert only_text.tools_equal is False
    assert agreement(_said(""), _said("x")).length_ratio == float("inf")


# --- through the gateway, with the openai SDK ---------------------------------------------------
@dataclass
class Env:
    url: str
    primary: FakeProvider
    candidate: FakeProvider
    shadow: Shadow
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter


@asynccontextmanager
async def shadowed(
    candidate_reply: str = REPLY,
    *,
    share: float = 1.0,
    max_concurrency: int = 2,
    max_queue: int = 16,
    daily_requests: int = 1000,
    daily_usd: float | None = None,
    candidate_kind: str = "openai",
    candidate_in_tier: bool = False,
    cache: bool = False,
) -> AsyncIterator[Env]:
    """Tier ``t``: the primary fake (OpenAI format) serves, the candidate fake (of
    ``candidate_kind``) is the tier's shadow; a real gateway in front, metrics and spans read
    back from in-memory readers."""
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tests.shadow")
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tracing.get_tracer("tests.shadow")
    async with (
        FakeProvider(name="primary", reply=REPLY) as primary,
        FakeProvider(name="candidate", reply=candidate_reply) as candidate,
    ):
        providers = {
            "primary": adapter(primary, "openai", "primary"),
            "candidate": adapter(candidate, candidate_kind, "candidate"),
        }
        targets = [Target(provider="primary", model="m-1")]
        if candidate_in_tier:  # the tier fails over to the candidate
            targets.append(Target(provider="candidate", model="m-2"))
        tier = TierPlan(name="t", targets=tuple(targets), degrade=Degrade(cache=cache))
        plan = ShadowPlan(
            target=Target(provider="candidate", model="m-2"),
            share=share,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            daily_requests=daily_requests,
            daily_usd=daily_usd,
        )
        prices = Prices({("candidate", "m-2"): Price(input=3.0, output=15.0)})
        shadow = Shadow({"t": plan}, clock=FakeClock(), prices=prices, meter=meter, tracer=tracer)
        router = Router(
            tiers={"t": tier},
            providers=providers,
            retry=never_retry,
            default_timeouts=TIMEOUTS,
            cache=AnswerCache(clock=FakeClock()) if cache else None,
        )
        shadow.attach(router)
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=Recorder())
        app = create_app(backend, settings=GatewaySettings())
        try:
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
                yield Env(server.url, primary, candidate, shadow, reader, spans)
        finally:
            await shadow.aclose()
            await router.aclose()


async def _ask(env: Env, *, stream: bool, tools: bool = False) -> tuple[str, dict[str, Any]]:
    """(answer text or tool-call name, the whole answer as the SDK parsed it)."""
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": "multiply",
                    "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
                },
            }
        ]
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        messages: Any = [{"role": "user", "content": PROMPT}]
        if not stream:
            answer = await client.chat.completions.create(model="t", messages=messages, **extra)
            choice = answer.choices[0].message
            said = choice.content or (choice.tool_calls[0].function.name if tools else "")
            return said, answer.model_dump(exclude={"id", "created"})
        pieces: list[str] = []
        events = await client.chat.completions.create(
            model="t", messages=messages, stream=True, **extra
        )
        async for chunk in events:
            if chunk.choices:
                delta = chunk.choices[0].delta
                pieces.append(delta.content or "")
                calls = delta.tool_calls or ()
                pieces.extend(c.function.name or "" for c in calls if c.function is not None)
        return "".join(pieces), {}


def _sums(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = reader.get_metrics_data()
    found: dict[tuple[tuple[str, Any], ...], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    value: Any = getattr(point, "value", None)
                    value = getattr(point, "count", 0) if value is None else value
                    found[tuple(sorted((point.attributes or {}).items()))] = float(value)
    return found


def _agreement(env: Env) -> dict[tuple[str, str], float]:
    return {
        (dict(k)["check"], dict(k)["result"]): v
        for k, v in _sums(env.reader, names.METRIC_SHADOW_AGREEMENT).items()
    }


def _results(env: Env) -> dict[str, float]:
    return {
        dict(k)["result"]: v for k, v in _sums(env.reader, names.METRIC_SHADOW_REQUESTS).items()
    }


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_agreeing_candidate_is_recorded_as_equal(stream: bool, kind: str) -> None:
    """The served answer (relayed as it came from an OpenAI-format primary: read from its
    bytes, or assembled from the stream) against the candidate's, of the same format or
    translated: equal text, length ratio 1; the candidate's cost at its price."""
    async with shadowed(REPLY, candidate_kind=kind) as env:
        said, _ = await _ask(env, stream=stream)
        assert said == REPLY
        await env.shadow.idle()
        assert _results(env) == {"ok": 1}
        assert _agreement(env) == {("text", "equal"): 1}
        ratios = _sums(env.reader, names.METRIC_SHADOW_LENGTH_RATIO)
        assert list(ratios.values()) == [1]
        # the candidate's tokens at 3 / 15 USD per million: the fake counts words
        input_tokens, output_tokens = len(PROMPT.split()), len(REPLY.split())
        cost = (input_tokens * 3.0 + output_tokens * 15.0) / 1e6
        assert list(_sums(env.reader, names.METRIC_SHADOW_COST).values()) == [pytest.approx(cost)]
        roles = {dict(k)["role"] for k in _sums(env.reader, names.METRIC_SHADOW_DURATION)}
        assert roles == {"served", "shadow"}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_disagreeing_candidate_is_recorded_as_differing(stream: bool) -> None:
    async with shadowed(OTHER) as env:
        assert (await _ask(env, stream=stream))[0] == REPLY
        await env.shadow.idle()
        assert _agreement(env) == {("text", "differ"): 1}
        [span] = [s for s in env.spans.get_finished_spans() if s.name == SPAN_SHADOW]
        attributes = dict(span.attributes or {})
        assert attributes["failover.shadow.text_equal"] is False
        assert attributes["failover.shadow.length_ratio"] == pytest.approx(len(OTHER) / len(REPLY))
        # agreement figures only: neither answer's content, nor the prompt, is on the span
        for value in attributes.values():
            assert not (isinstance(value, str) and ("forty" in value.lower() or "six" in value))


async def test_tool_calls_are_compared_by_name_and_arguments() -> None:
    """Both fakes call the first tool offered with the same arguments: the call agrees."""
    async with shadowed(OTHER) as env:
        assert (await _ask(env, stream=False, tools=True))[0] == "multiply"
        await env.shadow.idle()
        assert _agreement(env) == {("text", "equal"): 1, ("tool_calls", "equal"): 1}


async def test_the_shadow_span_is_a_child_of_the_route() -> None:
    async with shadowed() as env:
        await _ask(env, stream=False)
        await env.shadow.idle()
        finished = env.spans.get_finished_spans()
        [shadow] = [s for s in finished if s.name == SPAN_SHADOW]
        servers = [s for s in finished if s.kind.name == "SERVER"]
        assert shadow.context is not None
        assert shadow.parent is not None
        assert any(s.context and s.context.trace_id == shadow.context.trace_id for s in servers)
        assert dict(shadow.attributes or {})[names.FAILOVER_PROVIDER] == "candidate"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", [FaultMode.HANG, FaultMode.ERROR_500])
async def test_a_hanging_or_failing_shadow_changes_nothing_for_the_client(
    stream: bool, fault: FaultMode
) -> None:
    """The client's answer is the same byte for byte as without a shadow, and it arrives while
    a hanging candidate still has not answered (so the request never waited on it); a failing
    one is counted by its error type."""
    async with shadowed(share=1e-9) as plain:  # effectively no shadow
        _, unshadowed = await _ask(plain, stream=False)
        assert plain.candidate.requests == 0
    async with shadowed() as env:
        env.candidate.set_fault(fault)
        said, answer = await _ask(env, stream=stream)
        assert said == REPLY
        if not stream:
            assert answer == unshadowed
        if fault is FaultMode.HANG:
            # the candidate never answers, and the client has its answer: it did not wait
            await wait_for(lambda: env.shadow.running == 1 and env.candidate.requests == 1)
            return  # shadowed() cuts it
        await env.shadow.idle()
        [(result, count)] = _results(env).items()
        assert (result, count) == ("overloaded", 1)  # the fake's 500 is an overloaded error
        assert _agreement(env) == {}


async def test_concurrency_queue_and_daily_allowance_are_bounded() -> None:
    """One call at once, one waiting: of four requests on a hanging candidate, one runs, one
    waits and two are dropped; a daily allowance of two shadows the first two only."""
    async with shadowed(max_concurrency=1, max_queue=1) as env:
        env.candidate.set_fault(FaultMode.HANG)
        for _ in range(4):
            assert (await _ask(env, stream=False))[0] == REPLY
        await wait_for(lambda: env.shadow.running == 1)
        assert _results(env) == {"dropped": 2}
    async with shadowed(daily_requests=2) as env:
        for _ in range(3):
            await _ask(env, stream=False)
        await env.shadow.idle()
        assert _results(env) == {"ok": 2, "over_budget": 1}
        assert env.candidate.requests == 2


async def test_a_request_dropped_by_a_full_queue_spends_none_of_the_daily_allowance() -> None:
    """The allowance counts calls made: a burst that finds the queue full is dropped without
    using the day's daily_requests up (else a burst on a slow candidate would silence the
    shadow for the rest of the day after a handful of calls)."""
    async with shadowed(max_concurrency=1, max_queue=1, daily_requests=3) as env:
        env.candidate.set_fault(FaultMode.HANG)
        for _ in range(6):
            assert (await _ask(env, stream=False))[0] == REPLY
        await wait_for(lambda: env.shadow.running == 1)
        assert _results(env) == {"dropped": 4}  # one running, one waiting, one call still allowed


async def test_the_daily_usd_allowance_holds_for_the_calls_that_waited_in_the_queue() -> None:
    """A call admitted while the allowance was not used up, but queued behind a slow one, is
    checked again when its turn comes: once the first call's cost used the day's allowance,
    the queued ones are not sent (over_budget), so the queue cannot multiply the allowance."""
    async with shadowed(max_concurrency=1, daily_usd=1e-9) as env:
        env.candidate.set_fault(Fault(mode=FaultMode.SLOW_FIRST_TOKEN, delay=1.0, count=1))
        for _ in range(4):
            assert (await _ask(env, stream=False))[0] == REPLY
        await env.shadow.idle()
        assert _results(env) == {"ok": 1, "over_budget": 3}
        assert env.candidate.requests == 1


async def test_a_daily_usd_allowance_whose_candidate_has_no_running_price_sends_nothing() -> None:
    """A reload may give a tier a shadow with daily_usd and its candidate's price in
    spend.prices, but prices apply at the restart: with no price the running shadow cannot count
    the allowance, so it sends nothing (over_budget) rather than without a bound."""
    async with shadowed(daily_usd=1.0) as env:
        plan = env.shadow.plans["t"]
        unpriced = Target(provider="candidate", model="m-unpriced")
        env.shadow.plans = {"t": replace(plan, target=unpriced)}
        for _ in range(3):
            assert (await _ask(env, stream=False))[0] == REPLY
        await env.shadow.idle()
        assert _results(env) == {"over_budget": 3}
        assert env.candidate.requests == 0


async def test_a_served_stream_over_the_shadows_bound_is_not_kept_for_it() -> None:
    """A cache-enabled tier keeps a stream's chunks up to the cache's bound (64 MiB), more than
    the shadow's: such an answer is not queued for the comparison (too_big), so the shadow's
    queue holds at most max_bytes per request whatever the tier's cache keeps."""
    async with shadowed(cache=True) as env:
        env.shadow.max_bytes = 10  # the answer's chunks are more than 10 bytes
        assert (await _ask(env, stream=True))[0] == REPLY
        await env.shadow.idle()
        assert _results(env) == {"too_big": 1}
        assert env.candidate.requests == 0


async def test_a_request_the_candidate_served_itself_is_not_shadowed() -> None:
    async with shadowed(candidate_in_tier=True) as env:
        env.primary.set_fault(FaultMode.ERROR_500)
        assert (await _ask(env, stream=False))[0] == REPLY  # served by the candidate
        await env.shadow.idle()
        assert _results(env) == {"same_target": 1}
        assert env.candidate.requests == 1


# --- config -------------------------------------------------------------------------------------
CONFIG = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t:
    targets: [{provider: a, model: m}]
    shadow:
      target: {provider: b, model: n}
      share: %s
      daily_usd: 2
spend:
  prices:
    b: {"*": {input: 1, output: 2}}
"""


def test_a_tier_shadow_is_read_from_the_config() -> None:
    from controller._spend_shadow import shadow_plans

    config = parse_config(CONFIG % "0.05")
    assert shadow_plans(config) == {
        "t": ShadowPlan(target=Target(provider="b", model="n"), share=0.05, daily_usd=2.0)
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (CONFIG % "1.5", "config:9: tiers.t.shadow.share: Input should be less than or equal to 1"),
        (CONFIG % "0", "config:9: tiers.t.shadow.share: Input should be greater than 0"),
        (
            (CONFIG % "0.1").replace('"*"', "other"),
            "config:10: tiers.t.shadow.daily_usd: needs a price for b 'n' in spend.prices",
        ),
        (
            (CONFIG % "0.1").replace("{provider: b, model: n}", "{provider: c, model: n}"),
            "config:8: tiers.t.shadow.target.provider: unknown provider 'c'",
        ),
    ],
)
def test_a_bad_shadow_is_refused_at_its_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert str(refused.value).startswith(says)
