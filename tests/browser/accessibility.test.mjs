// The dashboard for keyboard and screen-reader users, in headless Chromium against the shipped
// binary during an incident (an open breaker, a drained endpoint, rate-limited and cached
// routes, live traffic): axe-core finds no serious or critical violation, and the controls work
// from the keyboard alone with a visible focus that a refresh does not take away.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { launchChromium } from "./lib.mjs";
import { startIncident } from "./incident.mjs";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

let incident, browser, stopTraffic;
before(async () => {
  incident = await startIncident();
  stopTraffic = incident.traffic();
  browser = await launchChromium();
});
after(async () => {
  if (stopTraffic) await stopTraffic();
  if (browser) await browser.close();
  if (incident) incident.stop();
});

async function openDashboard() {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(incident.gw.admin + "/dashboard");
  await page.waitForSelector("#conn.live", { timeout: 10000 });
  await page.waitForFunction(() => window.__gatehouse.points >= 3 && document.querySelectorAll("#route-table tbody tr").length === 3, null, { timeout: 15000 });
  return page;
}

test("axe-core: no serious or critical violation on the live dashboard", { timeout: 60000 }, async () => {
  const page = await openDashboard();
  // More state to check: a drained endpoint, a fault drill's result, the endpoint view.
  const good = `.cluster[data-name="catalog"] .card[data-endpoint="${incident.good}"]`;
  await page.click(`${good} button.drain`);
  await page.waitForSelector(`${good}[data-colour="grey"]`, { timeout: 10000 });
  await page.click(`.cluster[data-name="orders"] .card[data-endpoint="${incident.bad}"] button.view`);
  await page.waitForSelector("#state-history tbody tr", { timeout: 10000 });
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const report = bad.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")})`);
  assert.deepEqual(report, [], "axe-core violations");
  // axe did look at the page: these rules passed on that many elements.
  const checked = await page.evaluate(() => window.axe.run(document, { runOnly: ["color-contrast", "label", "select-name", "button-name"] }));
  const passed = new Map(checked.passes.map((p) => [p.id, p.nodes.length]));
  assert.ok(passed.get("color-contrast") > 20, `contrast checked on ${passed.get("color-contrast")} elements`);
  assert.ok(passed.get("button-name") >= 6, `button names checked on ${passed.get("button-name")} buttons`);
  const fields = (passed.get("label") || 0) + (passed.get("select-name") || 0);
  assert.ok(fields >= 6, `labels checked on ${fields} fields`);
  await page.click(`${good} button.drain`); // enable it again for the next test
  await page.waitForSelector(`${good}[data-colour="green"]`, { timeout: 10000 });
  await page.close();
});

/** Presses `key` (Tab, Shift+Tab) until `matches(arg)` holds for the focused element. */
async function tabTo(page, key, matches, arg) {
  for (let i = 1; i <= 80; i++) {
    await page.keyboard.press(key);
    if (await page.evaluate(matches, arg)) return;
  }
  throw new Error(`${key} never reached ${arg}`);
}

const focused = (label) => document.activeElement.getAttribute("aria-label") === label;

test("keyboard: skip link, tab to an endpoint's controls, operate them; the focus stays and shows", { timeout: 60000 }, async () => {
  const page = await openDashboard();
  // The first stop is the skip link; it takes the focus to the main content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to the dashboard");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "main");

  // Tab to the failing endpoint's History button and press Enter: the view shows it and the
  // focus moves to the view's first control.
  const label = `History of ${incident.bad} in orders`;
  await tabTo(page, "Tab", focused, label);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.activeElement.id === "view-cluster", null, { timeout: 5000 });
  assert.equal(await page.inputValue("#view-cluster"), "orders");
  assert.equal(await page.inputValue("#view-endpoint"), incident.bad);
  assert.match(await page.textContent("#view-summary"), /breaker OPEN/);

  // The endpoint picker from the keyboard: Tab to it, Home picks "all endpoints".
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "view-endpoint");
  await page.keyboard.press("Home");
  await page.waitForFunction(() => window.__gatehouse.view.endpoint === "", null, { timeout: 5000 });

  // Shift+Tab back to the other endpoint's Drain button and press Space: the card turns grey,
  // and the focus is still on the button (now "Enable") after the page has refreshed the cards.
  await tabTo(page, "Shift+Tab", focused, `Drain ${incident.good} in orders`);
  await page.keyboard.press("Space");
  const card = `.cluster[data-name="orders"] .card[data-endpoint="${incident.good}"]`;
  await page.waitForSelector(`${card}[data-colour="grey"]`, { timeout: 10000 });
  const refreshed = await page.evaluate(() => window.__gatehouse.points);
  await page.waitForFunction((n) => window.__gatehouse.points >= n + 2, refreshed, { timeout: 10000 });
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute("aria-label")), `Enable ${incident.good} in orders`);
  // The focus is visible: a keyboard focus draws the outline.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, "solid");
  await page.keyboard.press("Enter");
  await page.waitForSelector(`${card}[data-colour="green"]`, { timeout: 10000 });
  await page.close();
});
