//! The cache filter on the request path. Before the backend: look the request up (a fresh
//! entry is the answer; a stale one within `stale-while-revalidate` is the answer while a
//! background try revalidates it), join or lead the key's coalesced fetch, and turn the
//! request into a revalidation when a stale entry has validators. After: store what RFC 9111
//! lets a shared cache store (bodies up to `max_entry_bytes`; bigger ones stream through),
//! refresh an entry on a 304, serve a stale entry instead of a backend failure when the
//! response and the filter allow it, and forget a resource an unsafe method changed.
//! Every response of the route says what happened: `Cache-Status` (RFC 9211) and `X-Cache`.

use crate::body::{buffer_up_to, Body, Buffered};
use crate::error::{ProxyError, Source};
use crate::filter::cache::coalesce::{self, Leader, Turn};
use crate::filter::cache::entry::{Entry, Variants};
use crate::filter::cache::{Lookup, RouteCache};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};
use sha2::Digest;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What to do before the backend.
pub enum Before {
    /// Answer with this (from the cache).
    Serve(Response<Body>, Lookup),
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
    /// An unsafe method: forget the resource when it succeeds.
    Invalidate,
    /// Nothing to do but say so.
    Bypass,
}

pub struct Plan {
    cache: Arc<RouteCache>,
    kind: Kind,
    key: String,
    /// The request as the cache sees it: GET of the key's URL, the client's headers with
    /// credentials digested (so nothing secret is stored) and without its conditionals.
    lookup: http::request::Parts,
    /// The client's own `If-None-Match` / `If-Modified-Since`, answered by the cache.
    conditional: (Option<HeaderValue>, Option<HeaderValue>),
    head: bool,
    /// A stale entry for this request: revalidated, or served if the backend fails.
    stale: Option<Arc<Entry>>,
    variants: Option<Arc<Variants>>,
    _leader: Option<Leader>,
}

const SECRET_HEADERS: [HeaderName; 2] = [header::AUTHORIZATION, header::COOKIE];

/// Looks the request up. `parts` is the request about to go upstream (its conditionals are
/// replaced by the cache's own); `had_authorization`: the client sent credentials in
/// `Authorization` that an auth filter removed (RFC 9111 §3.5 still applies).
pub async fn before(
    cache: &Arc<RouteCache>,
    parts: &mut http::request::Parts,
    (scheme, host): (&str, &str),
    consumer: Option<&str>,
    had_authorization: bool,
) -> Before {
    let key = cache.key((scheme, host), &parts.uri, &parts.headers, consumer);
    let kind = match parts.method {
        Method::GET if !parts.headers.contains_key(header::RANGE) => Kind::Fill,
        Method::GET | Method::HEAD => Kind::Pass,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH => Kind::Invalidate,
        _ => Kind::Bypass,
    };
    let url = key.split('#').next().unwrap_or(&key);
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Before::Forward(Box::new(plan(
            cache,
            (Kind::Bypass, key),
            (None, host),
            parts,
            had_authorization,
        )));
    };
    let conditional = (
        parts.headers.get(header::IF_NONE_MATCH).cloned(),
        parts.headers.get(header::IF_MODIFIED_SINCE).cloned(),
    );
    let mut p = plan(
        cache,
        (kind, key),
        (Some(uri), host),
        parts,
        had_authorization,
    );
    p.conditional = conditional;
    if matches!(p.kind, Kind::Invalidate | Kind::Bypass) {
        return Before::Forward(Box::new(p));
    }
    let now = SystemTime::now();
    p.variants = cache.get(&p.key).await;
    match fresh(&p, now) {
        Some(r) => return Before::Serve(r, Lookup::Hit),
        None => p.stale = stale_match(&p, now),
    }
    // Within stale-while-revalidate: the stale entry now, a revalidation in the background
    // (one per key: whoever finds one running just gets the stale entry).
    if let Some(e) = p.stale.clone() {
        let no_cache = request_no_cache(&p.lookup.headers);
        if !e.no_stale && !no_cache && e.staleness(now) <= e.swr && matches!(p.kind, Kind::Fill) {
            if let Some(r) = respond_stale(&p, &e, now, "stale-while-revalidate", None) {
                match cache.coalescer.join(&p.key) {
                    Turn::Lead(l) => {
                        p._leader = Some(l);
                        revalidation_headers(&mut p, parts);
                        return Before::Background(r, Box::new(p));
                    }
                    Turn::Follow(_) => return Before::Serve(r, Lookup::Stale),
                }
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
    revalidation_headers(&mut p, parts);
    Before::Forward(Box::new(p))
}

fn plan(
    cache: &Arc<RouteCache>,
    (kind, key): (Kind, String),
    (uri, host): (Option<http::Uri>, &str),
    parts: &http::request::Parts,
    had_authorization: bool,
) -> Plan {
    let mut headers = parts.headers.clone();
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        headers.remove(h);
    }
    if had_authorization && !headers.contains_key(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("removed"));
    }
    for h in SECRET_HEADERS {
        let joined: Vec<u8> = headers
            .get_all(&h)
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain([0]))
            .collect();
        if !joined.is_empty() {
            let digest = hex::encode(&sha2::Sha256::digest(&joined)[..16]);
            if let Ok(v) = HeaderValue::from_str(&format!("sha256-{digest}")) {
                headers.insert(&h, v);
            }
        }
    }
    let mut lookup = http::Request::get(uri.unwrap_or_default())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
    match HeaderValue::from_str(host) {
        Ok(h) => {
            headers.insert(header::HOST, h);
        }
        Err(_) => {
            headers.remove(header::HOST);
        }
    }
    lookup.headers = headers;
    Plan {
        cache: cache.clone(),
        kind,
        key,
        lookup,
        conditional: (None, None),
        head: parts.method == Method::HEAD,
        stale: None,
        variants: None,
        _leader: None,
    }
}

