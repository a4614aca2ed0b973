//! The per-second traffic summaries the dashboard draws: requests/s, errors/s, rate-limited/s,
//! latency quantiles and the cache hit ratio per route; tries/s and failures/s per cluster; and
//! per endpoint its tries, failures, latency quantiles and its health, breaker and drain state.
//! Computed from the snapshot's metric handles once a second whenever the admin listener runs
//! (listened to or not), published as `traffic` messages, and kept 15 minutes by the event bus
//! (`observe/history.rs`), so the dashboard opened after an incident has its past.

use crate::observe::metrics::Latency;
use crate::runtime::{Runtime, Snapshot};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Once a second: a `traffic` summary, kept and published on the event bus.
pub fn start(rt: Weak<Runtime>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        // After a stall, one summary, not a burst of them a few µs apart.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = Last::default();
        loop {
            tick.tick().await;
            let Some(rt) = rt.upgrade() else { break };
            let summary = sample(&rt.snapshot(), &mut last);
            rt.events.traffic(summary);
        }
    });
}

/// The running totals the previous summary saw, so each summary is one second's difference.
/// Rebuilt each second from what the snapshot has, so removed routes and endpoints leave it.
#[derive(Default)]
pub struct Last {
    counts: HashMap<Key, (u64, u64)>,
    /// The buckets seen, and which `Latency` they were read from: a new one (a route's after a
    /// reload, an endpoint that came back) starts from zero, not from the old one's counts.
    latency: HashMap<Key, (usize, [u64; 40])>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Route(Arc<str>),
    Limited(Arc<str>),
    Cache(Arc<str>),
    Endpoint(Arc<str>, Arc<str>),
}

/// Differences against `last` (which is replaced by what was read now).
struct Deltas<'a> {
    before: &'a Last,
    now: Last,
}

impl Deltas<'_> {
    /// A key not seen before counts from zero: its counter is new (a route or an endpoint that
    /// a reload added), or this is the first summary and the requests before it count too.
    fn count(&mut self, key: Key, now: (u64, u64)) -> (u64, u64) {
        let prev = self.before.counts.get(&key).copied().unwrap_or_default();
        self.now.counts.insert(key, now);
        (now.0.saturating_sub(prev.0), now.1.saturating_sub(prev.1))
    }

    /// (p50, p99) in ms of this second's observations, `null` without any.
    fn quantiles(&mut self, key: Key, latency: &Latency) -> (Value, Value) {
        let id = std::ptr::from_ref(latency) as usize;
        let now = latency.snapshot();
        let before = match self.before.latency.get(&key) {
            Some((was, b)) if *was == id => *b,
            _ => [0; 40],
        };
        self.now.latency.insert(key, (id, now));
        let ms = |q| {
            Latency::quantile(&now, &before, q)
                .map(|s| (s * 1e6).round() / 1e3)
                .into()
        };
        (ms(0.5), ms(0.99))
    }
}

