//! The current snapshot (one atomic pointer) and the registries of runtime state that outlive
//! snapshots, keyed by identity: endpoints by (cluster, address), upstream clients (pools) by
//! (cluster, address, transport settings). Keys never contain tunables such as weights.

use crate::cluster::balance::Balancer;
use crate::cluster::endpoint::EndpointState;
use crate::cluster::{Cluster, ClusterState, EndpointRef};
use crate::observe::access_log::AccessLogSink;
use crate::observe::events::Events;
use crate::route::RouteTable;
use crate::upstream::UpstreamClient;
use arc_swap::ArcSwap;
use gatehouse_config::{Config, HealthCheck, Protocol, Timeouts};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// One immutable, validated, compiled version of the config.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
}

type EndpointKey = (Arc<str>, Arc<str>);
type ClientKey = (Arc<str>, Arc<str>, Protocol, Timeouts);

/// What a health-check task is started with; a change restarts the task.
type HealthSettings = (HealthCheck, std::time::Duration, Timeouts, Protocol);

/// A running health-check task and the settings it was started with.
struct HealthTask {
    settings: HealthSettings,
    handle: AbortHandle,
}

/// A health-check task a new snapshot wants.
struct WantedTask {
    key: EndpointKey,
    settings: HealthSettings,
    state: Arc<EndpointState>,
    client: UpstreamClient,
}

pub struct Runtime {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointState>>>,
    clients: Mutex<HashMap<ClientKey, UpstreamClient>>,
    clusters: Mutex<HashMap<Arc<str>, Arc<ClusterState>>>,
    health_tasks: Mutex<HashMap<EndpointKey, HealthTask>>,
    pub access_log: Option<AccessLogSink>,
    pub events: Events,
}

impl Runtime {
    /// Builds the runtime and its first snapshot. Must run inside a tokio runtime (health
    /// checks are spawned).
    pub fn new(config: Config, access_log: Option<AccessLogSink>) -> Arc<Self> {
        Self::with_events(config, access_log, Events::default())
    }

    pub fn with_events(
        config: Config,
        access_log: Option<AccessLogSink>,
        events: Events,
    ) -> Arc<Self> {
        let rt = Arc::new(Runtime {
            current: ArcSwap::from_pointee(Snapshot {
                generation: 0,
                config: Arc::new(config.clone()),
                routes: RouteTable::default(),
                clusters: HashMap::new(),
            }),
            generation: AtomicU64::new(0),
            endpoints: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            health_tasks: Mutex::new(HashMap::new()),
            access_log,
            events,
        });
        rt.apply(config);
        rt
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from a validated config and publishes it with one atomic store.
    /// Runtime state of endpoints whose identity is unchanged is carried over.
    pub fn apply(&self, config: Config) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let first = generation == 1;
        let mut clusters = HashMap::new();
        let mut wanted_tasks = Vec::new();
        {
            let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            let mut cstates = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
            for c in &config.clusters {
                let name: Arc<str> = c.name.as_str().into();
                let endpoints: Vec<EndpointRef> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let addr: Arc<str> = e.address.as_str().into();
                        let key = (name.clone(), addr.clone());
                        let state = eps
                            .entry(key.clone())
                            .or_insert_with(|| {
                                let s = EndpointState::new(
                                    name.clone(),
                                    addr.clone(),
                                    &c.circuit_breaker,
                                );
                                // New endpoints of a running gateway ramp up; the first
                                // snapshot's all start together, so ramping them means nothing.
                                if !first {
                                    s.start_ramp(c.slow_start.0);
                                }
                                Arc::new(s)
                            })
                            .clone();
                        let client = clients
                            .entry((name.clone(), addr.clone(), c.protocol, c.timeouts))
                            .or_insert_with(|| {
                                UpstreamClient::new(&e.address, c.protocol, &c.timeouts)
                            })
                            .clone();
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
                            state,
                            weight: e.weight,
                            client,
                        }
                    })
                    .collect();
                let cstate = cstates.entry(name.clone()).or_default().clone();
                let hash_on = c
                    .hash_on
                    .as_deref()
                    .and_then(|h| gatehouse_config::policy::parse_hash_on(h).ok());
                let balancer = Balancer::new(c.lb, hash_on.as_ref(), &endpoints);
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
                        health_checks: c.health_check.enabled,
                        slow_start: c.slow_start.0,
                        state: cstate,
                        panic_cache: std::sync::atomic::AtomicU64::new(0),
                    }),
                );
            }
        }
        let snapshot = Snapshot {
            generation,
            routes: RouteTable::new(&config.routes),
            config: Arc::new(config),
            clusters,
        };
        self.current.store(Arc::new(snapshot));
        self.reconcile_health_tasks(wanted_tasks);
        generation
    }

    /// Keeps health-check tasks whose settings did not change, restarts changed ones, stops
    /// removed ones.
    fn reconcile_health_tasks(&self, wanted: Vec<WantedTask>) {
        let mut tasks = self.health_tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for w in wanted {
            match tasks.remove(&w.key) {
                Some(old) if old.settings == w.settings => {
                    next.insert(w.key, old);
                }
                old => {
                    if let Some(old) = old {
                        old.handle.abort();
                    }
                    let (hc, slow_start, _, _) = w.settings.clone();
                    let handle = tokio::spawn(crate::cluster::health::run(
                        hc,
                        slow_start,
                        w.state,
                        w.client,
                        self.events.clone(),
                    ))
                    .abort_handle();
                    next.insert(
                        w.key,
                        HealthTask {
                            settings: w.settings,
                            handle,
                        },
                    );
                }
            }
        }
        for (_, old) in tasks.drain() {
            old.handle.abort();
        }
        *tasks = next;
    }

    /// Stops background tasks (health checks).
    pub fn stop(&self) {
        let mut tasks = self.health_tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, t) in tasks.drain() {
            t.handle.abort();
        }
    }

    /// The runtime state of one endpoint, if any snapshot created it.
    pub fn endpoint(&self, cluster: &str, address: &str) -> Option<Arc<EndpointState>> {
        let eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        eps.get(&(Arc::from(cluster), Arc::from(address))).cloned()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}
