//! `endpoints_from: {dns: ...}`: resolve A, AAAA or SRV records with `hickory-resolver`, turn
//! the answer into endpoints, and resolve again when the answer's TTL (at most `refresh`) runs
//! out. SRV records give each endpoint its port and weight (the lowest priority only, as
//! RFC 2782 has clients use the others only when those fail); their targets are resolved with
//! the same servers.

use super::Found;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use gatehouse_config::discovery::{DnsSource, RecordType};
use gatehouse_config::Endpoint;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How soon a failed resolution is tried again (or `refresh`, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// An answer is not asked again sooner than this, whatever its TTL (a TTL of 0 would spin).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Task {
    pub cluster: String,
    pub source: DnsSource,
    /// Empty: the system's resolver.
    pub servers: Vec<SocketAddr>,
    pub found: Arc<Mutex<HashMap<String, Found>>>,
    pub changed: mpsc::UnboundedSender<String>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
}

impl Task {
    fn label(&self) -> String {
        format!("dns:{:?}:{}", self.source.record, self.source.name)
    }

    pub async fn run(self) {
        let resolver = match resolver(&self.servers) {
            Ok(r) => r,
            Err(e) => {
                self.failed(&format!("cannot build a resolver: {e}"));
                return;
            }
        };
        let refresh = self.source.refresh.0;
        let mut failing = false;
        loop {
            let wait = match resolve(&resolver, &self.source).await {
                Ok((eps, _)) if eps.is_empty() && !self.source.allow_empty => {
                    failing |= self.failed("the answer has no records");
                    self.count("empty");
                    refresh.min(RETRY_AFTER_FAILURE)
                }
                Ok((eps, valid_for)) => {
                    if std::mem::take(&mut failing) {
                        self.events.emit(
                            "discovery_recovered",
                            &self.cluster,
                            None,
                            json!({"source": self.label(), "endpoints": eps.len()}),
                        );
                    }
                    self.succeeded(eps);
                    valid_for.clamp(MIN_INTERVAL, refresh.max(MIN_INTERVAL))
                }
                Err(e) => {
                    failing |= self.failed(&e);
                    self.count("failed");
                    refresh.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .discovery_resolutions
            .get_or_create(&vec![
                ("cluster", self.cluster.clone()),
                ("source", "dns".to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// Keeps the last good set and records the error; the event comes once per outage.
    /// Returns true (the task is now failing).
    fn failed(&self, error: &str) -> bool {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let f = found.entry(self.cluster.clone()).or_insert_with(|| Found {
            source: self.label(),
            ..Found::default()
        });
        let first = f.last_error.is_none();
        f.last_error = Some(error.to_string());
        let kept = f.endpoints.len();
        drop(found);
        if first {
            tracing::warn!(cluster = %self.cluster, source = %self.label(), error, kept, "endpoint discovery failed; keeping the last good endpoints");
            self.events.emit(
                "discovery_failed",
                &self.cluster,
                None,
                json!({"source": self.label(), "error": error, "kept": kept}),
            );
        }
        true
    }

    fn succeeded(&self, endpoints: Vec<Endpoint>) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let f = found.entry(self.cluster.clone()).or_default();
        f.source = self.label();
        f.last_ok_unix_ms = Some(now_ms);
        f.last_error = None;
        if f.endpoints == endpoints {
            drop(found);
            self.count("unchanged");
            return;
        }
        let before: BTreeSet<&str> = f.endpoints.iter().map(|e| e.address.as_str()).collect();
        let after: BTreeSet<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&after).copied().collect();
        let fields = json!({
            "source": self.label(),
            "endpoints": endpoints.len(),
            "added": added,
            "removed": removed,
        });
        self.metrics
            .discovery_endpoints
            .get_or_create(&vec![("cluster", self.cluster.clone())])
            .set(endpoints.len() as i64);
        f.endpoints = endpoints;
        drop(found);
        self.count("ok");
        self.events
            .emit("endpoints_discovered", &self.cluster, None, fields);
        let _ = self.changed.send(self.cluster.clone());
    }
}

fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    let builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let mut config = ResolverConfig::new();
        for &a in servers {
            config.add_name_server(NameServerConfig::new(a, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(a, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    Ok(builder.with_options(opts).build())
}

/// The endpoints the records name, sorted by address, and how long the answer is good for.
async fn resolve(
    resolver: &TokioResolver,
    src: &DnsSource,
) -> Result<(Vec<Endpoint>, Duration), String> {
    let name = absolute(&src.name);
    let port = src.port.unwrap_or(0);
    let mut out: Vec<Endpoint> = Vec::new();
    let until = match src.record {
        RecordType::A => {
            let a = lookup(resolver.ipv4_lookup(name.as_str()).await)?;
            let until = a.as_ref().map(|l| l.valid_until());
            for ip in a.iter().flat_map(|l| l.iter()) {
                out.push(endpoint(IpAddr::V4(ip.0), port, 1));
            }
            until
        }
        RecordType::AAAA => {
            let a = lookup(resolver.ipv6_lookup(name.as_str()).await)?;
            let until = a.as_ref().map(|l| l.valid_until());
            for ip in a.iter().flat_map(|l| l.iter()) {
                out.push(endpoint(IpAddr::V6(ip.0), port, 1));
            }
            until
        }
        RecordType::SRV => {
            let srv = lookup(resolver.srv_lookup(name.as_str()).await)?;
            let mut until = srv.as_ref().map(|l| l.as_lookup().valid_until());
            let records: Vec<_> = srv.iter().flat_map(|l| l.iter().cloned()).collect();
            let best = records.iter().map(|r| r.priority()).min();
            for r in records.iter().filter(|r| Some(r.priority()) == best) {
                let ips = resolver
                    .lookup_ip(r.target().clone())
                    .await
                    .map_err(|e| format!("SRV target {}: {e}", r.target()))?;
                until = until.min(Some(ips.valid_until()));
                for ip in ips.iter() {
                    out.push(endpoint(ip, r.port(), u32::from(r.weight()).max(1)));
                }
            }
            until
        }
    };
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out.dedup_by(|a, b| a.address == b.address);
    let valid_for = until.map_or(Duration::ZERO, |u| {
        u.saturating_duration_since(Instant::now())
    });
    Ok((out, valid_for))
}

/// A lookup's answer; "no records" is an empty answer, not an error.
fn lookup<T>(r: Result<T, hickory_resolver::ResolveError>) -> Result<Option<T>, String> {
    match r {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.is_no_records_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A name with dots is asked as written (no search domains), as a user would expect of
/// `shop.internal`; a trailing dot is kept.
fn absolute(name: &str) -> String {
    if name.ends_with('.') || !name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn endpoint(ip: IpAddr, port: u16, weight: u32) -> Endpoint {
    Endpoint {
        address: SocketAddr::new(ip, port).to_string(),
        weight,
    }
}
