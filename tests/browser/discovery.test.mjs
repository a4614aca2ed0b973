// Discovered endpoints on the dashboard, against a real DNS server (Debian's dnsmasq, started
// here on a free loopback port): each endpoint's card says where it came from, the cluster says
// what it resolves and how its last lookup went, a new A record shows up as a new card, and a
// DNS outage is shown on the cluster while its last good endpoints stay.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, renameSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, startConfig, waitFor } from "./lib.mjs";

/** dnsmasq answering `.test` names from `hosts` with 1 s TTLs; resolves once it takes TCP. */
async function startDns(dir, hosts) {
  writeFileSync(join(dir, "hosts"), hosts);
  const bin = existsSync("/usr/sbin/dnsmasq") ? "/usr/sbin/dnsmasq" : "dnsmasq";
  for (let tries = 0; tries < 5; tries++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    const child = spawn(bin, ["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
      "--no-negcache", `--addn-hosts=${join(dir, "hosts")}`, "--local=/test/", "--listen-address=127.0.0.1",
      "--bind-interfaces", `--port=${port}`, "--local-ttl=1", "--user=root", "--pid-file"], { stdio: "ignore" });
    let exited = false;
    child.on("exit", () => { exited = true; });
    const up = await waitFor(async () => exited ? "exited" : await new Promise((ok) => {
      const s = createConnection({ host: "127.0.0.1", port }, () => { s.destroy(); ok("up"); });
      s.on("error", () => ok(false));
    }), "dnsmasq", 10000).catch(() => "exited");
    if (up === "up") return { child, port };
    child.kill();
  }
  throw new Error("dnsmasq did not start on any of 5 ports (is dnsmasq-base installed?)");
}

function listen(server, host, port) {
  return new Promise((ok, fail) => { server.once("error", fail); server.listen(port, host, () => ok(server.address().port)); });
}

test("dashboard: endpoint sources and a discovered cluster's lookups", { timeout: 120000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-dns-"));
  // Two backends on one port, at 127.0.0.1 and 127.0.0.2 (an A record carries no port).
  const a = createServer((req, res) => res.end("a"));
  const port = await listen(a, "127.0.0.1", 0);
  const b = createServer((req, res) => res.end("b"));
  await listen(b, "127.0.0.2", port);
  const dns = await startDns(dir, "127.0.0.1 shop.test\n");
  const gw = await startConfig(`
listeners: [{name: web, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
dns: {servers: ["127.0.0.1:${dns.port}"]}
clusters:
  - name: shop
    endpoints_from: {dns: {name: shop.test, port: ${port}, refresh: 1s}}
  - name: fixed
    endpoints: [{address: "127.0.0.1:${port}"}]
routes:
  - {name: shop, match: {path_prefix: /}, cluster: shop}
`);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(gw.admin + "/dashboard");
    const shop = '.cluster[data-name="shop"]';
    await page.waitForSelector(`${shop} .card[data-endpoint="127.0.0.1:${port}"]`, { timeout: 15000 });
    assert.equal(await page.textContent(`${shop} .card .source`), "from dns");
    assert.equal(await page.textContent('.cluster[data-name="fixed"] .card .source'), "from config");
    assert.equal(await page.textContent('.cluster[data-name="fixed"] .discovery'), "");
    const line = await page.textContent(`${shop} .discovery`);
    assert.match(line, /^Endpoints from dns:A:shop\.test · last good answer \d+ s ago$/);

    // A second A record: a second card, from dns, without a reload.
    writeFileSync(join(dir, "hosts.new"), "127.0.0.1 shop.test\n127.0.0.2 shop.test\n");
    renameSync(join(dir, "hosts.new"), join(dir, "hosts"));
    process.kill(dns.child.pid, "SIGHUP");
    await page.waitForSelector(`${shop} .card[data-endpoint="127.0.0.2:${port}"]`, { timeout: 15000 });
    assert.equal(await page.$$eval(`${shop} .card .source`, (els) => els.map((e) => e.textContent).join()), "from dns,from dns");

    // DNS down: the cluster says its lookups fail and keeps both endpoints.
    dns.child.kill();
    await page.waitForFunction((sel) => /failing: .*keeping the last good set/.test(document.querySelector(sel).textContent),
      `${shop} .discovery`, { timeout: 20000 });
    assert.equal((await page.$$(`${shop} .card`)).length, 2);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    gw.child.kill();
    dns.child.kill();
    a.close();
    b.close();
  }
});
