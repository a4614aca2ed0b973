//! Building a snapshot's clusters from a validated config: each endpoint gets its runtime
//! state (breaker, health, ramp) and its pool from the registries, by identity, so what a
//! reload keeps is decided here; the published [`Snapshot`] is immutable.

use super::{Runtime, WantedTask};
use crate::cluster::balance::Balancer;
use crate::cluster::endpoint::EndpointState;
use crate::cluster::{Cluster, EndpointRef};
use crate::filter::limit::Limiter;
use crate::filter::Filter;
use crate::observe::metrics::{EndpointMetrics, RouteMetrics};
use crate::route::RouteTable;
use crate::upstream::tls::Connector;
use crate::upstream::UpstreamClient;
use gatehouse_config::validate::Problem;
use gatehouse_config::Config;
use std::collections::HashMap;
use std::sync::Arc;

/// One immutable, validated, compiled version of the config.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// Each route's own cluster (`cluster:`), by the route's position in the config: resolved
    /// once here rather than looked up by name (a SipHash of the name) on every request.
    pub route_clusters: Vec<Option<Arc<Cluster>>>,
    /// Each route's filters, by the route's position in the config.
    pub route_filters: Vec<Vec<Filter>>,
    /// Every rate-limit policy, by name.
    pub limiters: HashMap<Arc<str>, Arc<Limiter>>,
    /// Each route's metric handles, by the route's position in the config.
    pub route_metrics: Vec<RouteMetrics>,
    /// Handles for requests no route matched.
    pub unrouted: RouteMetrics,
    /// The consumer header and the identity headers removed from every request.
    pub identity: crate::filter::IdentityHeaders,
    /// OpenTelemetry tracing, when `tracing:` is configured.
    pub tracing: Option<crate::observe::otel::Tracing>,
}

/// [`Snapshot::route_clusters`] for `config`'s routes.
pub(super) fn route_clusters(
    config: &Config,
    clusters: &HashMap<Arc<str>, Arc<Cluster>>,
) -> Vec<Option<Arc<Cluster>>> {
    config
        .routes
        .iter()
        .map(|r| r.cluster.as_deref().and_then(|n| clusters.get(n)).cloned())
        .collect()
}

impl Runtime {
    /// Every cluster of `config`, with the health-check tasks its endpoints want. `first`: the
    /// gateway's first snapshot (its endpoints start together, so none ramps up).
    pub(super) fn build_clusters(
        &self,
        config: &Config,
        first: bool,
        tls: &HashMap<String, Arc<Connector>>,
    ) -> (HashMap<Arc<str>, Arc<Cluster>>, Vec<WantedTask>) {
        let mut clusters = HashMap::new();
        let mut wanted_tasks = Vec::new();

        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut cstates = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        for c in &config.clusters {
            let name: Arc<str> = c.name.as_str().into();
            let cstate = cstates.entry(name.clone()).or_default().clone();
            cstate
                .connections
                .set(c.limits.max_connections, c.limits.max_pending);
            let connector = tls.get(&c.name).cloned();
            let pool = (
                c.timeouts,
                c.limits.max_idle_per_endpoint,
                connector.as_ref().map(|t| t.fingerprint),
            );
            let new_client = |addr: &str| {
                UpstreamClient::new(
                    addr,
                    c.protocol,
                    &c.timeouts,
                    (cstate.connections.clone(), c.limits.max_idle_per_endpoint),
                    connector.clone(),
                )
            };
            let endpoints: Vec<EndpointRef> = c
                .endpoints
                .iter()
                .map(|e| {
                    let addr: Arc<str> = e.address.as_str().into();
                    let key = (name.clone(), addr.clone());
                    let state = eps
                        .entry(key.clone())
                        .or_insert_with(|| {
                            let s =
                                EndpointState::new(name.clone(), addr.clone(), &c.circuit_breaker);
                            // New endpoints of a running gateway ramp up; the first
                            // snapshot's all start together, so ramping them means nothing.
                            if !first {
                                s.start_ramp(c.slow_start.0);
                            }
                            Arc::new(s)
                        })
                        .clone();
                    let slot = clients
                        .entry((name.clone(), addr.clone(), c.protocol))
                        .or_insert_with(|| (pool, new_client(&e.address)));
                    if slot.0 != pool {
                        // Old snapshots keep the old pool until their requests finish.
                        *slot = (pool, new_client(&e.address));
                    }
                    let client = slot.1.clone();
                    if c.health_check.enabled {
                        wanted_tasks.push(WantedTask {
                            key,
                            settings: (
                                c.health_check.clone(),
                                c.slow_start.0,
                                c.timeouts,
                                c.protocol,
                            ),
                            state: state.clone(),
                            client: client.clone(),
                        });
                    }
                    EndpointRef {
                        metrics: EndpointMetrics::new(&self.metrics, &name, &addr),
                        state,
                        weight: e.weight,
                        client,
                    }
                })
                .collect();
            let hash_on = c
                .hash_on
                .as_deref()
                .and_then(|h| gatehouse_config::policy::parse_hash_on(h).ok());
            let balancer = Balancer::new(c.lb, hash_on.as_ref(), &endpoints);
            let retry_counters = crate::cluster::RetryCounters::new(&self.metrics, &name);
            clusters.insert(
                name.clone(),
                Arc::new(Cluster {
                    name,
                    protocol: c.protocol,
                    endpoints,
                    balancer,
                    timeouts: c.timeouts,
                    breaker: c.circuit_breaker,
                    outlier: c.outlier_detection,
                    retries: c.retries.clone(),
                    retry_on: c
                        .retries
                        .on
                        .iter()
                        .filter_map(|r| gatehouse_config::policy::parse_retry_on(r).ok())
                        .collect(),
                    slow_start: c.slow_start.0,
                    retry_counters,
                    state: cstate,
                    limits: c.limits,
                    panic_cache: std::sync::atomic::AtomicU64::new(0),
                    request_headers: crate::route::headers::HeaderOps::compile(&c.request_headers),
                    response_headers: crate::route::headers::HeaderOps::compile(
                        &c.response_headers,
                    ),
                }),
            );
        }
        (clusters, wanted_tasks)
    }
}

/// Every TLS cluster's client, built before anything changes: a CA or client certificate that
/// cannot be read fails the load (`clusters[i].tls...`). An `insecure_skip_verify` warns at
/// every load.
pub fn upstream_tls(config: &Config) -> Result<HashMap<String, Arc<Connector>>, Vec<Problem>> {
    let mut built = HashMap::new();
    let mut problems = Vec::new();
    for (i, c) in config.clusters.iter().enumerate() {
        let Some(t) = &c.tls else { continue };
        if t.insecure_skip_verify {
            tracing::warn!(cluster = %c.name, "tls.insecure_skip_verify: this cluster's endpoint certificates are not verified");
        }
        match Connector::build(t, c.protocol) {
            Ok(conn) => {
                built.insert(c.name.clone(), Arc::new(conn));
            }
            Err(ps) => problems.extend(
                ps.into_iter()
                    .map(|(f, m)| (format!("clusters[{i}].{f}"), m)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(problems)
    }
}
