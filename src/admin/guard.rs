//! What the admin listener trusts, checked on every request before any handler runs:
//!
//! - **Host** must name this listener: `localhost`, an IP literal, or a name in
//!   `admin.allowed_hosts`, with the listener's port. A DNS name an attacker controls (DNS
//!   rebinding: a page on `evil.example` whose name now resolves to 127.0.0.1) is refused
//!   with 403 (not 421: browsers retry a 421 and then show only a network error), so such a page can neither read nor change anything.
//! - **Cross-site requests** are refused with 403: an `Origin` that is not this listener's own,
//!   or `Sec-Fetch-Site: cross-site` / `same-site` (another port of localhost is same-site).
//!   Tools that send neither (curl, scripts) and the dashboard on the same origin pass.
//! - **Mutations** (`POST`) need `Content-Type: application/json`, which no HTML form or
//!   "simple" cross-origin request can send (415 otherwise), or no `Content-Type` at all from a
//!   client that is not a browser (no `Origin`, no `Sec-Fetch-*`: curl, scripts). A browser
//!   sends `Origin` with every cross-origin POST, so a page cannot pass as such a client.
//! - **The token**, when there is one, on the API routes: wrong tokens are counted
//!   (`gatehouse_admin_auth_failures_total`) and, after 10 from one address within a minute,
//!   every request from it is answered 429 until the minute is over.

use super::AdminState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked for failed tokens; past this the table starts over (bounded memory).
const MAX_TRACKED: usize = 10_000;

/// The names this listener answers to, and the failed-token table.
pub struct Guard {
    port: u16,
    names: Vec<String>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Guard {
    pub fn new(bound: SocketAddr, allowed_hosts: &[String]) -> Self {
        let mut names = vec!["localhost".to_string()];
        names.extend(allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Guard {
            port: bound.port(),
            names,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `host` (a Host header value) names this listener.
    fn host_ok(&self, host: &str) -> bool {
        let Ok(canon) = crate::canonical::host::canonical(host) else {
            return false;
        };
        let (name, port) = split_port(&canon);
        if port.unwrap_or(80) != self.port {
            return false;
        }
        // An IP literal cannot be rebound; a name must be one we were told about. Not the
        // unspecified address: no client reaches a listener by it, but a browser does send
        // requests to `0.0.0.0` without `Sec-Fetch-*` (it is not a "trustworthy" origin to
        // Chromium), and a page could frame the dashboard through it.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => !ip.is_unspecified(),
            Err(_) => self.names.iter().any(|n| n == name),
        }
    }

    /// Whether the request comes from a page on another origin: a `Sec-Fetch-Site` that is not
    /// same-origin/none, or an `Origin` that is not exactly `http://` + the request's own (checked)
    /// `host`. More than one of either header is refused outright.
    fn cross_site(&self, h: &HeaderMap, host: &str) -> bool {
        let mut sites = h.get_all("sec-fetch-site").iter();
        if let Some(site) = sites.next() {
            let site = site.to_str().unwrap_or("");
            let ok = site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
            if !ok || sites.next().is_some() {
                return true;
            }
        }
        let mut origins = h.get_all(header::ORIGIN).iter();
        match (origins.next(), origins.next()) {
            (None, _) => false,
            (Some(_), Some(_)) => true,
            (Some(o), None) => {
                let o = o.to_str().unwrap_or("");
                // `null`, https://, a path, anything that is not this very origin.
                let Some(rest) = o.strip_prefix("http://") else {
                    return true;
                };
                let same = crate::canonical::host::canonical(rest)
                    .ok()
                    .zip(crate::canonical::host::canonical(host).ok())
                    .is_some_and(|(a, b)| a == b);
                !same
            }
        }
    }

    fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now < *since + FAILURE_WINDOW)
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= MAX_TRACKED && !f.contains_key(&ip) {
            f.retain(|_, (_, since)| now < *since + FAILURE_WINDOW);
            if f.len() >= MAX_TRACKED {
                f.clear();
            }
        }
        let e = f.entry(ip).or_insert((0, now));
        if now >= e.1 + FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

fn split_port(h: &str) -> (&str, Option<u16>) {
    if h.starts_with('[') {
        return match h.rsplit_once("]:") {
            Some((n, p)) => (&h[..n.len() + 1], p.parse().ok()),
            None => (h, None),
        };
    }
    match h.rsplit_once(':') {
        Some((n, p)) => (n, p.parse().ok()),
        None => (h, None),
    }
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "status": status.as_u16()})),
    )
        .into_response()
}

