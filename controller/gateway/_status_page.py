"""The status page: one self-contained HTML document (inline CSS and JS, nothing external).

It polls ``/status.json`` every 2 s and redraws. Nothing is loaded from elsewhere, so it works on
an air-gapped box and passes a strict Content-Security-Policy; text from the status document is
inserted with ``textContent`` only, so a provider name or reason can never inject markup.

It reads this shape (lists may also be objects keyed by name; unknown fields are ignored, missing
ones are left blank). ``events`` and ``alerts`` are newest first, as the runtime keeps them; the
page shows the newest 30 of each, newest at the top. An alert's ``sent`` is false when it was
dropped before any channel got it, and ``not_sent_to`` names channels that failed it::

    {"version": 7, "updated_at": <epoch s>, "changed_by": "controller",
     "kill_switch": {"active": true, "pin": "backup", "disable": [],
                     "describe": "pinned to backup"},
     "tiers": [{"name": "frontier", "serving": "backup", "route": ["backup", "primary"],
                "panic": false, "reason": ""}],
     "providers": [{"name": "primary", "kind": "openai", "state": "tripped",
                    "error_rate": 0.62, "threshold": 0.5, "requests": 40, "since": <epoch s>,
                    "reason": "error rate 62% >= 50%", "trip_count": 1, "traffic_share": 0.0}],
     "events": [{"time": <epoch s>, "text": "frontier: primary -> backup (rate_limited)"}],
     "jobs": {"frontier": {"queued": 3, "running": 1, "done": 40, "dead": 0,
                           "oldest_age_seconds": 42.0}},
     "fleet": {"replica": "gw-a", "role": "leader", "leader": "gw-a", "redis": "up",
               "fleet_version": 12, "replicas": [{"name": "gw-b", "role": "follower",
               "version": 12, "heartbeat_age": 0.2}]},   (fleet mode only)
     "promql": [{"rule": "slo", "target": "primary", "state": "firing", "held": true,
                 "value": 20.0, "detail": "1 series, value 20"}],   (promql.rules only)
     "standby": {"warm_share": {"frontier": 0.01},
                 "ratelimits": {"primary/gpt-4o": {"low": true, "requests": {"limit": 500,
                                "remaining": 12, "reset_seconds": 20.0}}},
                 "idle_probes_failing": {"backup": "the probe request failed"}},
     "alerts": [{"time": <epoch s>, "severity": "warning", "event": "provider_tripped",
                 "text": "primary tripped", "sent": true, "delivered_at": <epoch s>,
                 "delivered": {"log": <epoch s>}, "not_sent_to": []}]}
"""

from __future__ import annotations

__all__ = ["STATUS_PAGE_HTML"]

