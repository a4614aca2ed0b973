//! The `cors` route filter (Fetch standard, "CORS protocol"): answers preflight `OPTIONS`
//! requests itself, before the route's other filters (a browser sends no credentials with a
//! preflight), and puts the `Access-Control-*` headers on every response of the route, in
//! place of any the backend sent (one policy, the gateway's).

use crate::error::ProxyError;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

/// For a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), the
/// method it asks about.
pub fn preflight_method(method: &Method, h: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !h.contains_key(header::ORIGIN) {
        return None;
    }
    Method::from_bytes(h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

/// A compiled `cors` filter.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    exact: Vec<String>,
    /// `https://*.example.com` as (`https://`, `.example.com`).
    wildcard: Vec<(String, String)>,
    any_method: bool,
    methods: Vec<Method>,
    any_header: bool,
    headers: Vec<String>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Cors {
    pub fn new(c: &gatehouse_config::cors::Cors) -> Self {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for o in &c.allow_origins {
            match o.split_once("://*") {
                Some((scheme, suffix)) => wildcard.push((format!("{scheme}://"), suffix.into())),
                None if o != "*" => exact.push(o.clone()),
                None => {}
            }
        }
        let list = |v: &[String]| HeaderValue::from_str(&v.join(", ")).ok();
        Cors {
            any_origin: c.allow_origins.iter().any(|o| o == "*"),
            exact,
            wildcard,
            any_method: c.allow_methods.iter().any(|m| m == "*"),
            methods: c
                .allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            any_header: c.allow_headers.iter().any(|h| h == "*"),
            headers: c
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose: (!c.expose_headers.is_empty())
                .then(|| list(&c.expose_headers))
                .flatten(),
            credentials: c.allow_credentials,
            max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        // Credentialed requests never get `*` (validation refuses the pair), so `any_origin`
        // only ever shares responses without cookies.
        self.any_origin
            || self.exact.iter().any(|o| o == origin)
            || self.wildcard.iter().any(|(scheme, suffix)| {
                origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                    .is_some_and(|sub| {
                        !sub.is_empty()
                            && sub.bytes().all(|b| {
                                b.is_ascii_lowercase()
                                    || b.is_ascii_digit()
                                    || b == b'-'
                                    || b == b'.'
                            })
                            && !sub.starts_with('.')
                    })
            })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let o = origin?;
        if !self.origin_allowed(o.to_str().ok()?) {
            return None;
        }
        Some(if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            o.clone()
        })
    }

    /// `Some`: the request is a preflight, answered here (204 with the grant, or 403).
    pub fn preflight(
        &self,
        method: &Method,
        h: &HeaderMap,
    ) -> Option<Result<Response<()>, ProxyError>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = h.get(header::ORIGIN)?;
        let wanted = h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        Some(self.grant(origin, wanted, h))
    }

    fn grant(
        &self,
        origin: &HeaderValue,
        wanted: &HeaderValue,
        h: &HeaderMap,
    ) -> Result<Response<()>, ProxyError> {
        let refused = Err(ProxyError::Forbidden("cors_preflight_refused"));
        let Some(allow) = self.allow_origin(Some(origin)) else {
            return refused;
        };
        let Ok(m) = Method::from_bytes(wanted.as_bytes()) else {
            return refused;
        };
        // GET, HEAD and POST are CORS-safelisted: a browser never checks them against the
        // answer, so refusing them here would only break the preflight for the headers.
        let safelisted = matches!(m, Method::GET | Method::HEAD | Method::POST);
        if !(self.any_method || safelisted || self.methods.contains(&m)) {
            return refused;
        }
        let asked: Vec<&str> = h
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !self.any_header
            && !asked
                .iter()
                .all(|a| self.headers.iter().any(|x| x.eq_ignore_ascii_case(a)))
        {
            return refused;
        }
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let out = resp.headers_mut();
        out.insert(ALLOW_ORIGIN, allow);
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, wanted.clone());
        if !asked.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&asked.join(", ")) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        Ok(resp)
    }

    /// Puts this policy's headers on a response to a request from `origin`, in place of the
    /// backend's own `Access-Control-*` headers.
    pub fn apply(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        let theirs: Vec<HeaderName> = out
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for k in theirs {
            out.remove(k);
        }
        // The answer depends on the origin unless every origin gets `*`.
        if !self.any_origin || self.credentials {
            out.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(allow) = self.allow_origin(origin) else {
            return;
        };
        out.insert(ALLOW_ORIGIN, allow);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        Cors::new(&serde_saphyr::from_str(yaml).unwrap())
    }

    fn preflight(c: &Cors, origin: &str, method: &str, headers: &str) -> Option<StatusCode> {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            method.parse().unwrap(),
        );
        if !headers.is_empty() {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                headers.parse().unwrap(),
            );
        }
        match c.preflight(&Method::OPTIONS, &h)? {
            Ok(r) => Some(r.status()),
            Err(e) => Some(e.status()),
        }
    }

    #[test]
    fn origins_exact_and_wildcard() {
        let c = cors("{allow_origins: ['https://app.example.com', 'https://*.example.org']}");
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(!c.origin_allowed("http://app.example.com"));
        assert!(!c.origin_allowed("https://app.example.com.evil.net"));
        assert!(c.origin_allowed("https://a.example.org"));
        assert!(c.origin_allowed("https://a.b.example.org"));
        assert!(!c.origin_allowed("https://example.org"));
        assert!(!c.origin_allowed("https://evilexample.org"));
        assert!(!c.origin_allowed("https://x/.example.org"));
        assert!(!c.origin_allowed("null"));
    }

    #[test]
    fn preflights() {
        let c = cors("{allow_origins: ['https://app.example.com'], allow_methods: [GET, PUT], allow_headers: [content-type], max_age: 10m}");
        assert_eq!(
            preflight(&c, "https://app.example.com", "PUT", "Content-Type"),
            Some(StatusCode::NO_CONTENT)
        );
        assert_eq!(
            preflight(&c, "https://app.example.com", "DELETE", ""),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            preflight(&c, "https://app.example.com", "PUT", "x-secret"),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            preflight(&c, "https://evil.example", "GET", ""),
            Some(StatusCode::FORBIDDEN)
        );
        // Not a preflight: no Access-Control-Request-Method.
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "https://app.example.com".parse().unwrap());
        assert!(c.preflight(&Method::OPTIONS, &h).is_none());
    }

    #[test]
    fn responses_get_our_headers_not_the_backends() {
        let c = cors("{allow_origins: ['https://app.example.com'], allow_credentials: true, expose_headers: [x-total]}");
        let mut out = HeaderMap::new();
        out.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        let origin = HeaderValue::from_static("https://app.example.com");
        c.apply(Some(&origin), &mut out);
        assert_eq!(out[ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        assert_eq!(out[header::VARY], "origin");
        let mut out = HeaderMap::new();
        out.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        c.apply(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut out,
        );
        assert!(out.get(ALLOW_ORIGIN).is_none());
    }
}
