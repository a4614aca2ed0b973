//! Service discovery: the endpoints of clusters configured with `endpoints_from` instead of a
//! list. One task per such cluster resolves its source (DNS today, `discovery/dns.rs`), keeps
//! the last good answer here, and says which cluster changed; the runtime then fills the
//! cluster's endpoints from [`Discovery::fill`] and applies the config as a reload does, so
//! endpoints that stay keep their health, breaker and pool. A failed or empty resolution keeps
//! the last good set (an event and a metric say so).
//!
//! Knows nothing of the runtime: it is told the config, and answers through a channel.

use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use gatehouse_config::discovery::{DnsSettings, DnsSource};
use gatehouse_config::{Config, Endpoint};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod dns;

/// What a cluster's source last said.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The last good answer, sorted (empty until the first one).
    pub endpoints: Vec<Endpoint>,
    /// `dns:A:shop.internal` and the like, for the admin API.
    pub source: String,
    /// When the last good answer came (Unix ms) and the last error since, if any.
    pub last_ok_unix_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// What a discovery task is started with; a change restarts it.
type TaskKey = (DnsSource, DnsSettings);

pub struct Discovery {
    found: Arc<Mutex<HashMap<String, Found>>>,
    tasks: Mutex<HashMap<String, (TaskKey, AbortHandle)>>,
    changed: mpsc::UnboundedSender<String>,
}

impl Discovery {
    /// The discovery registry and the receiving end on which it names clusters whose
    /// endpoints changed.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Discovery {
                found: Arc::default(),
                tasks: Mutex::default(),
                changed: tx,
            },
            rx,
        )
    }

    /// Gives every cluster with `endpoints_from` its last good endpoints (none before the
    /// first answer: requests get 503 `no_eligible_endpoint` until then).
    pub fn fill(&self, config: &mut Config) {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        for c in config
            .clusters
            .iter_mut()
            .filter(|c| c.endpoints_from.is_some())
        {
            c.endpoints = found
                .get(&c.name)
                .map(|f| f.endpoints.clone())
                .unwrap_or_default();
        }
    }

    /// What each discovered cluster's source last said, by cluster.
    pub fn found(&self, cluster: &str) -> Option<Found> {
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .cloned()
    }

    /// Starts a task for each cluster that has a source, restarts those whose source or
    /// servers changed, stops the rest and forgets their answers.
    pub fn reconcile(&self, config: &Config, events: &Events, metrics: &Arc<Metrics>) {
        let settings = config.dns.clone().unwrap_or_default();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for c in &config.clusters {
            let Some(src) = c.endpoints_from.as_ref().and_then(|f| f.dns.clone()) else {
                continue;
            };
            let key: TaskKey = (src.clone(), settings.clone());
            match tasks.remove(&c.name) {
                Some((old, handle)) if old == key => {
                    next.insert(c.name.clone(), (old, handle));
                }
                old => {
                    if let Some((_, handle)) = old {
                        handle.abort();
                    }
                    let task = dns::Task {
                        cluster: c.name.clone(),
                        source: src,
                        servers: settings.addresses().unwrap_or_default(),
                        found: self.found.clone(),
                        changed: self.changed.clone(),
                        events: events.clone(),
                        metrics: metrics.clone(),
                    };
                    let handle = tokio::spawn(task.run()).abort_handle();
                    next.insert(c.name.clone(), (key, handle));
                }
            }
        }
        for (_, (_, handle)) in tasks.drain() {
            handle.abort();
        }
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c, _| next.contains_key(c));
        *tasks = next;
    }

    /// Stops every task (shutdown).
    pub fn stop(&self) {
        for (_, (_, handle)) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            handle.abort();
        }
    }
}
