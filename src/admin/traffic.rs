//! The per-second traffic summaries the dashboard draws: requests/s, errors/s, rate-limited/s,
//! latency quantiles and the cache hit ratio per route, tries/s and failures/s per cluster, computed from the
//! snapshot's metric handles and broadcast as `traffic` events while someone listens.

/// Once a second, while anyone listens on the event stream: requests/s and 5xx/s per route,
/// tries/s and failures/s per cluster, as a `traffic` event (not logged).
pub fn start(rt: std::sync::Weak<crate::runtime::Runtime>) {
    use serde_json::{json, Map};
    use std::collections::HashMap;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut last: HashMap<String, (u64, u64)> = HashMap::new();
        let mut last_latency: HashMap<String, [u64; 40]> = HashMap::new();
        loop {
            tick.tick().await;
            let Some(rt) = rt.upgrade() else { break };
            let snap = rt.snapshot();
            let mut routes = Map::new();
            let mut clusters = Map::new();
            let mut delta = |key: String, now: (u64, u64)| {
                let prev = last.insert(key, now).unwrap_or(now);
                (now.0.saturating_sub(prev.0), now.1.saturating_sub(prev.1))
            };
            for (i, (r, m)) in snap
                .config
                .routes
                .iter()
                .zip(&snap.route_metrics)
                .enumerate()
            {
                let (n, e) = delta(format!("r/{}", r.name), m.totals());
                let limited: u64 = snap.route_filters.get(i).map_or(0, |fs| {
                    fs.iter()
                        .map(|f| match f {
                            crate::filter::Filter::RateLimit(_, c) => c.limited.get(),
                            _ => 0,
                        })
                        .sum()
                });
                let (limited, _) = delta(format!("l/{}", r.name), (limited, 0));
                // Cached routes: the share of this second's lookups answered from the cache.
                let cache = snap
                    .route_filters
                    .get(i)
                    .and_then(|fs| fs.iter().find_map(crate::filter::Filter::as_cache))
                    .map(|c| delta(format!("k/{}", r.name), c.hit_totals()));
                let hit_ratio = cache
                    .filter(|(_, looked)| *looked > 0)
                    .map(|(served, looked)| (1000 * served / looked) as f64 / 10.0);
                let now = m.latency.snapshot();
                let before = last_latency.insert(r.name.clone(), now).unwrap_or(now);
                let ms = |q| {
                    crate::observe::metrics::Latency::quantile(&now, &before, q)
                        .map(|s| (s * 1e6).round() / 1e3)
                };
                routes.insert(
                    r.name.clone(),
                    json!({
                        "requests_per_second": n,
                        "errors_per_second": e,
                        "rate_limited_per_second": limited,
                        "cache_hit_ratio": hit_ratio,
                        "p50_ms": ms(0.5),
                        "p99_ms": ms(0.99),
                    }),
                );
            }
            for c in snap.clusters.values() {
                let now = c.endpoints.iter().fold((0, 0), |(t, f), e| {
                    (
                        t + e.metrics.success.get() + e.metrics.failure.get(),
                        f + e.metrics.failure.get(),
                    )
                });
                let (n, f) = delta(format!("c/{}", c.name), now);
                clusters.insert(
                    c.name.to_string(),
                    json!({"tries_per_second": n, "failures_per_second": f}),
                );
            }
            if rt.events.receivers() > 1 {
                rt.events.broadcast(json!({
                    "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "event": "traffic",
                    "routes": routes,
                    "clusters": clusters,
                }));
            }
        }
    });
}
