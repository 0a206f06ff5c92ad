"""Static checks for what users look at and get paged by: dashboards/, alerts/, deploy/.

Grafana cannot run here, so the dashboard is checked by structure and its PromQL by promtool;
the rules by ``promtool check``/``promtool test``; Alertmanager by ``amtool``. Every metric and
label name in those files must come from ``controller.telemetry.names``: a renamed metric breaks
this test instead of silently emptying a panel or muting an alert. The tools come from the
Debian packages ``prometheus`` and ``prometheus-alertmanager``: missing, they skip locally and
fail under ``CI=true``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from controller.telemetry import names

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "failover.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
RULES = ROOT / "alerts" / "rules.yml"
RULES_TEST = ROOT / "alerts" / "rules_test.yml"
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
EXAMPLE_CONFIG = DEPLOY / "failover.example.yaml"
GATEWAY_JOB = "failover-gateway"

# --- the vocabulary: names.py is the contract -------------------------------------------------
_HISTOGRAMS = {names.PROM_OPERATION_DURATION, names.PROM_TOKEN_USAGE}
_HISTOGRAMS.add(names.PROM_TIME_TO_FIRST_CHUNK)
_HISTOGRAMS |= {names.PROM_SHADOW_DURATION, names.PROM_SHADOW_LENGTH_RATIO}
_PROM = {v for k, v in vars(names).items() if k.startswith("PROM_") and isinstance(v, str)}
KNOWN_METRICS = (
    (_PROM - _HISTOGRAMS)
    | {h + s for h in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    | {"up"}
)
# What Prometheus and Alertmanager say of themselves (the "watchers" rules), by the job that
# scrapes each in deploy/prometheus.yml.
SELF_MONITORING = {
    "prometheus_rule_evaluation_failures_total": "prometheus",
    "prometheus_notifications_alertmanagers_discovered": "prometheus",
    "prometheus_notifications_errors_total": "prometheus",
    "alertmanager_notifications_failed_total": "alertmanager",
}
WATCHDOG = "Watchdog"  # always firing, on purpose: no quiet case, no severity to page with
_ATTR_PREFIXES = ("GEN_AI_", "SERVER_", "ERROR_TYPE", "FAILOVER_", "ATTR_")
KNOWN_LABELS = {
    v.replace(".", "_")
    for k, v in vars(names).items()
    if k.startswith(_ATTR_PREFIXES) and isinstance(v, str)
} | {"job", "instance", "le", "__name__"}

# --- a small PromQL reader: enough to pull metric and label names out of our expressions ------
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MODIFIER = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and strings removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _MODIFIER.sub(" ", text)
    idents = ((m.group(1), m.group(2)) for m in _IDENT.finditer(text))
    return {name for name, call in idents if not call and name not in _KEYWORDS}


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by/without/on/ignoring/group_* lists."""
    text = _STRING.sub('""', expr)
    found = set()
    for braces in re.findall(r"\{([^}]*)\}", text):
        found |= set(_MATCHER_LABEL.findall(braces))
    for group in _MODIFIER.findall(text):
        found |= {part.strip() for part in group.split(",") if part.strip()}
    return found


def test_promql_reader_finds_metrics_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, failover_provider) (rate(a_bucket{job="x", '
        'error_type!~"b|c"}[5m]))) > on (provider) group_left () rec:ord:rate1m offset 5m '
        'or label_replace(time() - up, "dst", "$1", "src", "(.*)") unless vector(0)'
    )
    assert metric_names(expr) == {"a_bucket", "rec:ord:rate1m", "up"}
    assert label_names(expr) == {"le", "failover_provider", "job", "error_type", "provider"}


# --- tools --------------------------------------------------------------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("promtool", ("check", "rules", RULES)),
        ("promtool", ("test", "rules", RULES_TEST)),  # the unit tests of every rule
        ("amtool", ("check-config", ALERTMANAGER)),
        ("promtool", ("check", "config", DEPLOY / "prometheus.yml")),
    ],
    ids=["check-rules", "test-rules", "check-alertmanager", "check-prometheus-config"],
)
def test_tool_accepts(tool: str, args: tuple[str | Path, ...]) -> None:
    _assert_ok(_run(_tool(tool), *args))


