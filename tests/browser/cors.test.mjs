// The `cors` route filter in a real Chromium: a page on an allowed origin makes a credentialed,
// preflighted cross-origin PUT through the gateway and reads the answer and an exposed header;
// a page on another origin is refused at the preflight, and its PUT never reaches the backend.
// The backend's own `Access-Control-Allow-Origin: *` is replaced by the gateway's policy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, startGateway } from "./lib.mjs";

function listen(handler) {
  const server = createServer(handler);
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, port: server.address().port })));
}

test("cross-origin fetch through the cors filter", { timeout: 90000 }, async () => {
  const puts = [];
  const backend = await listen((req, res) => {
    if (req.method === "PUT") puts.push(req.headers.origin);
    res.setHeader("content-type", "application/json");
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("x-total", "42");
    res.end(JSON.stringify({ method: req.method, cookie: req.headers.cookie || null }));
  });
  const pages = await listen((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end("<!doctype html><title>page</title>");
  });
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-cors-"));
  const config = join(dir, "gatehouse.yaml");
  writeFileSync(config, `
listeners: [{name: l, address: "127.0.0.1:0"}]
clusters: [{name: api, endpoints: [{address: "127.0.0.1:${backend.port}"}]}]
routes:
  - name: api
    match: {path_prefix: /api}
    cluster: api
    filters:
      - cors:
          allow_origins: ["http://*.app.test:${pages.port}"]
          allow_methods: [GET, PUT]
          allow_headers: [content-type, x-trace]
          expose_headers: [x-total]
          allow_credentials: true
          max_age: 10m
      - auth: {api_key: {}}
consumers: [{name: web, api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}]
`);
  const gw = await startGateway(config);
  const port = new URL(gw.url).port;
  const browser = await launchChromium([
    "--host-resolver-rules=MAP www.app.test 127.0.0.1, MAP evil.test 127.0.0.1, MAP api.test 127.0.0.1",
  ]);
  const api = `http://api.test:${port}/api/items`;
  const call = (page) => page.evaluate(async (url) => {
    try {
      const r = await fetch(url, {
        method: "PUT",
        credentials: "include",
        headers: { "content-type": "application/json", "x-trace": "1", "x-api-key": "test" },
        body: "{}",
      });
      return { status: r.status, total: r.headers.get("x-total"), body: await r.json() };
    } catch (e) {
      return { blocked: e.message };
    }
  }, api);
  try {
    // x-api-key is not in allow_headers: the preflight for it is refused ...
    const allowed = await browser.newPage();
    await allowed.goto(`http://www.app.test:${pages.port}/`);
    const refusedHeader = await call(allowed);
    assert.ok(refusedHeader.blocked, JSON.stringify(refusedHeader));
    assert.equal(puts.length, 0);

    // ... so list it, and reload the gateway's config in place.
    writeFileSync(config, (await import("node:fs")).readFileSync(config, "utf8")
      .replace("allow_headers: [content-type, x-trace]", "allow_headers: [content-type, x-trace, x-api-key]"));
    let ok;
    for (let i = 0; i < 100; i++) {
      ok = await call(allowed);
      if (!ok.blocked) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(ok.status, 200, JSON.stringify(ok));
    assert.equal(ok.body.method, "PUT");
    assert.equal(ok.total, "42", "x-total is exposed");
    assert.deepEqual(puts, [`http://www.app.test:${pages.port}`]);

    // Another origin: refused at the preflight; the PUT never leaves the browser.
    const evil = await browser.newPage();
    await evil.goto(`http://evil.test:${pages.port}/`);
    const refused = await call(evil);
    assert.ok(refused.blocked, JSON.stringify(refused));
    assert.equal(puts.length, 1, "the backend saw no PUT from evil.test");

    // And a simple GET from it is sent but cannot be read: the gateway replaced the backend's `*`.
    const read = await evil.evaluate(async (url) => {
      try { return { status: (await fetch(url)).status }; } catch (e) { return { blocked: e.message }; }
    }, `http://api.test:${port}/api/items`);
    assert.ok(read.blocked, JSON.stringify(read));
  } finally {
    await browser.close();
    gw.child.kill();
    backend.server.close();
    pages.server.close();
  }
});
