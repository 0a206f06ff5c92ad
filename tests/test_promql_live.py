"""PromQL tripwires against the real Prometheus (Debian 2.42), scraping an exporter the test sets.

The controller and the evaluator run on a FakeClock: only Prometheus has its own (a 1 s scrape),
so a test waits, bounded, until Prometheus has seen the exporter's new value, then evaluates and
ticks by hand. A stand-in in front of Prometheus (tests/promql_support.py) plays a Prometheus in
trouble: an HTTP error, garbage, an error answer, the wrong result type, no answer at all, and
nothing listening. Then a whole Runtime (real clock) trips and alerts from a rule, and in a fleet
on a real redis-server only the leader evaluates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from controller._clock import FakeClock
from controller.config import load_config
from controller.control._promql_eval import PromqlTripwires
from controller.control.config import TripwireConfig
from controller.control.decide import TransitionKind, TripCause
from controller.control.loop import Controller
from controller.control.promql import PromqlConfig, PromqlRule, PromqlSignal, RuleState
from controller.control.state import HealthState, StateHolder
from controller.control.store import MemoryStateStore
from controller.fleet import Role
from controller.gateway import GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider
from controller.runtime import Runtime
from controller.signals import SignalWindows
from tests.fakes_chat import FakeTelegram
from tests.fleet_support import HELLO, Fleet, eventually, state_of
from tests.live_support import PROMETHEUS_BIN, Prometheus, free_port, require_binary
from tests.promql_support import GAUGE, Exporter, PromFront, prometheus_sees, start_prometheus
from tests.redis_support import RedisServer
from tests.telemetry_support import gauge_points
from tests.test_cli import status_lines
from tests.test_config_checks import live_check

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIRING = f'{GAUGE}{{provider="primary"}} > 14.4'
CFG = TripwireConfig(cooloff_seconds=10, failback_steps=(1.0,), probe_successes=1)
TIERS = {"frontier": ("primary", "backup")}


@dataclass
class Stack:
    prometheus: Prometheus
    exporter: Exporter
    session: aiohttp.ClientSession

    async def burn(self, value: float) -> None:
        """The exporter says ``value``; returns once Prometheus has scraped it."""
        self.exporter.value = value
        await prometheus_sees(self.prometheus, FIRING, present=value > 14.4)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    require_binary(PROMETHEUS_BIN, "prometheus")
    workdir = tmp_path_factory.mktemp("promql")
    async with contextlib.AsyncExitStack() as exits:
        session = await exits.enter_async_context(aiohttp.ClientSession())
        exporter = await exits.enter_async_context(Exporter())
        prom = await start_prometheus(exits, workdir, session, f"127.0.0.1:{exporter.port}")
        await prometheus_sees(prom, GAUGE)
        yield Stack(prometheus=prom, exporter=exporter, session=session)


def tripwires(
    url: str, clock: FakeClock, *, meter: MeterProvider | None = None, for_seconds: float = 0.0
) -> tuple[PromqlTripwires, list[tuple[bool, str]]]:
    said: list[tuple[bool, str]] = []
    cfg = PromqlConfig(  # the URL as from $FAILOVER_PROMETHEUS_URL (it may hold a password)
        interval_seconds=15,
        timeout_seconds=5,
        unavailable_after=3,
        rules=(
            PromqlRule(name="latency_slo", target="primary", expr=FIRING, for_seconds=for_seconds),
        ),
    )
    wires = PromqlTripwires(
        cfg,
        url=url,
        clock=clock,
        on_unavailable=lambda down, why: said.append((down, why)),
        meter=meter.get_meter("test") if meter is not None else None,
    )
    return wires, said


def controller(clock: FakeClock, wires: PromqlTripwires) -> Controller:
    return Controller(
        clock=clock,
        windows=SignalWindows(clock=clock),
        holder=StateHolder(),
        store=MemoryStateStore(),
        cfg=CFG,
        tiers=TIERS,
        promql=wires.signals,
    )


def kinds(decision: object) -> list[TransitionKind]:
    return [t.kind for t in decision.transitions]  # type: ignore[attr-defined]


async def test_a_rule_trips_and_the_way_back_is_the_built_in_one(stack: Stack) -> None:
    clock = FakeClock()
    wires, said = tripwires(stack.prometheus.url, clock)
    ctl = controller(clock, wires)
    try:
        await stack.burn(1.0)
        [clear] = await wires.evaluate()
        assert clear.state is RuleState.CLEAR
        assert kinds(ctl.tick()) == []

        await stack.burn(20.0)
        [firing] = await wires.evaluate()
        assert (firing.state, firing.value, firing.series) == (RuleState.FIRING, 20.0, 1)
        [trip] = ctl.tick().transitions
        assert (trip.provider, trip.kind, trip.cause) == (
            "primary",
            TransitionKind.TRIP,
            TripCause.PROMQL,
        )
        assert trip.reason == "PromQL rule latency_slo fires (1 series, value 20)"

        clock.advance(10)  # the cool-off is over, but the rule still fires: out again, longer
        assert kinds(ctl.tick()) == [TransitionKind.PROBE]
        assert kinds(ctl.tick()) == [TransitionKind.RETRIP]
        assert ctl.state.status("primary").trip_count == 2

        await stack.burn(2.0)
        await wires.evaluate()
        clock.advance(20)
        assert kinds(ctl.tick()) == [TransitionKind.PROBE]
        assert kinds(ctl.tick()) == [TransitionKind.RECOVERED]
        assert said == []  # Prometheus answered every time
    finally:
        await wires.aclose()


async def test_for_seconds_holds_the_trip_until_the_condition_lasted(stack: Stack) -> None:
    clock = FakeClock()
    wires, _ = tripwires(stack.prometheus.url, clock, for_seconds=60)
    try:
        await stack.burn(20.0)
        [first] = await wires.evaluate()
        assert first.state is RuleState.CLEAR
        assert first.detail.endswith("holding 0s of 60s")
        clock.advance(60)
        [later] = await wires.evaluate()
        assert later.state is RuleState.FIRING
    finally:
        await wires.aclose()
        await stack.burn(0.0)


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("http_error", "HTTP 503"),
        ("garbage", "not JSON"),
        ("error", "Prometheus refused the query: bad_data: parse error"),
        ("matrix", "the expression must give an instant vector or a scalar, not matrix"),
        ("hang", "no answer within 5s"),
        ("reset", "Prometheus unreachable (ServerDisconnectedError)"),
    ],
)
async def test_a_prometheus_in_trouble_trips_and_untrips_nothing(
    stack: Stack, mode: str, said: str
) -> None:
    """The rule fired and tripped primary; then Prometheus goes wrong. Unknown: the trip
    stands (a probing primary waits, probes or not), a healthy target is never tripped, one
    warning after three bad evaluations, one when it answers again, counted by result."""
    clock = FakeClock()
    reader = InMemoryMetricReader()
    async with PromFront(stack.prometheus.url, stack.session) as front:
        wires, alerts = tripwires(front.url, clock, meter=MeterProvider(metric_readers=[reader]))
        ctl = controller(clock, wires)
        try:
            await stack.burn(20.0)
            await wires.evaluate()
            assert kinds(ctl.tick()) == [TransitionKind.TRIP]

            front.mode = mode
            for _ in range(3):
                [unknown] = await _evaluate(wires, front, clock, hang=mode == "hang")
                assert (unknown.state, unknown.held, unknown.detail) == (
                    RuleState.UNKNOWN,
                    True,
                    said,
                )
            assert [down for down, _ in alerts] == [True]
            assert alerts[0][1] == f"latency_slo: {said}"
            clock.advance(10)
            assert kinds(ctl.tick()) == [TransitionKind.PROBE]
            for _ in range(3):
                assert kinds(ctl.tick()) == []  # no prober: its probes "succeed"; it still waits
            assert ctl.state.status("primary").state is HealthState.PROBING

            front.mode = "pass"
            front.release.set()
            await stack.burn(0.0)
            [clear] = await wires.evaluate()
            assert clear.state is RuleState.CLEAR
            assert [down for down, _ in alerts] == [True, False]
            assert kinds(ctl.tick()) == [TransitionKind.RECOVERED]
            points = gauge_points(reader)
            results = {p["result"]: v for p, v in points["failover.tripwire.promql.evaluations"]}
            wanted = {"firing": 1, "clear": 1}
            wanted[_result(mode)] = 3
            assert results == wanted
            states = {p["state"]: v for p, v in points["failover.tripwire.promql.state"]}
            assert states == {"firing": 0, "clear": 1, "unknown": 0}
        finally:
            front.release.set()
            await wires.aclose()


def _result(mode: str) -> str:
    return {
        "http_error": "http_error",
        "garbage": "unreadable",
        "error": "query_error",
        "matrix": "unreadable",
        "hang": "timeout",
        "reset": "unreachable",
    }[mode]


async def _evaluate(
    wires: PromqlTripwires, front: PromFront, clock: FakeClock, *, hang: bool
) -> tuple[PromqlSignal, ...]:
    """One evaluation; a hanging Prometheus is given up on when the FakeClock passes the
    timeout (once the query has reached it: then the evaluator waits on the clock)."""
    if not hang:
        return await wires.evaluate()
    asked = front.asked
    task = asyncio.ensure_future(wires.evaluate())
    await eventually(lambda: front.asked > asked and clock.sleepers > 0, within=10, what="query")
    clock.advance(5)
    return await asyncio.wait_for(task, 10)


async def test_nothing_listening_is_unknown_and_says_so_without_the_url(stack: Stack) -> None:
    clock = FakeClock()
    url = f"http://user:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    wires, alerts = tripwires(url, clock)
    try:
        for _ in range(3):
            [unknown] = await wires.evaluate()
            assert (unknown.state, unknown.held) == (RuleState.UNKNOWN, False)
            assert unknown.detail == "Prometheus unreachable (ClientConnectorError)"
        assert alerts == [(True, "latency_slo: Prometheus unreachable (ClientConnectorError)")]
        assert "s3cret" not in repr(wires.describe())
    finally:
        await wires.aclose()


async def test_an_unknown_rule_never_trips_a_healthy_target(stack: Stack) -> None:
    clock = FakeClock()
    async with PromFront(stack.prometheus.url, stack.session) as front:
        front.mode = "garbage"
        wires, alerts = tripwires(front.url, clock)
        ctl = controller(clock, wires)
        try:
            await stack.burn(20.0)  # it would fire, if Prometheus could be read
            for _ in range(3):
                [unknown] = await wires.evaluate()
                assert (unknown.state, unknown.held) == (RuleState.UNKNOWN, False)
                assert kinds(ctl.tick()) == []
            assert [down for down, _ in alerts] == [True]
        finally:
            await wires.aclose()
            await stack.burn(0.0)


# --- a whole Runtime ----------------------------------------------------------------------------
RUNTIME_CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
controller: {{cooloff_seconds: 60, tick_seconds: 0.1}}
notify: {{cooldown_seconds: 60, group_window_seconds: 0, backoff_base_seconds: 0.2}}
state: {{path: "{state}"}}
promql:
  interval_seconds: 0.2
  timeout_seconds: 0.2
  rules:
    - name: latency_slo
      target: primary
      expr: '{expr}'
"""


