//! API-key authentication: the key from a header (default `x-api-key`) or a query parameter,
//! hashed with SHA-256 and looked up among the consumers' digests (the config never holds a
//! key, only its digest), confirmed with a constant-time comparison. 401 when missing, 403 when
//! unknown. The key is removed before the request goes upstream unless `forward: true`, and it
//! never reaches the access log (which logs the path without the query).

use crate::error::ProxyError;
use gatehouse_config::traffic::{ApiKeyAuth as Config, Consumer};
use http::{HeaderName, Uri};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct ApiKeyAuth {
    header: HeaderName,
    query: Option<String>,
    forward: bool,
    /// digest → consumer name
    digests: HashMap<[u8; 32], Arc<str>>,
}

/// `sha256:<hex>` for a key, as `gatehouse hash-key` prints and the config stores.
pub fn digest_string(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

impl ApiKeyAuth {
    /// Builds the filter; a header name or digest that cannot be used is an error (the
    /// snapshot then fails to build: an auth filter never silently vanishes or weakens).
    pub fn new(cfg: &Config, consumers: &[Consumer]) -> Result<Self, String> {
        let mut digests = HashMap::new();
        for c in consumers {
            for k in &c.api_keys {
                let mut d = [0u8; 32];
                let h = k.strip_prefix("sha256:").ok_or_else(|| {
                    format!("consumer {:?}: an api key is not sha256:<hex>", c.name)
                })?;
                hex::decode_to_slice(h, &mut d).map_err(|_| {
                    format!("consumer {:?}: an api key is not sha256:<hex>", c.name)
                })?;
                digests.insert(d, Arc::from(c.name.as_str()));
            }
        }
        Ok(ApiKeyAuth {
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|_| format!("invalid header name {:?}", cfg.header))?,
            query: cfg.query.clone(),
            forward: cfg.forward,
            digests,
        })
    }

    /// The consumer for this request, removing the credential unless forwarding it.
    pub fn authenticate(&self, parts: &mut http::request::Parts) -> Result<Arc<str>, ProxyError> {
        let mut values = parts.headers.get_all(&self.header).iter();
        let from_header = values.next().map(|v| v.as_bytes().to_vec());
        if values.next().is_some() {
            // Two keys: one would be checked and a backend might read the other.
            return Err(ProxyError::Unauthorized("ambiguous_credentials"));
        }
        let key = match from_header {
            Some(k) => Some(k),
            None => self.query.as_ref().and_then(|q| query_param(&parts.uri, q)),
        };
        let Some(key) = key else {
            return Err(ProxyError::Unauthorized("missing_api_key"));
        };
        let d: [u8; 32] = Sha256::digest(&key).into();
        let consumer = match self.digests.get_key_value(&d) {
            Some((stored, c)) if bool::from(stored.ct_eq(&d)) => c.clone(),
            _ => return Err(ProxyError::Forbidden("invalid_api_key")),
        };
        if !self.forward {
            parts.headers.remove(&self.header);
            if let Some(q) = &self.query {
                parts.uri = without_query_param(&parts.uri, q);
            }
        }
        Ok(consumer)
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<Vec<u8>> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` (and `+` as a space) in a query value.
pub fn percent_decode(v: &str) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

fn without_query_param(uri: &Uri, name: &str) -> Uri {
    let Some(q) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_query_handling() {
        assert_eq!(
            digest_string("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let uri: Uri = "/p?a=1&api_key=s%33cret&b=2".parse().unwrap();
        assert_eq!(query_param(&uri, "api_key"), Some(b"s3cret".to_vec()));
        assert_eq!(without_query_param(&uri, "api_key"), "/p?a=1&b=2");
        let only: Uri = "/p?api_key=x".parse().unwrap();
        assert_eq!(without_query_param(&only, "api_key"), "/p");
    }
}
