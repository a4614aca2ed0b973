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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod dns;
mod etcd;

/// An answer with more endpoints than this is refused (the last good set stays): each
/// endpoint costs state, a pool and a health check, and no real cluster is this large.
pub const MAX_ENDPOINTS: usize = 10_000;

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
    /// What was asked ([`source_id`]): endpoints found for another source (before a reload
    /// changed it) are never filled into the cluster.
    id: String,
    /// The task that may write this entry: a task stopped by a reload but still running
    /// until its next await point writes nothing.
    epoch: u64,
}

/// What a source asks, without the settings that do not change the answer (`refresh`,
/// `allow_empty`): the same id keeps the last good endpoints across a reload.
fn source_id(from: &EndpointsFrom) -> String {
    match (&from.dns, &from.etcd) {
        (Some(d), _) => format!("dns:{:?}:{}:{:?}", d.record, d.name, d.port),
        (_, Some(e)) => format!("etcd:{}", e.prefix),
        _ => String::new(),
    }
}

/// What a discovery task is started with; a change restarts it.
type TaskKey = (EndpointsFrom, DnsSettings, EtcdSettings);

pub struct Discovery {
    found: Arc<Mutex<HashMap<String, Found>>>,
    tasks: Mutex<HashMap<String, (TaskKey, AbortHandle)>>,
    changed: mpsc::UnboundedSender<String>,
    /// Numbers the tasks started, for [`Found::epoch`].
    epochs: AtomicU64,
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
                epochs: AtomicU64::new(0),
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
            let id = c.endpoints_from.as_ref().map(source_id);
            c.endpoints = found
                .get(&c.name)
                .filter(|f| Some(&f.id) == id.as_ref())
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
                    let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
                    self.claim(&c.name, &from, &label, epoch);
                    let report = Reporter {
                        epoch,
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

    /// Hands a cluster's entry to the task `epoch`: the last good endpoints stay when the
    /// source asks the same thing as before (only `refresh` or the servers changed), and are
    /// dropped when it asks something else (they are another service's).
    fn claim(&self, cluster: &str, from: &EndpointsFrom, label: &str, epoch: u64) {
        let id = source_id(from);
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let f = found.entry(cluster.to_string()).or_default();
        if f.id != id {
            *f = Found::default();
        }
        f.id = id;
        f.epoch = epoch;
        f.source = label.to_string();
        f.kind = if from.dns.is_some() { "dns" } else { "etcd" };
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
    /// Which [`Found::epoch`] this task may write.
    epoch: u64,
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
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = found
            .get_mut(&self.cluster)
            .filter(|f| f.epoch == self.epoch)
        else {
            return; // stopped by a reload
        };
        self.count(outcome);
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
        if endpoints.len() > MAX_ENDPOINTS {
            return self.failed(
                "failed",
                &format!(
                    "the answer names {} endpoints, more than {MAX_ENDPOINTS}",
                    endpoints.len()
                ),
            );
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = found
            .get_mut(&self.cluster)
            .filter(|f| f.epoch == self.epoch)
        else {
            return; // stopped by a reload
        };
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

/// An endpoint address from the network (`10.0.0.1:8080`, `[fd00::1]:80`, `shop.internal:80`)
/// as the cluster will use it, or why it cannot be one.
pub(crate) fn address(s: &str) -> Result<String, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return if a.port() == 0 {
            Err("port 0 is not a port one can connect to".into())
        } else if !sendable(a.ip()) {
            Err(format!("{} is not an address to send requests to", a.ip()))
        } else {
            Ok(a.to_string())
        };
    }
    gatehouse_config::validate::check_host_port(s)?;
    Ok(s.to_string())
}

/// Whether requests can go to `ip`: not the unspecified address (Linux would connect to the
/// gateway's own host), multicast, broadcast, or an IPv6 link-local address (which needs a
/// scope that records cannot carry).
pub(crate) fn sendable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => sendable(IpAddr::V4(v4)),
            None => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_addresses_one_can_send_to_are_endpoints() {
        for bad in [
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[ff02::1]:80",
            "[fe80::1]:80",
            "[::ffff:0.0.0.0]:80",
            "10.0.0.1:0",
            "a/b:80",
            "shop",
            "",
        ] {
            assert!(super::address(bad).is_err(), "{bad}");
        }
        assert_eq!(super::address("[0:0::1]:80").unwrap(), "[::1]:80");
        assert_eq!(
            super::address("shop.internal:80").unwrap(),
            "shop.internal:80"
        );
    }
}
