"""The dashboard and the alert rules against the real thing: Prometheus, Alertmanager, a gateway.

One scenario per module (about a minute of wall time): the real Runtime behind a GatewayServer
with three FakeProviders, scraped every second by Prometheus 2.42 (Debian) that evaluates a temp
copy of alerts/rules.yml with short ``for:`` durations and sends to Alertmanager (Debian) running
alerts/alertmanager.yml as rendered by deploy/alertmanager/entrypoint.sh, whose Telegram and
Slack receivers point at fakes on loopback. Traffic (plain and streaming, through the official
openai SDK and raw HTTP) is bounded in count and time; a drill trips the primary and it recovers.

* frontier tier: primary → backup; the drill fails it over; about one request a second is
  hedged on the backup (a 0.1 ms hedge wait, a budget of one a second); a fifth of its requests
  warm the backup first (warm_share), and the primary sends rate-limit headers (the standby row).
* cheap tier: spare only, answering 401: a tier that is down, auth failures, a high error rate.
* budget tier: spare too, with a static answer at the bottom of its ladder: degraded answers.
* spend: primary and backup priced, a daily budget on primary; half the frontier tier's answers
  shadowed on the backup (the shadow row: agreement, latency, results, cost).
* OTLP export points at a port where nothing listens, so telemetry drops are real and counted.
* fleet mode on a real redis-server: the gateway leads a fleet of two (the other replica takes
  no traffic), so the fleet row has a leader, two heartbeats and two applied versions.
* a PromQL tripwire on the spare, evaluated against this Prometheus (the spare's error rate as
  the gateway exports it): it fires, and as the spare is its tiers' last provider the trip is
  refused (panic), so the PromQL panel and annotation have data and routing is as before.

Then every dashboard query and every rule expression must return data, with the exceptions in
``CANNOT_FIRE_HERE`` (each says why), and the tripped alert must reach both chat fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
import yaml

from controller.config import load_config
from controller.control.state import HealthState
from controller.fleet import Role
from controller.gateway import HEADER_PROVIDER, GatewayServer, GatewaySettings, create_app
from controller.providers.fake import FakeProvider, FaultMode, RateLimits
from controller.runtime import Runtime
from tests.fakes_chat import FakeSlack, FakeTelegram
from tests.live_support import (
    ALERTMANAGER_BIN,
    PROMETHEUS_BIN,
    Alertmanager,
    Prometheus,
    exposed_metric_names,
    fast_alertmanager_config,
    free_port,
    grafana_query,
    prometheus_config,
    require_binary,
    shorten_for,
    wait_until,
)
from tests.redis_support import RedisServer
from tests.test_static_assets import metric_names
from tests.traffic import BadAnswer, Traffic

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "failover.json"
RULES = ROOT / "alerts" / "rules.yml"
ALERTMANAGER_YML = ROOT / "alerts" / "alertmanager.yml"
ENTRYPOINT = ROOT / "deploy" / "alertmanager" / "entrypoint.sh"
PAGER_CHAT = "-1002"  # Alertmanager's Telegram chat; the Runtime's own alerts go to "111"
DRILL_SECONDS = 8.0

CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "{primary}", api_key_env: PRIMARY_KEY}}
  backup: {{kind: anthropic, base_url: "{backup}", api_key_env: BACKUP_KEY}}
  spare: {{kind: openai, base_url: "{spare}", api_key_env: SPARE_KEY}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
      - {{provider: backup, model: alt}}
    hedge: {{after: 0.0001, per_second: 1}}  # about one request a second hedged: for the panel
    warm_share: 0.2  # a fifth of its requests warm the backup first: the standby row
    shadow: {{target: {{provider: backup, model: alt}}, share: 0.5}}  # the shadow row's data
  cheap:
    targets:
      - {{provider: spare, model: small}}
  budget:  # down too (the same target), but it answers from its ladder: the degraded panel
    targets:
      - {{provider: spare, model: small}}
    degrade: {{static: "Try again in a few minutes."}}
aliases: {{gpt-4o: frontier, gpt-mini: cheap, gpt-nano: budget}}
translation: {{droppable: [service_tier]}}
routing: {{deadline_seconds: 10, retry: {{max_tries_per_provider: 1}}}}
kill_switch: {{pin: {pin}}}
controller:
  window_seconds: 5
  min_requests: 5
  consecutive_failures: 3
  cooloff_seconds: 1
  probe_interval_seconds: 0.2
  probe_successes: 2
  failback_steps: [0.5, 1.0]
  failback_step_seconds: 0.5
  tick_seconds: 0.1
notify:
  cooldown_seconds: 60
  group_window_seconds: 0
  backoff_base_seconds: 0.2
state:
  path: "{state}"
  backend: redis  # the fleet row's data: this gateway leads a fleet of two
  redis: {{prefix: live, replica: "{replica}", lease_seconds: 5}}
promql:  # the PromQL row's data: a rule that fires (on a provider that cannot be ejected)
  interval_seconds: 0.5
  timeout_seconds: 0.4
  unavailable_after: 40  # quiet while Prometheus starts, after the gateway
  rules:
    - name: spare_errors
      target: spare
      expr: 'failover_provider_error_rate{{job="failover-gateway", provider="spare"}} > 0.5'
spend:  # the spend row's data: every answer priced, a budget far from its alerts
  prices:
    primary: {{"*": {{input: 2.5, output: 10}}}}
    backup: {{"*": {{input: 3, output: 15}}}}
  budgets: {{providers: {{primary: {{daily_usd: 1000}}}}}}
"""

