// The dashboard opened after an incident, in headless Chromium against the shipped binary: the
// timeline and the charts show what happened before the page was open (from GET /history),
// the live stream follows without repeating any of it, and the cluster / endpoint view and the
// route table show real figures (an endpoint's failures and breaker history, a route's rate
// limit and its rejections, a cached route's hit ratio).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launchChromium } from "./lib.mjs";
import { startIncident } from "./incident.mjs";

let incident, browser;
before(async () => {
  incident = await startIncident();
  browser = await launchChromium();
});
after(async () => {
  if (browser) await browser.close();
  if (incident) incident.stop();
});

async function openDashboard() {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  const requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => requests.push(new URL(r.url())));
  await page.goto(incident.gw.admin + "/dashboard");
  await page.waitForFunction(() => window.__gatehouse.historyLoaded, null, { timeout: 10000 });
  return { page, errors, requests };
}

test("history: the timeline and the charts show what happened before the page opened", { timeout: 60000 }, async () => {
  const openedAt = Date.now() / 1000;
  const { page, errors, requests } = await openDashboard();
  // The breaker opened before the page existed: it is in the timeline all the same.
  const opened = page.locator(`#timeline li[data-event="circuit_opened"]`, { hasText: incident.bad });
  assert.equal(await opened.count(), 1, "one circuit_opened for the failing endpoint");
  const at = Date.parse(await opened.locator("time").getAttribute("datetime")) / 1000;
  assert.ok(at < openedAt, `opened at ${at}, before the page at ${openedAt}`);

  // The charts have points from before the page, with the requests of those seconds.
  const early = await page.evaluate((t0) => {
    const d = window.__gatehouse.data;
    const plot = window.__gatehouse.charts["chart-rps"].plot;
    return {
      busy: d.t.filter((t, i) => t < t0 && d.rps.orders[i] > 0).length,
      errors: d.t.filter((t, i) => t < t0 && d.errors.orders[i] > 0).length,
      plotted: plot.data[0].filter((t) => t < t0).length,
    };
  }, openedAt);
  assert.ok(early.busy >= 3, `busy seconds before the page: ${JSON.stringify(early)}`);
  assert.ok(early.errors >= 1, `seconds with errors before the page: ${JSON.stringify(early)}`);
  assert.ok(early.plotted >= 3, `points drawn before the page: ${JSON.stringify(early)}`);
  const label = await page.getAttribute("#chart-rps", "aria-label");
  assert.match(label, /^Requests per second, \d+ seconds to .*; last second: orders \d+ req\/s/);

  // Then the live stream, from where the history stopped: new seconds arrive, and no message
  // is drawn twice.
  const before = await page.evaluate(() => window.__gatehouse.points);
  await page.waitForSelector("#conn.live", { timeout: 10000 });
  const history = requests.filter((u) => u.pathname === "/history");
  const stream = requests.filter((u) => u.pathname === "/events");
  assert.equal(history.length, 1, "one history request");
  assert.equal(stream.length, 1, "one stream");
  const since = Number(stream[0].searchParams.get("since"));
  const first = await page.evaluate(() => window.__gatehouse.samples[0].seq);
  assert.ok(since > first, `the stream starts after the history (since ${since}, the first kept ${first})`);
  await page.waitForFunction((n) => window.__gatehouse.points >= n + 2, before, { timeout: 15000 });
  const seqs = await page.evaluate(() => window.__gatehouse.samples.map((s) => s.seq).concat(window.__gatehouse.events.map((e) => e.seq)));
  assert.equal(new Set(seqs).size, seqs.length, "every message once");
  const times = await page.evaluate(() => window.__gatehouse.samples.map((s) => s.time));
  assert.deepEqual([...times].sort(), times, "summaries in time order");
  assert.deepEqual(errors, [], "no console errors");
  await page.close();
});

test("views: an endpoint's failures and breaker history, the route table's limits and cache", { timeout: 60000 }, async () => {
  const stopTraffic = incident.traffic();
  try {
    const { page, errors } = await openDashboard();
    // Select the failing endpoint with the pickers.
    await page.selectOption("#view-cluster", "orders");
    await page.selectOption("#view-endpoint", incident.bad);
    const summary = await page.textContent("#view-summary");
    assert.match(summary, new RegExp(`^orders ${incident.bad}, last second: \\d+ tries/s, \\d+ failures/s, .*breaker OPEN`));
    const failures = await page.evaluate(() => window.__gatehouse.view.tries[1].filter((v) => v > 0).length);
    assert.ok(failures >= 1, "seconds with failures in the endpoint's chart");
    // Its breaker history: CLOSED first, then OPEN (newest first), from the kept summaries.
    const spans = await page.$$eval("#state-history tbody tr", (rows) => rows.map((r) => r.dataset.breaker));
    assert.equal(spans[0], "OPEN", `spans: ${spans}`);
    assert.ok(spans.includes("CLOSED"), `spans: ${spans}`);
    const mine = await page.$$eval("#view-events li", (lis) => lis.map((li) => li.dataset.event));
    assert.ok(mine.includes("circuit_opened"), `the endpoint's events: ${mine}`);
    // The whole cluster: its tries, and a latency line per endpoint.
    await page.selectOption("#view-endpoint", "");
    const labels = await page.evaluate(() => window.__gatehouse.charts["chart-ep-latency"].labels);
    assert.equal(labels, `${incident.bad} p99\n${incident.good} p99`);

    // The route table: the rate limit as enforced with its rejections, the cache hit ratio,
    // and this second's traffic.
    const row = (name) => `#route-table tr[data-route="${name}"]`;
    await page.waitForFunction((sel) => Number(document.querySelector(sel + ' [data-col="rps"]').textContent) > 0,
      row("orders"), { timeout: 10000 });
    const limits = await page.textContent(`${row("search")} [data-col="limits"]`);
    const limited = Number(/; (\d+) limited of (\d+)/.exec(limits)[1]);
    assert.match(limits, /^five-a-second: 5\/s, burst 5 \(token bucket, local\); \d+ limited of \d+$/);
    assert.ok(limited > 0, `search's rejections: ${limits}`);
    assert.equal(await page.textContent(`${row("orders")} [data-col="limits"]`), "none");
    assert.equal(await page.textContent(`${row("orders")} [data-col="cache"]`), "no cache");
    await page.waitForFunction((sel) => /^\d+(\.\d)? % \(overall \d+(\.\d)? %\)$/.test(document.querySelector(sel).textContent),
      `${row("products")} [data-col="cache"]`, { timeout: 10000 });
    assert.match(await page.textContent(`${row("orders")} [data-col="target"]`), /^cluster orders$/);
    assert.deepEqual(errors, [], "no console errors");
    await page.close();
  } finally {
    await stopTraffic();
  }
});
