//! The request path, one function per phase: take one snapshot → route → resolve the cluster
//! → pick an endpoint → rewrite headers → forward (or tunnel an upgrade) → reply. Every
//! failure is a [`ProxyError`] turned into a local reply in one place; every request leaves
//! one access-log line when its response body ends.

pub mod headers;

use crate::body::Body;
use crate::cluster::Cluster;
use crate::error::{local_reply, ProxyError};
use crate::listener::ListenerSettings;
use crate::observe::access_log::AccessRecord;
use crate::observe::ids::{self, TraceContext, TRACEPARENT, X_REQUEST_ID};
use crate::runtime::{Runtime, Snapshot};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What a request handler knows about the connection it came in on.
pub struct ConnCtx {
    pub runtime: Arc<Runtime>,
    pub listener: Arc<ListenerSettings>,
    pub peer: SocketAddr,
    pub trusted_peer: bool,
    pub activity: Arc<crate::listener::Activity>,
}

/// Serves one request. Never fails: errors become local replies.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let active = ctx.activity.begin();
    let start = Instant::now();
    let snap = ctx.runtime.snapshot();
    let request_id = ids::request_id(req.headers());
    let trace = TraceContext::from_headers(req.headers());
    let mut rec = ctx.runtime.access_log.as_ref().map(|sink| {
        Box::new(AccessRecord {
            sink: sink.clone(),
            start,
            time: SystemTime::now(),
            request_id: request_id.clone(),
            trace_id: trace.trace_id,
            client: ctx.peer,
            method: req.method().clone(),
            host: request_host(&req).unwrap_or_default().to_string(),
            path: req.uri().path().to_string(),
            route: None,
            cluster: None,
            endpoint: None,
            status: 0,
            bytes_in: None,
            bytes_out: 0,
            upstream_duration: None,
            error: None,
        })
    });
    let result = forward(&ctx, &snap, req, &request_id, &trace, rec.as_deref_mut()).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = rec.as_deref_mut() {
                r.error = Some(e.reason());
            }
            local_reply(&e, &request_id)
        }
    };
    resp.headers_mut().insert(X_REQUEST_ID, request_id);
    let status = resp.status().as_u16();
    Ok(resp.map(|b| {
        let b = b.with_hold(Box::new(active));
        match rec {
            Some(mut r) => {
                r.status = status;
                b.with_record(r)
            }
            None => b,
        }
    }))
}

/// The host the client addressed: the URI authority (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

async fn forward(
    ctx: &ConnCtx,
    snap: &Snapshot,
    mut req: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &TraceContext,
    mut rec: Option<&mut AccessRecord>,
) -> Result<Response<Body>, ProxyError> {
    let host = request_host(&req).unwrap_or_default().to_string();
    let matched = snap
        .routes
        .find(&host, req.uri().path(), req.method(), req.headers())
        .ok_or(ProxyError::NoRoute)?;
    if let Some(r) = rec.as_deref_mut() {
        r.route = Some(matched.route.name.clone());
    }
    let cluster: &Arc<Cluster> = match &matched.route.target {
        crate::route::Target::Cluster(name) => snap.clusters.get(name.as_ref()),
        crate::route::Target::FromPath(_) => {
            let name = matched.cluster_from_path.unwrap_or_default();
            Some(
                snap.clusters
                    .get(name)
                    .ok_or_else(|| ProxyError::UnknownCluster(name.to_string()))?,
            )
        }
    }
    .ok_or(ProxyError::NoRoute)?;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{}?{q}", matched.upstream_path),
        None => matched.upstream_path.to_string(),
    };
    if let Some(r) = rec.as_deref_mut() {
        r.cluster = Some(cluster.name.clone());
    }

    let max_body = ctx.listener.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(ProxyError::BodyTooLarge);
    }

    let endpoint = cluster.pick().ok_or(ProxyError::NoEligibleEndpoint)?;
    if let Some(r) = rec.as_deref_mut() {
        r.endpoint = Some(endpoint.state.address.clone());
    }
    let in_flight = endpoint.state.start_request();

    // Build the upstream request from the client's.
    let upgrade = if req.version() == Version::HTTP_11 {
        headers::upgrade_protocol(req.headers())
    } else {
        None
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let authority = if host.is_empty() {
        endpoint.state.address.to_string()
    } else {
        host.clone()
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path_and_query.as_str())
        .build()
        .or_else(|_| {
            Uri::builder()
                .scheme("http")
                .authority(endpoint.state.address.as_ref())
                .path_and_query(path_and_query.as_str())
                .build()
        })
        .map_err(|_| ProxyError::BadRequest("invalid_uri"))?;
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = match cluster.protocol {
        gatehouse_config::Protocol::Http1 => Version::HTTP_11,
        gatehouse_config::Protocol::Http2 => Version::HTTP_2,
    };
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.clone());
    headers::set_forwarding(
        &mut parts.headers,
        &headers::Hop {
            peer: ctx.peer.ip(),
            trusted: ctx.trusted_peer,
            proto: "http",
            host: (!host.is_empty()).then_some(host.as_str()),
            version: version_str(client_version),
        },
    );
    if parts.version == Version::HTTP_2 {
        // HTTP/2 carries the host in :authority (from the URI); a Host header must not differ.
        parts.headers.remove(header::HOST);
    }
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    parts.headers.insert(TRACEPARENT, trace.header());

    let mut body = Body::stream(body).with_limit(max_body);
    if http_body::Body::size_hint(&body).upper() != Some(0) {
        let counter = Arc::new(AtomicU64::new(0));
        body = body.with_counter(counter.clone());
        if let Some(r) = rec.as_deref_mut() {
            r.bytes_in = Some(counter);
        }
    }
    let upstream_req = Request::from_parts(parts, body);

    let sent = Instant::now();
    let timeout = cluster.timeouts.request.0;
    let result = if upgrade.is_some() {
        tokio::time::timeout(timeout, endpoint.client.send_upgrade(upstream_req)).await
    } else {
        tokio::time::timeout(timeout, endpoint.client.send(upstream_req)).await
    };
    if let Some(r) = rec {
        r.upstream_duration = Some(sent.elapsed());
    }
    let mut resp = result.map_err(|_| ProxyError::RequestTimeout)??;

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let resp_upgrade = if switching { upgrade } else { None };
    if let (true, Some(client_up)) = (switching, client_upgrade) {
        let upstream_up = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(client_up, upstream_up, in_flight));
        headers::strip_hop_by_hop(resp.headers_mut(), resp_upgrade);
        return Ok(resp.map(|_| Body::empty()));
    }
    headers::strip_hop_by_hop(resp.headers_mut(), None);
    Ok(resp.map(|b| Body::stream(b).with_hold(Box::new(in_flight))))
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until
/// either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _in_flight: crate::cluster::endpoint::InFlight,
) {
    let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
        return;
    };
    let mut c = TokioIo::new(c);
    let mut u = TokioIo::new(u);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
}
