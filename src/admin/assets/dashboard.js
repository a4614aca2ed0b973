// The live dashboard: cluster cards from GET /clusters, charts and the timeline from the
// /events stream (state transitions as they happen, a `traffic` summary every second).
"use strict";

// A token in the URL fragment (`/dashboard#token=...`, printed by `token: auto`) signs in once
// and leaves the address bar; fragments never reach the server.
(function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("gatehouse-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

const state = {
  token: sessionStorage.getItem("gatehouse-token") || "",
  charts: {},
  routes: [],
  points: 0,
  data: { t: [], rps: {}, errors: {}, p50: {}, p99: {}, limited: {}, cache: {} },
};
window.__gatehouse = state; // read by the browser tests
const WINDOW = 180; // seconds of history kept

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("admin token required");
  }
  return r.json();
}

function colour(e) {
  if (e.drained) return "grey";
  if (e.health === "DOWN" || e.breaker === "OPEN") return "red";
  if (e.health === "DEGRADED" || e.breaker === "HALF_OPEN") return "yellow";
  return "green";
}

function el(tag, attrs = {}, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

async function refreshClusters() {
  let d;
  try { d = await api("/clusters"); } catch (e) { return; }
  const root = document.getElementById("clusters");
  const select = document.getElementById("drill-endpoint");
  const chosen = select.value;
  root.replaceChildren();
  select.replaceChildren();
  for (const c of d.clusters) {
    const box = el("div", { class: "cluster", "data-name": c.name });
    box.append(el("h2", {}, c.name));
    const cards = el("div", { class: "cards" });
    for (const e of c.endpoints) {
      const card = el("div", {
        class: "card " + colour(e), "data-endpoint": e.address, "data-cluster": c.name,
        "data-breaker": e.breaker, "data-health": e.health, "data-colour": colour(e),
      });
      card.append(el("div", { class: "addr" }, e.address));
      card.append(el("div", { class: "state" }, e.health + " · " + e.breaker + (e.drained ? " · drained" : "")));
      card.append(el("div", {}, "weight " + e.weight + " → " + e.effective_weight.toFixed(2) +
        (e.slow_start_progress < 1 ? " (slow start " + Math.round(e.slow_start_progress * 100) + " %)" : "")));
      card.append(el("div", {}, "in flight " + e.in_flight + " · " + e.latency_ewma_ms.toFixed(1) + " ms"));
      if (e.fault) card.append(el("div", { class: "fault" }, "drill: " + (e.fault.abort ? "abort " + e.fault.abort : "+" + e.fault.delay_ms + " ms") + ", " + Math.ceil(e.fault.remaining_ms / 1000) + " s left"));
      const btn = el("button", { type: "button" }, e.drained ? "Enable" : "Drain");
      btn.onclick = () => api(`/clusters/${c.name}/endpoints/${e.address}/${e.drained ? "enable" : "drain"}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }).then(refreshClusters);
      card.append(btn);
      cards.append(card);
      const value = c.name + "|" + e.address;
      const opt = el("option", { value }, c.name + " · " + e.address);
      if (value === chosen) opt.selected = true;
      select.append(opt);
    }
    box.append(cards);
    root.append(box);
  }
}

function makeChart(id, series) {
  const node = document.getElementById(id);
  const opts = {
    width: Math.max(node.clientWidth || 400, 300), height: 160,
    series: [{}].concat(series.map((label, i) => ({ label, stroke: `hsl(${(i * 67) % 360} 65% 45%)`, width: 1.5 }))),
    axes: [{}, { size: 50 }],
  };
  node.replaceChildren();
  return new uPlot(opts, [[], ...series.map(() => [])], node);
}

function ensureCharts(routes) {
  if (routes.join() === state.routes.join()) return;
  state.routes = routes;
  state.charts.rps = makeChart("chart-rps", routes);
  state.charts.errors = makeChart("chart-errors", routes);
  state.charts.latency = makeChart("chart-latency", routes.flatMap((r) => [r + " p50", r + " p99"]));
  state.charts.limited = makeChart("chart-limited", routes);
  state.charts.cache = makeChart("chart-cache", routes);
}

function onTraffic(ev) {
  const routes = Object.keys(ev.routes).sort();
  ensureCharts(routes);
  const d = state.data;
  d.t.push(Date.parse(ev.time) / 1000);
  for (const r of routes) {
    const x = ev.routes[r];
    for (const k of ["rps", "errors", "p50", "p99", "limited", "cache"]) d[k][r] = d[k][r] || [];
    d.rps[r].push(x.requests_per_second);
    d.errors[r].push(x.requests_per_second ? (100 * x.errors_per_second) / x.requests_per_second : 0);
    d.p50[r].push(x.p50_ms);
    d.p99[r].push(x.p99_ms);
    d.limited[r].push(x.rate_limited_per_second);
    d.cache[r].push(x.cache_hit_ratio ?? null); // null: no cache, or no lookups that second
  }
  if (d.t.length > WINDOW) {
    d.t.shift();
    for (const k of ["rps", "errors", "p50", "p99", "limited", "cache"]) for (const r of routes) d[k][r].shift();
  }
  const pad = (arr) => (arr.length < d.t.length ? Array(d.t.length - arr.length).fill(null).concat(arr) : arr);
  state.charts.rps.setData([d.t, ...routes.map((r) => pad(d.rps[r]))]);
  state.charts.errors.setData([d.t, ...routes.map((r) => pad(d.errors[r]))]);
  state.charts.latency.setData([d.t, ...routes.flatMap((r) => [pad(d.p50[r]), pad(d.p99[r])])]);
  state.charts.limited.setData([d.t, ...routes.map((r) => pad(d.limited[r]))]);
  state.charts.cache.setData([d.t, ...routes.map((r) => pad(d.cache[r]))]);
  state.points = d.t.length;
  refreshClusters();
}

const TRANSITIONS = ["health_changed", "circuit_opened", "circuit_half_opened", "circuit_closed",
  "slow_start_done", "endpoint_drained", "endpoint_enabled", "fault_started", "fault_ended",
  "config_reloaded", "config_reload_failed"];

function onTransition(ev) {
  const li = el("li", { "data-event": ev.event });
  if (/^circuit_opened$|failed$|^fault_started$/.test(ev.event) || ev.to === "DOWN") li.classList.add("bad");
  if (/closed$|done$|enabled$/.test(ev.event) || ev.to === "HEALTHY") li.classList.add("good");
  li.append(el("time", {}, new Date(ev.time).toLocaleTimeString()));
  const where = [ev.cluster, ev.endpoint].filter(Boolean).join(" ");
  const why = ev.reason ? " (" + ev.reason + (ev.open_for_ms ? ", " + ev.open_for_ms / 1000 + " s" : "") + ")" : "";
  const change = ev.from ? " " + ev.from + " → " + ev.to : "";
  li.append(document.createTextNode(ev.event + " " + where + change + why));
  const list = document.getElementById("timeline");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
  refreshClusters();
}

function connect() {
  const conn = document.getElementById("conn");
  const url = "/events" + (state.token ? "?access_token=" + encodeURIComponent(state.token) : "");
  const es = new EventSource(url);
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; refreshClusters(); };
  // EventSource reconnects by itself (e.g. after a gateway restart); show it meanwhile.
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  es.addEventListener("traffic", (m) => onTraffic(JSON.parse(m.data)));
  for (const name of TRANSITIONS) es.addEventListener(name, (m) => onTransition(JSON.parse(m.data)));
  state.events = es;
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = document.getElementById("token").value;
  sessionStorage.setItem("gatehouse-token", state.token);
  document.getElementById("token-form").hidden = true;
  if (state.events) state.events.close();
  connect();
});

document.getElementById("drill-kind").addEventListener("change", (e) => {
  document.getElementById("drill-value").value = e.target.value === "abort" ? 503 : 300;
});

document.getElementById("drill").addEventListener("submit", async (e) => {
  e.preventDefault();
  const [cluster, address] = document.getElementById("drill-endpoint").value.split("|");
  const kind = document.getElementById("drill-kind").value;
  const value = Number(document.getElementById("drill-value").value);
  const body = { duration_s: Number(document.getElementById("drill-duration").value) };
  if (kind === "abort") body.abort = value; else body.delay_ms = value;
  const out = document.getElementById("drill-result");
  try {
    await api(`/clusters/${cluster}/endpoints/${address}/fault`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    out.textContent = "Drill running on " + address + ": watch its card and the timeline.";
  } catch (err) {
    out.textContent = String(err);
  }
  refreshClusters();
});

api("/status").then((s) => {
  document.getElementById("meta").textContent = "v" + s.version + " · generation " + s.generation;
}).catch(() => {});
refreshClusters();
connect();