# Alerts whose condition a one-minute test cannot make true, and why. Their inputs (recording
# rules) are still required to return data.
CANNOT_FIRE_HERE = {
    "FailoverFailoversSpiking": "needs > 5 failovers/min over 5 min without a trip; a trip "
    "(which this scenario needs) stops failovers after 3",
    "FailoverLatencyDegraded": "needs a provider p95 latency above 30 s",
    "FailoverControllerNotReporting": "fires when the gateway is gone: "
    "test_stopping_the_gateway_fires_the_dead_mans_switch",
    **dict.fromkeys(
        (
            "PrometheusRuleEvaluationsFailing",
            "PrometheusCannotReachAlertmanager",
            "AlertmanagerNotificationsFailing",
        ),
        "watches Prometheus and Alertmanager themselves, which this Prometheus does not scrape "
        "(and which are healthy here); promtool tests them firing and quiet",
    ),
    "FailoverFleetStateUnavailable": "needs a replica that lost Redis, which this fleet keeps "
    "(tests/test_fleet.py stops and freezes Redis); promtool tests it firing and quiet",
    "FailoverPromqlTripwireUnknown": "needs a PromQL rule without a usable answer for minutes; "
    "this one reads the stack's own Prometheus (tests/test_promql_live.py breaks one)",
    **dict.fromkeys(
        ("FailoverJobBacklogGrowing", "FailoverJobsWaitingLong", "FailoverJobsDeadLettered"),
        "needs deferred jobs, which this scenario's requests are not (tests/test_jobs_*.py "
        "defer them); promtool tests them firing and quiet",
    ),
}
_SELF = ("prometheus_", "alertmanager_")
# `for:` in the temp rules copy; default 1s. The dead-man waits a little longer so that the
# first evaluations (before the first scrape) cannot fire it.
FOR = {"FailoverControllerNotReporting": "3s"}


