//! The canonical request, made once before routing: framing checked, one valid host, the path
//! normalized, header names with `_` handled, and the client's address resolved. Everything
//! after — routes, filters, limits, hashing, logs and the request the backend receives — sees
//! only this form, so none of them can disagree about what the request is.
//!
//! The normalized path is written back into the request's URI (origin-form), so there is one
//! path in the request from here on; the host and client are returned.

pub mod client;
use crate::framing;
pub mod host;
pub mod path;

use crate::error::ProxyError;
use gatehouse_config::edge::{PathNormalization, UnderscoreHeaders};
use http::{HeaderName, HeaderValue, Request, Uri, Version};
use std::net::IpAddr;

/// What a listener decides about requests before routing.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    pub path: PathNormalization,
    pub underscores: UnderscoreHeaders,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl EdgeSettings {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// The parts of the canonical request that are not in the request itself.
#[derive(Debug)]
pub struct Canonical {
    /// Lower-case `host[:port]`, `""` for an HTTP/1.0 request without one.
    pub host: host::Host,
    pub client: client::Client,
    /// With `path_parameters: segment`, the path without `;` parameters that routes match on.
    pub match_path: Option<String>,
}

fn invalid(reason: &'static str, detail: &'static str) -> ProxyError {
    ProxyError::Invalid { reason, detail }
}

/// Makes `req` canonical in place, or refuses it with the local reply to send.
pub fn canonicalize<B>(
    req: &mut Request<B>,
    edge: &EdgeSettings,
    (peer, peer_value): (IpAddr, &HeaderValue),
) -> Result<Canonical, ProxyError> {
    if req.version() <= Version::HTTP_11 {
        framing::check_transfer_encoding(req.headers()).map_err(|e| match e {
            framing::FramingError::UnknownCoding => ProxyError::NotImplemented {
                reason: "unsupported_transfer_coding",
                detail: e.detail(),
            },
            framing::FramingError::BadList => invalid("bad_framing", e.detail()),
        })?;
    }
    let host = host::canonical_host(req.version(), req.uri(), req.headers())
        .map_err(|e| invalid("invalid_host", e.detail()))?;
    let normalized = path::normalize(req.uri().path(), &edge.path)
        .map_err(|e| invalid("invalid_path", e.detail()))?;
    let redirect = normalized.redirect || (edge.path.redirect && normalized.changed());
    let new_path = normalized.changed().then(|| normalized.path.into_owned());
    if redirect {
        let path = new_path.as_deref().unwrap_or(req.uri().path());
        // `//evil.example` in a Location is another host (a protocol-relative URL): never
        // redirect there, whatever the slashes settings allow.
        if path.starts_with("//") {
            return Err(invalid(
                "invalid_path",
                "the normal form of this path starts with '//' and cannot be redirected to",
            ));
        }
        let location = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let location = HeaderValue::from_str(&location)
            .map_err(|_| invalid("invalid_path", "the path cannot be redirected"))?;
        return Err(ProxyError::Redirect { location });
    }
    if new_path.is_some() || req.uri().authority().is_some() {
        // One path (origin-form) from here on; the host travels separately.
        let path = new_path.as_deref().unwrap_or(req.uri().path());
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        *req.uri_mut() = Uri::try_from(pq)
            .map_err(|_| invalid("invalid_path", "the normalized path is not a valid URI"))?;
    }
    underscores(req.headers_mut(), edge.underscores)?;
    let client = client::resolve(peer, peer_value, |ip| edge.trusts(ip), req.headers());
    let match_path = path::without_parameters(req.uri().path(), &edge.path);
    Ok(Canonical {
        host,
        client,
        match_path,
    })
}

/// Header names containing `_`: backends that fold `_` into `-` (CGI, many frameworks) would
/// otherwise read `X_Forwarded_For` as a header the gateway vouches for.
fn underscores(h: &mut http::HeaderMap, action: UnderscoreHeaders) -> Result<(), ProxyError> {
    if action == UnderscoreHeaders::Allow || !h.keys().any(|k| k.as_str().contains('_')) {
        return Ok(());
    }
    if action == UnderscoreHeaders::Reject {
        return Err(invalid(
            "invalid_header",
            "a header name contains '_' (headers_with_underscores: reject)",
        ));
    }
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
    Ok(())
}
