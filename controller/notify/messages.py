"""Render an :class:`Alert` for a person: Telegram HTML, a Slack payload, a log line.

Every channel states the same facts, computed once in :func:`facts`: what happened (first line:
emoji + short headline, readable on a lock screen), when (UTC, ISO 8601), why with numbers,
where traffic goes now, the kill-switch state, then links — a dashboard with the time range
around the event and up to three trace IDs linked to the trace backend.

Link templates come from config and are checked there with :func:`check_template`;
placeholders are ``{base}``, ``{from_ms}``, ``{to_ms}``, ``{provider}``, ``{tier}`` for the
dashboard and ``{base}``, ``{trace_id}`` for traces. Values are URL-quoted.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from controller.notify.alert import Alert, AlertEvent, Severity

TELEGRAM_LIMIT = 4096  # characters per message (Bot API)
SLACK_SECTION_LIMIT = 3000  # characters per section block
SLACK_HEADER_LIMIT = 150
MAX_TRACES = 3

DASHBOARD_FIELDS = frozenset({"base", "from_ms", "to_ms", "provider", "tier"})
TRACE_FIELDS = frozenset({"base", "trace_id"})

_EMOJI = {
    AlertEvent.PROVIDER_TRIPPED: "🔴",
    AlertEvent.PROVIDER_RECOVERED: "🟢",
    AlertEvent.STANDBY_UNHEALTHY: "🩺",
    AlertEvent.TIER_ALL_DOWN: "🚨",
    AlertEvent.TIER_DEGRADED: "🪜",
    AlertEvent.TIER_RESTORED: "🟢",
    AlertEvent.AUTH_FAILURE: "🔐",
    AlertEvent.KILL_SWITCH_ENGAGED: "🛑",
    AlertEvent.KILL_SWITCH_RELEASED: "✅",
    AlertEvent.CONFIG_REJECTED: "⚠️",
    AlertEvent.WOULD_TRIP: "🟡",
    AlertEvent.LATENCY_DEGRADED: "🐢",
    AlertEvent.FLEET_UNAVAILABLE: "📡",
    AlertEvent.FLEET_RESTORED: "🔗",
    AlertEvent.PROMQL_UNAVAILABLE: "📉",
    AlertEvent.PROMQL_RESTORED: "📈",
    AlertEvent.OPERATOR_COMMAND: "🕹️",
    AlertEvent.JOB_DEAD_LETTER: "📭",
    AlertEvent.BUDGET_WARNING: "💸",
    AlertEvent.BUDGET_EXCEEDED: "💰",
    AlertEvent.TEST: "🔔",
}
_SEVERITY_EMOJI = {Severity.INFO: "\u2139\ufe0f", Severity.WARNING: "⚠️", Severity.CRITICAL: "🚨"}


def check_template(template: str, allowed: frozenset[str]) -> None:
    """Raise ValueError naming any placeholder the renderer will not fill."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkTemplates:
    """Where the dashboard and the traces live. A template left ``None`` means no link."""

    dashboard_url: str | None = None
    trace_url: str | None = None
    base_url: str = ""
    before_seconds: float = 900.0  # dashboard range starts this long before the event
    after_seconds: float = 300.0  # ... and ends this long after it

    def dashboard(self, alert: Alert) -> str | None:
        if not self.dashboard_url:
            return None
        values = {
            "base": self.base_url.rstrip("/"),
            "from_ms": str(int((alert.at - self.before_seconds) * 1000)),
            "to_ms": str(int((alert.at + self.after_seconds) * 1000)),
            "provider": quote(alert.provider or "", safe=""),
            "tier": quote((alert.tier or "").split(", ")[0], safe=""),  # the first, if several
        }
        return self.dashboard_url.format_map(values)

    def trace(self, trace_id: str) -> str | None:
        if not self.trace_url:
            return None
        values = {"base": self.base_url.rstrip("/"), "trace_id": quote(trace_id, safe="")}
        return self.trace_url.format_map(values)


# --- plain facts, shared by every channel --------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``252`` → ``4m 12s``; two units at most, so it stays short on a phone."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{value}{unit}" for value, unit in units if value][:2]
    return " ".join(shown) or "0s"


