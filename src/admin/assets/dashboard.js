// The live dashboard: on load the gateway's kept history (GET /history: 15 minutes of
// per-second `traffic` summaries and the recent transitions), then the /events stream from the
// sequence number where that history stops, so nothing is missed or drawn twice. Cluster cards
// from GET /clusters, the route table's config and totals from GET /routes; the views are in
// views.js.
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

const WINDOW = 900; // traffic summaries kept: 15 minutes, as the gateway keeps
const EVENTS_KEPT = 1000;
const state = {
  token: sessionStorage.getItem("gatehouse-token") || "",
  seq: 0, // the newest message drawn
  samples: [],
  events: [],
  routes: [],
  clusters: [],
  charts: {},
  data: {},
  view: { cluster: "", endpoint: "" },
  points: 0,
  historyLoaded: false,
};
window.__gatehouse = state; // read by the browser tests

// Every message name the gateway sends (an EventSource only delivers the names it listens to).
const NAMES = ["traffic", "health_changed", "circuit_opened", "circuit_half_opened", "circuit_closed",
  "slow_start_done", "endpoint_drained", "endpoint_enabled", "fault_started", "fault_ended",
  "config_reloaded", "config_reload_failed", "certificate_loaded", "certificate_reload_failed",
  "certificate_invalid_now", "certificate_expiring"];

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

/** Takes one message (from history or live); false when it was already drawn. */
function take(ev) {
  if (typeof ev.seq === "number") {
    if (ev.seq <= state.seq) return false;
    state.seq = ev.seq;
  }
  if (ev.event === "traffic") {
    state.samples.push(ev);
    if (state.samples.length > WINDOW) state.samples.shift();
    state.points = state.samples.length;
  } else {
    state.events.push(ev);
    if (state.events.length > EVENTS_KEPT) state.events.shift();
    const list = document.getElementById("timeline");
    list.prepend(eventItem(ev));
    while (list.children.length > 200) list.lastChild.remove();
  }
  return true;
}

/** Everything the gateway kept after `since`, in sequence order. */
async function loadHistory(since) {
  const h = await api("/history" + (since ? "?since=" + since : ""));
  for (const ev of h.traffic.concat(h.events).sort((a, b) => a.seq - b.seq)) take(ev);
  state.seq = Math.max(state.seq, h.seq);
  return h.seq;
}

let drawing = null;
function redraw() {
  if (drawing) return;
  drawing = setTimeout(() => {
    drawing = null;
    drawRouteCharts();
    drawRouteTable();
    drawView();
  }, 0);
}

function colour(e) {
  if (e.drained) return "grey";
  if (e.health === "DOWN" || e.breaker === "OPEN") return "red";
  if (e.health === "DEGRADED" || e.breaker === "HALF_OPEN") return "yellow";
  return "green";
}

function set(node, text) { if (node.textContent !== text) node.textContent = text; }

/** A card for one endpoint, made once and then updated in place (a rebuilt card would take the
 * keyboard focus away from its buttons every second). */
function card(c, e) {
  const li = el("li", { class: "card", "data-endpoint": e.address, "data-cluster": c.name });
  const act = el("div", { class: "actions" });
  const drain = el("button", { type: "button", class: "drain" });
  drain.onclick = () => {
    const on = li.dataset.drained === "true";
    api(`/clusters/${c.name}/endpoints/${e.address}/${on ? "enable" : "drain"}`,
      { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }).then(refreshClusters);
  };
  const view = el("button", { type: "button", class: "view", "aria-label": `History of ${e.address} in ${c.name}` }, "History");
  view.onclick = () => showView(c.name, e.address);
  act.append(drain, view);
  li.append(el("div", { class: "addr" }, e.address), el("div", { class: "source" }), el("div", { class: "state" }), el("div", { class: "weight" }),
    el("div", { class: "load" }), el("div", { class: "fault" }), act);
  return li;
}

/** Where a discovered cluster's endpoints come from and whether its last lookup worked
 * (a failed one keeps the last good set, which the cards still show). */
function discoveryLine(d) {
  if (!d) return "";
  const ok = d.last_ok_unix_ms ? "last good answer " + Math.max(0, Math.round((Date.now() - d.last_ok_unix_ms) / 1000)) + " s ago" : "no answer yet";
  return "Endpoints from " + d.source + " · " + ok + (d.last_error ? " · failing: " + d.last_error + " (keeping the last good set)" : "");
}

