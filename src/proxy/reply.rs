//! Routes that answer themselves: `redirect` (a 3xx to a location built from the request and
//! the route's settings) and `direct_response`. They run after the route's filters, so auth
//! and rate limits hold for them too.

use crate::body::Body;
use crate::error::ProxyError;
use crate::route::Target;
use gatehouse_config::reply::Redirect;
use http::{header, HeaderValue, Response, StatusCode, Uri};

/// The answer of a redirect or direct_response route (never called for a cluster route).
pub fn answer(
    target: &Target,
    origin: (&str, &str),
    uri: &Uri,
) -> Result<Response<Body>, ProxyError> {
    match target {
        Target::Redirect(r) => redirect(r, origin, uri),
        Target::Direct {
            status,
            content_type,
            body,
        } => {
            let mut resp = Response::new(Body::full(body.clone()));
            *resp.status_mut() = *status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            Ok(resp)
        }
        Target::Cluster(_) | Target::Split(_) | Target::FromPath { .. } => Err(ProxyError::NoRoute),
    }
}

/// The answer to an ACME server's http-01 check (`GET /.well-known/acme-challenge/TOKEN`) of a
/// token being checked now, on a plain-HTTP listener, before routing (and before an
/// `redirect_https`). Any other request under that path is routed as usual, so a backend that
/// runs its own ACME client keeps working.
pub fn acme_challenge(runtime: &crate::runtime::Runtime, uri: &Uri) -> Option<Response<Body>> {
    let token = uri.path().strip_prefix(crate::tls::acme::HTTP01_PREFIX)?;
    let key_auth = runtime.tls.acme.challenges().http(token)?;
    let mut resp = Response::new(Body::full(key_auth.into()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// `host` (canonical, maybe with a port) split into name and port (`[::1]:8080`).
fn split_host(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    }
}

/// The location: the route's scheme, host, port and path where it gives them, the request's
/// otherwise. The request's port stays only while scheme and host are the request's own; a
/// scheme's default port is left out.
pub fn location(r: &Redirect, (scheme, host): (&str, &str), uri: &Uri) -> Option<String> {
    let (req_name, req_port) = split_host(host);
    let name = r.host.as_deref().unwrap_or(req_name);
    if name.is_empty() {
        return None;
    }
    let to_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let port = match r.port {
        Some(p) => Some(p.to_string()),
        None if r.host.is_none() && r.scheme.is_none() => req_port.map(str::to_string),
        None => None,
    };
    let default = if to_scheme == "https" { "443" } else { "80" };
    let mut out = format!("{to_scheme}://{name}");
    if let Some(p) = port.filter(|p| p != default) {
        out.push(':');
        out.push_str(&p);
    }
    out.push_str(r.path.as_deref().unwrap_or(uri.path()));
    if let Some(q) = uri.query().filter(|_| !r.strip_query) {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

fn redirect(r: &Redirect, origin: (&str, &str), uri: &Uri) -> Result<Response<Body>, ProxyError> {
    let no_host = ProxyError::Invalid {
        reason: "invalid_host",
        detail: "a request to a redirect route must name its host",
    };
    let loc = location(r, origin, uri).ok_or(no_host)?;
    let loc = HeaderValue::from_str(&loc).map_err(|_| ProxyError::BadRequest("invalid_uri"))?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(yaml: &str) -> Redirect {
        serde_json::from_str(yaml).unwrap()
    }

    #[test]
    fn locations_take_what_the_route_does_not_give_from_the_request() {
        let uri: Uri = "/old/page?x=1".parse().unwrap();
        let at = |rd: &str, origin| location(&r(rd), origin, &uri).unwrap();
        assert_eq!(
            at("{}", ("http", "a.test:8080")),
            "http://a.test:8080/old/page?x=1"
        );
        assert_eq!(
            at(r#"{"scheme": "https"}"#, ("http", "a.test:8080")),
            "https://a.test/old/page?x=1",
            "another scheme: the request's port is not the new one's"
        );
        assert_eq!(
            at(
                r#"{"host": "b.test", "path": "/new", "strip_query": true}"#,
                ("https", "a.test")
            ),
            "https://b.test/new"
        );
        assert_eq!(
            at(r#"{"port": 443, "scheme": "https"}"#, ("http", "a.test")),
            "https://a.test/old/page?x=1"
        );
        assert_eq!(
            at(r#"{"port": 8443}"#, ("https", "[::1]:9000")),
            "https://[::1]:8443/old/page?x=1"
        );
        assert!(location(&r("{}"), ("http", ""), &uri).is_none());
    }
}