@dataclass
class GatewayRequests:
    """What one request of the scenario's traffic is, through the gateway over HTTP: plain
    (aiohttp), streaming (the openai SDK), a token count, or to the cheap tier that is down."""

    url: str
    session: aiohttp.ClientSession
    client: openai.AsyncOpenAI
    streams: int = 0

    async def send(self, i: int) -> str | None:
        """Request ``i``; returns the provider that served a plain one."""
        if i % 5 == 0:
            await self._cheap("gpt-nano" if i % 10 == 0 else "gpt-mini")
            return None
        if i % 4 == 0:
            await self._stream()
            return None
        if i % 7 == 0:
            await self._count()
            return None
        return await self._plain()

    async def _count(self) -> None:
        """Anthropic's token counting: estimated while the OpenAI-format primary serves, counted
        by the Anthropic-format backup while the drill has the primary out."""
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        async with self.session.post(self.url + "/v1/messages/count_tokens", json=body) as answer:
            if answer.status != 200:
                raise BadAnswer(f"count_tokens {answer.status}: {await answer.text()}")

    async def _plain(self) -> str:
        """Asks for a service tier: the Anthropic-format backup serves it without (droppable)."""
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        body["service_tier"] = "auto"
        async with self.session.post(self.url + "/v1/chat/completions", json=body) as answer:
            if answer.status != 200:
                raise BadAnswer(f"{answer.status}: {await answer.text()}")
            return answer.headers.get(HEADER_PROVIDER, "?")

    async def _stream(self) -> None:
        stream = await self.client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        self.streams += 1
        if not "".join(text).startswith("Hello from"):
            raise BadAnswer(f"stream: {text!r}")

    async def _cheap(self, model: str) -> None:
        """The cheap tier is down (401): the client sees an error, which is expected here; the
        budget tier, as down, answers with its static text (x-failover-degraded: static)."""
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        async with self.session.post(self.url + "/v1/chat/completions", json=body) as answer:
            await answer.read()


@dataclass
class Live:
    prometheus: Prometheus
    alertmanager: Alertmanager
    runtime: Runtime
    gateway: GatewayServer
    session: aiohttp.ClientSession
    chat: tuple[FakeTelegram, FakeSlack]  # the Runtime's own alerts
    pager: tuple[FakeTelegram, FakeSlack]  # Alertmanager's receivers
    requests: GatewayRequests
    traffic: Traffic
    config_path: Path
    providers: dict[str, FakeProvider]
    instance: str

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return await self.prometheus.query(expr)

    def write_config(self, *, pin: str = "null") -> None:
        write_config(self.config_path, self.providers, pin=pin)


def write_config(
    path: Path, fakes: dict[str, FakeProvider], *, pin: str = "null", replica: str = "gw-live"
) -> None:
    path.write_text(
        CONFIG.format(
            primary=fakes["primary"].url("openai"),
            backup=fakes["backup"].url("anthropic"),
            spare=fakes["spare"].url("openai"),
            pin=pin,
            state=path.parent / f"{replica}.state.json",
            replica=replica,
        )
    )


# --- starting the stack -----------------------------------------------------------------------
def _render_alertmanager(workdir: Path, telegram: FakeTelegram, slack: FakeSlack) -> Path:
    """alerts/alertmanager.yml (waits cut to 1s) through the real entrypoint's secret filling."""
    source = workdir / "alertmanager.src.yml"
    source.write_text(fast_alertmanager_config(ALERTMANAGER_YML.read_text()))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ALERTMANAGER_CONFIG_SRC": str(source),
        "ALERTMANAGER_RUN_DIR": str(workdir / "am-run"),
        "ALERTMANAGER_BIN": shutil.which("true") or "/bin/true",  # render only; we start it
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_CHAT_ID": PAGER_CHAT,
        "TELEGRAM_API_URL": telegram.url,
        "SLACK_WEBHOOK_URL": slack.webhook_url,
    }
    done = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return workdir / "am-run" / "alertmanager.yml"


def _runtime_env(
    chat: tuple[FakeTelegram, FakeSlack], redis: RedisServer, prometheus: str
) -> dict[str, str]:
    telegram, slack = chat
    return {
        "FAILOVER_REDIS_URL": redis.url,
        "FAILOVER_PROMETHEUS_URL": prometheus,
        "PRIMARY_KEY": "sk-primary-secret",
        "BACKUP_KEY": "sk-backup-secret",
        "SPARE_KEY": "sk-spare-secret",
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_CHAT_ID": "111",
        "TELEGRAM_API_BASE_URL": telegram.base_url,
        "SLACK_WEBHOOK_URL": slack.webhook_url,
        # a collector that is not there: drops are real, counted, and alerting
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }


async def _start_monitoring(
    stack: contextlib.AsyncExitStack,
    workdir: Path,
    session: aiohttp.ClientSession,
    instance: str,
    pager: tuple[FakeTelegram, FakeSlack],
    port: int,
) -> tuple[Alertmanager, Prometheus]:
    """Alertmanager paging the fakes, then Prometheus scraping ``instance`` with our rules."""
    config = _render_alertmanager(workdir, *pager)
    am = await Alertmanager.start(workdir=workdir, config=config, session=session)
    stack.push_async_callback(am.process.stop)
    rules = workdir / "rules.yml"
    rules.write_text(shorten_for(RULES.read_text(), FOR, default="1s"))
    alertmanager = am.url.removeprefix("http://")
    scrape = prometheus_config(targets=[instance], rules=rules, alertmanager=alertmanager)
    prom = await Prometheus.start(workdir=workdir, config=scrape, session=session, port=port)
    stack.push_async_callback(prom.process.stop)
    return am, prom


async def _start(stack: contextlib.AsyncExitStack, workdir: Path) -> Live:
    session = await stack.enter_async_context(aiohttp.ClientSession())
    fakes = {
        n: await stack.enter_async_context(FakeProvider(name=n))
        for n in ("primary", "backup", "spare")
    }
    fakes["spare"].set_fault(FaultMode.AUTH)
    # The rate-limit row: the primary states its window, far from the end (nothing shifts).
    fakes["primary"].set_rate_limits(RateLimits(requests=1_000_000, tokens=100_000_000))
    chat = (
        await stack.enter_async_context(FakeTelegram()),
        await stack.enter_async_context(FakeSlack()),
    )
    pager = (
        await stack.enter_async_context(FakeTelegram(token="987654:PAGER-token")),
        await stack.enter_async_context(FakeSlack(path="/services/T0/B0/pagerHook")),
    )
    redis = RedisServer(workdir)
    await redis.start()
    stack.callback(redis.stop)
    prom_port = free_port()  # the PromQL tripwire queries it: its URL is needed first
    env = _runtime_env(chat, redis, f"http://127.0.0.1:{prom_port}")
    path = workdir / "failover.yaml"
    write_config(path, fakes)
    runtime = Runtime(load_config(path), config_path=path, env=env)
    await runtime.start()
    stack.push_async_callback(runtime.stop, grace=2.0)
    await _lead(runtime)
    other = workdir / "other.yaml"  # a second replica: no traffic, a follower
    write_config(other, fakes, replica="gw-other")
    follower = Runtime(load_config(other), config_path=other, env=env)
    await follower.start()
    stack.push_async_callback(follower.stop, grace=2.0)
    app = create_app(runtime, settings=GatewaySettings())
    gateway = await stack.enter_async_context(
        GatewayServer(app, host="127.0.0.1", port=0, grace=1.0)
    )
    instance = f"127.0.0.1:{gateway.port}"
    am, prom = await _start_monitoring(stack, workdir, session, instance, pager, prom_port)
    client = await stack.enter_async_context(
        openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10.0
        )
    )
    requests = GatewayRequests(url=gateway.url, session=session, client=client)
    traffic = Traffic(requests.send)
    return Live(
        prom, am, runtime, gateway, session, chat, pager, requests, traffic, path, fakes, instance
    )


async def _lead(runtime: Runtime) -> None:
    """Until the gateway holds the fleet's lease (it decides: its trips are the scraped ones)."""

    async def leading() -> bool:
        return runtime.fleet is not None and runtime.fleet.role is Role.LEADER

    await wait_until(leading, within=15, what="the gateway leading the fleet")


async def _state(live: Live, provider: str, state: HealthState) -> bool:
    return live.runtime.holder.current.status(provider).state is state