# --- dashboard ----------------------------------------------------------------------------------
def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _dashboard_exprs(dash: dict[str, Any]) -> Iterator[str]:
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for annotation in dash["annotations"]["list"]:
        if "target" in annotation:
            yield annotation["target"]["expr"]


def _variable_queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(selector, label) of each label_values(selector, label) template variable."""
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            found = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
            assert found, var["query"]
            yield found.group(1), found.group(2)


def _grafana_vars_to_promql(expr: str) -> str:
    """Substitute Grafana's variables the way a rendered query would have them."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert (dashboard["schemaVersion"], dashboard["uid"]) == (42, "failover")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel.get("datasource") == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_datasource_variable_defaults_to_provisioned_uid(dashboard: dict[str, Any]) -> None:
    provisioned = _load_yaml(PROVISIONING / "datasources.yaml")["datasources"]
    uids = {d["uid"] for d in provisioned if d["type"] == "prometheus"}
    var = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert var["type"] == "datasource"
    assert var["query"] == "prometheus"
    assert uids == {"prometheus"}
    assert var["current"]["value"] == "prometheus"


def test_template_variables(dashboard: dict[str, Any]) -> None:
    got = {label: metric_names(sel) for sel, label in _variable_queries(dashboard)}
    assert got == {
        "instance": {"up"},
        "provider": {names.PROM_PROVIDER_STATE},
        "tier": {names.PROM_REQUESTS},
    }
    up = next(v for v in dashboard["templating"]["list"] if v["name"] == "instance")
    assert f'job="{GATEWAY_JOB}"' in up["query"]["query"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_dashboard_uses_only_known_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    exprs = list(_dashboard_exprs(dashboard)) + [s for s, _ in _variable_queries(dashboard)]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - KNOWN_METRICS == set()
    labels = set().union(*(label_names(e) for e in exprs))
    labels |= {label for _, label in _variable_queries(dashboard)}
    legends = "".join(t["legendFormat"] for p in dashboard["panels"] for t in p["targets"])
    labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legends))
    assert labels - KNOWN_LABELS == set()


def test_dashboard_shows_every_signal(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in _dashboard_exprs(dashboard)))
    duration, ttfc = names.PROM_OPERATION_DURATION, names.PROM_TIME_TO_FIRST_CHUNK
    histograms = {f"{duration}_bucket", f"{duration}_count", f"{ttfc}_bucket"}
    wanted = (_PROM - _HISTOGRAMS) | histograms | {names.PROM_TOKEN_USAGE + "_sum"}
    assert wanted - used == set()
    kinds = {p["type"] for p in dashboard["panels"]}
    assert {"state-timeline", "stat", "timeseries"} <= kinds


def test_routing_flips_are_annotated(dashboard: dict[str, Any]) -> None:
    exprs = [a["target"]["expr"] for a in dashboard["annotations"]["list"] if "target" in a]
    assert any(e.startswith(f"changes({names.PROM_STATE_VERSION}") for e in exprs), exprs