def format_when(epoch: float) -> str:
    """UTC, ISO 8601, second precision: ``2027-01-15T08:00:00Z``."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _percent(fraction: float) -> str:
    value = fraction * 100
    return f"{value:.0f}%" if value >= 10 or value == round(value) else f"{value:.1f}%"


def _window(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else format_duration(seconds)


def _tiers(named: str | None) -> str:
    """'tier fast', or 'tiers fast, frontier' for one outage that downed several."""
    if not named:
        return "tier ?"
    return f"tiers {named}" if ", " in named else f"tier {named}"


def _budget(alert: Alert) -> str:
    """Whose daily spend budget: 'provider openai' or 'tier frontier'."""
    return f"provider {alert.provider}" if alert.provider else _tiers(alert.tier)


def headline(alert: Alert) -> str:
    """First line: emoji + a few words."""
    if alert.members:
        return f"{_SEVERITY_EMOJI[alert.severity]} {len(alert.members)} alerts at once"
    who = alert.provider or "?"
    where = f" ({alert.tier})" if alert.tier and alert.provider else ""
    text = {
        AlertEvent.PROVIDER_TRIPPED: f"{who} tripped{where}",
        AlertEvent.PROVIDER_RECOVERED: f"{who} recovered{where}",
        AlertEvent.STANDBY_UNHEALTHY: f"backup {who} unhealthy while standing by{where}",
        AlertEvent.TIER_ALL_DOWN: f"all providers down in {_tiers(alert.tier)}",
        AlertEvent.TIER_DEGRADED: f"{_tiers(alert.tier)} serving degraded answers",
        AlertEvent.TIER_RESTORED: f"{_tiers(alert.tier)} served by its own providers again",
        AlertEvent.AUTH_FAILURE: f"{who}: auth failure (key rejected or account suspended)",
        AlertEvent.KILL_SWITCH_ENGAGED: f"kill switch engaged: {alert.kill_switch or '?'}",
        AlertEvent.KILL_SWITCH_RELEASED: "kill switch released",
        AlertEvent.CONFIG_REJECTED: "config reload rejected, previous config kept",
        AlertEvent.WOULD_TRIP: f"{who} would trip{where} (observe mode)",
        AlertEvent.LATENCY_DEGRADED: f"{who} latency degraded{where}",
        AlertEvent.FLEET_UNAVAILABLE: f"fleet state unavailable on {who}: deciding alone",
        AlertEvent.FLEET_RESTORED: f"fleet state back on {who}",
        AlertEvent.PROMQL_UNAVAILABLE: "PromQL tripwires unavailable: they trip nothing",
        AlertEvent.PROMQL_RESTORED: "PromQL tripwires answered again",
        AlertEvent.OPERATOR_COMMAND: f"operator: {_clip(alert.detail or '?', 120)}",
        AlertEvent.JOB_DEAD_LETTER: f"deferred job dead-lettered in {_tiers(alert.tier)}",
        AlertEvent.BUDGET_WARNING: f"{_budget(alert)}: 80% of today's budget spent",
        AlertEvent.BUDGET_EXCEEDED: f"{_budget(alert)}: today's budget spent",
        AlertEvent.TEST: "test alert",
    }[alert.event]
    if alert.down_for_seconds is not None:
        text += f", down for {format_duration(alert.down_for_seconds)}"
    return f"{_EMOJI[alert.event]} {text}"


def why(alert: Alert) -> str | None:
    """``error rate 83% over 30 s, 41 requests ≥ threshold 50%; top errors: overloaded 30``."""
    parts: list[str] = []
    if alert.error_rate is not None:
        rate = f"error rate {_percent(alert.error_rate)}"
        if alert.window_seconds is not None:
            rate += f" over {_window(alert.window_seconds)}"
        if alert.requests is not None:
            rate += f", {alert.requests} requests"
        if alert.threshold is not None:
            sign = "≥" if alert.error_rate >= alert.threshold else "<"
            rate += f" {sign} threshold {_percent(alert.threshold)}"
        parts.append(rate)
    if alert.top_errors:
        listed = ", ".join(f"{name} {count}" for name, count in alert.top_errors)
        parts.append(f"top errors: {listed}")
    return "; ".join(parts) or None


def _routes(routes: Mapping[str, tuple[str, ...]]) -> str | None:
    shown = [f"{tier} → {', '.join(names) or '(none)'}" for tier, names in routes.items()]
    return "; ".join(shown) or None


def facts(alert: Alert) -> list[tuple[str, str]]:
    """Labelled lines after the headline, plain text, in reading order."""
    rows: list[tuple[str, str]] = [("When", format_when(alert.at))]
    reason = None if alert.members else why(alert)
    optional = [
        ("Why", reason),
        ("Traffic now", _routes(alert.routes)),
        ("Kill switch", alert.kill_switch or "off"),
        ("Mode", "observe (not enforced)" if alert.observe_mode else None),
        ("Detail", _clip(alert.detail, 600) if alert.detail else None),
    ]
    rows.extend((label, value) for label, value in optional if value)
    return rows


def member_line(alert: Alert) -> str:
    """One alert inside a storm summary: headline, then the numbers when there are some."""
    reason = why(alert)
    return f"{headline(alert)} — {reason}" if reason else headline(alert)


def _traces(alert: Alert, links: LinkTemplates) -> list[tuple[str, str | None]]:
    return [(t, links.trace(t)) for t in alert.trace_ids[:MAX_TRACES]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(text: str) -> int:
    """Length as the chat APIs count it (UTF-16 code units: an emoji is 2), plus a newline."""
    return len(text.encode("utf-16-le")) // 2 + 1


def _fit_lines(lines: list[str], budget: int) -> list[str]:
    """As many lines as fit in ``budget``, then ``… and N more``."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        if used + _size(line) > budget - 40:
            kept.append(f"… and {len(lines) - index} more")
            break
        kept.append(line)
        used += _size(line)
    return kept