/// One second's summary: `{"time", "event": "traffic", "routes": {...}, "clusters": {...}}`
/// (docs/admin-api.md has the fields).
pub fn sample(snap: &Snapshot, last: &mut Last) -> Map<String, Value> {
    let mut d = Deltas {
        before: last,
        now: Last::default(),
    };
    let mut routes = Map::new();
    for (i, (r, m)) in snap
        .config
        .routes
        .iter()
        .zip(&snap.route_metrics)
        .enumerate()
    {
        let name: Arc<str> = r.name.as_str().into();
        let filters = snap.route_filters.get(i).map_or(&[][..], Vec::as_slice);
        let (n, e) = d.count(Key::Route(name.clone()), m.totals());
        let limited: u64 = filters
            .iter()
            .map(|f| match f {
                crate::filter::Filter::RateLimit(_, c) => c.limited.get(),
                _ => 0,
            })
            .sum();
        let (limited, _) = d.count(Key::Limited(name.clone()), (limited, 0));
        // Cached routes: the share of this second's lookups answered from the cache.
        let hit_ratio = filters
            .iter()
            .find_map(crate::filter::Filter::as_cache)
            .map(|c| d.count(Key::Cache(name.clone()), c.hit_totals()))
            .filter(|(_, looked)| *looked > 0)
            .map(|(served, looked)| (1000 * served / looked) as f64 / 10.0);
        let (p50, p99) = d.quantiles(Key::Route(name), &m.latency);
        routes.insert(
            r.name.clone(),
            json!({
                "requests_per_second": n,
                "errors_per_second": e,
                "rate_limited_per_second": limited,
                "cache_hit_ratio": hit_ratio,
                "p50_ms": p50,
                "p99_ms": p99,
            }),
        );
    }
    let mut clusters = Map::new();
    for c in snap.clusters.values() {
        let mut endpoints = Map::new();
        let (mut tries, mut failures) = (0, 0);
        for e in &c.endpoints {
            let s = &e.state;
            let m = &e.metrics;
            let (tried, failed) = (
                m.success.get() + m.failure.get() + m.cancelled.get(),
                m.failure.get(),
            );
            let key = Key::Endpoint(c.name.clone(), s.address.clone());
            let (t, f) = d.count(key.clone(), (tried, failed));
            tries += t;
            failures += f;
            let (p50, p99) = d.quantiles(key, &s.latency);
            endpoints.insert(
                s.address.to_string(),
                json!({
                    "tries_per_second": t,
                    "failures_per_second": f,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "health": s.health(),
                    "breaker": s.breaker_state(),
                    "drained": s.is_drained(),
                }),
            );
        }
        // The cluster's figures are its endpoints' sum (one that left takes its part along).
        clusters.insert(
            c.name.to_string(),
            json!({"tries_per_second": tries, "failures_per_second": failures, "endpoints": endpoints}),
        );
    }
    *last = d.now;
    let mut m = crate::observe::events::stamped("traffic");
    m.insert("routes".into(), routes.into());
    m.insert("clusters".into(), clusters.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next second's differences, against what `seen` read.
    fn after(seen: &Last) -> Deltas<'_> {
        Deltas {
            before: seen,
            now: Last::default(),
        }
    }

    #[test]
    fn quantiles_are_this_seconds_and_restart_with_a_new_latency() {
        let before = Last::default();
        let mut d = after(&before);
        let key = || Key::Route("r".into());
        let a = Latency::default();
        assert_eq!(d.quantiles(key(), &a), (Value::Null, Value::Null));
        a.observe(0.010);
        // The first look counts everything so far.
        let mut d = after(&before);
        assert_eq!(d.quantiles(key(), &a).0.as_f64(), Some(12.975));
        for _ in 0..98 {
            a.observe(0.001);
        }
        a.observe(0.5);
        a.observe(0.5);
        let seen = d.now;
        let mut d = after(&seen);
        let (p50, p99) = d.quantiles(key(), &a);
        // Upper bucket bounds: 1 ms falls in the 1.14 ms bucket, 0.5 s in the 748 ms one (2 of
        // 100: the p99); the 10 ms of the second before is not counted.
        assert_eq!((p50.as_f64(), p99.as_f64()), (Some(1.139), Some(748.183)));
        // A new Latency (a reload) with fewer counts than the old one is read from zero.
        let b = Latency::default();
        b.observe(0.5);
        let (p50, _) = d.quantiles(key(), &b);
        assert_eq!(p50.as_f64(), Some(748.183));
    }

    #[test]
    fn counts_are_differences_and_a_restarted_counter_is_not_negative() {
        let before = Last::default();
        let mut d = after(&before);
        assert_eq!(d.count(Key::Route("c".into()), (10, 2)), (10, 2));
        let seen = d.now;
        let mut d = after(&seen);
        assert_eq!(d.count(Key::Route("c".into()), (15, 3)), (5, 1));
        assert_eq!(d.count(Key::Limited("new".into()), (1, 0)), (1, 0));
        let seen = d.now;
        let mut d = after(&seen);
        assert_eq!(d.count(Key::Route("c".into()), (4, 0)), (0, 0));
        assert!(
            !d.now.counts.contains_key(&Key::Limited("new".into())),
            "not seen this time"
        );
    }
}
