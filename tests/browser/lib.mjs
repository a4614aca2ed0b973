// Shared by the browser tests: where the binary is, and Debian's Chromium launched headless
// with the flags this offline machine needs (no background networking, no sandbox as root).
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const target = process.env.CARGO_TARGET_DIR || join(root, "target");
export const bin = process.env.GATEHOUSE_BIN || join(target, "debug", "gatehouse");

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
