"""Spend (issue 21 item 5): what requests cost at the user's prices, daily budgets that alert at
80 % and 100 % and, enforced, move traffic to the next target; the day's totals survive a
restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from controller._clock import FakeClock
from controller._errors import ConfigError
from controller._spend_shadow import budgets, prices, spend_path
from controller.config import parse_config
from controller.events import AttemptReason
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.model import Usage
from controller.notify.alert import Alert, AlertEvent, Severity
from controller.notify.messages import headline
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing._spend import Budget, Price, Prices, Spend
from controller.routing.plan import Plan, Target, TierPlan
from controller.routing.policy import never_retry
from controller.routing.router import Router
from controller.telemetry import names
from tests.conftest import Recorder, adapter
from tests.gateway_support import TIMEOUTS, GatewayTestBackend
from tests.telemetry_support import attempt

REPLY = "one two three four five"  # the fake counts words: 5 output tokens
PROMPT = "hello there"  # 2 input tokens
A_PRICE = Price(input=2.0, output=8.0)  # USD per million
B_PRICE = Price(input=1.0, output=1.0)
A_COST = (2 * 2.0 + 5 * 8.0) / 1e6  # 44 micro-USD a request on a
B_COST = (2 * 1.0 + 5 * 1.0) / 1e6  # 7 on b
DAY = 86_400.0


def test_a_price_costs_input_output_and_cached_tokens() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.3)
    assert price.cost(Usage(1_000_000, 0)) == pytest.approx(3.0)
    assert price.cost(Usage(0, 2_000_000)) == pytest.approx(30.0)
    assert price.cost(Usage(1_000_000, 0, 500_000)) == pytest.approx(1.5 + 0.15)
    # No cached_input price: a cache read costs as much as any other input token.
    assert Price(input=3.0).cost(Usage(1_000_000, 0, 500_000)) == pytest.approx(3.0)
    found = Prices({("p", "m"): price, ("p", "*"): B_PRICE})
    assert found.of("p", "m") is price
    assert found.of("p", "other") is B_PRICE
    assert found.of("q", "m") is None


@dataclass
class Env:
    url: str
    a: FakeProvider
    b: FakeProvider
    spend: Spend
    clock: FakeClock
    recorder: Recorder
    reader: InMemoryMetricReader
    alerts: list[Alert]


@asynccontextmanager
async def priced(tmp_path: Path, *budget: Budget) -> AsyncIterator[Env]:
    """Tier ``t``: fake ``a`` first, ``b`` next, both priced; a real gateway in front."""
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tests.spend")
    tracer = TracerProvider().get_tracer("tests.spend")
    clock, recorder = FakeClock(), Recorder()
    alerts: list[Alert] = []
    spend = Spend(
        prices=Prices({("a", "m-a"): A_PRICE, ("b", "*"): B_PRICE}),
        budgets=budget,
        clock=clock,
        meter=meter,
        on_alert=alerts.append,
        path=tmp_path / "state.spend.json",
    )
    async with FakeProvider(name="a", reply=REPLY) as a, FakeProvider(name="b", reply=REPLY) as b:
        tier = TierPlan(
            name="t", targets=(Target(provider="a", model="m-a"), Target(provider="b", model="m-b"))
        )
        router = Router(
            tiers={"t": tier},
            providers={"a": adapter(a, "openai", "a"), "b": adapter(b, "anthropic", "b")},
            listeners=[recorder, spend],
            steers=[spend],
            retry=never_retry,
            default_timeouts=TIMEOUTS,
        )
        backend = GatewayTestBackend(router=router, tracer=tracer, meter=meter, recorder=recorder)
        app = create_app(backend, settings=GatewaySettings())
        async with GatewayServer(app, host="127.0.0.1", port=0, grace=2.0) as server:
            yield Env(server.url, a, b, spend, clock, recorder, reader, alerts)
        await router.aclose()


async def _ask(env: Env, times: int, *, stream: bool = False) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{env.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        for _ in range(times):
            messages: Any = [{"role": "user", "content": PROMPT}]
            if stream:
                events = await client.chat.completions.create(
                    model="t", messages=messages, stream=True
                )
                said = "".join(
                    [c.choices[0].delta.content or "" async for c in events if c.choices]
                )
            else:
                answer = await client.chat.completions.create(model="t", messages=messages)
                said = answer.choices[0].message.content or ""
            assert said == REPLY


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = reader.get_metrics_data()
    found: dict[tuple[tuple[str, Any], ...], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value: Any = getattr(point, "value", 0)
                        found[tuple(sorted((point.attributes or {}).items()))] = float(value)
    return found


async def test_the_cost_metric_matches_a_hand_computed_total(tmp_path: Path) -> None:
    """Seven answers (four whole, three streamed) on a, two on b after a fails: the counter
    holds exactly 7 x 44 and 2 x 7 micro-USD, by tier, provider and model."""
    async with priced(tmp_path) as env:
        await _ask(env, 4)
        await _ask(env, 3, stream=True)
        env.a.set_fault(FaultMode.ERROR_500)
        await _ask(env, 2)
        costs = _points(env.reader, names.METRIC_COST)
    assert costs == {
        (("model", "m-a"), ("provider", "a"), ("tier", "t")): pytest.approx(7 * A_COST),
        (("model", "m-b"), ("provider", "b"), ("tier", "t")): pytest.approx(2 * B_COST),
    }
    assert env.spend.cost("t", "a", "m-a") == pytest.approx(7 * 44e-6)


async def test_an_enforced_budget_alerts_at_80_and_100_percent_once_and_moves_traffic(
    tmp_path: Path,
) -> None:
    """a's budget is 100 micro-USD a day: the second request (88) crosses 80 %, the third (132)
    100 %; from the fourth on b serves, the first attempt naming the reason budget. Each alert
    comes once; the next UTC day a serves again."""
    budget = Budget(scope="provider", name="a", daily_usd=100e-6, enforce=True)
    async with priced(tmp_path, budget) as env:
        await _ask(env, 1)
        assert env.alerts == []
        await _ask(env, 1)
        assert [a.event for a in env.alerts] == [AlertEvent.BUDGET_WARNING]
        await _ask(env, 1)
        assert [a.event for a in env.alerts] == [
            AlertEvent.BUDGET_WARNING,
            AlertEvent.BUDGET_EXCEEDED,
        ]
        assert [a.provider for a in env.recorder.attempts] == ["a", "a", "a"]
        await _ask(env, 3)
        moved = env.recorder.attempts[3:]
        assert [(e.provider, e.reason, e.failover_from) for e in moved] == [
            ("b", AttemptReason.BUDGET, "a")
        ] * 3
        assert len(env.alerts) == 2  # still one of each
        assert env.alerts[1].severity is Severity.CRITICAL
        assert headline(env.alerts[1]) == "💰 provider a: today's budget spent"
        assert "a spent $0.000132 of its $0.000100 daily budget (132%)" in (
            env.alerts[1].detail or ""
        )
        used = _points(env.reader, names.METRIC_BUDGET_USED)
        assert used == {(("name", "a"), ("scope", "provider")): pytest.approx(1.32)}

        env.clock.advance(DAY)  # a new UTC day: the budget starts afresh
        await _ask(env, 1)
        assert env.recorder.attempts[-1].provider == "a"
        assert env.recorder.attempts[-1].reason is AttemptReason.PRIMARY


async def test_a_budget_not_enforced_only_alerts(tmp_path: Path) -> None:
    budget = Budget(scope="tier", name="t", daily_usd=50e-6)
    async with priced(tmp_path, budget) as env:
        await _ask(env, 3)
        assert [a.event for a in env.alerts] == [
            AlertEvent.BUDGET_WARNING,
            AlertEvent.BUDGET_EXCEEDED,
        ]
        assert env.alerts[0].tier == "t"
        assert {e.provider for e in env.recorder.attempts} == {"a"}


def test_an_enforced_tier_budget_moves_to_an_unpriced_target_and_never_refuses() -> None:
    clock = FakeClock()
    tier = TierPlan(
        name="t", targets=(Target(provider="a", model="m"), Target(provider="local", model="m"))
    )
    spend = Spend(
        prices=Prices({("a", "*"): A_PRICE}),
        budgets=[Budget(scope="tier", name="t", daily_usd=1e-6, enforce=True)],
        clock=clock,
    )
    spend.on_attempt(attempt(tier="t", provider="a", model="m", usage=Usage(2, 5)))
    steered = spend(tier, Plan(tier.targets))
    assert steered is not None
    plan, reason, moved_from = steered
    assert [t.provider for t in plan.targets] == ["local", "a"]
    assert (reason, moved_from) == (AttemptReason.BUDGET, "a")
    only_priced = TierPlan(name="t", targets=(Target(provider="a", model="m"),))
    assert spend(only_priced, Plan(only_priced.targets)) is None  # served as planned


def test_the_days_totals_survive_a_restart(tmp_path: Path) -> None:
    """Written beside the state file; a new Spend on the same file the same day keeps the
    totals, the alerts given and the enforcement; another day starts at 0."""
    clock, path = FakeClock(), tmp_path / "state.spend.json"
    budget = Budget(scope="provider", name="a", daily_usd=50e-6, enforce=True)
    tier = TierPlan(
        name="t", targets=(Target(provider="a", model="m"), Target(provider="b", model="m"))
    )

    def started(alerts: list[Alert]) -> Spend:
        return Spend(
            prices=Prices({("a", "*"): A_PRICE}),
            budgets=[budget],
            clock=clock,
            on_alert=alerts.append,
            path=path,
        )

    first: list[Alert] = []
    spend = started(first)
    spend.on_attempt(attempt(tier="t", provider="a", model="m", usage=Usage(2, 5)))
    spend.flush()
    again: list[Alert] = []
    restarted = started(again)
    assert restarted.spent("provider", "a") == pytest.approx(44e-6)
    restarted.on_attempt(attempt(tier="t", provider="a", model="m", usage=Usage(2, 5)))
    assert [a.event for a in first] == [AlertEvent.BUDGET_WARNING]
    assert [a.event for a in again] == [AlertEvent.BUDGET_EXCEEDED]  # 80 % was said already
    restarted.flush()
    assert started([])(tier, Plan(tier.targets)) is not None  # still enforced after a restart
    clock.advance(DAY)
    assert started([]).spent("provider", "a") == 0.0


@pytest.mark.parametrize(
    "text",
    [
        '{"day": %d, "spent": [], "alerted": []}',
        '{"day": %d, "spent": {"provider:a": "lots"}, "alerted": []}',
        '{"day": %d, "spent": {"provider:a": 1e-6}, "alerted": 3}',
        '{"day": %d, "spent": {"provider:a": null}, "alerted": []}',
    ],
)
def test_a_malformed_spend_file_of_today_is_not_read_and_the_start_goes_on(
    tmp_path: Path, text: str
) -> None:
    """Valid JSON of the right day but the wrong shape (edited by hand, another version's):
    logged and ignored, today starts at 0; the runtime's start never fails on it."""
    clock, path = FakeClock(), tmp_path / "state.spend.json"
    path.write_text(text % int(clock.wall() // DAY))
    budget = Budget(scope="provider", name="a", daily_usd=50e-6, enforce=True)
    spend = Spend(prices=Prices({("a", "*"): A_PRICE}), budgets=[budget], clock=clock, path=path)
    assert spend.spent("provider", "a") == 0.0


# --- config -------------------------------------------------------------------------------------
CONFIG = """\
providers:
  a: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
tiers:
  t:
    targets: [{provider: a, model: m}]
state: {path: %s}
spend:
  prices:
    a:
      m: {input: 2.5, output: 10, cached_input: 1.25}
  budgets:
    providers:
      a: {daily_usd: 20, enforce: true}
    tiers:
      t: {daily_usd: %s}
"""


def test_prices_and_budgets_are_read_from_the_config(tmp_path: Path) -> None:
    config = parse_config(CONFIG % (tmp_path / "s.json", "50"))
    assert prices(config).of("a", "m") == Price(input=2.5, output=10.0, cached_input=1.25)
    assert budgets(config) == [
        Budget(scope="provider", name="a", daily_usd=20.0, enforce=True),
        Budget(scope="tier", name="t", daily_usd=50.0),
    ]
    assert spend_path(config, beside_state=True) == str(tmp_path / "s.spend.json")
    assert spend_path(config, beside_state=False) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (CONFIG % ("s.json", "0"), "config:15: spend.budgets.tiers.t.daily_usd: Input should be"),
        (
            (CONFIG % ("s.json", "5")).replace("output: 10", "output: -1"),
            "config:10: spend.prices.a.m.output: Input should be greater than or equal to 0",
        ),
        (
            (CONFIG % ("s.json", "5")).replace("      t: {daily", "      u: {daily"),
            "config:15: spend.budgets.tiers.u: unknown tier 'u'",
        ),
        (
            (CONFIG % ("s.json", "5")).replace("    a:\n      m:", "    b:\n      m:"),
            "config:9: spend.prices.b: unknown provider 'b'",
        ),
    ],
)
def test_a_bad_price_or_budget_is_refused_at_its_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert str(refused.value).startswith(says)


# --- the runtime: wired from the config ---------------------------------------------------------
RUNTIME_CONFIG = """\
providers:
  a: {{kind: openai, base_url: "{a}", api_key_env: A_KEY}}
  b: {{kind: anthropic, base_url: "{b}", api_key_env: B_KEY}}
tiers:
  t:
    targets: [{{provider: a, model: m-a}}, {{provider: b, model: m-b}}]
    shadow: {{target: {{provider: b, model: m-b}}, share: 1}}
state: {{path: "{state}"}}
spend:
  prices:
    a: {{"*": {{input: 2, output: 8}}}}
    b: {{"*": {{input: 1, output: 1}}}}
  budgets: {{providers: {{a: {{daily_usd: 0.00005, enforce: true}}}}}}
"""


async def test_the_runtime_costs_alerts_steers_shadows_and_keeps_the_day(tmp_path: Path) -> None:
    """From the config: a's budget (50 micro-USD) alerts at the first request (44, 88 %) and the
    second (88), the third goes to b (reason budget); a's answers are shadowed on b; the day's
    totals are written beside the state file and a new runtime starts from them."""
    from controller.config import load_config
    from controller.model import Message, Request
    from controller.runtime import Runtime

    env = {"A_KEY": "sk-a-test-0123456789", "B_KEY": "sk-b-test-0123456789"}
    async with FakeProvider(name="a", reply=REPLY) as a, FakeProvider(name="b", reply=REPLY) as b:
        path = tmp_path / "failover.yaml"
        state = tmp_path / "state.json"
        path.write_text(RUNTIME_CONFIG.format(a=a.url("openai"), b=b.url("anthropic"), state=state))
        runtime = Runtime(load_config(path), config_path=path, env=env)
        await runtime.start()
        recorder = Recorder()
        runtime.router.listeners.add(recorder)
        request = Request(messages=(Message(role="user", content=PROMPT),))
        try:
            for _ in range(3):
                answer = await runtime.router.complete(request, tier="t")
                assert answer.message.content == REPLY
            await runtime.shadow.idle()
            events = [e["event"] for e in runtime.alerts]
            metrics = runtime.render_metrics()[0].decode()
        finally:
            await runtime.stop(grace=0.1)
    assert [(e.provider, e.reason) for e in recorder.attempts] == [
        ("a", AttemptReason.PRIMARY),
        ("a", AttemptReason.PRIMARY),
        ("b", AttemptReason.BUDGET),
    ]
    assert events[:2] == [AlertEvent.BUDGET_EXCEEDED, AlertEvent.BUDGET_WARNING]  # newest first
    assert 'failover_cost_total{model="m-a",provider="a",tier="t"} 8.8e-05' in metrics
    shadowed = 'failover_shadow_requests_total{provider="b",result="%s",tier="t"} %s'
    assert shadowed % ("ok", "2.0") in metrics
    assert shadowed % ("same_target", "1.0") in metrics  # the third: b served it
    assert (tmp_path / "state.spend.json").exists()
    again = Runtime(load_config(path), config_path=path, env=env)
    await again.start()
    try:
        assert again.spend.spent("provider", "a") == pytest.approx(88e-6)
    finally:
        await again.stop(grace=0.1)


async def test_a_reload_changes_the_shadow_and_keeps_the_spend(tmp_path: Path) -> None:
    """tiers (a shadow among them) apply at once; spend waits for a restart."""
    from controller.config import load_config
    from controller.runtime import Runtime

    path, state = tmp_path / "failover.yaml", tmp_path / "state.json"
    text = RUNTIME_CONFIG.format(a="http://127.0.0.1:9/v1", b="http://127.0.0.1:9", state=state)
    path.write_text(text)
    env = {"A_KEY": "sk-a-test-0123456789", "B_KEY": "sk-b-test-0123456789"}
    runtime = Runtime(load_config(path), env=env)
    await runtime.start()
    try:
        assert runtime.shadow.plans["t"].share == 1.0
        path.write_text(text.replace("share: 1}", "share: 0.25}").replace("input: 2,", "input: 9,"))
        runtime.apply_config(load_config(path))
        assert runtime.shadow.plans["t"].share == 0.25
        assert runtime.spend.prices.of("a", "m-a") == Price(input=2.0, output=8.0)
        path.write_text(
            text.replace("    shadow: {target: {provider: b, model: m-b}, share: 1}\n", "")
        )
        runtime.apply_config(load_config(path))
        assert runtime.shadow.plans == {}
    finally:
        await runtime.stop(grace=0.1)
