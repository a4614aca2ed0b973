// A page from another origin cannot change the gateway through the admin API, in a real
// Chromium: simple cross-site POSTs (no-cors fetch, text/plain and form posts, a JSON fetch that
// needs a preflight) and a DNS-rebinding page (its own name resolving to 127.0.0.1, so it is
// "same-origin" with the admin port) all fail, and afterwards the endpoint is still in rotation,
// no reload ran and no drill started. The dashboard on the admin origin keeps working.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { launchChromium, startDemo } from "./lib.mjs";

/** The attacker's page: every request it can make against `admin`, reporting what it saw. */
function attackerPage(admin, endpoint) {
  const drain = `${admin}/clusters/stable/endpoints/${endpoint}/drain`;
  const fault = `${admin}/clusters/stable/endpoints/${endpoint}/fault`;
  return `<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f1" method="post" action="${drain}" enctype="text/plain" target="sink"><input name="x" value="1"></form>
<form id="f2" method="post" action="${admin}/reload" enctype="application/x-www-form-urlencoded" target="sink"></form>
<script>
window.results = [];
async function attempt(name, p) {
  try { const r = await p; window.results.push(name + ": status " + r.status + " type " + r.type); }
  catch (e) { window.results.push(name + ": blocked " + e.message); }
}
window.attack = async () => {
  await attempt("no-cors POST", fetch(${JSON.stringify(drain)}, { method: "POST", mode: "no-cors" }));
  await attempt("text/plain POST", fetch(${JSON.stringify(drain)}, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: "{}" }));
  await attempt("JSON POST (preflight)", fetch(${JSON.stringify(fault)}, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ abort: 503, duration_s: 3600 }) }));
  await attempt("read /config", fetch(${JSON.stringify(admin + "/config")}).then((r) => r.text()).then((t) => ({ status: "read " + t.length, type: "" })));
  document.getElementById("f1").submit();
  await new Promise((r) => setTimeout(r, 300));
  document.getElementById("f2").submit();
  await new Promise((r) => setTimeout(r, 300));
  return window.results;
};
</script></body></html>`;
}

async function adminJson(url) {
  const r = await fetch(url);
  return r.json();
}

/** Serves `html()` on 127.0.0.1 (port 0 = any); resolves with the server and its port. */
async function serve(html, port = 0) {
  const server = createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(html());
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { server, port: server.address().port };
}

test("no page from another origin can change the gateway", { timeout: 90000 }, async () => {
  // attacker.test resolves to 127.0.0.1 in this browser. DNS rebinding is then: the attacker's
  // page loads from attacker.test:PORT served by the attacker, the name's server changes
  // (here: the attacker's server stops and the gateway's admin listener takes its port), and
  // the page's same-origin requests reach the admin API with Host: attacker.test:PORT.
  const browser = await launchChromium(["--host-resolver-rules=MAP attacker.test 127.0.0.1"]);
  let demo;
  const servers = [];
  try {
    const first = await serve(() => "<!doctype html><title>rebinding</title>");
    servers.push(first.server);
    const rebound = await browser.newPage();
    await rebound.goto(`http://attacker.test:${first.port}/`);
    first.server.closeAllConnections();
    await new Promise((r) => first.server.close(r));
    demo = await startDemo(`127.0.0.1:${first.port}`);

    const before = await adminJson(demo.admin + "/clusters/stable");
    const endpoint = before.endpoints[0].address;
    const generation = (await adminJson(demo.admin + "/status")).generation;

    for (const [method, path, body] of [
      ["GET", "/config", undefined],
      ["POST", `/clusters/stable/endpoints/${endpoint}/drain`, "{}"],
      ["POST", "/reload", "{}"],
    ]) {
      const status = await rebound.evaluate(async ([m, p, b]) => {
        const r = await fetch(p, { method: m, headers: b ? { "content-type": "application/json" } : {}, body: b });
        return r.status;
      }, [method, path, body]);
      assert.equal(status, 403, `${method} ${path} from the rebound page`);
    }

    // Cross-site: a page on another port of the attacker's name.
    const evil = await serve(() => attackerPage(demo.admin, endpoint));
    servers.push(evil.server);
    const page = await browser.newPage();
    await page.goto(`http://attacker.test:${evil.port}/`);
    const results = await page.evaluate(() => window.attack());
    assert.ok(results.some((r) => r.startsWith("JSON POST (preflight): blocked")), results.join(" | "));
    assert.ok(results.some((r) => r.startsWith("read /config: blocked")), results.join(" | "));

    const after = await adminJson(demo.admin + "/clusters/stable");
    const e = after.endpoints.find((x) => x.address === endpoint);
    assert.equal(e.drained, false, "still in rotation: " + results.join(" | "));
    assert.equal(e.fault, null, "no drill started");
    assert.equal((await adminJson(demo.admin + "/status")).generation, generation, "no reload ran");

    // The dashboard on the admin's own origin can still act.
    const dash = await browser.newPage();
    await dash.goto(demo.admin + "/dashboard");
    const card = `.cluster[data-name="stable"] .card[data-endpoint="${endpoint}"]`;
    await dash.waitForSelector(`${card} button`, { timeout: 10000 });
    await dash.click(`${card} button`);
    await dash.waitForSelector(`${card}[data-colour="grey"]`, { timeout: 10000 });
  } finally {
    await browser.close();
    for (const s of servers) s.close();
    if (demo) demo.child.kill();
  }
});