# --- Telegram (HTML parse mode) -----------------------------------------------------------------
def _h(text: str) -> str:
    return html.escape(text, quote=False)


def _a(url: str, label: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{_h(label)}</a>'


def render_telegram(alert: Alert, *, links: LinkTemplates) -> str:
    """Text for ``sendMessage`` with ``parse_mode=HTML``; fits Telegram's 4096 characters."""
    head = [f"<b>{_h(headline(alert))}</b>"]
    tail = [f"{_h(label)}: {_h(value)}" for label, value in facts(alert)]
    traces = [
        _a(url, tid) if url else f"<code>{_h(tid)}</code>" for tid, url in _traces(alert, links)
    ]
    if traces:
        tail.append("Traces: " + ", ".join(traces))
    dashboard = links.dashboard(alert)
    if dashboard:
        tail.append(_a(dashboard, "Dashboard"))
    members = [f"• {_h(member_line(m))}" for m in alert.members]
    budget = TELEGRAM_LIMIT - sum(_size(line) for line in head + tail)
    return "\n".join(head + _fit_lines(members, budget) + tail)


# --- Slack (incoming webhook payload) -----------------------------------------------------------
def _m(text: str) -> str:
    """Slack mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mlink(url: str, label: str) -> str:
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{_m(label)}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_SECTION_LIMIT)}}


def render_slack(alert: Alert, *, links: LinkTemplates) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}``; the fallback shows in notifications."""
    title = headline(alert)
    reason = why(alert) if not alert.members else f"{len(alert.members)} events"
    fallback = _m(f"{title} — {reason}" if reason else title)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_LIMIT), "emoji": True},
        }
    ]
    if alert.members:
        lines = [f"• {_m(member_line(m))}" for m in alert.members]
        blocks.append(_section("\n".join(_fit_lines(lines, SLACK_SECTION_LIMIT))))
    blocks.append(_section("\n".join(f"*{label}:* {_m(value)}" for label, value in facts(alert))))
    link_lines = _slack_links(alert, links)
    if link_lines:
        blocks.append(_section("\n".join(link_lines)))
    return {"text": fallback, "blocks": blocks}


def _slack_links(alert: Alert, links: LinkTemplates) -> list[str]:
    traces = [_mlink(url, tid) if url else f"`{_m(tid)}`" for tid, url in _traces(alert, links)]
    lines = ["*Traces:* " + ", ".join(traces)] if traces else []
    dashboard = links.dashboard(alert)
    if dashboard:
        lines.append(_mlink(dashboard, "Dashboard"))
    return lines


# --- log ------------------------------------------------------------------------------------------
def render_log(alert: Alert, *, links: LinkTemplates | None = None) -> str:
    """One ``key=value`` line per alert, grep-friendly; values with spaces are JSON-quoted."""
    fields: list[tuple[str, object]] = [
        ("event", alert.event.value),
        ("severity", alert.severity.value),
        ("at", format_when(alert.at)),
        ("provider", alert.provider),
        ("tier", alert.tier),
        ("error_rate", alert.error_rate),
        ("requests", alert.requests),
        ("window_s", alert.window_seconds),
        ("threshold", alert.threshold),
        ("top_errors", ",".join(f"{n}:{c}" for n, c in alert.top_errors) or None),
        ("routes", ";".join(f"{t}:{'|'.join(p)}" for t, p in alert.routes.items()) or None),
        ("kill_switch", alert.kill_switch or "off"),
        ("down_for_s", alert.down_for_seconds),
        ("observe", alert.observe_mode or None),
        ("traces", ",".join(alert.trace_ids[:MAX_TRACES]) or None),
        ("dashboard", links.dashboard(alert) if links else None),
        ("detail", alert.detail),
    ]
    return "alert " + " ".join(f"{k}={_logval(v)}" for k, v in fields if v is not None)


def _logval(value: object) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    needs_quotes = not text or any(c.isspace() or c in '"=' for c in text)
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text