_CSS = """
:root { --bg:#f5f6f8; --card:#fff; --ink:#1d2330; --mute:#5b6475; --line:#dde1e8;
  --ok:#1f8f4e; --warn:#c77700; --bad:#c62828; --info:#2d6cdf; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  background:var(--bg); color:var(--ink); }
header { padding:14px 18px; background:#1d2330; color:#fff; display:flex; flex-wrap:wrap;
  align-items:baseline; gap:6px 16px; }
header h1 { font-size:20px; margin:0; }
header .meta { color:#c9d1e0; font-size:14px; }
#conn { margin-left:auto; font-size:14px; font-weight:600; }
#conn.live { color:#7ee2a8; } #conn.down { color:#ff8a80; }
main { padding:14px; max-width:1200px; margin:0 auto; }
section { margin-bottom:16px; }
h2 { font-size:15px; text-transform:uppercase; letter-spacing:.06em; color:var(--mute);
  margin:4px 4px 8px; }
.kill { border-radius:10px; padding:10px 14px; background:var(--card);
  border:1px solid var(--line); color:var(--mute); }
.kill.active { background:var(--bad); color:#fff; border-color:var(--bad); font-size:20px;
  font-weight:700; padding:16px 18px; box-shadow:0 2px 10px rgba(198,40,40,.35); }
.kill .detail { display:block; font-size:16px; font-weight:500; }
.grid { display:grid; gap:12px; grid-template-columns:repeat(auto-fit,minmax(280px,1fr)); }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:12px 14px; }
.tier .name { font-weight:700; font-size:18px; }
.tier .serving { font-size:22px; font-weight:700; color:var(--info); }
.tier .serving.none { color:var(--bad); }
.route { color:var(--mute); font-size:14px; }
.badge { display:inline-block; border-radius:999px; padding:2px 10px; font-size:13px;
  font-weight:700; text-transform:uppercase; letter-spacing:.04em; color:#fff;
  background:var(--mute); }
.state-healthy { background:var(--ok); } .state-tripped { background:var(--bad); }
.state-probing { background:var(--warn); } .state-recovering { background:var(--info); }
.panic { background:var(--bad); margin-left:6px; }
.prov .top { display:flex; justify-content:space-between; align-items:center; gap:8px; }
.prov .top > div { min-width:0; }
.prov .top .badge { flex-shrink:0; }
.prov .name { font-weight:700; font-size:18px; overflow-wrap:anywhere; }
.prov .kind { color:var(--mute); font-size:14px; }
.bar { position:relative; height:14px; background:#e9ecf1; border-radius:7px; margin:10px 0 4px;
  overflow:hidden; }
.bar .fill { height:100%; background:var(--ok); }
.bar .fill.near { background:var(--warn); } .bar .fill.over { background:var(--bad); }
.bar .mark { position:absolute; top:0; bottom:0; width:3px; background:var(--ink); }
.small { font-size:14px; color:var(--mute); }
ul.log { list-style:none; margin:0; padding:0; }
ul.log li { padding:7px 4px; border-bottom:1px solid var(--line); font-size:15px; }
ul.log li:last-child { border-bottom:0; }
ul.log time { color:var(--mute); font-variant-numeric:tabular-nums; margin-right:8px; }
.sev-critical { border-left:4px solid var(--bad); padding-left:8px !important; }
.sev-warning { border-left:4px solid var(--warn); padding-left:8px !important; }
.sev-info { border-left:4px solid var(--info); padding-left:8px !important; }
.empty { color:var(--mute); font-style:italic; }
@media (max-width:600px) { body { font-size:17px; } main { padding:10px; } }
"""