def test_dashboard_promql_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses every query (variables substituted) as a recording rule."""
    promtool = _tool("promtool")
    exprs = [_grafana_vars_to_promql(e) for e in _dashboard_exprs(dashboard)]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", path)
    _assert_ok(result)
    assert f"{len(exprs)} rules found" in result.stdout


def test_dashboard_provisioning_points_at_the_mounted_folder() -> None:
    provider = _load_yaml(PROVISIONING / "dashboards.yaml")["providers"][0]
    assert provider["type"] == "file"
    mounts = dict(_mounts("grafana"))
    target = PurePosixPath(mounts[(ROOT / "dashboards" / "failover.json").resolve()])
    assert target.parent == PurePosixPath(provider["options"]["path"])


# --- alert rules --------------------------------------------------------------------------------
def _rules() -> list[dict[str, Any]]:
    return [r for g in _load_yaml(RULES)["groups"] for r in g["rules"]]


REQUIRED_ALERTS = {
    "FailoverProviderErrorRateHigh",
    "FailoverProviderTripped",
    "FailoverTierAllProvidersDown",
    "FailoverFailoversSpiking",
    "FailoverLatencyDegraded",
    "FailoverKillSwitchEngagedLong",
    "FailoverTelemetryDropped",
    "FailoverControllerNotReporting",
}
_VALUE_IS_CONSTANT = {"FailoverProviderTripped", "FailoverKillSwitchEngagedLong"}


def test_rules_use_only_known_metrics_and_labels() -> None:
    rules = _rules()
    records = {r["record"] for r in rules if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for r in rules))
    assert used - KNOWN_METRICS - records - set(SELF_MONITORING) == set()
    labels = set().union(*(label_names(r["expr"]) for r in rules))
    templates = " ".join(str(r.get("annotations", "")) for r in rules)
    labels |= set(re.findall(r"\$labels\.(\w+)", templates))
    assert labels - KNOWN_LABELS == set()
    for rule in rules:
        for metric in metric_names(rule["expr"]) - records:
            job = SELF_MONITORING.get(metric, GATEWAY_JOB)
            assert f'{metric}{{job="{job}"' in rule["expr"].replace(" ", ""), (rule, metric)
    scraped = {c["job_name"] for c in _load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert set(SELF_MONITORING.values()) <= scraped


def test_recording_rules_are_computed_before_they_are_read() -> None:
    """Groups run independently: a rule reading another group's record may see a stale value."""
    for group in _load_yaml(RULES)["groups"]:
        defined: set[str] = set()
        for rule in group["rules"]:
            reads = {n for n in metric_names(rule["expr"]) if ":" in n}
            assert reads <= defined, (group["name"], rule.get("alert") or rule.get("record"))
            if "record" in rule:
                defined.add(rule["record"])


def test_required_alerts_have_severity_and_useful_annotations() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) >= REQUIRED_ALERTS
    assert alerts["FailoverTierAllProvidersDown"]["labels"]["severity"] == "critical"
    assert alerts["FailoverControllerNotReporting"]["labels"]["severity"] == "critical"
    assert alerts[WATCHDOG]["expr"].strip() == "vector(1)"
    assert alerts[WATCHDOG]["labels"]["severity"] == "none"
    for name, rule in alerts.items():
        if name == WATCHDOG:
            continue
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert notes["summary"], name
        assert notes["description"], name
        assert notes["dashboard"].startswith("http"), name
        if name not in _VALUE_IS_CONSTANT:
            assert "$value" in notes["summary"] + notes["description"], name