async def _drill(live: Live) -> None:
    """Steady traffic, then a drill: the primary trips, the alert fires, the primary recovers."""

    async def scraped() -> list[dict[str, Any]]:
        return await live.query('up{job="failover-gateway"} == 1')

    await wait_until(scraped, within=15, what="the first successful scrape")
    await asyncio.sleep(3.0)  # a few scrapes of healthy traffic: rates need two samples
    await live.runtime.drill("primary", DRILL_SECONDS)
    await wait_until(lambda: _state(live, "primary", HealthState.TRIPPED), within=5, what="trip")

    async def firing() -> list[dict[str, Any]]:
        return await live.prometheus.firing("FailoverProviderTripped", provider="primary")

    await wait_until(firing, within=15, what="FailoverProviderTripped firing in Prometheus")
    await wait_until(
        lambda: _state(live, "primary", HealthState.HEALTHY), within=40, what="recovery"
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    require_binary(PROMETHEUS_BIN, "prometheus")
    require_binary(ALERTMANAGER_BIN, "prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("live-stack")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTB_TIMEDELTA", "true")  # as tests/conftest.py does per test
        async with contextlib.AsyncExitStack() as stack:
            live = await _start(stack, workdir)
            load = asyncio.create_task(
                live.traffic.run(rate=12, max_requests=2000, max_seconds=150)
            )
            try:
                await _drill(live)
                yield live
            finally:
                live.traffic.stop.set()
                await load
            # Traffic records a request that raised instead of raising it at the end: no
            # request of the whole scenario, up to the gateway's stop, may have failed.
            assert live.traffic.errors == []


# --- helpers for the assertions -----------------------------------------------------------------
def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    queries = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    queries += [
        (f"annotation {a['name']}", a["target"]["expr"])
        for a in dash["annotations"]["list"]
        if "target" in a
    ]
    return queries


def _variable_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(selector, label) of each ``label_values(selector, label)`` template variable."""
    found = [
        re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
        for var in dash["templating"]["list"]
        if var["type"] == "query"
    ]
    return [(m.group(1), m.group(2)) for m in found if m]


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


# --- tests (in order: the last one stops the gateway) -------------------------------------------
async def test_every_metric_in_dashboards_and_alerts_is_exposed(live: Live) -> None:
    async with live.session.get(live.gateway.url + "/metrics") as answer:
        exposed = exposed_metric_names(await answer.text())
    exprs = [e for _, e in _panel_queries(_dashboard())] + [r["expr"] for r in _rules()]
    variables = [selector for selector, _ in _variable_queries(_dashboard())]
    used = set().union(*(metric_names(e) for e in exprs + variables))
    # not records, nor what Prometheus and Alertmanager expose of themselves
    wanted = {n for n in used if ":" not in n and not n.startswith(_SELF)} - {"up"}
    assert wanted - exposed == set()
    assert live.requests.streams > 0
    assert live.traffic.errors == []  # the frontier tier failed over without a client error
    assert {"primary", "backup"} <= set(live.traffic.served_by())
    assert live.runtime.alerts, "the Runtime sent no alert"


async def test_dashboard_variables_resolve(live: Live) -> None:
    got = {}
    for selector, label in _variable_queries(_dashboard()):
        values = await live.prometheus.label_values(grafana_query(selector, live.instance), label)
        got[label] = set(values)
    assert got["instance"] == {live.instance}
    assert got["provider"] == {"primary", "backup", "spare"}
    assert got["tier"] == {"frontier", "cheap", "budget"}  # the controller's probes are not one


async def test_every_dashboard_query_returns_data(live: Live) -> None:
    empty = []
    for title, expr in _panel_queries(_dashboard()):
        if not await live.query(grafana_query(expr, live.instance)):
            empty.append(title)
    assert empty == []


async def test_the_fleet_and_promql_rows_show_what_runs(live: Live) -> None:
    """Two replicas with a heartbeat and an applied version, the gateway leading; the PromQL
    rule on the spare firing (its trip refused: the spare is its tiers' last provider)."""

    async def by(expr: str, label: str) -> dict[str, float]:
        found = await live.query(grafana_query(expr, live.instance))
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in found}

    ages = await by("min by (failover_fleet_replica) (failover_fleet_heartbeat_age_seconds)", R)
    assert set(ages) == {"gw-live", "gw-other"}
    versions = await by("max by (failover_fleet_replica) (failover_fleet_applied_version)", R)
    assert set(versions) == {"gw-live", "gw-other"}
    leader = await by("max by (failover_fleet_replica) (failover_fleet_leader) == 1", R)
    assert set(leader) == {"gw-live"}
    firing = await by('max by (rule) (failover_tripwire_promql_state{state="firing"}) == 1', "rule")
    assert set(firing) == {"spare_errors"}
    assert live.runtime.holder.current.status("spare").state is HealthState.HEALTHY


R = "failover_fleet_replica"


async def test_tripped_alert_is_delivered_to_telegram_and_slack(live: Live) -> None:
    telegram, slack = live.pager

    def names_it(body: dict[str, Any]) -> bool:
        text = json.dumps(body)
        return "FailoverProviderTripped" in text and "primary" in text

    async def delivered_tg() -> list[dict[str, Any]]:
        return [m for m in telegram.messages if names_it(m)]

    async def delivered_slack() -> list[dict[str, Any]]:
        return [p for p in slack.posts if names_it(p)]

    [message, *_] = await wait_until(delivered_tg, within=20, what="Telegram from Alertmanager")
    [post, *_] = await wait_until(delivered_slack, within=20, what="Slack from Alertmanager")
    assert str(message["chat_id"]) == PAGER_CHAT
    assert "primary: tripped by the controller" in message["text"]
    assert message["parse_mode"] == "HTML"
    [attachment] = post["attachments"]
    assert "FailoverProviderTripped primary" in attachment["title"]
    assert "primary: tripped by the controller" in attachment["text"]
    # the Runtime's own alert about the same trip went to its own chat
    runtime_texts = [m["text"] for m in live.chat[0].messages]
    assert any("primary tripped" in t for t in runtime_texts), runtime_texts


async def _alert_history(live: Live, alert: str) -> list[dict[str, Any]]:
    """Label sets ``alert`` was pending or firing with during the scenario (ALERTS series exist
    exactly when the rule's expression returned data)."""
    return await live.query(
        f'count by (tier, provider) (count_over_time(ALERTS{{alertname="{alert}"}}[10m]))'
    )


async def test_every_rule_expression_returns_data(live: Live) -> None:
    """Recording rules return data now; an alert's expression returns data now or did at an
    evaluation during the scenario (its ALERTS series), except the ones that cannot here."""
    live.write_config(pin="backup")  # the kill switch, engaged from the config file

    async def engaged() -> list[dict[str, Any]]:
        return await live.query('failover_kill_switch_active{job="failover-gateway"} == 1')

    await wait_until(engaged, within=10, what="the kill switch in Prometheus")
    try:
        results = {
            rule.get("record") or rule["alert"]: await live.query(rule["expr"]) for rule in _rules()
        }
    finally:
        live.write_config(pin="null")
    for rule in _rules():
        if "alert" in rule and not results[rule["alert"]]:
            results[rule["alert"]] = await _alert_history(live, rule["alert"])
    empty = sorted(
        name for name, got in results.items() if not got and name not in CANNOT_FIRE_HERE
    )
    assert empty == []
    assert set(CANNOT_FIRE_HERE) <= set(results)
    assert {r["metric"]["provider"] for r in results["FailoverProviderAuthFailed"]} == {"spare"}


async def test_tier_down_pages_only_for_the_tier_that_is_down(live: Live) -> None:
    """cheap (its only provider answers 401) is down; frontier failed over and kept serving;
    the controller's probes are not a tier a person should be paged about."""
    paged = {
        r["metric"].get("tier") for r in await _alert_history(live, "FailoverTierAllProvidersDown")
    }
    assert paged == {"cheap"}


async def test_stopping_the_gateway_fires_the_dead_mans_switch(live: Live) -> None:
    assert await live.prometheus.firing("FailoverControllerNotReporting") == []
    live.traffic.stop.set()
    await live.gateway.stop()

    async def firing() -> list[dict[str, Any]]:
        return await live.prometheus.firing("FailoverControllerNotReporting")

    await wait_until(firing, within=20, what="FailoverControllerNotReporting firing")
    telegram, _ = live.pager

    async def paged() -> list[dict[str, Any]]:
        return [m for m in telegram.messages if "FailoverControllerNotReporting" in m["text"]]

    await wait_until(paged, within=15, what="the dead-man page on Telegram")