/// Host, cross-site and content-type checks for every admin request.
pub async fn check(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next().and_then(|v| v.to_str().ok());
    let authority = req.uri().authority().map(|a| a.as_str());
    // One Host; an absolute-form target or HTTP/2 :authority must name the listener too.
    let named = match (host, authority, hosts.next()) {
        (_, _, Some(_)) => None,
        (Some(h), Some(a), None) => (s.guard.host_ok(a) && s.guard.host_ok(h)).then_some(h),
        (Some(h), None, None) => s.guard.host_ok(h).then_some(h),
        (None, Some(a), None) => s.guard.host_ok(a).then_some(a),
        (None, None, None) => None,
    };
    let Some(host) = named else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this Host does not name the admin listener (see admin.allowed_hosts)",
        );
    };
    if s.guard.cross_site(h, host) {
        return refuse(StatusCode::FORBIDDEN, "cross-site requests are refused");
    }
    if req.method() == Method::POST {
        let json = match h.get(header::CONTENT_TYPE) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json")),
            None => {
                !h.contains_key(header::ORIGIN)
                    && !h.keys().any(|k| k.as_str().starts_with("sec-fetch-"))
            }
        };
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "admin actions take Content-Type: application/json (curl --json '{}' URL)",
            );
        }
    }
    let mut resp = next.run(req).await;
    // No page may frame the dashboard (clickjacking its buttons), and nothing is sniffed into
    // another type.
    let h = resp.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The bearer token (or `?access_token=` on `/events`, which EventSource needs), with failures
/// counted and rate-limited per client address.
pub async fn token(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let now = Instant::now();
    let ip = peer.ip().to_canonical();
    if s.guard.blocked(ip, now) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed admin tokens from this address; wait a minute",
        );
    }
    let from_query = (req.uri().path() == "/events")
        .then(|| req.uri().query())
        .flatten()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
        .map(crate::filter::api_key::percent_decode);
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::filter::jwt::bearer_token)
        .map(|t| t.as_bytes().to_vec());
    let presented = from_header.or(from_query);
    let ok = presented
        .as_ref()
        .is_some_and(|t| subtle::ConstantTimeEq::ct_eq(t.as_slice(), token.as_bytes()).into());
    if !ok {
        // A wrong token is a guess; no token at all (a first visit) is not.
        if presented.is_some() {
            s.guard.failed(ip, now);
            s.runtime.metrics.admin_auth_failures.inc();
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"gatehouse-admin\"")],
            Json(serde_json::json!({"error": "admin token required", "status": 401})),
        )
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let g = Guard::new("127.0.0.1:9901".parse().unwrap(), &["gw.internal".into()]);
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST:9901",
            "[::1]:9901",
            "10.1.2.3:9901",
            "gw.internal:9901",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "localhost",
            "127.0.0.1:80",
            "localhost:9902",
            "gw.internal.evil:9901",
            "a@localhost:9901",
            "",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let host = "localhost:9901";
        assert!(!g.cross_site(&h(&[]), host));
        assert!(!g.cross_site(&h(&[("origin", "http://localhost:9901")]), host));
        assert!(!g.cross_site(&h(&[("origin", "http://LOCALHOST:9901")]), host));
        assert!(!g.cross_site(&h(&[("sec-fetch-site", "same-origin")]), host));
        assert!(!g.cross_site(&h(&[("sec-fetch-site", "none")]), host));
        assert!(g.cross_site(&h(&[("origin", "http://evil.example")]), host));
        assert!(g.cross_site(&h(&[("origin", "http://localhost:8080")]), host));
        // Another origin on the same port number is another origin.
        assert!(g.cross_site(&h(&[("origin", "http://203.0.113.9:9901")]), host));
        assert!(g.cross_site(&h(&[("origin", "http://127.0.0.1:9901")]), host));
        assert!(g.cross_site(&h(&[("origin", "null")]), host));
        assert!(g.cross_site(&h(&[("sec-fetch-site", "cross-site")]), host));
        assert!(g.cross_site(&h(&[("sec-fetch-site", "same-site")]), host));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_tokens_are_limited_per_address_for_a_minute() {
        let g = Guard::new("127.0.0.1:9901".parse().unwrap(), &[]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(!g.blocked(ip, t0));
            g.failed(ip, t0);
        }
        assert!(g.blocked(ip, t0));
        assert!(!g.blocked(other, t0));
        assert!(!g.blocked(ip, t0 + FAILURE_WINDOW));
    }
}