async def test_a_runtime_trips_routes_away_and_alerts_from_a_rule(
    stack: Stack, tmp_path: Path
) -> None:
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        await _runtime_trips(stack, tmp_path, primary, backup)


async def _runtime_trips(
    stack: Stack, tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    path = tmp_path / "failover.yaml"
    path.write_text(
        RUNTIME_CONFIG.format(
            primary=primary.url("openai"),
            backup=backup.url("anthropic"),
            state=tmp_path / "state.json",
            expr=FIRING,
        )
    )
    async with FakeTelegram() as tg:
        env = {
            "PRIMARY_KEY": "sk-primary-secret",
            "BACKUP_KEY": "sk-backup-secret",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_CHAT_ID": "111",
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "FAILOVER_PROMETHEUS_URL": stack.prometheus.url,
        }
        runtime = Runtime(load_config(path), config_path=path, env=env)
        await runtime.start()
        try:
            assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "primary"
            await stack.burn(20.0)
            await eventually(
                lambda: state_of(runtime) is HealthState.TRIPPED, within=10, what="the trip"
            )
            assert (await runtime.router.complete(HELLO, tier="frontier")).provider == "backup"
            [message, *_] = await tg.wait_messages(1, timeout=10)
            assert "primary tripped" in message["text"]
            assert "PromQL rule latency_slo fires" in message["text"]
            assert "threshold" not in message["text"]
            app = create_app(runtime, settings=GatewaySettings())
            async with GatewayServer(app, host="127.0.0.1", port=0, grace=1.0) as gateway:
                lines = await status_lines(gateway.url)  # failover status, a real process
            shown = [line for line in lines if line.startswith("  promql ")]
            assert shown == ["  promql latency_slo -> primary: firing  1 series, value 20"]
            [rule] = runtime.status()["promql"]
            assert (rule["rule"], rule["target"], rule["state"]) == (
                "latency_slo",
                "primary",
                "firing",
            )
            metrics, _ = runtime.render_metrics()
            state = b'provider="primary",rule="latency_slo",state="firing"} 1.0'
            assert b"failover_tripwire_promql_state{" + state in metrics
            assert b'failover_trips_total{cause="promql",provider="primary"} 1.0' in metrics
        finally:
            await runtime.stop(grace=1.0)
            await stack.burn(0.0)


async def test_in_a_fleet_only_the_leader_evaluates(stack: Stack, tmp_path: Path) -> None:
    async with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        await _fleet_evaluates(stack, tmp_path, primary, backup)


async def _fleet_evaluates(
    stack: Stack, tmp_path: Path, primary: FakeProvider, backup: FakeProvider
) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    block = (
        "promql:\n  interval_seconds: 0.2\n  timeout_seconds: 0.2\n  rules:\n"
        f"    - {{name: latency_slo, target: primary, expr: '{FIRING}'}}\n"
    )
    async with FakeTelegram() as tg:
        fleet = Fleet(redis=redis, primary=primary, backup=backup, tg=tg, workdir=tmp_path)
        try:
            for name in ("gw-a", "gw-b"):
                path = fleet.config_path(name)
                path.write_text(path.read_text() + block)
                env = fleet.env() | {"FAILOVER_PROMETHEUS_URL": stack.prometheus.url}
                runtime = Runtime(load_config(path), config_path=path, env=env)
                await runtime.start()
                fleet.replicas.append(runtime)
            await eventually(lambda: len(fleet.leaders()) == 1, within=10, what="one leader")
            [leader], [follower] = fleet.leaders(), fleet.followers()
            await stack.burn(20.0)
            for replica in (leader, follower):
                await _tripped(replica)
            assert leader.promql is not None
            assert follower.promql is not None
            assert [r["state"] for r in leader.promql.describe()] == ["firing"]
            assert [r["state"] for r in follower.promql.describe()] == ["unknown"]
            assert follower.fleet is not None
            assert follower.fleet.role is Role.FOLLOWER
            await eventually(
                lambda: fleet.alerts("primary tripped") != [], within=10, what="the alert"
            )
            await asyncio.sleep(0.5)  # a second alert would come as soon (none should)
            assert len(fleet.alerts("primary tripped")) == 1  # one alert fleet-wide
        finally:
            await fleet.stop()
            redis.stop()
            await stack.burn(0.0)


async def _tripped(runtime: Runtime) -> None:
    await eventually(lambda: state_of(runtime) is HealthState.TRIPPED, within=10, what="trip")


async def test_the_loop_evaluates_only_while_deciding_and_at_once_when_it_starts(
    stack: Stack,
) -> None:
    """A follower asks Prometheus nothing and its rules are unknown; the moment it decides
    (won the lease) it evaluates, then every interval_seconds; losing the lease forgets."""
    clock = FakeClock()
    deciding = False
    async with PromFront(stack.prometheus.url, stack.session) as front:
        said: list[tuple[bool, str]] = []
        cfg = PromqlConfig(
            url=front.url,
            interval_seconds=15,
            timeout_seconds=5,
            rules=(PromqlRule(name="latency_slo", target="primary", expr=FIRING),),
        )
        wires = PromqlTripwires(
            cfg,
            url=front.url,
            clock=clock,
            deciding=lambda: deciding,
            on_unavailable=lambda down, why: said.append((down, why)),
        )
        task = asyncio.create_task(wires.run())
        try:
            await stack.burn(20.0)
            for _ in range(5):
                await _turn(clock, 1.0)
            assert front.asked == 0
            assert [s.state for s in wires.signals()] == [RuleState.UNKNOWN]
            deciding = True
            await _turn(clock, 1.0)  # within a second of winning the lease
            await eventually(lambda: wires.rounds == 1, within=10, what="the first evaluation")
            assert front.asked == 1
            assert wires.signals()[0].state is RuleState.FIRING
            for _ in range(14):
                await _turn(clock, 1.0)
            assert front.asked == 1  # not before interval_seconds (15 s) since it started
            await _turns_until(clock, lambda: wires.rounds == 2, "the next evaluation")
            deciding = False
            await _turns_until(
                clock, lambda: wires.signals()[0].state is RuleState.UNKNOWN, "forgetting"
            )
            assert [(s.state, s.held) for s in wires.signals()] == [(RuleState.UNKNOWN, False)]
            assert front.asked == 2
            assert said == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await wires.aclose()
            await stack.burn(0.0)


async def _turns_until(clock: FakeClock, done: Callable[[], bool], what: str) -> None:
    """Seconds on the clock, one at a time, until ``done()`` (an evaluation is real I/O: each
    turn waits, bounded, for what it started). At most 5 turns."""
    for _ in range(5):
        await _turn(clock, 1.0)
        with contextlib.suppress(BaseException):
            await eventually(done, within=2, what=what)
        if done():
            return
    pytest.fail(f"{what}: not within 5 turns of the clock")


async def _turn(clock: FakeClock, seconds: float) -> None:
    """Advance the clock and let the loop run its turn (it sleeps on the clock again)."""
    clock.advance(seconds)
    for _ in range(20):
        await asyncio.sleep(0)


async def test_live_check_asks_prometheus_each_rule_and_names_the_one_it_refuses(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRIMARY_KEY", "k1")
    async with FakeProvider(name="primary") as primary:
        path = tmp_path / "failover.yaml"
        path.write_text(
            "providers:\n"
            f"  primary: {{kind: openai, base_url: '{primary.url('openai')}',"
            " api_key_env: PRIMARY_KEY}\n"
            "tiers:\n  frontier:\n    targets:\n      - {provider: primary, model: m}\n"
            f"state: {{path: '{tmp_path / 'state.json'}'}}\n"
            f"promql:\n  url: '{stack.prometheus.url}'\n  rules:\n"
            f"    - {{name: latency_slo, target: primary, expr: '{FIRING}'}}\n"
            "    - {name: typo, target: primary, expr: 'rate(up[5m]'}\n"
        )
        code = await live_check(path)
    out, _ = capsys.readouterr()
    assert code == 1
    assert "live: provider primary (m): ok" in out
    assert "live: promql rule latency_slo (primary): clear, no data" in out
    assert (
        "live: promql rule typo (primary): unknown, Prometheus refused the query: bad_data" in out
    )
    problems = [line.strip() for line in out.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1  # the rule that holds no data now is fine
    assert problems[0].startswith("problem: promql rule typo: Prometheus refused the query: ")
    assert "parse error" in problems[0]
