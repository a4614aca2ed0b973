//! Service discovery: the endpoints of clusters configured with `endpoints_from` instead of a
//! list. One task per such cluster reads its source (DNS records, `discovery/dns.rs`, or keys
//! under an etcd prefix, `discovery/etcd.rs`), keeps
//! the last good answer here, and says which cluster changed; the runtime then fills the
//! cluster's endpoints from [`Discovery::fill`] and applies the config as a reload does, so
//! endpoints that stay keep their health, breaker and pool. A failed or empty resolution keeps
//! the last good set (an event and a metric say so).
//!
//! Knows nothing of the runtime: it is told the config, and answers through a channel.

use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use gatehouse_config::discovery::{DnsSettings, EndpointsFrom, EtcdSettings};
use gatehouse_config::{Config, Endpoint};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod dns;
mod etcd;

/// What a cluster's source last said.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The last good answer, sorted (empty until the first one).
    pub endpoints: Vec<Endpoint>,
    /// `dns:A:shop.internal` and the like, for the admin API.
    pub source: String,
    /// `dns` or `etcd`.
    pub kind: &'static str,
    /// When the last good answer came (Unix ms) and the last error since, if any.
    pub last_ok_unix_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// What a discovery task is started with; a change restarts it.
type TaskKey = (EndpointsFrom, DnsSettings, EtcdSettings);

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
        let dns_settings = config.dns.clone().unwrap_or_default();
        let etcd_settings = config.etcd.clone().unwrap_or_default();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for c in &config.clusters {
            let Some(from) = c.endpoints_from.clone() else {
                continue;
            };
            let key: TaskKey = (from.clone(), dns_settings.clone(), etcd_settings.clone());
            match tasks.remove(&c.name) {
                Some((old, handle)) if old == key => {
                    next.insert(c.name.clone(), (old, handle));
                }
                old => {
                    if let Some((_, handle)) = old {
                        handle.abort();
                    }
                    let label = match (&from.dns, &from.etcd) {
                        (Some(d), _) => format!("dns:{:?}:{}", d.record, d.name),
                        (_, Some(e)) => format!("etcd:{}", e.prefix),
                        _ => continue,
                    };
                    let report = Reporter {
                        cluster: c.name.clone(),
                        kind: if from.dns.is_some() { "dns" } else { "etcd" },
                        label,
                        found: self.found.clone(),
                        changed: self.changed.clone(),
                        events: events.clone(),
                        metrics: metrics.clone(),
                    };
                    let handle = match (from.dns, from.etcd) {
                        (Some(source), _) => tokio::spawn(
                            dns::Task {
                                source,
                                servers: dns_settings.addresses().unwrap_or_default(),
                                report,
                            }
                            .run(),
                        ),
                        (_, Some(source)) => tokio::spawn(
                            etcd::Task {
                                prefix: source.prefix,
                                client: crate::etcd::Client::new(etcd_settings.endpoints.clone()),
                                report,
                            }
                            .run(),
                        ),
                        _ => continue,
                    };
                    next.insert(c.name.clone(), (key, handle.abort_handle()));
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

/// How a discovery task reports: it keeps the last good answer in the shared map, says which
/// cluster changed, and emits the events and metrics, the same for every kind of source.
struct Reporter {
    cluster: String,
    /// `dns` or `etcd` (the metric's `source` and the endpoints' `source` in the admin API).
    kind: &'static str,
    /// `dns:A:shop.internal`, `etcd:/services/shop/`.
    label: String,
    found: Arc<Mutex<HashMap<String, Found>>>,
    changed: mpsc::UnboundedSender<String>,
    events: Events,
    metrics: Arc<Metrics>,
}

impl Reporter {
    fn count(&self, outcome: &str) {
        self.metrics
            .discovery_resolutions
            .get_or_create(&vec![
                ("cluster", self.cluster.clone()),
                ("source", self.kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// Keeps the last good set and records the error; the event comes once per outage.
    fn failed(&self, outcome: &str, error: &str) {
        self.count(outcome);
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let f = found.entry(self.cluster.clone()).or_insert_with(|| Found {
            source: self.label.clone(),
            kind: self.kind,
            ..Found::default()
        });
        let first = f.last_error.is_none();
        f.last_error = Some(error.to_string());
        let kept = f.endpoints.len();
        drop(found);
        if first {
            tracing::warn!(cluster = %self.cluster, source = %self.label, error, kept, "endpoint discovery failed; keeping the last good endpoints");
            self.events.emit(
                "discovery_failed",
                &self.cluster,
                None,
                json!({"source": self.label, "error": error, "kept": kept}),
            );
        }
    }

    /// A good answer (sorted by address): stored, and announced when it differs.
    fn succeeded(&self, endpoints: Vec<Endpoint>) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let f = found.entry(self.cluster.clone()).or_default();
        f.source.clone_from(&self.label);
        f.kind = self.kind;
        f.last_ok_unix_ms = Some(now_ms);
        let recovered = f.last_error.take().is_some();
        let same = f.endpoints == endpoints;
        let before: BTreeSet<String> = f.endpoints.iter().map(|e| e.address.clone()).collect();
        if !same {
            f.endpoints.clone_from(&endpoints);
        }
        drop(found);
        if recovered {
            self.events.emit(
                "discovery_recovered",
                &self.cluster,
                None,
                json!({"source": self.label, "endpoints": endpoints.len()}),
            );
        }
        if same {
            self.count("unchanged");
            return;
        }
        let after: BTreeSet<String> = endpoints.iter().map(|e| e.address.clone()).collect();
        self.metrics
            .discovery_endpoints
            .get_or_create(&vec![("cluster", self.cluster.clone())])
            .set(endpoints.len() as i64);
        self.count("ok");
        self.events.emit(
            "endpoints_discovered",
            &self.cluster,
            None,
            json!({
                "source": self.label,
                "endpoints": endpoints.len(),
                "added": after.difference(&before).collect::<Vec<_>>(),
                "removed": before.difference(&after).collect::<Vec<_>>(),
            }),
        );
        let _ = self.changed.send(self.cluster.clone());
    }
}