fn request_no_cache(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-cache"))
        || h.get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// A fresh variant for the request, as a response.
fn fresh(p: &Plan, now: SystemTime) -> Option<Response<Body>> {
    for e in p.variants.iter().flat_map(|v| v.0.iter()) {
        if let BeforeRequest::Fresh(head) = e.policy.before_request(&p.lookup, now) {
            let ttl = e.fresh_until.duration_since(now).unwrap_or_default();
            let status = format!("gatehouse; hit; ttl={}", ttl.as_secs());
            return Some(respond(p, head, e.body.clone(), &status, Lookup::Hit));
        }
    }
    None
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

/// Sends the stale entry's validators (RFC 9111 §4.3.1) instead of the client's conditionals,
/// which the cache answers itself; without an entry, none: a full response fills the cache.
fn revalidation_headers(p: &mut Plan, parts: &mut http::request::Parts) {
    // HEAD and Range requests go as sent (a Range without its If-Range would be answered
    // with a part of something else).
    if !matches!(p.kind, Kind::Fill) {
        return;
    }
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        parts.headers.remove(h);
    }
    let Some(e) = &p.stale else { return };
    if let BeforeRequest::Stale { request, .. } = e.policy.before_request(
        &p.lookup,
        SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into()),
    ) {
        for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(v) = request.headers.get(&h) {
                parts.headers.insert(h, v.clone());
            }
        }
    }
}

/// `e` as a stale response, if the response allows it at `now` (`detail` says why it is
/// served; `fwd` is the failed backend's status).
fn respond_stale(
    p: &Plan,
    e: &Entry,
    now: SystemTime,
    detail: &str,
    fwd: Option<u16>,
) -> Option<Response<Body>> {
    let head = head_now(&e.policy, &p.lookup, now)?;
    let ttl = e.staleness(now).as_secs();
    let status = match fwd {
        Some(s) => format!("gatehouse; fwd=stale; fwd-status={s}; ttl=-{ttl}; detail={detail}"),
        None => format!("gatehouse; hit; ttl=-{ttl}; detail={detail}"),
    };
    Some(respond(p, head, e.body.clone(), &status, Lookup::Stale))
}

/// A response from the cache: the client's conditional answered (304), HEAD without a body.
fn respond(
    p: &Plan,
    mut head: http::response::Parts,
    body: bytes::Bytes,
    cache_status: &str,
    lookup: Lookup,
) -> Response<Body> {
    mark(&mut head.headers, cache_status, lookup);
    if head.status == StatusCode::OK && not_modified(&p.conditional, &head.headers) {
        head.status = StatusCode::NOT_MODIFIED;
        head.headers.retain_304();
        return Response::from_parts(head, Body::empty());
    }
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if p.head {
        Body::empty()
    } else {
        Body::full(body)
    };
    Response::from_parts(head, body)
}

fn mark(h: &mut HeaderMap, cache_status: &str, lookup: Lookup) {
    if let Ok(v) = HeaderValue::from_str(cache_status) {
        h.insert(CACHE_STATUS, v);
    }
    h.insert(X_CACHE, HeaderValue::from_static(lookup.x_cache()));
}

/// The headers a 304 keeps (RFC 9110 §15.4.5), on a map.
trait Retain304 {
    fn retain_304(&mut self);
}

