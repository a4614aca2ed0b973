// The dashboard's views, all drawn from the kept traffic summaries (`state.samples`: the same
// objects GET /history returns and /events sends) and the kept transitions (`state.events`),
// so what came from history and what came live are drawn by the same code: the route charts,
// the route table and the cluster / endpoint view. Each chart's aria-label says its latest
// figures in words (a chart is a picture to a screen reader).
"use strict";

/** Puts `node` at position `i` of `parent`, moving it only when it is elsewhere: moving a node
 * takes the keyboard focus out of it. */
function place(parent, node, i) {
  if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
}

function el(tag, attrs = {}, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits).replace(/\.0+$/, ""));
const clock = (s) => new Date(s * 1000).toLocaleTimeString();
const when = (sample) => Date.parse(sample.time) / 1000;

/** Draws `series` ([{label, get(sample)}]) over the samples in the chart `id`; a new set of
 * labels makes a new uPlot. Returns the series' values (for the tests and the summaries). */
function drawChart(id, title, series, samples, unit) {
  const node = document.getElementById(id);
  const labels = series.map((s) => s.label).join("\n");
  let chart = state.charts[id];
  if (!chart || chart.labels !== labels) {
    if (chart) chart.plot.destroy();
    node.replaceChildren();
    const opts = {
      width: Math.max(node.clientWidth || 400, 280), height: 160,
      series: [{}].concat(series.map((s, i) => ({ label: s.label, stroke: `hsl(${(i * 67) % 360} 65% 38%)`, width: 1.5 }))),
      axes: [{}, { size: 50 }],
    };
    chart = state.charts[id] = { labels, plot: new uPlot(opts, [[], ...series.map(() => [])], node) };
  }
  const values = series.map((s) => samples.map((x) => { const v = s.get(x); return v === undefined ? null : v; }));
  chart.plot.setData([samples.map(when), ...values]);
  const latest = series.map((s, i) => `${s.label} ${fmt(values[i][values[i].length - 1])}${unit}`);
  node.setAttribute("aria-label", samples.length
    ? `${title}, ${samples.length} seconds to ${clock(when(samples[samples.length - 1]))}; last second: ${latest.join(", ") || "no series"}`
    : `${title}: no data yet`);
  return values;
}

/** Every route name the kept summaries mention, sorted (a reload may add or remove some). */
function routeNames(samples) {
  const names = new Set();
  for (const s of samples) for (const r of Object.keys(s.routes || {})) names.add(r);
  return [...names].sort();
}

function drawRouteCharts() {
  const samples = state.samples;
  const routes = routeNames(samples);
  const r = (name, f) => (s) => { const x = s.routes && s.routes[name]; return x ? f(x) : null; };
  const per = (f) => routes.map((name) => ({ label: name, get: r(name, f) }));
  const errors = (x) => (x.requests_per_second ? (100 * x.errors_per_second) / x.requests_per_second : 0);
  const d = { t: samples.map(when), rps: {}, errors: {}, p50: {}, p99: {}, limited: {}, cache: {} };
  const put = (key, values) => routes.forEach((name, i) => { d[key][name] = values[i]; });
  put("rps", drawChart("chart-rps", "Requests per second", per((x) => x.requests_per_second), samples, " req/s"));
  put("errors", drawChart("chart-errors", "Error rate", per(errors), samples, " %"));
  const lat = drawChart("chart-latency", "Latency", routes.flatMap((name) => [
    { label: name + " p50", get: r(name, (x) => x.p50_ms) }, { label: name + " p99", get: r(name, (x) => x.p99_ms) },
  ]), samples, " ms");
  routes.forEach((name, i) => { d.p50[name] = lat[2 * i]; d.p99[name] = lat[2 * i + 1]; });
  put("limited", drawChart("chart-limited", "Rate-limit rejections per second", per((x) => x.rate_limited_per_second), samples, "/s"));
  put("cache", drawChart("chart-cache", "Cache hit ratio", per((x) => x.cache_hit_ratio ?? null), samples, " %"));
  state.data = d;
  const w = document.getElementById("window");
  w.textContent = samples.length ? `(${samples.length} s, since ${clock(d.t[0])})` : "";
}