function renderClusters(clusters) {
  const root = document.getElementById("cluster-list");
  const boxes = new Map([...root.children].map((b) => [b.dataset.name, b]));
  for (const [ci, c] of clusters.entries()) {
    let box = boxes.get(c.name);
    if (!box) {
      const id = "cluster-" + root.children.length + "-h";
      box = el("section", { class: "cluster", "data-name": c.name, "aria-labelledby": id });
      box.append(el("h3", { id }, c.name), el("p", { class: "discovery" }), el("ul", { class: "cards" }));
    }
    set(box.querySelector(".discovery"), discoveryLine(c.discovery));
    place(root, box, ci);
    boxes.delete(c.name);
    const ul = box.querySelector(".cards");
    const cards = new Map([...ul.children].map((li) => [li.dataset.endpoint, li]));
    for (const [i, e] of c.endpoints.entries()) {
      const li = cards.get(e.address) || card(c, e);
      place(ul, li, i);
      cards.delete(e.address);
      Object.assign(li.dataset, { breaker: e.breaker, health: e.health, colour: colour(e), drained: String(e.drained) });
      li.className = "card " + colour(e);
      set(li.querySelector(".source"), "from " + e.source);
      set(li.querySelector(".state"), e.health + " · " + e.breaker + (e.drained ? " · drained" : ""));
      set(li.querySelector(".weight"), "weight " + e.weight + " → " + e.effective_weight.toFixed(2) +
        (e.slow_start_progress < 1 ? " (slow start " + Math.round(e.slow_start_progress * 100) + " %)" : ""));
      set(li.querySelector(".load"), "in flight " + e.in_flight + " · " + e.latency_ewma_ms.toFixed(1) + " ms");
      set(li.querySelector(".fault"), e.fault ? "drill: " + (e.fault.abort ? "abort " + e.fault.abort : "+" + e.fault.delay_ms + " ms") + ", " + Math.ceil(e.fault.remaining_ms / 1000) + " s left" : "");
      const drain = li.querySelector("button.drain");
      set(drain, e.drained ? "Enable" : "Drain");
      drain.setAttribute("aria-label", `${e.drained ? "Enable" : "Drain"} ${e.address} in ${c.name}`);
    }
    for (const li of cards.values()) li.remove();
  }
  for (const b of boxes.values()) b.remove();
  setOptions(document.getElementById("drill-endpoint"),
    clusters.flatMap((c) => c.endpoints.map((e) => [c.name + "|" + e.address, c.name + " · " + e.address])));
}

async function refreshClusters() {
  let d;
  try { d = await api("/clusters"); } catch (e) { return; }
  state.clusters = d.clusters;
  renderClusters(d.clusters);
  redraw();
}

async function refreshRoutes() {
  try { state.routes = (await api("/routes")).routes; } catch (e) { return; }
  redraw();
}

/** Shows one endpoint (or a whole cluster) in the view and moves the focus to it. */
function showView(cluster, endpoint) {
  state.view.cluster = cluster;
  state.view.endpoint = endpoint || "";
  drawView();
  document.getElementById("view").scrollIntoView();
  document.getElementById("view-cluster").focus();
}

function connect() {
  const conn = document.getElementById("conn");
  const q = new URLSearchParams({ since: String(state.seq) });
  if (state.token) q.set("access_token", state.token);
  const es = new EventSource("/events?" + q);
  es.onopen = async () => {
    conn.textContent = "live";
    conn.className = "conn live";
    if (state.lost) {
      state.lost = false;
      // A restarted gateway numbers from 1 again: start over from its history.
      try {
        const h = await api("/history?since=" + state.seq);
        if (h.seq < state.seq) {
          Object.assign(state, { seq: 0, samples: [], events: [] });
          document.getElementById("timeline").replaceChildren();
          await loadHistory(0);
        }
      } catch (e) { /* shown by the token form */ }
    }
    refreshClusters();
    refreshRoutes();
  };
  // EventSource reconnects by itself, sending the last id it saw: the stream resumes there.
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; state.lost = true; };
  const ticks = { n: 0 };
  for (const name of NAMES) {
    es.addEventListener(name, (m) => {
      if (!take(JSON.parse(m.data))) return;
      if (name !== "traffic" || ++ticks.n % 5 === 0) refreshRoutes();
      refreshClusters();
    });
  }
  state.events_source = es;
}

async function start() {
  api("/status").then((s) => {
    document.getElementById("meta").textContent = "v" + s.version + " · generation " + s.generation;
  }).catch(() => {});
  await Promise.all([refreshClusters(), refreshRoutes()]);
  try { await loadHistory(state.seq); } catch (e) { /* shown by the token form */ }
  state.historyLoaded = true;
  redraw();
  if (state.events_source) state.events_source.close();
  connect();
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = document.getElementById("token").value;
  sessionStorage.setItem("gatehouse-token", state.token);
  document.getElementById("token-form").hidden = true;
  start();
});

document.getElementById("view-cluster").addEventListener("change", (e) => {
  state.view.cluster = e.target.value;
  state.view.endpoint = "";
  drawView();
});
document.getElementById("view-endpoint").addEventListener("change", (e) => {
  state.view.endpoint = e.target.value;
  drawView();
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

start();
