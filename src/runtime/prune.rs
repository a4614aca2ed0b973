//! Pruning registries after a reload: everything keyed by an identity that the new snapshot no
//! longer has is dropped — pools and cluster state at once (old snapshots keep their `Arc`s until
//! their requests finish), metric series at once, endpoint state after a grace period (so a quick
//! re-add keeps its breaker, health and slow-start state), at most [`MAX_RETIRED`] of them.

use super::{EndpointKey, Snapshot};
use crate::cluster::endpoint::EndpointState;
use crate::observe::metrics::Metrics;
use gatehouse_config::Protocol;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::time::{Duration, Instant};

/// How long a removed endpoint's state is kept.
pub const RETIRED_GRACE: Duration = Duration::from_secs(60);
/// At most this many removed endpoints are kept in their grace period (oldest go first).
pub const MAX_RETIRED: usize = 256;

/// The identities a snapshot uses.
pub struct Live {
    pub endpoints: HashSet<EndpointKey>,
    pub pools: HashSet<(Arc<str>, Arc<str>, Protocol)>,
    pub clusters: HashSet<Arc<str>>,
    pub routes: HashSet<String>,
    /// (route, policy) of every rate-limit filter.
    pub limits: HashSet<(String, String)>,
}

impl Live {
    pub fn of(s: &Snapshot) -> Self {
        let mut live = Live {
            endpoints: HashSet::new(),
            pools: HashSet::new(),
            clusters: HashSet::new(),
            routes: HashSet::new(),
            limits: HashSet::new(),
        };
        for (name, c) in &s.clusters {
            live.clusters.insert(name.clone());
            for e in &c.endpoints {
                live.endpoints
                    .insert((name.clone(), e.state.address.clone()));
                live.pools
                    .insert((name.clone(), e.state.address.clone(), c.protocol));
            }
        }
        for r in &s.config.routes {
            live.routes.insert(r.name.clone());
            for f in &r.filters {
                if let gatehouse_config::traffic::Filter::RateLimit(p) = f {
                    live.limits.insert((r.name.clone(), p.clone()));
                }
            }
        }
        live
    }
}

/// Marks endpoints the snapshot dropped as retired, un-retires re-added ones, expires old ones.
pub fn retire(
    eps: &mut HashMap<EndpointKey, Arc<EndpointState>>,
    retired: &mut HashMap<EndpointKey, Instant>,
    live: &Live,
    now: Instant,
) {
    retired.retain(|k, _| !live.endpoints.contains(k));
    for k in eps.keys() {
        if !live.endpoints.contains(k) {
            retired.entry(k.clone()).or_insert(now);
        }
    }
    expire(eps, retired, now);
}

/// Drops retired endpoint state past its grace period, or beyond [`MAX_RETIRED`].
pub fn expire(
    eps: &mut HashMap<EndpointKey, Arc<EndpointState>>,
    retired: &mut HashMap<EndpointKey, Instant>,
    now: Instant,
) {
    retired.retain(|k, since| {
        let keep = now.saturating_duration_since(*since) < RETIRED_GRACE;
        if !keep {
            eps.remove(k);
        }
        keep
    });
    if retired.len() > MAX_RETIRED {
        let mut by_age: Vec<(EndpointKey, Instant)> =
            retired.iter().map(|(k, t)| (k.clone(), *t)).collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (k, _) in by_age.into_iter().take(retired.len() - MAX_RETIRED) {
            retired.remove(&k);
            eps.remove(&k);
        }
    }
}

/// Removes the metric series of routes, clusters and endpoints that `before` had and `after`
/// does not, so `/metrics` follows the config instead of growing with every reload.
pub fn forget_metrics(m: &Metrics, before: &Live, after: &Live) {
    for (c, e) in before.endpoints.difference(&after.endpoints) {
        m.forget_endpoint(c, e);
    }
    for c in before.clusters.difference(&after.clusters) {
        m.forget_cluster(c);
    }
    for r in before.routes.difference(&after.routes) {
        m.forget_route(r);
    }
    for (r, p) in before.limits.difference(&after.limits) {
        m.forget_limit(r, p);
    }
}
