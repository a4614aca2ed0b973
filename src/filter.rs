//! Route filters, run in order on the request before an endpoint is picked: authentication
//! (API key or JWT) and rate limiting. An enum of built-in filters, not plugins. Filters may
//! remove credentials from the request and add headers to whatever response goes back. The
//! cache filter is the exception: it wraps the trip to the backend (`proxy::cache`), so it
//! runs after the others wherever it is listed.

pub mod api_key;
pub mod cache;
pub mod cors;
pub mod jwt;
pub mod limit;

use crate::error::ProxyError;
use http::HeaderMap;
use limit::Limiter;
use serde_json::{Map, Value};
use std::sync::Arc;

pub enum Filter {
    ApiKey(
        Arc<api_key::ApiKeyAuth>,
        Arc<crate::observe::metrics::AuthCounters>,
    ),
    Jwt(
        Arc<jwt::JwtAuth>,
        Arc<crate::observe::metrics::AuthCounters>,
    ),
    ClientCert(
        Arc<ClientCertAuth>,
        Arc<crate::observe::metrics::AuthCounters>,
    ),
    RateLimit(Arc<Limiter>, LimitCounters),
    Fault(gatehouse_config::traffic::FaultFilter),
    Cache(Arc<cache::RouteCache>),
    /// Runs before the others (`proxy`): preflights are answered without credentials.
    Cors(Arc<cors::Cors>),
}

