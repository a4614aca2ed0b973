//! The current snapshot (one atomic pointer) and the registries of runtime state that outlive
//! snapshots, keyed by identity: endpoints by (cluster, address), upstream clients (pools) by
//! (cluster, address, transport settings). Keys never contain tunables such as weights.

use crate::cluster::balance::Balancer;
use crate::cluster::endpoint::EndpointState;
use crate::cluster::{Cluster, EndpointRef};
use crate::observe::access_log::AccessLogSink;
use crate::route::RouteTable;
use crate::upstream::UpstreamClient;
use arc_swap::ArcSwap;
use gatehouse_config::{Config, Protocol, Timeouts};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One immutable, validated, compiled version of the config.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
}

type EndpointKey = (Arc<str>, Arc<str>);
type ClientKey = (Arc<str>, Arc<str>, Protocol, Timeouts);

pub struct Runtime {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointState>>>,
    clients: Mutex<HashMap<ClientKey, UpstreamClient>>,
    pub access_log: Option<AccessLogSink>,
}

impl Runtime {
    pub fn new(config: Config, access_log: Option<AccessLogSink>) -> Arc<Self> {
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
            access_log,
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
        let mut clusters = HashMap::new();
        {
            let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            for c in &config.clusters {
                let name: Arc<str> = c.name.as_str().into();
                let endpoints = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let addr: Arc<str> = e.address.as_str().into();
                        let state = eps
                            .entry((name.clone(), addr.clone()))
                            .or_insert_with(|| {
                                Arc::new(EndpointState::new(name.clone(), addr.clone()))
                            })
                            .clone();
                        let client = clients
                            .entry((name.clone(), addr.clone(), c.protocol, c.timeouts))
                            .or_insert_with(|| {
                                UpstreamClient::new(&e.address, c.protocol, &c.timeouts)
                            })
                            .clone();
                        EndpointRef {
                            state,
                            weight: e.weight,
                            client,
                        }
                    })
                    .collect();
                clusters.insert(
                    name.clone(),
                    Arc::new(Cluster {
                        name,
                        protocol: c.protocol,
                        endpoints,
                        balancer: Balancer::new(c.lb),
                        timeouts: c.timeouts,
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
        generation
    }

    /// The runtime state of one endpoint, if any snapshot created it.
    pub fn endpoint(&self, cluster: &str, address: &str) -> Option<Arc<EndpointState>> {
        let eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        eps.get(&(Arc::from(cluster), Arc::from(address))).cloned()
    }
}
