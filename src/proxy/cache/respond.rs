//! Responses made by the cache: a stored head and body with `Age` for now, `Cache-Status`
//! (RFC 9211, after whatever caches upstream said) and `X-Cache`; the client's own conditional
//! answered with a 304 (RFC 9110 §13.1); a HEAD without its body. Also the 304 update of a
//! stored head (RFC 9111 §3.2) and the stored head itself.

use crate::body::Body;
use crate::filter::cache::Lookup;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the cache answers with, and how it says so.
pub struct Answer<'a> {
    pub status: StatusCode,
    pub head: &'a HeaderMap,
    pub body: &'a Bytes,
    /// Seconds, as `Age`.
    pub age: u64,
    pub cache_status: &'a str,
    pub lookup: Lookup,
}

/// The client's `If-None-Match` / `If-Modified-Since`, and whether it asked for a HEAD.
#[derive(Default)]
pub struct Client {
    pub if_none_match: Option<HeaderValue>,
    pub if_modified_since: Option<HeaderValue>,
    pub head: bool,
}

pub fn respond(client: &Client, a: Answer<'_>) -> Response<Body> {
    let mut head = a.head.clone();
    head.insert(header::AGE, HeaderValue::from(a.age));
    mark(&mut head, a.cache_status, a.lookup);
    if let Some(r) = conditional_304(client, a.status, &head) {
        return r;
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = a.status;
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
    *resp.headers_mut() = head;
    if !client.head {
        *resp.body_mut() = Body::full(a.body.clone());
    }
    resp
}

/// The 304 for a client whose conditional matches a 200 with this head, if it does.
pub fn conditional_304(
    client: &Client,
    status: StatusCode,
    head: &HeaderMap,
) -> Option<Response<Body>> {
    if status != StatusCode::OK || !not_modified(client, head) {
        return None;
    }
    let mut head = head.clone();
    retain_304(&mut head);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    *resp.headers_mut() = head;
    Some(resp)
}

/// `Cache-Status` after any the response already has (each cache appends its own member),
/// and `X-Cache`.
pub fn mark(h: &mut HeaderMap, cache_status: &str, lookup: Lookup) {
    let prev: Vec<&str> = h
        .get_all(&CACHE_STATUS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prev.is_empty() {
        cache_status.to_string()
    } else {
        format!("{}, {cache_status}", prev.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(CACHE_STATUS, v);
    }
    h.insert(X_CACHE, HeaderValue::from_static(lookup.x_cache()));
}

/// The headers a 304 keeps (RFC 9110 §15.4.5).
fn retain_304(h: &mut HeaderMap) {
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
    let drop: Vec<HeaderName> = h
        .keys()
        .filter(|k| !KEEP.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in drop {
        h.remove(k);
    }
}

/// Whether the client's conditional matches (RFC 9110 §13.1.2, §13.1.3): `If-None-Match` by
/// weak comparison, else `If-Modified-Since` against `Last-Modified`.
pub fn not_modified(c: &Client, h: &HeaderMap) -> bool {
    if let Some(inm) = c.if_none_match.as_ref().and_then(|v| v.to_str().ok()) {
        let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    let (Some(ims), Some(lm)) = (c.if_modified_since.as_ref(), h.get(header::LAST_MODIFIED)) else {
        return false;
    };
    use crate::filter::cache::normalize::http_date;
    match (http_date(ims), http_date(lm)) {
        (Some(ims), Some(lm)) => lm <= ims,
        _ => false,
    }
}

/// What a stored head keeps of a response: everything but what RFC 9111 §3.1 says a cache
/// must not store (hop-by-hop fields are gone already) and the gateway's own marks; a `Date`
/// of its arrival when the backend sent none (RFC 9110 §6.6.1), so that its age is its own.
pub fn stored_head(h: &HeaderMap, now: std::time::SystemTime) -> HeaderMap {
    let mut out = h.clone();
    for n in ["proxy-authentication-info", "x-cache"] {
        out.remove(n);
    }
    if !out.contains_key(header::DATE) {
        out.insert(header::DATE, date(now));
    }
    out
}

fn date(t: std::time::SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// A stored head updated by a 304 (RFC 9111 §3.2): each field the 304 carries replaces the
/// stored one, all its lines; new fields are added; `Content-Length` stays the stored body's.
/// The age starts again from the 304's own `Age` and `Date` (none: now, RFC 9110 §6.6.1).
pub fn merge_304(stored: &HeaderMap, fresh: &HeaderMap, now: std::time::SystemTime) -> HeaderMap {
    let mut out = stored.clone();
    out.remove(header::AGE);
    if !fresh.contains_key(header::DATE) {
        out.insert(header::DATE, date(now));
    }
    for name in fresh.keys() {
        if name == header::CONTENT_LENGTH
            || name == CACHE_STATUS
            || name == X_CACHE
            || name == "proxy-authentication-info"
        {
            continue;
        }
        out.remove(name);
        for v in fresh.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_304_replaces_and_adds_fields_but_not_the_length() {
        let stored = map(&[
            ("content-type", "text/html"),
            ("content-length", "10"),
            ("link", "<a>"),
            ("link", "<b>"),
            ("etag", "\"1\""),
        ]);
        let fresh = map(&[
            ("etag", "\"1\""),
            ("content-length", "0"),
            ("x-new", "added"),
            ("link", "<c>"),
        ]);
        let m = merge_304(&stored, &fresh, std::time::SystemTime::now());
        assert_eq!(m["content-type"], "text/html");
        assert_eq!(m["content-length"], "10");
        assert_eq!(m["x-new"], "added");
        let links: Vec<_> = m.get_all("link").iter().collect();
        assert_eq!(links, ["<c>"]);
        // The age starts again: the stored Age goes, a 304 without Date dates it now.
        let stored = map(&[("age", "8"), ("date", "Thu, 01 Jan 2026 00:00:00 GMT")]);
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let m = merge_304(&stored, &map(&[("etag", "\"1\"")]), t);
        assert!(!m.contains_key("age"));
        assert_eq!(m["date"], httpdate::fmt_http_date(t).as_str());
    }

    #[test]
    fn conditionals_and_marks() {
        let h = map(&[
            ("etag", "W/\"v\""),
            ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ]);
        let c = |inm: Option<&'static str>, ims: Option<&'static str>| Client {
            if_none_match: inm.map(HeaderValue::from_static),
            if_modified_since: ims.map(HeaderValue::from_static),
            head: false,
        };
        assert!(not_modified(&c(Some("\"x\", \"v\""), None), &h));
        assert!(not_modified(&c(Some("*"), None), &h));
        assert!(!not_modified(
            &c(Some("\"x\""), Some("Fri, 01 Jan 2100 00:00:00 GMT")),
            &h
        ));
        assert!(not_modified(
            &c(None, Some("Fri, 02 Jan 2026 00:00:00 GMT")),
            &h
        ));
        assert!(!not_modified(
            &c(None, Some("Wed, 31 Dec 2025 00:00:00 GMT")),
            &h
        ));
        let mut m = map(&[("cache-status", "Origin; hit")]);
        mark(&mut m, "gatehouse; fwd=miss", Lookup::Miss);
        assert_eq!(m["cache-status"], "Origin; hit, gatehouse; fwd=miss");
        assert_eq!(m["x-cache"], "MISS");
    }
}
