//! The data plane's one error type, and the one place that turns it into a local reply.
//! Each kind knows its status, a stable reason string (for logs and clients), whether a retry
//! on another endpoint may help, and whose fault it is ([`Source`]): only upstream faults feed
//! an endpoint's circuit breaker.

use crate::body::{Body, DownstreamFault};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Whose fault an error is. Decided where the error happens, never guessed afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The client: its request, its credentials, its body, its connection.
    Downstream,
    /// The endpoint: it refused, reset, timed out or answered something unusable. Only these
    /// count against the endpoint (breaker, outlier detection).
    Upstream,
    /// The gateway's own decision or limit (no endpoint left, a cluster at its limits, a drill).
    Gateway,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched the request.
    NoRoute,
    /// A `cluster_from_path` route named a cluster that does not exist.
    UnknownCluster(String),
    /// The cluster has no endpoint that may take a request now; `retry_after` is the time until
    /// the earliest open breaker half-opens.
    NoEligibleEndpoint { retry_after: std::time::Duration },
    /// The endpoint refused the TCP connection (or it could not be resolved).
    ConnectRefused,
    /// The TCP connect did not finish within the cluster's connect timeout.
    ConnectTimeout,
    /// The response head did not arrive within the cluster's request timeout.
    RequestTimeout,
    /// The connection was reset or closed before a complete response head arrived.
    UpstreamReset,
    /// The TLS handshake with the endpoint failed (its certificate was not accepted, no common
    /// protocol): 502, and a failure of that endpoint.
    UpstreamTls,
    /// The request body is larger than the listener allows.
    BodyTooLarge,
    /// The client's request could not be forwarded as sent.
    BadRequest(&'static str),
    /// Credentials missing or not valid (401).
    Unauthorized(&'static str),
    /// Credentials valid in form but not accepted (403).
    Forbidden(&'static str),
    /// A rate limit refused the request (429).
    RateLimited { retry_after: std::time::Duration },
    /// A fault drill or `fault` filter answered in the endpoint's place with this status.
    Injected { status: u16 },
    /// The request was refused before routing (bad path, host, framing or header): 400.
    Invalid {
        reason: &'static str,
        detail: &'static str,
    },
    /// The request uses something the gateway does not implement (a transfer coding): 501.
    NotImplemented {
        reason: &'static str,
        detail: &'static str,
    },
    /// The path is not in normal form and the listener answers with the normal form: 308.
    Redirect { location: HeaderValue },
    /// A plain-HTTP listener with `redirect_https` sends the request to `https`: 308.
    HttpsRedirect { location: HeaderValue },
    /// The request's host is for another certificate than the TLS connection's SNI: 421, so
    /// the client opens a connection for that host.
    Misdirected,
    /// The backend's response could not be framed safely (a transfer coding other than a
    /// single `chunked`): 502, and a failure of that endpoint.
    UpstreamBadFraming,
    /// The client's request body failed: it went away, sent something malformed, or stalled.
    Downstream(crate::body::DownstreamFault),
    /// The cluster is at one of its `limits` (connections, pending, requests, retries).
    ClusterOverloaded,
    /// The endpoint's breaker opened while this try waited on it: the try was abandoned so it
    /// can go elsewhere (never sent to a client as such unless no endpoint is left).
    EndpointEjected,
    /// `Cache-Control: only-if-cached` and the cache has nothing fresh: 504 (RFC 9111 §5.2.1.7).
    NotCached,
}

/// nginx's "client closed request": logged when the client went away before the response.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute | ProxyError::UnknownCluster(_) => StatusCode::NOT_FOUND,
            ProxyError::NoEligibleEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectRefused | ProxyError::UpstreamReset | ProxyError::UpstreamTls => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout | ProxyError::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Injected { status } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            ProxyError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Redirect { .. } | ProxyError::HttpsRedirect { .. } => {
                StatusCode::PERMANENT_REDIRECT
            }
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UpstreamBadFraming => StatusCode::BAD_GATEWAY,
            ProxyError::Downstream(f) => match f {
                DownstreamFault::Aborted => CLIENT_CLOSED,
                DownstreamFault::Malformed => StatusCode::BAD_REQUEST,
                DownstreamFault::TimedOut => StatusCode::REQUEST_TIMEOUT,
                DownstreamFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            },
            ProxyError::ClusterOverloaded | ProxyError::EndpointEjected => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whose fault this is.
    pub fn source(&self) -> Source {
        match self {
            ProxyError::ConnectRefused
            | ProxyError::ConnectTimeout
            | ProxyError::RequestTimeout
            | ProxyError::UpstreamReset
            | ProxyError::UpstreamTls
            | ProxyError::UpstreamBadFraming => Source::Upstream,
            ProxyError::NoEligibleEndpoint { .. }
            | ProxyError::Injected { .. }
            | ProxyError::ClusterOverloaded
            | ProxyError::EndpointEjected => Source::Gateway,
            ProxyError::NoRoute
            | ProxyError::UnknownCluster(_)
            | ProxyError::BodyTooLarge
            | ProxyError::BadRequest(_)
            | ProxyError::Unauthorized(_)
            | ProxyError::Forbidden(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::Invalid { .. }
            | ProxyError::NotImplemented { .. }
            | ProxyError::Redirect { .. }
            | ProxyError::HttpsRedirect { .. }
            | ProxyError::Misdirected
            | ProxyError::NotCached
            | ProxyError::Downstream(_) => Source::Downstream,
        }
    }

    /// A short, stable, machine-readable reason (access log `error` field).
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::UnknownCluster(_) => "unknown_cluster",
            ProxyError::NoEligibleEndpoint { .. } => "no_eligible_endpoint",
            ProxyError::ConnectRefused => "connect_refused",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::UpstreamReset => "upstream_reset",
            ProxyError::UpstreamTls => "upstream_tls_failed",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::BadRequest(r) | ProxyError::Unauthorized(r) | ProxyError::Forbidden(r) => r,
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Injected { .. } => "fault_injected",
            ProxyError::Invalid { reason, .. } | ProxyError::NotImplemented { reason, .. } => {
                reason
            }
            ProxyError::Redirect { .. } => "path_redirect",
            ProxyError::HttpsRedirect { .. } => "https_redirect",
            ProxyError::Misdirected => "misdirected_request",
            ProxyError::UpstreamBadFraming => "upstream_bad_framing",
            ProxyError::Downstream(f) => match f {
                DownstreamFault::Aborted => "client_aborted",
                DownstreamFault::Malformed => "bad_request_body",
                DownstreamFault::TimedOut => "body_read_timeout",
                DownstreamFault::TooLarge => "body_too_large",
            },
            ProxyError::ClusterOverloaded => "cluster_overloaded",
            ProxyError::EndpointEjected => "endpoint_ejected",
            ProxyError::NotCached => "not_cached",
        }
    }

    /// Whether this is a refusal of the request before routing (counted in
    /// `gatehouse_requests_rejected_total{reason}`).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ProxyError::Invalid { .. } | ProxyError::NotImplemented { .. }
        )
    }

    /// Whether trying another endpoint could succeed (the request never reached a backend's
    /// application, or the backend failed in a way another one may not).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectRefused
                | ProxyError::ConnectTimeout
                | ProxyError::UpstreamReset
                | ProxyError::UpstreamTls
                | ProxyError::NoEligibleEndpoint { .. }
        )
    }

    fn message(&self) -> String {
        match self {
            ProxyError::NoRoute => "no route matches this request".into(),
            ProxyError::UnknownCluster(c) => format!("no cluster named {c:?}"),
            ProxyError::NoEligibleEndpoint { .. } => {
                "no endpoint is available to serve this request".into()
            }
            ProxyError::ConnectRefused => "the backend refused the connection".into(),
            ProxyError::ConnectTimeout => "timed out connecting to the backend".into(),
            ProxyError::RequestTimeout => "the backend did not answer in time".into(),
            ProxyError::UpstreamReset => {
                "the backend closed the connection before answering".into()
            }
            ProxyError::UpstreamTls => "the TLS handshake with the backend failed".into(),
            ProxyError::BodyTooLarge => "request body too large".into(),
            ProxyError::BadRequest(r) => format!("bad request: {r}"),
            ProxyError::Unauthorized(_) => "authentication required".into(),
            ProxyError::Forbidden("cors_preflight_refused") => {
                "cross-origin request not allowed (origin, method or headers)".into()
            }
            ProxyError::Forbidden(_) => "credentials not accepted".into(),
            ProxyError::RateLimited { .. } => "rate limit exceeded".into(),
            ProxyError::Injected { .. } => "fault injected".into(),
            ProxyError::Invalid { detail, .. } | ProxyError::NotImplemented { detail, .. } => {
                (*detail).into()
            }
            ProxyError::Redirect { .. } => "the path is not in normal form".into(),
            ProxyError::HttpsRedirect { .. } => "this listener redirects to https".into(),
            ProxyError::Misdirected => {
                "this connection's TLS server name is not for this host: open a connection for it"
                    .into()
            }
            ProxyError::UpstreamBadFraming => {
                "the backend's response could not be framed safely".into()
            }
            ProxyError::Downstream(f) => match f {
                DownstreamFault::Aborted => "the client closed the connection mid-request".into(),
                DownstreamFault::Malformed => "the request body is malformed".into(),
                DownstreamFault::TimedOut => "the request body stalled (body_read_timeout)".into(),
                DownstreamFault::TooLarge => "request body too large".into(),
            },
            ProxyError::ClusterOverloaded => {
                "the cluster is at its connection or request limits".into()
            }
            ProxyError::EndpointEjected => {
                "the endpoint was ejected while the request waited on it".into()
            }
            ProxyError::NotCached => {
                "only-if-cached: the cache has no fresh response for this request".into()
            }
        }
    }
}

