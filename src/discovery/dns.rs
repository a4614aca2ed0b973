//! `endpoints_from: {dns: ...}`: resolve A, AAAA or SRV records with `hickory-resolver`, turn
//! the answer into endpoints, and resolve again when the answer's TTL (at most `refresh`) runs
//! out. SRV records give each endpoint its port and weight (the lowest priority that names
//! one, as RFC 2782 has clients use the others only when those fail); their targets are
//! resolved with the same servers. Records that name nothing one can send to (target `.`,
//! port 0, a target with no address, 0.0.0.0, multicast) are skipped, not a failure: one
//! stale record must not freeze the cluster.

use super::Reporter;
use gatehouse_config::discovery::{DnsSource, RecordType};
use gatehouse_config::Endpoint;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How soon a failed resolution is tried again (or `refresh`, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// An answer is not asked again sooner than this, whatever its TTL (a TTL of 0 would spin).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest one resolution may take, SRV targets included (each lookup has its own
/// timeout, but a large SRV answer makes many).
const RESOLVE_WITHIN: Duration = Duration::from_secs(10);

pub struct Task {
    pub source: DnsSource,
    /// Empty: the system's resolver.
    pub servers: Vec<SocketAddr>,
    pub report: Reporter,
}

impl Task {
    pub async fn run(self) {
        let resolver = match resolver(&self.servers) {
            Ok(r) => r,
            Err(e) => {
                self.report
                    .failed("failed", &format!("cannot build a resolver: {e}"));
                return;
            }
        };
        let refresh = self.source.refresh.0;
        loop {
            let resolved = tokio::time::timeout(RESOLVE_WITHIN, resolve(&resolver, &self.source))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {RESOLVE_WITHIN:?}")));
            let wait = match resolved {
                Ok((eps, _)) if eps.is_empty() && !self.source.allow_empty => {
                    self.report.failed("empty", "the answer has no records");
                    refresh.min(RETRY_AFTER_FAILURE)
                }
                Ok((eps, valid_for)) => {
                    self.report.succeeded(eps);
                    valid_for.clamp(MIN_INTERVAL, refresh.max(MIN_INTERVAL))
                }
                Err(e) => {
                    self.report.failed("failed", &e);
                    refresh.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::time::sleep(wait).await;
        }
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
                out.extend(endpoint(IpAddr::V4(ip.0), port, 1));
            }
            until
        }
        RecordType::AAAA => {
            let a = lookup(resolver.ipv6_lookup(name.as_str()).await)?;
            let until = a.as_ref().map(|l| l.valid_until());
            for ip in a.iter().flat_map(|l| l.iter()) {
                out.extend(endpoint(IpAddr::V6(ip.0), port, 1));
            }
            until
        }
        RecordType::SRV => {
            let srv = lookup(resolver.srv_lookup(name.as_str()).await)?;
            let mut until = srv.as_ref().map(|l| l.as_lookup().valid_until());
            let mut records: Vec<_> = srv
                .iter()
                .flat_map(|l| l.iter().cloned())
                .filter(|r| r.port() != 0 && !r.target().is_root())
                .collect();
            if records.len() > super::MAX_ENDPOINTS {
                return Err(format!(
                    "{} SRV records, more than {}",
                    records.len(),
                    super::MAX_ENDPOINTS
                ));
            }
            records.sort_by_key(|r| r.priority());
            for group in records.chunk_by(|a, b| a.priority() == b.priority()) {
                for r in group {
                    // A target gone from the zone is skipped; any other failure (a timeout, a
                    // SERVFAIL) fails the answer, which keeps the last good set.
                    let Some(ips) = lookup(resolver.lookup_ip(r.target().clone()).await)
                        .map_err(|e| format!("SRV target {}: {e}", r.target()))?
                    else {
                        continue;
                    };
                    until = until.min(Some(ips.valid_until()));
                    for ip in ips.iter() {
                        out.extend(endpoint(ip, r.port(), u32::from(r.weight()).max(1)));
                    }
                }
                if !out.is_empty() {
                    break;
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

/// The endpoint a record names, if requests can go to it.
fn endpoint(ip: IpAddr, port: u16, weight: u32) -> Option<Endpoint> {
    super::sendable(ip).then(|| Endpoint {
        address: SocketAddr::new(ip, port).to_string(),
        weight,
    })
}
