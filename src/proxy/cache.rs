//! The cache filter on the request path. Before the backend: look the request up (a fresh
//! entry is the answer; a stale one within `stale-while-revalidate` is the answer while a
//! background try revalidates it), join or lead the key's coalesced fetch, and turn the
//! request into a revalidation when a stale entry has validators. After: store what RFC 9111
//! lets a shared cache store (bodies up to `max_entry_bytes`; bigger ones stream through),
//! update an entry on a 304, serve a stale entry instead of a backend failure when the
//! response and the filter allow it, and forget a resource an unsafe method changed.
//! Decisions are `http-cache-semantics`' over normalized heads (`filter::cache::normalize`);
//! responses are built from the stored head (`respond`).

pub mod respond;
mod store;

use crate::body::Body;
use crate::error::{ProxyError, Source};
use crate::filter::cache::coalesce::{self, Leader, Turn};
use crate::filter::cache::entry::{Entry, Variants};
use crate::filter::cache::{normalize, Lookup, RouteCache};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_cache_semantics::{BeforeRequest, CacheOptions};
use respond::{mark, respond, Answer, Client};
use sha2::Digest;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use respond::{CACHE_STATUS, X_CACHE};

/// What to do before the backend.
pub enum Before {
    /// Answer with this (from the cache).
    Serve(Response<Body>, Lookup),
    /// Answer with this error (`only-if-cached` and nothing fresh).
    Fail(ProxyError),
    /// Forward the request; then [`finish`] with the plan.
    Forward(Box<Plan>),
    /// Answer with this stale response now, and send the request in the background; then
    /// [`finish`] with the plan (which stores the revalidated entry).
    Background(Response<Body>, Box<Plan>),
}

enum Kind {
    /// A GET: store what comes back.
    Fill,
    /// A HEAD or a Range request: answered from a fresh entry, else forwarded as sent with
    /// nothing stored (a HEAD response has no body, a 206 only part of one).
    Pass,
    /// A method that is not safe (or whose safety is unknown): forget the resource when it
    /// succeeds (RFC 9111 §4.4).
    Invalidate,
    /// OPTIONS, TRACE: safe, never cached.
    Bypass,
}

pub struct Plan {
    pub(super) cache: Arc<RouteCache>,
    kind: Kind,
    pub(super) key: String,
    /// Scheme and host, for keys of `Location` / `Content-Location`.
    origin: (&'static str, String),
    consumer: Option<String>,
    /// The request as the cache decides on it: GET of the key's URL, the client's headers
    /// normalized, credentials digested (so nothing secret is stored), conditionals removed.
    lookup: http::request::Parts,
    client: Client,
    /// A stale entry for this request: revalidated, or served if the backend fails.
    stale: Option<Arc<Entry>>,
    variants: Option<Arc<Variants>>,
    _leader: Option<Leader>,
}

/// RFC 9111 as a shared cache; `immutable` is no reason to ignore an `Expires` in the past.
pub(crate) fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        immutable_min_time_to_live: Duration::ZERO,
        ..CacheOptions::default()
    }
}

const CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Looks the request up. `parts` is the request about to go upstream (for a GET, the cache's
/// own validators replace the client's conditionals); `had_authorization`: the client sent
/// `Authorization` that an auth filter removed (RFC 9111 §3.5 still applies).
pub async fn before(
    cache: &Arc<RouteCache>,
    parts: &mut http::request::Parts,
    (scheme, host): (&'static str, &str),
    consumer: Option<&str>,
    had_authorization: bool,
) -> Before {
    let key = cache.key((scheme, host), &parts.uri, &parts.headers, consumer);
    let kind = match parts.method {
        Method::GET if !parts.headers.contains_key(header::RANGE) => Kind::Fill,
        Method::GET | Method::HEAD => Kind::Pass,
        Method::OPTIONS | Method::TRACE => Kind::Bypass,
        _ => Kind::Invalidate,
    };
    let url = key.split('#').next().unwrap_or(&key).to_string();
    let mut p = Plan {
        cache: cache.clone(),
        kind,
        key,
        origin: (scheme, host.to_string()),
        consumer: consumer.map(str::to_string),
        lookup: lookup_request(&url, host, parts, had_authorization),
        client: Client {
            if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned(),
            if_modified_since: parts.headers.get(header::IF_MODIFIED_SINCE).cloned(),
            head: parts.method == Method::HEAD,
        },
        stale: None,
        variants: None,
        _leader: None,
    };
    if matches!(p.kind, Kind::Invalidate | Kind::Bypass) || url.parse::<http::Uri>().is_err() {
        p.kind = if matches!(p.kind, Kind::Invalidate) {
            Kind::Invalidate
        } else {
            Kind::Bypass
        };
        return Before::Forward(Box::new(p));
    }
    let now = SystemTime::now();
    p.variants = cache.get(&p.key).await;
    if let Some(r) = fresh(&p, now) {
        return Before::Serve(r, Lookup::Hit);
    }
    p.stale = stale_match(&p, now);
    if normalize::has(&p.lookup.headers, &["only-if-cached"]) {
        return Before::Fail(ProxyError::NotCached);
    }
    // Stale within stale-while-revalidate (and a client that did not ask for something
    // fresher): the stale entry now, one revalidation per key in the background.
    if let Some(e) = p.stale.clone().filter(|_| matches!(p.kind, Kind::Fill)) {
        let restricted = normalize::has(&p.lookup.headers, &["no-cache", "max-age", "min-fresh"]);
        if !e.no_stale
            && !restricted
            && !e.swr.is_zero()
            && e.policy.is_stale(now)
            && e.staleness(now) <= e.swr
        {
            let r = stale_response(&p, &e, now, "stale-while-revalidate", None);
            match cache.coalescer.join(&p.key) {
                Turn::Lead(l) => {
                    p._leader = Some(l);
                    revalidation_headers(&p, parts);
                    return Before::Background(r, Box::new(p));
                }
                Turn::Follow(_) => return Before::Serve(r, Lookup::Stale),
            }
        }
    }
    if matches!(p.kind, Kind::Fill) {
        match cache.coalescer.join(&p.key) {
            Turn::Lead(l) => p._leader = Some(l),
            Turn::Follow(rx) => {
                coalesce::wait(rx, cache.cfg.coalesce_timeout.0).await;
                let now = SystemTime::now();
                p.variants = cache.get(&p.key).await;
                if let Some(r) = fresh(&p, now) {
                    return Before::Serve(r, Lookup::Hit);
                }
                p.stale = stale_match(&p, now);
            }
        }
    }
    revalidation_headers(&p, parts);
    Before::Forward(Box::new(p))
}

/// The request the cache decides on (see [`Plan::lookup`]).
fn lookup_request(
    url: &str,
    host: &str,
    parts: &http::request::Parts,
    had_authorization: bool,
) -> http::request::Parts {
    let mut headers = normalize::request(&parts.headers);
    for h in CONDITIONALS {
        headers.remove(h);
    }
    if had_authorization && !headers.contains_key(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("removed"));
    }
    for h in [header::AUTHORIZATION, header::COOKIE] {
        if let Some(v) = headers.get(&h) {
            let digest = hex::encode(&sha2::Sha256::digest(v.as_bytes())[..16]);
            if let Ok(v) = HeaderValue::from_str(&format!("sha256-{digest}")) {
                headers.insert(&h, v);
            }
        }
    }
    match HeaderValue::from_str(host) {
        Ok(h) => {
            headers.insert(header::HOST, h);
        }
        Err(_) => {
            headers.remove(header::HOST);
        }
    }
    let mut lookup = http::Request::get(url.parse::<http::Uri>().unwrap_or_default())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
    lookup.headers = headers;
    lookup
}

/// A fresh variant for the request, as a response.
fn fresh(p: &Plan, now: SystemTime) -> Option<Response<Body>> {
    for e in p.variants.iter().flat_map(|v| v.0.iter()) {
        if let BeforeRequest::Fresh(_) = e.policy.before_request(&p.lookup, now) {
            let status = format!(
                "gatehouse; hit; ttl={}",
                e.policy.time_to_live(now).as_secs()
            );
            return Some(answer(p, e, now, &status, Lookup::Hit));
        }
    }
    None
}

fn answer(
    p: &Plan,
    e: &Entry,
    now: SystemTime,
    cache_status: &str,
    lookup: Lookup,
) -> Response<Body> {
    respond(
        &p.client,
        Answer {
            status: e.status,
            head: &e.head,
            body: &e.body,
            age: e.policy.age(now).as_secs(),
            cache_status,
            lookup,
        },
    )
}

/// The newest variant the request matches (its `Vary` values), fresh or not.
fn stale_match(p: &Plan, now: SystemTime) -> Option<Arc<Entry>> {
    p.variants.iter().flat_map(|v| v.0.iter()).find_map(|e| {
        match e.policy.before_request(&p.lookup, now) {
            BeforeRequest::Stale { matches: true, .. } | BeforeRequest::Fresh(_) => Some(e.clone()),
            _ => None,
        }
    })
}

/// A GET goes with the stale entry's validators (RFC 9111 §4.3.1) instead of the client's
/// conditionals, which the cache answers itself; without an entry, with none, so that a full
/// response fills the cache. HEAD and Range requests go as sent (a Range without its
/// If-Range would be answered with a part of something else).
fn revalidation_headers(p: &Plan, parts: &mut http::request::Parts) {
    if !matches!(p.kind, Kind::Fill) {
        return;
    }
    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        parts.headers.remove(h);
    }
    let Some(e) = &p.stale else { return };
    if let Some(etag) = e.head.get(header::ETAG) {
        parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = e.head.get(header::LAST_MODIFIED) {
        parts.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

/// `e` served stale: `detail` says why; `fwd` is the failed backend's status.
fn stale_response(
    p: &Plan,
    e: &Entry,
    now: SystemTime,
    detail: &str,
    fwd: Option<u16>,
) -> Response<Body> {
    // Rounded up: a stale entry is at least a second past fresh in the header.
    let ttl = e.staleness(now).as_millis().div_ceil(1000).max(1);
    let status = match fwd {
        Some(s) => format!("gatehouse; fwd=stale; fwd-status={s}; ttl=-{ttl}; detail={detail}"),
        None => format!("gatehouse; hit; ttl=-{ttl}; detail={detail}"),
    };
    answer(p, e, now, &status, Lookup::Stale)
}

/// Whether `e` may stand in for a failed backend now: `stale-if-error` or the filter's
/// `serve_stale_on_error`, unless the response forbids stale use.
fn stale_allowed(p: &Plan, e: &Entry, now: SystemTime) -> bool {
    let window = e.sie.max(p.cache.cfg.serve_stale_on_error.0);
    !e.no_stale && e.staleness(now) <= window
}

/// Whether a failure lets a stale entry be served (the backend's or the cluster's, never the
/// client's).
fn backend_failed(e: &ProxyError) -> bool {
    e.source() == Source::Upstream
        || matches!(
            e,
            ProxyError::NoEligibleEndpoint { .. } | ProxyError::ClusterOverloaded
        )
}

/// After the backend: stores, refreshes, serves stale or invalidates as the plan says.
pub async fn finish(
    p: Box<Plan>,
    result: Result<Response<Body>, ProxyError>,
) -> (Result<Response<Body>, ProxyError>, Lookup) {
    let p = *p;
    let now = SystemTime::now();
    match p.kind {
        Kind::Invalidate => {
            if let Ok(r) = &result {
                if r.status().as_u16() < 400 {
                    invalidate(&p, r.headers()).await;
                }
            }
            return (
                marked(result, "gatehouse; fwd=method", Lookup::Bypass),
                Lookup::Bypass,
            );
        }
        Kind::Bypass => {
            return (
                marked(result, "gatehouse; fwd=bypass", Lookup::Bypass),
                Lookup::Bypass,
            );
        }
        Kind::Fill | Kind::Pass => {}
    }
    // The backend failed: a stale entry, if it and the filter allow.
    let failed = match &result {
        Err(e) if backend_failed(e) => Some(e.status().as_u16()),
        Ok(r) if r.status().is_server_error() => Some(r.status().as_u16()),
        _ => None,
    };
    if let (Some(status), Some(e)) = (failed, &p.stale) {
        if stale_allowed(&p, e, now) {
            let r = stale_response(&p, e, now, "stale-if-error", Some(status));
            return (Ok(r), Lookup::Stale);
        }
    }
    let resp = match result {
        Ok(r) => r,
        Err(e) => return (Err(e), Lookup::Miss),
    };
    // A 304 to the cache's own validators: the entry is good again.
    if resp.status() == StatusCode::NOT_MODIFIED && matches!(p.kind, Kind::Fill) {
        if let Some(e) = p.stale.clone() {
            let (head, _) = resp.into_parts();
            return store::revalidated(p, &e, head, now).await;
        }
    }
    // A HEAD or Range request, or a 304 the cache did not ask for: passed on.
    if matches!(p.kind, Kind::Pass) || resp.status() == StatusCode::NOT_MODIFIED {
        return (
            marked(Ok(resp), "gatehouse; fwd=miss", Lookup::Miss),
            Lookup::Miss,
        );
    }
    store::fill(p, resp, now).await
}

fn marked(
    r: Result<Response<Body>, ProxyError>,
    status: &str,
    lookup: Lookup,
) -> Result<Response<Body>, ProxyError> {
    r.map(|mut r| {
        mark(r.headers_mut(), status, lookup);
        r
    })
}

/// Forgets the target URI, and the same-origin URIs in `Location` and `Content-Location`
/// (RFC 9111 §4.4).
async fn invalidate(p: &Plan, response: &HeaderMap) {
    p.cache.remove(&p.key).await;
    let (scheme, host) = (p.origin.0, p.origin.1.as_str());
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(uri) = response
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<http::Uri>().ok())
        else {
            continue;
        };
        let same_origin = match (uri.scheme_str(), uri.authority()) {
            (None, None) => uri.path().starts_with('/'),
            (Some(s), Some(a)) => {
                s.eq_ignore_ascii_case(scheme) && a.as_str().eq_ignore_ascii_case(host)
            }
            _ => false,
        };
        if same_origin {
            let key = p.cache.key(
                (scheme, host),
                &uri,
                &p.lookup.headers,
                p.consumer.as_deref(),
            );
            p.cache.remove(&key).await;
        }
    }
}
