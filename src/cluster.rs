//! A cluster as one snapshot sees it: its endpoints (runtime state shared across snapshots),
//! its balancer, its upstream clients, timeouts and self-healing settings — and the pick that
//! applies eligibility, the panic threshold, the breaker's admission and slow start.

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod endpoint;
pub mod health;

use crate::observe::events::Events;
use crate::upstream::UpstreamClient;
use balance::Balancer;
use budget::RetryBudget;
use endpoint::{Admission, EndpointState, Health};
use gatehouse_config::policy::RetryOn;
use gatehouse_config::{CircuitBreaker, OutlierDetection, Protocol, Retries, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An endpoint in this snapshot: shared runtime state plus this snapshot's tunables.
pub struct EndpointRef {
    pub metrics: crate::observe::metrics::EndpointMetrics,
    pub state: Arc<EndpointState>,
    pub weight: u32,
    pub client: UpstreamClient,
}

/// Cluster-wide runtime state that outlives snapshots (keyed by cluster name).
pub struct ClusterState {
    pub budget: RetryBudget,
    /// Shared by the cluster's connectors (`clusters[].limits.max_connections/max_pending`).
    pub connections: Arc<crate::upstream::ConnLimit>,
    /// Requests in flight to the cluster (`limits.max_requests`).
    pub requests: AtomicUsize,
    /// Retries in flight (`limits.max_retries`).
    pub retries: AtomicUsize,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            budget: RetryBudget::new(Instant::now()),
            connections: Arc::default(),
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }
}

/// Holds one place under a cluster counter (requests or retries in flight) until dropped.
pub struct Slot(Arc<ClusterState>, fn(&ClusterState) -> &AtomicUsize);

impl Drop for Slot {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterState {
    /// Takes a place under `max` on the counter `which`, or `None` when it is full.
    pub fn take(
        self: &Arc<Self>,
        which: fn(&ClusterState) -> &AtomicUsize,
        max: usize,
    ) -> Option<Slot> {
        which(self)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone(), which))
    }
}

pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub endpoints: Vec<EndpointRef>,
    pub balancer: Balancer,
    pub timeouts: Timeouts,
    pub breaker: CircuitBreaker,
    pub outlier: OutlierDetection,
    pub retries: Retries,
    pub retry_on: Vec<RetryOn>,
    pub slow_start: Duration,
    pub state: Arc<ClusterState>,
    pub limits: gatehouse_config::ClusterLimits,
    /// (health epoch << 1) | panic, see `panic()`.
    pub panic_cache: AtomicU64,
    pub retry_counters: RetryCounters,
    /// `request_headers` / `response_headers` (applied before the route's).
    pub request_headers: Option<Arc<crate::route::headers::HeaderOps>>,
    pub response_headers: Option<Arc<crate::route::headers::HeaderOps>>,
}

/// Metric handles for a cluster's retries.
pub struct RetryCounters {
    pub sent: prometheus_client::metrics::counter::Counter,
    pub refused_by_budget: prometheus_client::metrics::counter::Counter,
    /// Requests refused at one of the cluster's limits, by limit.
    pub overflow_requests: prometheus_client::metrics::counter::Counter,
    pub overflow_connections: prometheus_client::metrics::counter::Counter,
    pub overflow_retries: prometheus_client::metrics::counter::Counter,
}

impl RetryCounters {
    pub fn new(m: &crate::observe::metrics::Metrics, cluster: &str) -> Self {
        let l = vec![("cluster", cluster.to_string())];
        let overflow = |limit: &str| {
            m.cluster_overflow
                .get_or_create(&vec![
                    ("cluster", cluster.to_string()),
                    ("limit", limit.to_string()),
                ])
                .clone()
        };
        RetryCounters {
            sent: m.retries.get_or_create(&l).clone(),
            refused_by_budget: m.retry_budget_exhausted.get_or_create(&l).clone(),
            overflow_requests: overflow("requests"),
            overflow_connections: overflow("connections"),
            overflow_retries: overflow("retries"),
        }
    }
}

/// The endpoint chosen for one try.
pub struct Picked<'a> {
    pub index: usize,
    pub endpoint: &'a EndpointRef,
    pub admission: Admission,
}

impl Cluster {
    /// Picks an endpoint for one try, skipping `tried` (endpoints earlier tries used).
    ///
    /// Eligible = not drained, not DOWN (unless fewer than `panic_threshold` of the cluster
    /// pass health checks: then health is ignored), and admitted by its breaker (an OPEN one
    /// refuses, a HALF-OPEN one admits only its probes). The policy chooses among the usable
    /// endpoints; if the chosen one's breaker refuses, it is skipped and the policy asked again.
    pub fn pick(
        &self,
        now: Instant,
        tried: &[usize],
        key: Option<u64>,
        events: &Events,
    ) -> Option<Picked<'_>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let panic = self.panic();
        let mut skip: Vec<usize> = tried.to_vec();
        for _ in 0..n {
            let candidates = balance::Candidates {
                endpoints: &self.endpoints,
                now,
                panic,
                skip: &skip,
                degraded_weight: self.outlier.degraded_weight.0,
            };
            let i = self
                .balancer
                .choose(&candidates, tried.first().copied(), key)?;
            let e = &self.endpoints[i];
            match e.state.admit(&self.breaker, now, events) {
                Some(admission) => {
                    return Some(Picked {
                        index: i,
                        endpoint: e,
                        admission,
                    })
                }
                None => skip.push(i),
            }
        }
        None
    }

    /// Whether fewer than `panic_threshold` of the endpoints pass health checks. Cached until
    /// the next health transition anywhere (`health_epoch`): health changes are rare, picks
    /// are not.
    fn panic(&self) -> bool {
        let epoch = endpoint::health_epoch();
        let cached = self.panic_cache.load(Ordering::Acquire);
        if cached >> 1 == epoch {
            return cached & 1 == 1;
        }
        let up = self
            .endpoints
            .iter()
            .filter(|e| e.state.health() != Health::Down)
            .count();
        let panic = (up as f64) < self.outlier.panic_threshold.0 * self.endpoints.len() as f64;
        self.panic_cache
            .store(epoch << 1 | u64::from(panic), Ordering::Release);
        panic
    }

    /// May one more endpoint be ejected now (`max_ejection_percent`, at least one)?
    pub fn may_eject(&self) -> bool {
        let n = self.endpoints.len();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.state.breaker_state() != breaker::State::Closed)
            .count();
        let max = ((self.outlier.max_ejection_percent.0 * n as f64).floor() as usize).max(1);
        ejected < max
    }

    /// When the earliest OPEN breaker half-opens (for `Retry-After` on a 503).
    pub fn retry_after(&self, now: Instant) -> Duration {
        self.endpoints
            .iter()
            .filter_map(|e| e.state.retry_after(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
    }
}
