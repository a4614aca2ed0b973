// Shared by the browser tests: where the binary is, and Debian's Chromium launched headless
// with the flags this offline machine needs (no background networking, no sandbox as root).
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const target = process.env.CARGO_TARGET_DIR || join(root, "target");
export const bin = process.env.GATEHOUSE_BIN || join(target, "debug", "gatehouse");

/** Debian's Chromium, headless; `extraArgs` (e.g. --host-resolver-rules) are appended. */
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...extraArgs],
  });
}

/** Starts the demo on free ports (the admin on `admin` when given); resolves with the gateway
 * and admin URLs. */
export function startDemo(admin = "127.0.0.1:0") {
  const child = spawn(bin, ["demo", "--listen", "127.0.0.1:0", "--admin", admin], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  return new Promise((resolve, reject) => {
    const urls = {};
    const timer = setTimeout(() => reject(new Error("the demo did not print its URLs")), 20000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.startsWith("Gateway: ")) urls.gateway = line.slice(9).trim();
      if (line.startsWith("Admin API: ")) urls.admin = line.slice(11).trim();
      if (urls.gateway && urls.admin && !urls.done) {
        urls.done = true;
        clearTimeout(timer);
        resolve({ child, ...urls });
      }
    });
    child.on("exit", (code) => reject(new Error("the demo exited with " + code)));
  });
}
/** Runs `gatehouse run -c <path>`; resolves with the child and its first listener's URL. */
export function startGateway(configPath) {
  const child = spawn(bin, ["run", "-c", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the gateway did not log its address")), 20000);
    createInterface({ input: child.stderr }).on("line", (line) => {
      const m = line.match(/"message":"listening".*"address":"([^"]+)"/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://${m[1]}` });
      }
    });
    child.on("exit", (code) => reject(new Error("the gateway exited with " + code)));
  });
}

/** Writes `yaml` to a fresh directory and runs it; resolves with the child, the first
 * listener's URL and the admin listener's URL (both read from its log, so `127.0.0.1:0` works). */
export function startConfig(yaml) {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-browser-"));
  const path = join(dir, "gatehouse.yaml");
  writeFileSync(path, yaml);
  const child = spawn(bin, ["run", "-c", path], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    const urls = {};
    const timer = setTimeout(() => reject(new Error("the gateway did not log its addresses")), 20000);
    createInterface({ input: child.stderr }).on("line", (line) => {
      const m = line.match(/"message":"(listening|admin listening)".*"address":"([^"]+)"/);
      if (m) urls[m[1] === "listening" ? "gateway" : "admin"] = "http://" + m[2];
      if (urls.gateway && urls.admin && !urls.done) {
        urls.done = true;
        clearTimeout(timer);
        resolve({ child, gateway: urls.gateway, admin: urls.admin });
      }
    });
    child.on("exit", (code) => reject(new Error("the gateway exited with " + code)));
    child.on("error", (e) => reject(new Error(`cannot run ${bin}: ${e.message} (set CARGO_TARGET_DIR or GATEHOUSE_BIN)`)));
  });
}

/** A fake backend on a free loopback port answering every request with `status` (and
 * `Cache-Control: max-age=60` on a 200, so a cached route caches it); resolves with its
 * server and address. */
export function fakeBackend(status) {
  const server = createServer((req, res) => {
    req.resume();
    const headers = { "content-type": "application/json" };
    if (status === 200) headers["cache-control"] = "max-age=60";
    res.writeHead(status, headers);
    res.end(JSON.stringify({ status }));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    resolve({ server, address: "127.0.0.1:" + server.address().port });
  }));
}

/** Polls `check` (every 100 ms) until it returns something truthy; throws after `ms`. */
export async function waitFor(check, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}