function describeMatch(m) {
  const parts = [];
  if (m.host) parts.push("host " + m.host);
  if (m.methods && m.methods.length) parts.push(m.methods.join(","));
  parts.push(m.path || m.path_template || (m.path_prefix ? m.path_prefix + "*" : "") || "any path");
  return parts.join(" ");
}

function describeTarget(r) {
  if (r.cluster) return "cluster " + r.cluster;
  if (r.cluster_from_path) return "cluster from path";
  if (r.redirect) return "redirect";
  if (r.direct_response) return "direct answer";
  return "split";
}

function describeLimits(limits) {
  if (!limits.length) return "none";
  return limits.map((l) => `${l.policy}: ${l.rate}${l.burst ? ", burst " + l.burst : ""} (${l.algorithm.replace(/_/g, " ")}, ${l.store}); ${l.limited_total} limited of ${l.allowed_total + l.limited_total}`).join("; ");
}

/** The route table: config and totals from GET /routes, last second from the newest summary. */
function drawRouteTable() {
  const body = document.querySelector("#route-table tbody");
  const last = state.samples[state.samples.length - 1];
  const rows = new Map([...body.children].map((tr) => [tr.dataset.route, tr]));
  for (const [i, r] of state.routes.entries()) {
    let tr = rows.get(r.name);
    if (!tr) {
      tr = el("tr", { "data-route": r.name });
      tr.append(el("th", { scope: "row" }, r.name));
      for (const k of ["match", "target", "rps", "errors", "p50", "p99", "limits", "limited", "cache"]) {
        tr.append(el("td", { "data-col": k, class: /^(rps|errors|p50|p99|limited|cache)$/.test(k) ? "num" : "" }));
      }
    }
    place(body, tr, i); // in the API's order
    rows.delete(r.name);
    const x = (last && last.routes && last.routes[r.name]) || {};
    const cache = r.cache ? `${fmt(x.cache_hit_ratio)} % (overall ${fmt(r.cache.hit_ratio)} %)` : "no cache";
    const cells = {
      match: describeMatch(r.match), target: describeTarget(r), rps: fmt(x.requests_per_second, 0),
      errors: fmt(x.errors_per_second, 0), p50: fmt(x.p50_ms, 2), p99: fmt(x.p99_ms, 2),
      limits: describeLimits(r.rate_limits || []), limited: fmt(x.rate_limited_per_second, 0), cache,
    };
    for (const [k, v] of Object.entries(cells)) {
      const td = tr.querySelector(`[data-col="${k}"]`);
      if (td.textContent !== v) td.textContent = v;
    }
  }
  for (const tr of rows.values()) tr.remove();
}

/** Runs of one endpoint's (health, breaker, drained) over the samples, newest first. */
function stateSpans(samples, cluster, address) {
  const spans = [];
  for (const s of samples) {
    const e = s.clusters && s.clusters[cluster] && s.clusters[cluster].endpoints && s.clusters[cluster].endpoints[address];
    if (!e) continue;
    const key = e.health + "|" + e.breaker + "|" + e.drained;
    const top = spans[spans.length - 1];
    if (top && top.key === key) top.until = when(s);
    else spans.push({ key, address, from: when(s), until: when(s), health: e.health, breaker: e.breaker, drained: e.drained });
  }
  return spans.reverse();
}

function eventText(ev) {
  const where = [ev.cluster, ev.endpoint, ev.listener].filter(Boolean).join(" ");
  const why = ev.reason ? " (" + ev.reason + (ev.open_for_ms ? ", " + ev.open_for_ms / 1000 + " s" : "") + ")" : "";
  const change = ev.from ? " " + ev.from + " → " + ev.to : "";
  return ev.event + " " + where + change + why + (ev.first_error ? ": " + ev.first_error : "");
}

function eventItem(ev) {
  const li = el("li", { "data-event": ev.event, "data-seq": String(ev.seq) });
  if (/^circuit_opened$|failed$|^fault_started$|invalid|expiring/.test(ev.event) || ev.to === "DOWN") li.classList.add("bad");
  if (/closed$|done$|enabled$|reloaded$/.test(ev.event) || ev.to === "HEALTHY") li.classList.add("good");
  li.append(el("time", { datetime: ev.time }, new Date(ev.time).toLocaleTimeString()));
  li.append(document.createTextNode(eventText(ev)));
  return li;
}