_JS = r"""
"use strict";
const POLL_MS = 2000;
const LOG_ITEMS = 30;  // events and alerts come newest first: the newest 30, newest on top
let JOBS = {};  // each tier's deferred jobs (doc.jobs), read by renderTier
const byId = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function entries(value) {
  if (Array.isArray(value)) return value;
  if (value && typeof value === "object") {
    return Object.keys(value).map((key) => Object.assign({name: key}, value[key]));
  }
  return [];
}
function num(value) { return typeof value === "number" && isFinite(value) ? value : null; }
function pct(value) { return num(value) === null ? "n/a" : (value * 100).toFixed(1) + "%"; }
function ago(epoch) {
  if (!num(epoch)) return "";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
  return new Date(epoch * 1000).toLocaleString();
}
function clock(epoch) { return num(epoch) ? new Date(epoch * 1000).toLocaleTimeString() : ""; }
function fill(id, nodes, emptyText) {
  const box = byId(id);
  box.replaceChildren(...nodes);
  if (!nodes.length) box.append(el("p", "empty", emptyText));
}

function renderKill(kill) {
  kill = kill || {};
  const box = byId("kill");
  const disabled = Array.isArray(kill.disable) ? kill.disable : [];
  const active = kill.active === true || !!kill.pin || disabled.length > 0;
  const detail = kill.describe || (kill.pin ? "pinned to " + kill.pin :
    disabled.length ? "disabled: " + disabled.join(", ") : "off");
  box.className = active ? "kill active" : "kill";
  box.replaceChildren(el("span", "", active ? "KILL SWITCH ACTIVE" : "Kill switch: off"));
  if (active) box.append(el("span", "detail", detail));
}

function renderTier(tier) {
  const card = el("div", "card tier");
  const head = el("div", "name", tier.name || "?");
  if (tier.panic) head.append(el("span", "badge panic", "panic"));
  if (tier.degraded) head.append(el("span", "badge panic", "degraded: " + tier.degraded));
  const route = entries(tier.route).map((r) => (typeof r === "string" ? r : r.name || r.provider));
  const serving = tier.serving || route[0];
  card.append(head, el("div", "small", "served by"),
    el("div", serving ? "serving" : "serving none", serving || "nobody"));
  if (route.length) card.append(el("div", "route", "route: " + route.join(" \u2192 ")));
  if (tier.reason) card.append(el("div", "small", tier.reason));
  const jobs = JOBS[tier.name];
  if (jobs && (jobs.queued || jobs.running || jobs.done || jobs.dead)) {
    const oldest = num(jobs.oldest_age_seconds);
    const age = oldest === null ? "" : ", oldest " + Math.round(oldest) + " s";
    const waiting = (jobs.queued || 0) + " queued, " + (jobs.running || 0) + " replaying" + age;
    const ended = (jobs.done || 0) + " done, " + (jobs.dead || 0) + " dead letters";
    card.append(el("div", "small jobs", "deferred jobs: " + waiting + "; " + ended));
  }
  return card;
}

function renderBar(rate, threshold) {
  const bar = el("div", "bar");
  const r = num(rate) === null ? 0 : Math.min(1, Math.max(0, rate));
  const t = num(threshold);
  const level = t !== null && r >= t ? " over" : t !== null && r >= t * 0.5 ? " near" : "";
  const fillNode = el("div", "fill" + level);
  fillNode.style.width = (r * 100).toFixed(1) + "%";
  bar.append(fillNode);
  if (t !== null) {
    const mark = el("div", "mark");
    mark.style.left = "calc(" + (Math.min(1, t) * 100).toFixed(1) + "% - 1px)";
    mark.title = "threshold " + pct(t);
    bar.append(mark);
  }
  return bar;
}

function renderProvider(p) {
  const card = el("div", "card prov");
  const state = String(p.state || "unknown");
  const top = el("div", "top");
  const who = el("div");
  who.append(el("div", "name", p.name || "?"), el("div", "kind", p.kind || ""));
  top.append(who, el("span", "badge state-" + state.replace(/[^a-z]/g, ""), state));
  card.append(top, renderBar(p.error_rate, p.threshold));
  let line = "error rate " + pct(p.error_rate) + " / threshold " + pct(p.threshold);
  if (num(p.requests) !== null) line += " \u00b7 " + p.requests + " requests";
  card.append(el("div", "small", line));
  let since = p.since ? "since " + ago(p.since) : "";
  if (p.reason) since += (since ? " \u2014 " : "") + p.reason;
  if (since) card.append(el("div", "small", since));
  const extra = [];
  const share = num(p.traffic_share);
  if (share !== null && share < 1) extra.push("traffic " + pct(share));
  if (num(p.trip_count)) extra.push("trips " + p.trip_count);
  if (num(p.waiting)) extra.push(p.waiting + " waiting for an answer");
  const limits = p.stall_limit && typeof p.stall_limit === "object" ? p.stall_limit : {};
  const learned = Object.keys(limits).filter((k) => num(limits[k]) !== null)
    .map((k) => k + " " + num(limits[k]).toFixed(1) + " s");
  if (learned.length) extra.push("stalled after " + learned.join(", "));
  if (extra.length) card.append(el("div", "small", extra.join(" \u00b7 ")));
  return card;
}

function renderModel(m) {
  const card = el("div", "card prov");
  const state = String(m.state || "unknown");
  const top = el("div", "top");
  const who = el("div");
  who.append(el("div", "name", m.name || "?"), el("div", "kind", "one model, judged alone"));
  top.append(who, el("span", "badge state-" + state.replace(/[^a-z]/g, ""), state));
  card.append(top);
  let since = m.since ? "since " + ago(m.since) : "";
  if (m.reason) since += (since ? " \u2014 " : "") + m.reason;
  if (since) card.append(el("div", "small", since));
  const share = num(m.traffic_share);
  if (share !== null && share < 1) card.append(el("div", "small", "traffic " + pct(share)));
  return card;
}

function describe(item) {
  if (typeof item !== "object" || item === null) return String(item);
  const text = item.text || item.summary || item.message;
  if (text) return text;
  return Object.keys(item).filter((k) => !["time", "at", "severity"].includes(k))
    .map((k) => k + "=" + JSON.stringify(item[k])).join(" ");
}

function renderLogItem(item) {
  const li = el("li", item && item.severity ? "sev-" + item.severity : "");
  const when = item && (item.time || item.at);
  if (when) li.append(el("time", "", clock(when)));
  if (item && item.event) li.append(el("strong", "", item.event + " "));
  li.append(document.createTextNode(describe(item)));
  const missed = item && Array.isArray(item.not_sent_to) ? item.not_sent_to : [];
  if (missed.length) li.append(el("em", "", " (not sent to " + missed.join(", ") + ")"));
  return li;
}

function renderFleet(fleet) {
  const box = byId("fleet-box");
  box.hidden = !(fleet && typeof fleet === "object");
  if (box.hidden) return;
  const redis = fleet.redis === "up" ? "Redis up" : "Redis unavailable: deciding alone";
  const head = [
    "this replica " + (fleet.replica || "?") + " (" + (fleet.role || "?") + ")",
    "leader " + (fleet.leader || "none"),
    redis,
    "fleet version " + (num(fleet.fleet_version) === null ? "?" : fleet.fleet_version),
  ];
  const rows = entries(fleet.replicas).map((r) => {
    const age = num(r.heartbeat_age);
    const beat = age === null ? "no heartbeat" : "heartbeat " + age.toFixed(1) + " s ago";
    return el("li", "", (r.name || "?") + ": " + (r.role || "?") + ", version " +
      (num(r.version) === null ? "?" : r.version) + ", " + beat);
  });
  const list = el("ul", "log");
  list.append(...rows);
  byId("fleet").replaceChildren(el("div", "small", head.join(" \u00b7 ")), list);
}

function renderPromql(rules) {
  const box = byId("promql-box");
  box.hidden = !Array.isArray(rules) || rules.length === 0;
  if (box.hidden) return;
  const rows = rules.map((r) => {
    const held = r.state === "unknown" && r.held ? " (held out: it last fired)" : "";
    const li = el("li", r.state === "firing" ? "sev-warning" : "",
      (r.rule || "?") + " \u2192 " + (r.target || "?") + ": " + (r.state || "?") + held);
    if (r.detail) li.append(el("em", "", " " + r.detail));
    return li;
  });
  const list = el("ul", "log");
  list.append(...rows);
  byId("promql").replaceChildren(list);
}

function renderStandby(standby) {
  const doc = standby && typeof standby === "object" ? standby : {};
  const warm = Object.entries(doc.warm_share || {}).filter(([, share]) => num(share) !== null);
  const limits = Object.entries(doc.ratelimits || {});
  const failing = Object.entries(doc.idle_probes_failing || {});
  const box = byId("standby-box");
  box.hidden = !(warm.length || limits.length || failing.length);
  if (box.hidden) return;
  const parts = [];
  if (warm.length) {
    const shares = warm.map(([tier, share]) => tier + " " + +(share * 100).toFixed(2) + "%");
    parts.push(el("div", "small", "warm traffic to the next target: " + shares.join(", ")));
  }
  const list = el("ul", "log");
  for (const [provider, reason] of failing) {
    list.append(el("li", "sev-warning",
      provider + ": unhealthy while standing by (idle probes failing" +
      (reason ? ": " + reason : "") + ")"));
  }
  for (const [target, reading] of limits) {
    const kinds = Object.entries(reading || {}).filter(([, r]) => r && typeof r === "object");
    const said = kinds.map(([kind, r]) => {
      const left = num(r.remaining) === null ? "?" : r.remaining;
      const of = num(r.limit) === null ? "" : " of " + r.limit;
      const reset = num(r.reset_seconds) === null ? "" :
        ", reset " + r.reset_seconds.toFixed(0) + " s from the last answer";
      return kind + " " + left + of + " left" + reset;
    });
    const low = reading && reading.low ? ": low, new requests go to the next target" : "";
    list.append(el("li", low ? "sev-warning" : "",
      target + " rate limits: " + (said.join("; ") || "none read") + low));
  }
  if (list.childNodes.length) parts.push(list);
  byId("standby").replaceChildren(...parts);
}

function render(doc) {
  renderKill(doc.kill_switch);
  renderFleet(doc.fleet);
  renderPromql(doc.promql);
  renderStandby(doc.standby);
  JOBS = doc.jobs && typeof doc.jobs === "object" ? doc.jobs : {};
  fill("tiers", entries(doc.tiers).map(renderTier), "No tiers configured.");
  const cards = entries(doc.providers).map(renderProvider);
  fill("providers", cards.concat(entries(doc.models).map(renderModel)), "No providers configured.");
  const events = entries(doc.events).slice(0, LOG_ITEMS).map(renderLogItem);
  const alerts = entries(doc.alerts).slice(0, LOG_ITEMS).map(renderLogItem);
  fill("events", events.length ? [el("ul", "log")] : [], "No routing events yet.");
  if (events.length) byId("events").firstChild.append(...events);
  fill("alerts", alerts.length ? [el("ul", "log")] : [], "No alerts sent.");
  if (alerts.length) byId("alerts").firstChild.append(...alerts);
  const meta = ["updated " + clock(Date.now() / 1000)];
  if (num(doc.version) !== null) meta.push("state v" + doc.version);
  if (doc.changed_by) meta.push("changed by " + doc.changed_by);
  byId("meta").textContent = meta.join(" \u00b7 ");
}

async function poll() {
  const conn = byId("conn");
  try {
    const answer = await fetch("status.json", {cache: "no-store"});
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    render(await answer.json());
    conn.textContent = "\u25cf live";
    conn.className = "live";
  } catch (err) {
    conn.textContent = "\u25cf status unavailable, retrying";
    conn.className = "down";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
"""

STATUS_PAGE_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LLM failover status</title>
<style>{_CSS}</style>
</head>
<body>
<header>
  <h1>LLM failover status</h1>
  <span class="meta" id="meta">loading&hellip;</span>
  <span id="conn">&#9679; connecting</span>
</header>
<main>
  <section><div id="kill" class="kill">Kill switch: &hellip;</div></section>
  <section id="fleet-box" hidden><h2>Fleet</h2><div id="fleet" class="card"></div></section>
  <section id="promql-box" hidden><h2>PromQL tripwires</h2><div id="promql" class="card"></div>
  </section>
  <section id="standby-box" hidden><h2>Standby</h2><div id="standby" class="card"></div>
  </section>
  <section><h2>Routes</h2><div id="tiers" class="grid"></div></section>
  <section><h2>Providers</h2><div id="providers" class="grid"></div></section>
  <section class="grid">
    <div class="card"><h2>Recent routing events</h2><div id="events"></div></div>
    <div class="card"><h2>Alerts</h2><div id="alerts"></div></div>
  </section>
</main>
<script>{_JS}</script>
</body>
</html>
"""
