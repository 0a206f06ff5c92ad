"""Alerts: rendering — Telegram HTML, Slack blocks and the log line, storms, link templates.

Each alert states what happened, when, why and where traffic goes now, with links to traces
and the dashboard; user text is escaped, and a storm of alerts is summarised in one message
that still fits Telegram's limit. Pure functions: no clock, no HTTP.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.notify import (
    Alert,
    AlertEvent,
    LinkTemplates,
    NotifyConfig,
    Severity,
    combine,
    render_log,
    render_slack,
    render_telegram,
)
from controller.notify.messages import format_duration
from tests.notify_support import AT, LINKS, TRACE, recovered, trip


# --- rendering ------------------------------------------------------------------------------------
def test_telegram_text_states_what_when_why_where_and_links() -> None:
    text = render_telegram(trip(), links=LINKS)
    lines = text.split("\n")
    assert lines[0] == "<b>🔴 openai-primary tripped (frontier)</b>"
    assert "When: 2027-01-15T08:00:00Z" in lines
    assert (
        "Why: error rate 83% over 30 s, 41 requests ≥ threshold 50%; "
        "top errors: overloaded 30, timeout 4"
    ) in lines
    assert "Traffic now: frontier → anthropic-main, gemini" in lines
    assert "Kill switch: off" in lines
    trace_links = lines[-2]
    assert f'<a href="http://grafana.test/trace/{TRACE}">{TRACE}</a>' in trace_links
    assert trace_links.count("<a href=") == 3  # at most three traces
    from_ms, to_ms = int((AT - 900) * 1000), int((AT + 300) * 1000)
    dashboard = f"http://grafana.test/d/failover?from={from_ms}&amp;to={to_ms}"
    assert lines[-1] == f'<a href="{dashboard}">Dashboard</a>'


def test_recovery_says_how_long_it_was_down() -> None:
    assert format_duration(252) == "4m 12s"
    assert format_duration(3725) == "1h 2m"
    text = render_telegram(recovered(), links=LINKS)
    assert text.startswith("<b>🟢 openai-primary recovered (frontier), down for 4m 12s</b>")


def test_user_text_is_escaped_for_telegram_and_slack() -> None:
    alert = Alert(
        event=AlertEvent.CONFIG_REJECTED,
        severity=Severity.WARNING,
        at=AT,
        detail="line 3: kill_switch.pin: unknown provider <b>x</b> & co",
        kill_switch="pin: anthropic",
    )
    text = render_telegram(alert, links=LinkTemplates())
    assert "Detail: line 3: kill_switch.pin: unknown provider &lt;b&gt;x&lt;/b&gt; &amp; co" in text
    assert "Kill switch: pin: anthropic" in text
    assert "<a href" not in text  # no templates, no links
    payload = render_slack(alert, links=LinkTemplates())
    details = payload["blocks"][1]["text"]["text"]
    assert "*Detail:* line 3: kill_switch.pin: unknown provider &lt;b&gt;x&lt;/b&gt; &amp; co" in (
        details
    )


def test_slack_payload_has_fallback_header_facts_and_links() -> None:
    payload = render_slack(trip(), links=LINKS)
    assert payload["text"] == (
        "🔴 openai-primary tripped (frontier) — error rate 83% over 30 s, 41 requests "
        "≥ threshold 50%; top errors: overloaded 30, timeout 4"
    )
    header, facts_block, links_block = payload["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"] == "🔴 openai-primary tripped (frontier)"
    assert "*Traffic now:* frontier → anthropic-main, gemini" in facts_block["text"]["text"]
    assert f"<http://grafana.test/trace/{TRACE}|{TRACE}>" in links_block["text"]["text"]
    assert "|Dashboard>" in links_block["text"]["text"]


def test_log_line_is_one_grep_friendly_line() -> None:
    line = render_log(trip(), links=LINKS)
    assert "\n" not in line
    assert line.startswith("alert event=provider_tripped severity=warning at=2027-01-15T08:00:00Z")
    assert "error_rate=0.83 requests=41 window_s=30 threshold=0.5" in line
    assert "top_errors=overloaded:30,timeout:4" in line
    assert "routes=frontier:anthropic-main|gemini kill_switch=off" in line


def test_storm_summary_lists_each_alert_and_fits_telegram() -> None:
    alerts = [trip(f"p{i}") for i in range(300)]
    summary = combine(alerts)
    assert summary.members == tuple(alerts)
    text = render_telegram(summary, links=LINKS)
    assert len(text.encode("utf-16-le")) // 2 <= 4096  # Telegram counts UTF-16 units
    assert text.startswith("<b>⚠️ 300 alerts at once</b>")
    assert "• 🔴 p0 tripped (frontier) — error rate 83%" in text
    lines = text.split("\n")
    [more] = [line for line in lines if line.startswith("… and ")]
    shown = sum(1 for line in lines if line.startswith("• "))
    assert more == f"… and {300 - shown} more"
    critical = Alert(event=AlertEvent.TIER_ALL_DOWN, severity=Severity.CRITICAL, at=AT + 1)
    mixed = combine([trip(), critical])
    assert (mixed.event, mixed.severity, mixed.at) == (
        AlertEvent.TIER_ALL_DOWN,
        Severity.CRITICAL,
        AT,
    )


def test_link_templates_are_checked_by_config() -> None:
    with pytest.raises(ValidationError, match="nope"):
        NotifyConfig(dashboard_url="{base}/d/x?from={nope}")
    with pytest.raises(ValidationError, match="extra"):
        NotifyConfig.model_validate({"cooldown": 5})
    assert NotifyConfig().links().dashboard_url is None  # "{base}" but no base URL: no link


def test_one_outage_downing_several_tiers_reads_as_one_alert_naming_them() -> None:
    down = Alert(
        event=AlertEvent.TIER_ALL_DOWN,
        severity=Severity.CRITICAL,
        at=AT,
        provider="a",
        tier="fast, frontier",
    )
    assert "all providers down in tiers fast, frontier" in render_telegram(down, links=LINKS)
    assert 'tier="fast, frontier"' in render_log(down)
    one = Alert(event=AlertEvent.TIER_ALL_DOWN, severity=Severity.CRITICAL, at=AT, tier="fast")
    assert "all providers down in tier fast" in render_telegram(one, links=LINKS)
    links = LinkTemplates(dashboard_url="{base}/d/x?var-tier={tier}", base_url="http://g.test")
    assert links.dashboard(down) == "http://g.test/d/x?var-tier=fast"  # the first of them