def test_every_rule_has_firing_and_quiet_unit_tests() -> None:
    suite = _load_yaml(RULES_TEST)
    assert suite["rule_files"] == [RULES.name]
    cases = [c for t in suite["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    rules = _rules()
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert alerts - firing == set()
    assert alerts - quiet == {WATCHDOG}
    # a recording rule counts as tested when a tested expression reads it, directly or through
    # another recording rule
    exprs = [c["expr"] for t in suite["tests"] for c in t.get("promql_expr_test", [])]
    exprs += [r["expr"] for r in rules if "alert" in r]
    records = {r["record"]: r["expr"] for r in rules if "record" in r}
    reached: set[str] = set()
    frontier = set().union(*(metric_names(e) for e in exprs)) & set(records)
    while frontier:
        reached |= frontier
        frontier = set().union(*(metric_names(records[n]) for n in frontier)) & set(records)
        frontier -= reached
    assert set(records) - reached == set()


# --- Alertmanager -------------------------------------------------------------------------------
def test_alertmanager_routes_and_inhibitions() -> None:
    config = _load_yaml(ALERTMANAGER)
    assert set(config["route"]["group_by"]) == {"alertname", "provider"}
    watchdog, *_ = config["route"]["routes"]  # first: it must reach nothing but the dead-man
    assert watchdog["matchers"] == [f'alertname="{WATCHDOG}"']
    assert (watchdog["receiver"], watchdog["repeat_interval"]) == ("deadman", "1m")
    assert not watchdog.get("continue", False)
    inhibit = {
        (r["source_matchers"][0], r["target_matchers"][0]): r for r in config["inhibit_rules"]
    }
    tripped = ('alertname="FailoverProviderTripped"', 'alertname="FailoverProviderErrorRateHigh"')
    assert inhibit[tripped]["equal"] == ["provider"]
    assert inhibit[('severity="critical"', 'severity="warning"')]["equal"] == ["provider"]


def test_alertmanager_holds_no_secrets() -> None:
    receivers = _load_yaml(ALERTMANAGER)["receivers"]
    telegram = [c for r in receivers for c in r.get("telegram_configs", [])]
    slack = [c for r in receivers for c in r.get("slack_configs", [])]
    assert telegram
    assert slack
    assert all(re.fullmatch(r"__\w+__", c["bot_token"]) for c in telegram)
    assert all("api_url_file" in c and "api_url" not in c for c in slack)


def test_alertmanager_entrypoint_renders_secrets_from_env(tmp_path: Path) -> None:
    amtool = _tool("amtool")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ALERTMANAGER_CONFIG_SRC": str(ALERTMANAGER),
        "ALERTMANAGER_RUN_DIR": str(tmp_path),
        "ALERTMANAGER_BIN": shutil.which("true") or "/bin/true",
        "TELEGRAM_BOT_TOKEN": "123456:test-token",
        "TELEGRAM_CHAT_ID": "-42",
        "TELEGRAM_API_URL": "http://127.0.0.1:9",
        "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook",
    }
    _assert_ok(_run("sh", DEPLOY / "alertmanager" / "entrypoint.sh", env=env))
    rendered = tmp_path / "alertmanager.yml"
    _assert_ok(_run(amtool, "check-config", rendered))
    assert _load_yaml(rendered)["route"]["routes"][0]["receiver"] == "blackhole"  # no dead-man
    env["DEADMAN_WEBHOOK_URL"] = "http://127.0.0.1:9/ping/check-token"
    _assert_ok(_run("sh", DEPLOY / "alertmanager" / "entrypoint.sh", env=env))
    _assert_ok(_run(amtool, "check-config", rendered))
    routed = _load_yaml(rendered)
    assert routed["route"]["routes"][0]["receiver"] == "deadman"
    (deadman,) = [r for r in routed["receivers"] if r["name"] == "deadman"]
    assert deadman["webhook_configs"][0]["url"] == "http://127.0.0.1:9/ping/check-token"
    config = _load_yaml(rendered)["receivers"][0]
    telegram, slack = config["telegram_configs"][0], config["slack_configs"][0]
    assert (telegram["bot_token"], telegram["chat_id"]) == ("123456:test-token", -42)
    assert telegram["api_url"] == "http://127.0.0.1:9"
    assert Path(slack["api_url_file"]).read_text() == "http://127.0.0.1:9/hook"
    for secret in (rendered, Path(slack["api_url_file"])):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


# --- compose ------------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _load_yaml(COMPOSE)
    return data


def _mounts(service: str) -> Iterator[tuple[Path, str]]:
    """(host path, container path) of each bind mount of a compose service."""
    for volume in _compose()["services"][service].get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("."):
            yield (DEPLOY / source).resolve(), target


_ALL_MOUNTS = [(s, h, t) for s in _compose()["services"] for h, t in _mounts(s)]


@pytest.mark.parametrize(("service", "host", "target"), _ALL_MOUNTS)
def test_compose_mounts_exist(service: str, host: Path, target: str) -> None:
    if host == EXAMPLE_CONFIG.resolve() and not host.exists():
        pytest.xfail("deploy/failover.example.yaml is written by the lead")
    assert host.is_file(), f"{service}: {host} → {target}"


def test_compose_services_and_gateway_command() -> None:
    services = _compose()["services"]
    required = {"gateway", "otel-collector", "prometheus", "alertmanager", "grafana", "redis"}
    assert required <= set(services)
    assert {"jaeger", "tempo"} & set(services)
    gateway = services["gateway"]
    assert (DEPLOY / gateway["build"]["context"]).resolve() == ROOT
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    command = gateway["command"]
    assert command[:2] == ["failover", "serve"]
    config_path = command[command.index("--config") + 1]
    assert config_path == "/etc/failover/failover.yaml"
    assert dict(_mounts("gateway"))[EXAMPLE_CONFIG.resolve()] == config_path


def test_prometheus_scrapes_compose_services_and_loads_the_rules() -> None:
    prom = _load_yaml(DEPLOY / "prometheus.yml")
    services = _compose()["services"]
    rules_target = dict(_mounts("prometheus"))[RULES.resolve()]
    assert any(fnmatch.fnmatch(rules_target, pattern) for pattern in prom["rule_files"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for j in jobs.values() for s in j["static_configs"] for t in s["targets"]]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    for host in {t.split(":")[0] for t in targets + am} - {"localhost"}:
        assert host in services, host
    scraped = {t.split(":")[1] for t in jobs[GATEWAY_JOB]["static_configs"][0]["targets"]}
    assert scraped == {p.split(":")[-1] for p in services["gateway"]["ports"]}


def test_otel_collector_pipelines_reference_defined_components() -> None:
    config = _load_yaml(DEPLOY / "otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config[kind]), (kind, pipeline)
    assert "prometheus" in config["exporters"]
    assert "otlp" in config["receivers"]
    command = _compose()["services"]["otel-collector"]["command"][0]
    mounted = dict(_mounts("otel-collector"))[(DEPLOY / "otel-collector.yaml").resolve()]
    assert command == f"--config={mounted}"


# --- kubernetes ---------------------------------------------------------------------------------
def _k8s_objects() -> list[dict[str, Any]]:
    resources = _load_yaml(K8S / "kustomization.yaml")["resources"]
    texts = [(K8S / r).read_text(encoding="utf-8") for r in resources]
    return [o for text in texts for o in yaml.safe_load_all(text) if o]


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _k8s_objects() if o["kind"] == kind}


def test_k8s_deployment_references_existing_objects_and_probes() -> None:
    deployment = _named("Deployment")["failover-gateway"]  # redis.yaml adds the fleet's Redis
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_maps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    secrets = {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e}
    assert config_maps
    assert config_maps <= set(_named("ConfigMap"))
    assert secrets
    assert secrets <= set(_named("Secret"))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config_arg = container["command"][container["command"].index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert PurePosixPath(config_arg).parent == PurePosixPath(mount["mountPath"])
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap edits (kill switch)
    service = _named("Service")["failover-gateway"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_k8s_secret_holds_placeholders_only() -> None:
    (secret,) = _named("Secret").values()
    assert secret["stringData"]
    assert set(secret["stringData"].values()) == {"replace-me"}


def test_k8s_configmap_matches_the_example_config() -> None:
    if not EXAMPLE_CONFIG.exists():
        pytest.xfail("deploy/failover.example.yaml is written by the lead")
    (config_map,) = _named("ConfigMap").values()
    in_k8s = yaml.safe_load(config_map["data"]["failover.yaml"])
    assert in_k8s == _load_yaml(EXAMPLE_CONFIG)
