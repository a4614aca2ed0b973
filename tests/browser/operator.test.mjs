// The dashboard as an operator meets it in production: behind the admin token, with 50
// endpoints, and across a gateway restart (the event stream reconnects by itself).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bin, launchChromium, waitFor } from "./lib.mjs";


/** `n` distinct free loopback ports: all held open while picking, so none repeats. */
async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => resolve(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

test("token-protected dashboard with 50 endpoints survives a gateway restart", { timeout: 120000 }, async () => {
  const [traffic, admin, ...unused] = await freePorts(52);
  const endpoints = unused.map((p) => `      - address: 127.0.0.1:${p}`);
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-ui-"));
  const cfg = join(dir, "gatehouse.yaml");
  writeFileSync(cfg, [
    "listeners: [{name: public, address: '127.0.0.1:" + traffic + "'}]",
    "admin: {address: '127.0.0.1:" + admin + "', token_env: GATEHOUSE_UI_TOKEN}",
    "access_log: off",
    "clusters:",
    "  - name: big",
    "    health_check: {interval: 1s, timeout: 200ms}",
    "    endpoints:",
    ...endpoints,
    "routes: [{name: all, cluster: big}]",
    "",
  ].join("\n"));
  const env = { ...process.env, GATEHOUSE_UI_TOKEN: "s3cret-ui-token-0123" };
  let stderr = "";
  const start = () => {
    const child = spawn(bin, ["run", "-c", cfg], { env, stdio: ["ignore", "ignore", "pipe"] });
    child.stderr.on("data", (d) => { stderr += d; });
    return child;
  };
  const base = `http://127.0.0.1:${admin}`;
  let gw = start();
  await waitFor(async () => (await fetch(base + "/healthz")).ok, "the gateway").catch((e) => {
    throw new Error(e.message + "; its stderr: " + stderr.slice(-2000));
  });

  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.goto(base + "/dashboard");
    // Without the token the API refuses: the page asks for it.
    await page.waitForSelector("#token-form:not([hidden])", { timeout: 10000 });
    assert.equal(await page.locator(".card").count(), 0, "no data without the token");
    await page.fill("#token", "s3cret-ui-token-0123");
    await page.click("#token-form button");
    await page.waitForFunction(() => document.querySelectorAll(".card").length === 50, null, { timeout: 15000 });
    await page.waitForSelector("#conn.live", { timeout: 10000 });
    // Unreachable endpoints are found DOWN by active checks and shown red.
    await page.waitForFunction(() => document.querySelectorAll('.card[data-health="DOWN"][data-colour="red"]').length === 50, null, { timeout: 20000 });
    // Controls work with the token: drain one endpoint, its card turns grey.
    await page.locator(".card button").first().click();
    await page.waitForSelector('.card[data-colour="grey"]', { timeout: 10000 });

    // Restart the gateway on the same ports: the page notices and comes back by itself.
    gw.kill("SIGTERM");
    await new Promise((r) => gw.on("exit", r));
    await page.waitForSelector("#conn.down", { timeout: 15000 });
    gw = start();
    await page.waitForSelector("#conn.live", { timeout: 30000 });
    await page.waitForFunction(() => document.querySelectorAll(".card").length === 50, null, { timeout: 15000 });
    assert.deepEqual(pageErrors, [], "no script errors");
  } finally {
    await browser.close();
    gw.kill();
  }
});
