// An incident for the dashboard to show: the shipped binary in front of two fake backends, one
// of which answers every request with a 500, so the `orders` cluster's breaker on it opens;
// a rate-limited route (`search`, 5/s, burst 5) and a cached one (`products`). Traffic is sent
// before any page is open; `traffic()` keeps some going while a test looks.
import { fakeBackend, startConfig, waitFor } from "./lib.mjs";

export async function startIncident() {
  const bad = await fakeBackend(500);
  const good = await fakeBackend(200);
  const gw = await startConfig(`
listeners: [{name: public, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
access_log: off
rate_limits: [{name: five-a-second, rate: 5/s, burst: 5, key: route}]
clusters:
  - name: orders
    health_check: {enabled: false}
    retries: {attempts: 0}
    circuit_breaker: {consecutive_failures: 3, open_duration: 120s}
    endpoints: [{address: "${bad.address}"}, {address: "${good.address}"}]
  - name: catalog
    health_check: {enabled: false}
    endpoints: [{address: "${good.address}"}]
routes:
  - {name: orders, match: {path_prefix: /orders}, cluster: orders}
  - {name: search, match: {path_prefix: /search}, cluster: catalog, filters: [rate_limit: five-a-second]}
  - {name: products, match: {path_prefix: /products}, cluster: catalog, filters: [cache: {}]}
`);
  const incident = {
    gw, bad: bad.address, good: good.address,
    /** Sends a round of requests to each route every 100 ms until the returned stop() is called. */
    traffic() {
      let running = true;
      const done = (async () => {
        for (let i = 0; running && i < 3000; i++) {
          await Promise.allSettled([
            ...Array.from({ length: 4 }, () => fetch(gw.gateway + "/orders/1")),
            ...Array.from({ length: 3 }, () => fetch(gw.gateway + "/search?q=x")),
            fetch(gw.gateway + "/products/1"),
          ]);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      return async () => { running = false; await done; };
    },
    stop() {
      gw.child.kill();
      bad.server.close();
      good.server.close();
    },
  };
  // A first summary from before the incident (the endpoint's breaker history starts CLOSED).
  await waitFor(async () => (await (await fetch(gw.admin + "/history")).json()).traffic.length > 0, "a summary");
  // The incident happens before anyone looks: traffic until the breaker on `bad` has opened and
  // a few seconds of summaries with requests are kept.
  const stopTraffic = incident.traffic();
  try {
    await waitFor(async () => {
      const h = await (await fetch(gw.admin + "/history")).json();
      const opened = h.events.some((e) => e.event === "circuit_opened" && e.endpoint === bad.address);
      const busy = h.traffic.filter((s) => s.routes.orders.requests_per_second > 0).length;
      return opened && busy >= 3;
    }, "the breaker to open and three busy seconds");
  } finally {
    await stopTraffic();
  }
  return incident;
}
