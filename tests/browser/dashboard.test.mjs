// The live dashboard in a real headless Chromium: the page loads with no console errors, shows
// the demo clusters, its charts receive points, a fault drill turns an endpoint's card red
// (circuit OPEN) and then green again (CLOSED), the timeline lists those transitions and the
// endpoint's view has that breaker history.
// Saves a screenshot as target/dashboard.png.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, root, startDemo } from "./lib.mjs";


test("dashboard: clusters, charts, a fault drill seen live, the timeline", { timeout: 120000 }, async () => {
  const demo = await startDemo();
  // Steady traffic (bounded: stops with the test) so that charts and breakers have something to show.
  let running = true;
  const traffic = (async () => {
    for (let i = 0; running && i < 5000; i++) {
      await Promise.allSettled([
        fetch(demo.gateway + "/api/products"),
        fetch(demo.gateway + "/v1/proxy/stable/hello"),
        fetch(demo.gateway + "/api/catalog?max_age=2"),
      ]);
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(demo.admin + "/dashboard");

    for (const name of ["products", "stable", "flaky", "slow"]) {
      await page.waitForSelector(`.cluster[data-name="${name}"] .card`, { timeout: 10000 });
    }
    await page.waitForSelector("#conn.live", { timeout: 10000 });
    await page.waitForFunction(() => window.__gatehouse.points >= 3, null, { timeout: 15000 });

    // The drill: abort every try to one endpoint of "stable" for 4 s.
    const target = await page.$eval('.cluster[data-name="stable"] .card', (c) => c.dataset.endpoint);
    await page.selectOption("#drill-endpoint", `stable|${target}`);
    await page.selectOption("#drill-kind", "abort");
    await page.fill("#drill-value", "503");
    await page.fill("#drill-duration", "4");
    await page.click("#drill-run");
    const card = `.cluster[data-name="stable"] .card[data-endpoint="${target}"]`;
    await page.waitForSelector(`${card}[data-breaker="OPEN"][data-colour="red"]`, { timeout: 15000 });
    // The drill ends after 4 s; the breaker half-opens after its 10 s and a probe closes it.
    await page.waitForSelector(`${card}[data-breaker="CLOSED"][data-colour="green"]`, { timeout: 45000 });

    const timeline = await page.$$eval("#timeline li", (lis) => lis.map((li) => li.dataset.event + " " + li.textContent));
    for (const ev of ["fault_started", "circuit_opened", "circuit_half_opened", "circuit_closed"]) {
      assert.ok(timeline.some((t) => t.startsWith(ev) && t.includes(target)), `${ev} for ${target} in the timeline: ${timeline.join(" | ")}`);
    }
    const points = await page.evaluate(() => window.__gatehouse.points);
    assert.ok(points >= 10, `charts received ${points} points`);
    // The cached demo route: a hit ratio (a 2 s max-age: mostly hits, a miss every 2 s).
    const ratios = await page.evaluate(() => window.__gatehouse.data.cache["catalog"].filter((v) => v !== null));
    assert.ok(ratios.length >= 5 && ratios.some((v) => v > 50), `cache hit ratios: ${ratios}`);
    assert.ok(await page.evaluate(() => window.__gatehouse.data.cache["products-api"].every((v) => v === null)), "an uncached route has no ratio");
    // The drilled endpoint's view: its breaker history (oldest first) has CLOSED, then OPEN,
    // then CLOSED again (HALF_OPEN may last less than the second between two summaries).
    await page.click(`${card} button.view`);
    // The card reads /clusters; the view, the summaries, up to a second behind.
    await page.waitForSelector('#state-history tbody tr:first-child[data-breaker="CLOSED"]', { timeout: 5000 });
    const spans = await page.$$eval("#state-history tbody tr", (rows) => rows.map((r) => r.dataset.breaker).reverse());
    let k = 0;
    for (const s of spans) if (s === ["CLOSED", "OPEN", "CLOSED"][k]) k++;
    assert.equal(k, 3, `breaker history: ${spans}`);
    mkdirSync(join(root, "target"), { recursive: true });
    await page.screenshot({ path: join(root, "target", "dashboard.png"), fullPage: true });
    assert.deepEqual(errors, [], "no console errors");
  } finally {
    running = false;
    await traffic;
    await browser.close();
    demo.child.kill();
  }
});