/// The JSON local reply for `err`: `{"error": "...", "status": N, "request_id": "..."}`.
pub fn local_reply(err: &ProxyError, request_id: &HeaderValue) -> Response<Body> {
    let status = err.status();
    let body = serde_json::json!({
        "error": err.message(),
        "reason": err.reason(),
        "status": status.as_u16(),
        "request_id": request_id.to_str().unwrap_or(""),
    });
    let mut resp = Response::new(Body::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(crate::observe::ids::X_REQUEST_ID, request_id.clone());
    match err {
        ProxyError::NoEligibleEndpoint { retry_after }
        | ProxyError::RateLimited { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        ProxyError::Redirect { location } | ProxyError::HttpsRedirect { location } => {
            h.insert(header::LOCATION, location.clone());
        }
        // RFC 9110 §15.5.2: every 401 says how to authenticate. RFC 6750 §3 for bearer tokens:
        // no error code when none was sent, `invalid_token` for one that failed.
        ProxyError::Unauthorized(r) => {
            let v = match *r {
                "missing_api_key" => "ApiKey realm=\"gatehouse\"",
                "missing_token" => "Bearer realm=\"gatehouse\"",
                // No HTTP scheme exists for TLS client certificates; this names what is missing.
                "missing_client_certificate" => "ClientCertificate realm=\"gatehouse\"",
                "ambiguous_credentials" => "Bearer realm=\"gatehouse\", error=\"invalid_request\"",
                _ => "Bearer realm=\"gatehouse\", error=\"invalid_token\"",
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        _ => {}
    }
    resp
}

/// Classifies an error of the pooled upstream client with hyper's own questions
/// (`is_connect`, `is_timeout`, `is_parse`, ...), never by matching message text. The caller
/// checks the request body's [`crate::body::Progress`] first: an error that the client's body
/// caused is the client's.
pub fn classify_upstream(err: &(dyn std::error::Error + 'static)) -> ProxyError {
    let mut connect = false;
    let mut hyper_err: Option<&hyper::Error> = None;
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // The cluster's own connection limit, not the endpoint: the gateway's overload.
        if e.is::<crate::upstream::limit::PoolFull>() {
            return ProxyError::ClusterOverloaded;
        }
        if let Some(c) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= c.is_connect();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            hyper_err.get_or_insert(h);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        cur = e.source();
    }
    if connect {
        // HttpConnector reports its connect timeout as an io::ErrorKind::TimedOut.
        return if timed_out {
            ProxyError::ConnectTimeout
        } else {
            ProxyError::ConnectRefused
        };
    }
    match hyper_err {
        // The request was written: whatever timed out, it was not the connect.
        Some(h) if h.is_timeout() => ProxyError::RequestTimeout,
        Some(h) if h.is_parse() || h.is_parse_status() => ProxyError::UpstreamBadFraming,
        _ => ProxyError::UpstreamReset,
    }
}