function setOptions(select, options) {
  const want = options.map(([v, label]) => v + "\t" + label).join("\n");
  if (select.dataset.options === want) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([v, label]) => el("option", { value: v }, label)));
  select.dataset.options = want;
  if (options.some(([v]) => v === chosen)) select.value = chosen;
}

/** The cluster / endpoint view: its pickers, its two charts, its state history and events. */
function drawView() {
  const cs = document.getElementById("view-cluster");
  const es = document.getElementById("view-endpoint");
  setOptions(cs, state.clusters.map((c) => [c.name, c.name]));
  if (!state.view.cluster || !state.clusters.some((c) => c.name === state.view.cluster)) state.view.cluster = cs.value;
  cs.value = state.view.cluster;
  const cluster = state.clusters.find((c) => c.name === state.view.cluster);
  const addrs = cluster ? cluster.endpoints.map((e) => e.address) : [];
  setOptions(es, [["", "all endpoints"], ...addrs.map((a) => [a, a])]);
  if (!addrs.includes(state.view.endpoint)) state.view.endpoint = "";
  es.value = state.view.endpoint;
  const c = state.view.cluster, a = state.view.endpoint;
  const samples = state.samples;
  const of = (s) => (s.clusters && s.clusters[c]) || null;
  const ep = (s, addr) => { const x = of(s); return (x && x.endpoints && x.endpoints[addr]) || null; };
  const pick = a ? (s) => ep(s, a) : of;
  const field = (f) => (s) => { const x = pick(s); return x ? x[f] : null; };
  const name = a ? `${c} ${a}` : c;
  state.view.tries = drawChart("chart-tries", `Tries and failures per second of ${name}`, [
    { label: "tries/s", get: field("tries_per_second") }, { label: "failures/s", get: field("failures_per_second") },
  ], samples, "");
  const latency = a
    ? [{ label: "p50", get: field("p50_ms") }, { label: "p99", get: field("p99_ms") }]
    : addrs.map((addr) => ({ label: addr + " p99", get: (s) => { const x = ep(s, addr); return x ? x.p99_ms : null; } }));
  state.view.latency = drawChart("chart-ep-latency", `Latency of ${name}`, latency, samples, " ms");

  const last = samples.length ? pick(samples[samples.length - 1]) : null;
  const summary = document.getElementById("view-summary");
  const text = !c ? "No cluster yet." : last
    ? `${name}, last second: ${last.tries_per_second} tries/s, ${last.failures_per_second} failures/s` +
      (a ? `, p50 ${fmt(last.p50_ms, 2)} ms, p99 ${fmt(last.p99_ms, 2)} ms, ${last.health}, breaker ${last.breaker}${last.drained ? ", drained" : ""}.` : ".")
    : `${name}: no traffic summary yet.`;
  if (summary.textContent !== text) summary.textContent = text;

  const rows = (a ? [a] : addrs).flatMap((addr) => stateSpans(samples, c, addr));
  rows.sort((x, y) => y.until - x.until);
  const tbody = document.querySelector("#state-history tbody");
  tbody.replaceChildren(...rows.map((s) => {
    const tr = el("tr", { "data-endpoint": s.address, "data-breaker": s.breaker, "data-health": s.health });
    tr.append(el("th", { scope: "row" }, s.address), el("td", {}, clock(s.from)), el("td", {}, clock(s.until)),
      el("td", { class: "st " + s.health }, s.health), el("td", { class: "st " + s.breaker }, s.breaker),
      el("td", {}, s.drained ? "yes" : "no"));
    return tr;
  }));
  const list = document.getElementById("view-events");
  const mine = state.events.filter((ev) => ev.cluster === c && (!a || ev.endpoint === a)).slice(-100).reverse();
  if (list.dataset.shown !== mine.map((ev) => ev.seq).join()) {
    list.replaceChildren(...mine.map(eventItem));
    list.dataset.shown = mine.map((ev) => ev.seq).join();
  }
}