impl Retain304 for HeaderMap {
    fn retain_304(&mut self) {
        const KEEP: [&str; 10] = [
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "vary",
            "age",
            "last-modified",
            "cache-status",
            "x-cache",
        ];
        let drop: Vec<HeaderName> = self
            .keys()
            .filter(|k| !KEEP.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in drop {
            self.remove(k);
        }
    }
}

/// Whether the client's conditional matches the response (RFC 9110 §13.1.2, §13.1.3):
/// `If-None-Match` by weak comparison, else `If-Modified-Since` against `Last-Modified`.
fn not_modified((inm, ims): &(Option<HeaderValue>, Option<HeaderValue>), h: &HeaderMap) -> bool {
    if let Some(inm) = inm.as_ref().and_then(|v| v.to_str().ok()) {
        let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    let (Some(ims), Some(lm)) = (
        ims.as_ref().and_then(|v| v.to_str().ok()),
        h.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    match (
        httpdate::parse_http_date(ims),
        httpdate::parse_http_date(lm),
    ) {
        (Ok(ims), Ok(lm)) => lm <= ims,
        _ => false,
    }
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
        Kind::Bypass | Kind::Invalidate => {
            if matches!(p.kind, Kind::Invalidate) {
                if let Ok(r) = &result {
                    if r.status().as_u16() < 400 {
                        p.cache.remove(&p.key).await;
                    }
                }
            }
            let result = result.map(|mut r| {
                mark(r.headers_mut(), "gatehouse; fwd=bypass", Lookup::Bypass);
                r
            });
            return (result, Lookup::Bypass);
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
        let window = e.sie.max(p.cache.cfg.serve_stale_on_error.0);
        if !e.no_stale && e.staleness(now) <= window {
            if let Some(r) = respond_stale(&p, e, now, "stale-if-error", Some(status)) {
                return (Ok(r), Lookup::Stale);
            }
        }
    }
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return (Err(e), Lookup::Miss);
        }
    };
    // A 304 to the cache's own validators: the entry is good again.
    if resp.status() == StatusCode::NOT_MODIFIED && matches!(p.kind, Kind::Fill) {
        if let Some(e) = p.stale.clone() {
            let (head, _) = resp.into_parts();
            return revalidated(p, &e, head, now).await;
        }
    }
    // A HEAD or Range request, or a 304 the cache did not ask for: passed on.
    if matches!(p.kind, Kind::Pass) || resp.status() == StatusCode::NOT_MODIFIED {
        return (Ok(marked(resp, "gatehouse; fwd=miss")), Lookup::Miss);
    }
    fill(p, resp, now).await
}

fn marked(mut r: Response<Body>, status: &str) -> Response<Body> {
    mark(r.headers_mut(), status, Lookup::Miss);
    r
}

async fn revalidated(
    p: Plan,
    e: &Entry,
    head: http::response::Parts,
    now: SystemTime,
) -> (Result<Response<Body>, ProxyError>, Lookup) {
    let policy = match e.policy.after_response(&p.lookup, &head, now) {
        AfterResponse::NotModified(policy, _) => policy,
        // A 304 that matches none of the stored validators: nothing to serve it with.
        AfterResponse::Modified(..) => {
            let r = Response::from_parts(head, Body::empty());
            return (
                Ok(marked(r, "gatehouse; fwd=stale; fwd-status=304")),
                Lookup::Miss,
            );
        }
    };
    let ttl = policy.time_to_live(now);
    let Some(fresh_head) = head_now(&policy, &p.lookup, now) else {
        // A head the policy will not give back (must-revalidate, already stale): the 304's
        // own headers over the stored body, stored nothing.
        let mut head = head;
        head.status = StatusCode::OK;
        let r = respond(
            &p,
            head,
            e.body.clone(),
            "gatehouse; fwd=stale; fwd-status=304",
            Lookup::Revalidated,
        );
        return (Ok(r), Lookup::Revalidated);
    };
    store_entry(&p, policy, &fresh_head.headers, e.body.clone(), (now, ttl)).await;
    let status = format!(
        "gatehouse; fwd=stale; fwd-status=304; stored; ttl={}",
        ttl.as_secs()
    );
    let r = respond(&p, fresh_head, e.body.clone(), &status, Lookup::Revalidated);
    (Ok(r), Lookup::Revalidated)
}

/// The stored head as of `now` (with `Age`), fresh or not; `None` when the response forbids
/// using it stale at all (`must-revalidate`).
fn head_now(
    policy: &CachePolicy,
    lookup: &http::request::Parts,
    now: SystemTime,
) -> Option<http::response::Parts> {
    if let BeforeRequest::Fresh(h) = policy.before_request(lookup, now) {
        return Some(h);
    }
    // Asked as a client that takes any staleness.
    let mut ask = lookup.clone();
    ask.headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-stale"));
    ask.headers.remove(header::PRAGMA);
    match policy.before_request(&ask, now) {
        BeforeRequest::Fresh(h) => Some(h),
        BeforeRequest::Stale { .. } => None,
    }
}

/// A full response to a GET: stored when RFC 9111 allows, the body is small enough and it
/// carries no `Set-Cookie` (one client's cookie must never reach another).
async fn fill(
    p: Plan,
    resp: Response<Body>,
    now: SystemTime,
) -> (Result<Response<Body>, ProxyError>, Lookup) {
    let (head, body) = resp.into_parts();
    let policy = CachePolicy::new_options(
        &stored_request(&p, &head.headers),
        &head,
        now,
        Default::default(),
    );
    let ttl = policy.time_to_live(now);
    let max = p.cache.cfg.max_entry_bytes.0;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let useful = !ttl.is_zero()
        || head.headers.contains_key(header::ETAG)
        || head.headers.contains_key(header::LAST_MODIFIED);
    let storable = policy.is_storable()
        && useful
        && !head.headers.contains_key(header::SET_COOKIE)
        && declared.is_none_or(|n| n <= max);
    if !storable {
        let r = Response::from_parts(head, body);
        return (Ok(marked(r, "gatehouse; fwd=miss")), Lookup::Miss);
    }
    match buffer_up_to(body, max).await {
        Ok(Buffered::Whole(bytes)) => {
            store_entry(&p, policy, &head.headers, bytes.clone(), (now, ttl)).await;
            let status = format!("gatehouse; fwd=miss; stored; ttl={}", ttl.as_secs());
            let mut head = head;
            mark(&mut head.headers, &status, Lookup::Miss);
            if head.status == StatusCode::OK && not_modified(&p.conditional, &head.headers) {
                head.status = StatusCode::NOT_MODIFIED;
                head.headers.retain_304();
                return (Ok(Response::from_parts(head, Body::empty())), Lookup::Miss);
            }
            (
                Ok(Response::from_parts(head, Body::full(bytes))),
                Lookup::Miss,
            )
        }
        // Bigger than an entry may be: streamed on, what was read first included.
        Ok(Buffered::Partial(rest)) => {
            let r = Response::from_parts(head, rest);
            (
                Ok(marked(r, "gatehouse; fwd=miss; detail=too-large")),
                Lookup::Miss,
            )
        }
        Err(_) => (Err(ProxyError::UpstreamReset), Lookup::Miss),
    }
}

/// The request a stored policy keeps: only what RFC 9111 needs to match and judge it (host,
/// request `Cache-Control`, `Authorization`'s presence, the headers the response varies on),
/// never the rest of the client's headers.
fn stored_request(p: &Plan, response: &HeaderMap) -> http::request::Parts {
    let mut keep = vec![
        header::HOST,
        header::CACHE_CONTROL,
        header::PRAGMA,
        header::AUTHORIZATION,
    ];
    for v in response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for name in v.split(',') {
            if let Ok(n) = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
                keep.push(n);
            }
        }
    }
    let mut req = p.lookup.clone();
    req.headers.retain_names(&keep);
    req
}

trait RetainNames {
    fn retain_names(&mut self, keep: &[HeaderName]);
}

impl RetainNames for HeaderMap {
    fn retain_names(&mut self, keep: &[HeaderName]) {
        let drop: Vec<HeaderName> = self.keys().filter(|k| !keep.contains(k)).cloned().collect();
        for k in drop {
            self.remove(k);
        }
    }
}

async fn store_entry(
    p: &Plan,
    policy: CachePolicy,
    response: &HeaderMap,
    body: bytes::Bytes,
    (now, ttl): (SystemTime, Duration),
) {
    let entry = Arc::new(Entry::new(
        policy,
        response,
        body,
        p.cache.route.clone(),
        (now, ttl),
        p.cache.cfg.serve_stale_on_error.0,
    ));
    // Replaces the variant this one updates: the same values of the headers it varies on.
    let same = |e: &Entry| {
        matches!(
            e.policy.before_request(&p.lookup, now),
            BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
        )
    };
    let current = p.variants.as_deref().cloned().unwrap_or_default();
    p.cache
        .put(p.key.clone(), current.with(entry, same, now))
        .await;
}