impl Filter {
    pub fn as_cache(&self) -> Option<&Arc<cache::RouteCache>> {
        match self {
            Filter::Cache(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_cors(&self) -> Option<&Arc<cors::Cors>> {
        match self {
            Filter::Cors(c) => Some(c),
            _ => None,
        }
    }
}

/// A rate-limit filter's decision counters for its route, resolved when the snapshot is built.
pub struct LimitCounters {
    pub allowed: prometheus_client::metrics::counter::Counter,
    pub limited: prometheus_client::metrics::counter::Counter,
}

/// The headers that carry identity to backends, compiled once per snapshot. Client-sent copies
/// are removed from every request before filters run; the gateway then sets the consumer
/// header itself when an auth filter authenticated someone.
pub struct IdentityHeaders {
    pub consumer: http::HeaderName,
    pub strip: Vec<http::HeaderName>,
}

/// Whether a header name is `name`, or `name` with some `-` sent as `_`.
fn folded_eq(sent: &[u8], name: &[u8]) -> bool {
    sent.len() == name.len()
        && sent
            .iter()
            .zip(name)
            .all(|(s, n)| s == n || (*s == b'_' && *n == b'-'))
}

impl IdentityHeaders {
    /// From validated config (names are HTTP tokens); a name that would not parse falls back
    /// to the default rather than disappearing.
    pub fn new(cfg: &gatehouse_config::traffic::IdentityHeaders) -> Self {
        let name = |s: &str| http::HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).ok();
        IdentityHeaders {
            consumer: name(&cfg.consumer_header)
                .unwrap_or(http::HeaderName::from_static("x-gatehouse-consumer")),
            strip: cfg.strip_headers.iter().filter_map(|h| name(h)).collect(),
        }
    }

    /// Removes every client-sent identity header, also spelled with `_` for `-` (backends
    /// that fold `_` into `-` would read `x_gatehouse_consumer` as the real one).
    pub fn remove_from(&self, h: &mut HeaderMap) {
        // One scan of the request's names (it has few, and almost never one of these) rather
        // than a hashed removal for each identity name on every request.
        let is_identity = |k: &http::HeaderName| {
            std::iter::once(&self.consumer)
                .chain(&self.strip)
                .any(|n| folded_eq(k.as_str().as_bytes(), n.as_str().as_bytes()))
        };
        if !h.keys().any(is_identity) {
            return;
        }
        let sent: Vec<http::HeaderName> = h.keys().filter(|k| is_identity(k)).cloned().collect();
        for n in sent {
            h.remove(n);
        }
    }

    /// Tells the backend who the consumer is.
    pub fn set(&self, h: &mut HeaderMap, consumer: &str) {
        if let Ok(v) = http::HeaderValue::from_str(consumer) {
            h.insert(self.consumer.clone(), v);
        }
    }
}

/// Who the request is, once an auth filter has run.
#[derive(Default)]
pub struct Identity {
    pub consumer: Option<Arc<str>>,
    pub claims: Option<Map<String, Value>>,
    /// The connection's verified client certificate's subject (mTLS), for rate-limit keys.
    pub client_subject: Option<Arc<str>>,
}

/// A verified client certificate, as filters and the log see it.
pub struct PeerCert {
    /// The subject's distinguished name (`CN=alice, O=Example`).
    pub subject: Arc<str>,
    /// Its subjectAltName DNS names, URIs and e-mail addresses.
    pub sans: Vec<String>,
}

/// `auth: {client_cert: ...}`: which certificates are let in, and who they are.
pub struct ClientCertAuth {
    allow: Vec<String>,
    /// Certificate subject or SAN → consumer name.
    consumers: std::collections::HashMap<String, Arc<str>>,
}

impl ClientCertAuth {
    pub fn new(
        cfg: &gatehouse_config::traffic::ClientCertAuth,
        consumers: &[gatehouse_config::traffic::Consumer],
    ) -> Self {
        let mut by_cert = std::collections::HashMap::new();
        for c in consumers {
            let name: Arc<str> = c.name.as_str().into();
            for id in &c.client_certs {
                by_cert.entry(id.clone()).or_insert_with(|| name.clone());
            }
        }
        ClientCertAuth {
            allow: cfg.allow.clone(),
            consumers: by_cert,
        }
    }

    /// The consumer this certificate is (if any names it), or 401 without a certificate and
    /// 403 for one `allow` does not list.
    fn authenticate(&self, peer: Option<&PeerCert>) -> Result<Option<Arc<str>>, ProxyError> {
        let peer = peer.ok_or(ProxyError::Unauthorized("missing_client_certificate"))?;
        let ids = || std::iter::once(&*peer.subject).chain(peer.sans.iter().map(String::as_str));
        if !self.allow.is_empty() && !ids().any(|id| self.allow.iter().any(|a| a == id)) {
            return Err(ProxyError::Forbidden("client_certificate_not_allowed"));
        }
        Ok(ids().find_map(|id| self.consumers.get(id).cloned()))
    }
}

fn counted(counters: &crate::observe::metrics::AuthCounters, e: ProxyError) -> ProxyError {
    counters.count(e.reason());
    e
}

/// Runs `filters` in order. `response_headers` collects headers for the response (rate-limit
/// headers go on every response of a limited route, local replies included).
pub async fn run(
    filters: &[Filter],
    parts: &mut http::request::Parts,
    (client, peer_cert): (std::net::IpAddr, Option<&PeerCert>),
    route: &str,
    identity: &mut Identity,
    response_headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    identity.client_subject = peer_cert.map(|p| p.subject.clone());
    for f in filters {
        match f {
            Filter::ClientCert(a, counters) => {
                if let Some(c) = a
                    .authenticate(peer_cert)
                    .map_err(|e| counted(counters, e))?
                {
                    identity.consumer = Some(c);
                }
            }
            Filter::ApiKey(a, counters) => {
                identity.consumer = Some(a.authenticate(parts).map_err(|e| counted(counters, e))?)
            }
            Filter::Jwt(j, counters) => {
                let v = j.authenticate(parts).map_err(|e| counted(counters, e))?;
                // Filters compose: a token that names no consumer keeps the one an earlier
                // filter authenticated.
                if v.consumer.is_some() {
                    identity.consumer = v.consumer;
                }
                identity.claims = Some(v.claims);
            }
            Filter::Fault(f) => {
                if fastrand::f64() < f.percent.0 {
                    if let Some(d) = f.delay {
                        tokio::time::sleep(d.0).await;
                    }
                    if let Some(status) = f.abort {
                        return Err(ProxyError::Injected { status });
                    }
                }
            }
            // Wraps the backend trip instead (`proxy::cache`).
            Filter::Cache(_) | Filter::Cors(_) => {}
            Filter::RateLimit(l, counters) => {
                let key = l.key_for(parts, client, route, identity);
                let delay = match l.check(&key, response_headers).await {
                    Ok(d) => {
                        counters.allowed.inc();
                        d
                    }
                    Err(e) => {
                        counters.limited.inc();
                        return Err(e);
                    }
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn identity_headers_go_in_every_spelling_and_only_they() {
        let ids = IdentityHeaders {
            consumer: HeaderName::from_static("x-gatehouse-consumer"),
            strip: vec![HeaderName::from_static("x-user-id")],
        };
        let sent = [
            "x-gatehouse-consumer",
            "x_gatehouse_consumer",
            "x_gatehouse-consumer",
            "x-user-id",
            "x_user_id",
            "x-user-idx",
            "x-user",
            "x-gatehouse_consumerz",
            "accept",
        ];
        let mut h = HeaderMap::new();
        for n in sent {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_static("admin"),
            );
        }
        ids.remove_from(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["accept", "x-gatehouse_consumerz", "x-user", "x-user-idx"]
        );
        // Nothing to remove: the map is left as it was.
        let before = h.clone();
        ids.remove_from(&mut h);
        assert_eq!(h, before);
    }
}
