//! The request path, one function per phase: take one snapshot → route → resolve the cluster
//! → pick an endpoint → rewrite headers → forward (or tunnel an upgrade) → reply. Every
//! failure is a [`ProxyError`] turned into a local reply in one place; every request leaves
//! one access-log line when its response body ends.

pub mod attempt;
pub mod cache;
pub mod headers;
pub mod mirror;
pub mod reply;
pub mod spans;
pub mod split;

use crate::body::Body;
use crate::canonical::Canonical;
use crate::cluster::Cluster;
use crate::conn::ConnCtx;
use crate::error::{local_reply, ProxyError};
use crate::observe::access_log::AccessRecord;
use crate::observe::ids::{self, TRACEPARENT, X_REQUEST_ID};
use crate::runtime::Snapshot;
use bytes::Bytes;
use gatehouse_config::policy::HashOn;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Serves one request. Never fails: errors become local replies.
///
/// An `async` block that uses `req` where it was captured, not an `async fn`: an `async fn`
/// keeps its argument and the local it is moved to, and this future is copied into a box for
/// every request (docs/design/performance.md).
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the argument twice (above)
pub fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send {
    async move {
        let active = ctx.activity.begin();
        let start = Instant::now();
        let arrived = SystemTime::now();
        let http1 = req.version() <= Version::HTTP_11;
        let snap = ctx.runtime.snapshot();
        let canon = crate::canonical::canonicalize(
            &mut req,
            &ctx.listener.edge,
            (ctx.peer.ip(), &ctx.peer_header),
        );
        // The IDs, and a recorded request's span (tracing off or not sampled: `None`, at no
        // cost). In a block: what only this needs does not stay in the request's future.
        let (request_id, traceparent, trace_id, span) = {
            let mut trace = ids::TraceContext::from_headers(req.headers());
            if !trace.continued() {
                // W3C Trace Context: a `tracestate` without a valid `traceparent` is discarded.
                req.headers_mut().remove(ids::TRACESTATE);
            }
            let mut span = spans::start(snap.tracing.as_ref(), &mut trace, &ctx, &req, &canon);
            let ids = ids::RequestIds::with_trace(req.headers(), trace, arrived);
            if let Some(s) = span.as_deref_mut() {
                s.request_id(&ids.request_id);
            }
            (ids.request_id, ids.traceparent, ids.trace.trace_id, span)
        };
        let mut rec = ctx.runtime.access_log.as_ref().map(|sink| {
            let (host, client) = match &canon {
                Ok(c) => (c.host.header().clone(), c.client.ip),
                // Refused: log the host as it was sent.
                Err(_) => (
                    request_host(&req)
                        .and_then(|h| HeaderValue::from_str(h).ok())
                        .unwrap_or(HeaderValue::from_static("")),
                    ctx.peer.ip(),
                ),
            };
            Box::new(AccessRecord {
                sink: sink.clone(),
                start,
                time: arrived,
                request_id: request_id.clone(),
                trace_id,
                client,
                peer: ctx.peer,
                method: req.method().clone(),
                host,
                uri: req.uri().clone(),
                route: None,
                cluster: None,
                endpoint: None,
                consumer: None,
                status: 0,
                bytes_in: None,
                bytes_out: 0,
                upstream_duration: None,
                retries: 0,
                error: None,
                cache: None,
                tls: ctx.tls.as_ref().map(|t| t.facts.clone()),
            })
        });
        let metrics = &ctx.runtime.metrics;
        metrics.in_flight.inc();
        let in_flight_gauge = InFlightGauge(metrics.in_flight.clone());
        // Counted as a 499 on its route if the client leaves before it is answered (hyper then
        // drops this future).
        let mut pending = Unanswered {
            out: Outcome {
                trace: span,
                ..Outcome::default()
            },
            snap: &snap,
            start,
            answered: false,
        };
        let out = &mut pending.out;
        let result = match canon {
            Ok(canon) => {
                forward(
                    &ctx,
                    &snap,
                    req,
                    &canon,
                    (&request_id, &traceparent),
                    out,
                    rec.as_deref_mut(),
                )
                .await
            }
            Err(e) => {
                metrics.rejected.count(e.reason());
                Err(e)
            }
        };
        pending.answered = true;
        let Outcome {
            response_headers: extra,
            route_index,
            upstream,
            response_rules,
            rule_vars,
            cors,
            mut trace,
        } = std::mem::take(&mut pending.out);
        let mut error = None;
        let mut resp = match result {
            Ok(mut r) => {
                if let Some((route, client_ip, consumer)) = &rule_vars {
                    let vars = crate::route::headers::Vars {
                        client_ip: *client_ip,
                        request_id: &request_id,
                        route,
                        consumer: consumer.as_deref(),
                    };
                    for ops in response_rules.iter().flatten() {
                        ops.apply(r.headers_mut(), &vars);
                    }
                }
                r
            }
            Err(e) => {
                error = Some(e.reason());
                if let Some(r) = rec.as_deref_mut() {
                    r.error = error;
                }
                let mut r = local_reply(&e, &request_id);
                // The rest of the body stays unread, so the connection cannot carry another
                // request: the client is told (RFC 9112 §9.6) instead of finding it closed.
                // A declared length over the limit, or a chunked body that grew past it.
                let too_large = matches!(
                    e,
                    ProxyError::BodyTooLarge
                        | ProxyError::Downstream(crate::body::DownstreamFault::TooLarge)
                );
                if http1 && too_large {
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                r
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
        if let Some(hsts) = ctx.tls.as_ref().and_then(|t| t.hsts.clone()) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        for (name, value) in extra {
            if let Some(name) = name {
                resp.headers_mut().append(name, value);
            }
        }
        if let Some((cors, origin)) = cors {
            cors.apply(origin.as_ref(), resp.headers_mut());
        }
        let status = resp.status().as_u16();
        if let Some(t) = trace.as_deref_mut() {
            t.answered(status, error);
        }
        route_index
            .and_then(|i| snap.route_metrics.get(i))
            .unwrap_or(&snap.unrouted)
            .answered(status, start.elapsed().as_secs_f64());
        Ok(resp.map(|b| {
            // One allocation for everything the response holds until its body ends (the server
            // span too: it ends with the body).
            let b = b.with_hold(Box::new((active, in_flight_gauge, upstream, trace)));
            match rec {
                Some(mut r) => {
                    r.status = status;
                    b.with_record(r)
                }
                None => b,
            }
        }))
    }
}

/// What `forward` learns besides its result: headers for whatever response goes back (rate-limit
/// headers), and the matched route (for its metrics).
#[derive(Default)]
struct Outcome {
    response_headers: http::HeaderMap,
    route_index: Option<usize>,
    /// The cluster's and the route's `response_headers`, for a response that is not a local
    /// reply, with what their variables need.
    response_rules: [Option<Arc<crate::route::headers::HeaderOps>>; 2],
    rule_vars: Option<(Arc<str>, std::net::IpAddr, Option<Arc<str>>)>,
    /// The route's `cors` filter and the request's `Origin`: its headers go on the response.
    cors: Option<(Arc<crate::filter::cors::Cors>, Option<HeaderValue>)>,
    /// The server span of a recorded request (boxed: most requests have none).
    trace: Option<Box<crate::observe::otel::ServerSpan>>,
    /// The try's endpoint in-flight count and cluster slot, held until the response body ends.
    upstream: Option<(
        crate::cluster::endpoint::InFlight,
        Option<crate::cluster::Slot>,
    )>,
}

/// A request whose client may still leave before it is answered.
struct Unanswered<'a> {
    out: Outcome,
    snap: &'a Snapshot,
    start: Instant,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            if let Some(t) = self.out.trace.as_deref_mut() {
                t.abandoned();
            }
            self.out
                .route_index
                .and_then(|i| self.snap.route_metrics.get(i))
                .unwrap_or(&self.snap.unrouted)
                .answered(499, self.start.elapsed().as_secs_f64());
        }
    }
}

/// Decrements the in-flight gauge when the response body ends.
struct InFlightGauge(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `host` without its port (`[::1]:8080` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => name,
        _ => host,
    }
}

/// A 308 to the same host (on https's own port) and request target; a 400 for a request that
/// names no host (an HTTP/1.0 one), which has nowhere to go (`https:///x` would be read by a
/// browser as a scheme-relative `//x`).
fn https_redirect(host: &str, uri: &http::Uri) -> Result<ProxyError, ProxyError> {
    let no_host = ProxyError::Invalid {
        reason: "invalid_host",
        detail: "a request to an https redirect must name its host",
    };
    if host_name(host).is_empty() {
        return Err(no_host);
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{}{target}", host_name(host));
    let location = HeaderValue::from_str(&location).map_err(|_| no_host)?;
    Ok(ProxyError::HttpsRedirect { location })
}

/// The host as the client sent it (the URI authority or `Host`), for logging a refused request;
/// everything else uses the canonical host.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

/// Routes and forwards a canonical request. An `async` block, like [`handle`]'s, so that the
/// request is held once.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the argument twice (above)
fn forward<'a>(
    ctx: &'a ConnCtx,
    snap: &'a Snapshot,
    mut req: Request<Incoming>,
    canon: &'a Canonical,
    (request_id, traceparent): (&'a HeaderValue, &'a HeaderValue),
    out: &'a mut Outcome,
    mut rec: Option<&'a mut AccessRecord>,
) -> impl std::future::Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
    async move {
        let Outcome {
            response_headers,
            route_index,
            upstream: held,
            response_rules,
            rule_vars,
            cors,
            trace,
        } = out;
        let host = canon.host.as_str();
        if ctx.tls.is_none() {
            if let Some(answer) = reply::acme_challenge(&ctx.runtime, req.uri()) {
                return Ok(answer);
            }
        }
        match &ctx.tls {
            Some(t) if t.misdirected(host_name(host)) => return Err(ProxyError::Misdirected),
            None if ctx.listener.redirect_https => return Err(https_redirect(host, req.uri())?),
            _ => {}
        }
        let match_path = canon.match_path.as_deref().unwrap_or(req.uri().path());
        // A CORS preflight is routed as the request it asks about, so the route that will serve
        // the `PUT` (and its cors filter, or its lack of one) is the route that answers for it.
        let preflight = crate::filter::cors::preflight_method(req.method(), req.headers());
        let matched = snap
            .routes
            .find(&crate::route::RouteRequest {
                host,
                path: match_path,
                query: req.uri().query(),
                method: preflight.as_ref().unwrap_or(req.method()),
                headers: req.headers(),
                client_ip: canon.client.ip,
                cert: ctx
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_cert.as_ref())
                    .map(|c| (&*c.subject, c.sans.as_slice())),
            })
            .ok_or(ProxyError::NoRoute)?;
        if let Some(r) = rec.as_deref_mut() {
            r.route = Some(matched.route.name.clone());
        }
        if let Some(t) = trace.as_deref_mut() {
            t.route(&matched.route.name);
        }
        // None: a route that answers itself (redirect, direct_response), after its filters.
        let cluster: Option<&Arc<Cluster>> = match &matched.route.target {
            crate::route::Target::Cluster(name) => {
                Some(match snap.route_clusters.get(matched.route.index) {
                    Some(Some(c)) => c,
                    _ => snap
                        .clusters
                        .get(name.as_ref())
                        .ok_or(ProxyError::NoRoute)?,
                })
            }
            crate::route::Target::Split(split) => {
                Some(split::choose(split, &snap.clusters, &req, canon.client.ip)?)
            }
            crate::route::Target::Redirect(_) | crate::route::Target::Direct { .. } => None,
            crate::route::Target::FromPath { allow, .. } => {
                let name = matched.cluster_from_path.unwrap_or_default();
                // Only the clusters the route lists: a cluster behind an authenticated route must
                // not be reachable by naming it here. Any other name looks like no cluster at all.
                if !allow.iter().any(|a| a.as_ref() == name) {
                    return Err(ProxyError::UnknownCluster(name.to_string()));
                }
                Some(
                    snap.clusters
                        .get(name)
                        .ok_or_else(|| ProxyError::UnknownCluster(name.to_string()))?,
                )
            }
        };
        // The path the backend gets, when it is not the request's own (`strip_prefix`, `rewrite`).
        let rewritten = matched
            .route
            .upstream_path(req.uri().path(), canon.match_path.as_deref(), &matched)
            .map_err(|_| ProxyError::BadRequest("invalid_path"))?;
        if let (Some(r), Some(c)) = (rec.as_deref_mut(), cluster) {
            r.cluster = Some(c.name.clone());
        }
        if let (Some(t), Some(c)) = (trace.as_deref_mut(), cluster) {
            t.cluster(&c.name);
        }
        let matched_allows_non_idempotent = matched.route.retry_non_idempotent;
        let route = matched.route;
        *route_index = Some(route.index);

        // Identity headers are the gateway's to set: a client's own copies never pass.
        snap.identity.remove_from(req.headers_mut());
        // Route filters: authentication and rate limits, in order.
        let filters = snap
            .route_filters
            .get(route.index)
            .map_or(&[][..], Vec::as_slice);
        // CORS first: a browser's preflight carries no credentials, so the route's auth filters
        // must not see it.
        if let Some(c) = filters.iter().find_map(crate::filter::Filter::as_cors) {
            if let Some(answer) = c.preflight(req.method(), req.headers()) {
                return answer.map(|r| r.map(|()| Body::empty()));
            }
            *cors = Some((c.clone(), req.headers().get(header::ORIGIN).cloned()));
        }
        // The cache filter wraps the backend trip (`proxy::cache`); never for an upgrade.
        let route_cache = filters
            .iter()
            .find_map(crate::filter::Filter::as_cache)
            .filter(|_| {
                req.version() != Version::HTTP_11
                    || headers::upgrade_protocol(req.headers()).is_none()
            })
            .cloned();
        let had_authorization =
            route_cache.is_some() && req.headers().contains_key(header::AUTHORIZATION);
        let mut consumer = None;
        if !filters.is_empty() {
            let mut identity = crate::filter::Identity::default();
            let (mut parts, body) = req.into_parts();
            let outcome = crate::filter::run(
                filters,
                &mut parts,
                (
                    canon.client.ip,
                    ctx.tls.as_ref().and_then(|t| t.client_cert.as_ref()),
                ),
                &route.name,
                &mut identity,
                response_headers,
            )
            .await;
            req = Request::from_parts(parts, body);
            if let Some(r) = rec.as_deref_mut() {
                r.consumer = identity.consumer.clone();
            }
            if let (Some(t), Some(c)) = (trace.as_deref_mut(), &identity.consumer) {
                t.consumer(c);
            }
            outcome?;
            consumer = identity.consumer;
        }
        if route.response_headers.is_some() || cluster.is_some_and(|c| c.response_headers.is_some())
        {
            *response_rules = [
                cluster.and_then(|c| c.response_headers.clone()),
                route.response_headers.clone(),
            ];
            *rule_vars = Some((route.name.clone(), canon.client.ip, consumer.clone()));
        }
        let scheme = if ctx.tls.is_some() { "https" } else { "http" };
        let Some(cluster) = cluster else {
            return reply::answer(&route.target, (scheme, host), req.uri());
        };
        let mut cache_plan = None;
        if let Some(c) = &route_cache {
            let (mut parts, body) = req.into_parts();
            // Boxed: the cache's futures would otherwise sit inside every request's future, cached
            // route or not, and be moved with it.
            let before = Box::pin(cache::before(
                c,
                &mut parts,
                (scheme, host),
                consumer.as_deref(),
                had_authorization,
            ))
            .await;
            req = Request::from_parts(parts, body);
            match before {
                cache::Before::Serve(resp, lookup) => {
                    c.count(lookup);
                    if let Some(r) = rec.as_deref_mut() {
                        r.cache = Some(lookup.as_str());
                    }
                    return Ok(resp);
                }
                cache::Before::Fail(e) => {
                    c.count(crate::filter::cache::Lookup::Miss);
                    if let Some(r) = rec.as_deref_mut() {
                        r.cache = Some(crate::filter::cache::Lookup::Miss.as_str());
                    }
                    return Err(e);
                }
                cache::Before::Forward(p) => cache_plan = Some((p, None)),
                // Boxed: rare, and the plan is held across the try loop.
                cache::Before::Background(stale, p) => {
                    cache_plan = Some((p, Some(Box::new(stale))))
                }
            }
        }
        let key = cluster
            .balancer
            .hash_on()
            .and_then(|h| hash_key(h, &req, canon.client.ip))
            .map(|k| crate::cluster::balance::key_hash(&k));

        let max_body = route.max_body_bytes.unwrap_or(ctx.listener.max_body_bytes);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(ProxyError::BodyTooLarge);
        }

        // Build the upstream request head from the client's.
        let upgrade = if req.version() == Version::HTTP_11 {
            headers::upgrade_protocol(req.headers())
        } else {
            None
        };
        // `host_rewrite`: a literal replaces the host the backend gets (the endpoint's own address
        // is set for each try, `attempt`).
        let literal_host = match &route.host_rewrite {
            Some(crate::route::forward::HostRewrite::Literal(v)) => Some(v),
            _ => None,
        };
        let upstream_host = literal_host.and_then(|v| v.to_str().ok()).unwrap_or(host);
        let uri = upstream_uri(&req, rewritten, upstream_host, cluster.protocol)?;
        let client_version = req.version();
        // In a block: the head and body are borrowed while they are made, so as locals of the
        // whole function they would stay in its future across the try loop too, after they were
        // moved into it.
        let (head, body, progress) = {
            let (mut parts, body) = req.into_parts();
            parts.uri = uri;
            parts.version = match cluster.protocol {
                gatehouse_config::Protocol::Http1 => Version::HTTP_11,
                gatehouse_config::Protocol::Http2 => Version::HTTP_2,
            };
            parts.extensions = http::Extensions::new();
            headers::strip_hop_by_hop(&mut parts.headers, upgrade.clone());
            // After hop-by-hop removal, so a client's `Connection: x-gatehouse-consumer` cannot take
            // away the header the gateway sets.
            if let Some(c) = &consumer {
                snap.identity.set(&mut parts.headers, c);
            }
            headers::set_forwarding(
                &mut parts.headers,
                &headers::Hop {
                    forwarded_for: canon.client.forwarded_for.clone(),
                    trusted: ctx.listener.edge.trusts(ctx.peer.ip()),
                    peer: &ctx.peer_header,
                    proto: if ctx.tls.is_some() { "https" } else { "http" },
                    host: (!host.is_empty()).then_some(canon.host.header()),
                    version: version_str(client_version),
                    made: Some(&ctx.forwarded),
                },
            );
            if client_version == Version::HTTP_2 && parts.version != Version::HTTP_2 {
                join_cookies(&mut parts.headers);
            }
            if parts.version == Version::HTTP_2 {
                // HTTP/2 carries the host in :authority (from the URI); a Host header must not differ.
                parts.headers.remove(header::HOST);
            } else if host.is_empty() && literal_host.is_none() {
                // An HTTP/1.0 client that named no host: HTTP/1.1 needs one (RFC 6761's .invalid).
                parts
                    .headers
                    .insert(header::HOST, HeaderValue::from_static("gatehouse.invalid"));
            } else {
                // The canonical host, also for an absolute-form request whose Host said otherwise.
                parts.headers.insert(
                    header::HOST,
                    literal_host.unwrap_or(canon.host.header()).clone(),
                );
            }
            parts.headers.insert(X_REQUEST_ID, request_id.clone());
            parts.headers.insert(TRACEPARENT, traceparent.clone());
            // The cluster's request_headers, then the route's (which win a `set` of the same name).
            if cluster.request_headers.is_some() || route.request_headers.is_some() {
                let vars = crate::route::headers::Vars {
                    client_ip: canon.client.ip,
                    request_id,
                    route: &route.name,
                    consumer: consumer.as_deref(),
                };
                for ops in [&cluster.request_headers, &route.request_headers]
                    .into_iter()
                    .flatten()
                {
                    ops.apply(&mut parts.headers, &vars);
                }
            }

            // The body: buffered when small enough to be sent again by a retry, else streamed once.
            // A request without one (most GETs) needs none of the machinery below.
            let empty = http_body::Body::size_hint(&body).exact() == Some(0);
            // How the client's body goes is the client's business: the try loop reads this to never
            // charge an endpoint for a client that stalled, aborted or sent garbage.
            let progress = (!empty).then(|| Arc::new(crate::body::Progress::default()));
            let retries_on = cluster.retries.attempts > 0 && upgrade.is_none();
            // Small bodies are read whole first (request buffering; also what lets a retry resend
            // them); bigger ones stream once.
            let buffer_limit = if retries_on {
                ctx.listener
                    .request_buffering
                    .max(cluster.retries.max_body_bytes.0)
            } else {
                ctx.listener.request_buffering
            };
            let body = match &progress {
                None => attempt::ReqBody::Replayable(Bytes::new()),
                Some(progress) => {
                    let counter = Arc::new(AtomicU64::new(0));
                    if let Some(r) = rec.as_deref_mut() {
                        r.bytes_in = Some(counter.clone());
                    }
                    let streamed = Body::stream(body)
                        .with_limit(max_body)
                        .with_counter(counter)
                        .with_progress(progress.clone())
                        .with_read_timeout(
                            route.idle_timeout.unwrap_or(ctx.listener.body_read_timeout),
                        );
                    if upgrade.is_some()
                        || declared.is_some_and(|n| n > buffer_limit)
                        || buffer_limit == 0
                    {
                        attempt::ReqBody::Once(streamed)
                    } else {
                        match crate::body::buffer_up_to(streamed, buffer_limit).await {
                            Ok(crate::body::Buffered::Whole(b)) => attempt::ReqBody::Replayable(b),
                            Ok(crate::body::Buffered::Partial(b)) => attempt::ReqBody::Once(b),
                            Err(_) => {
                                let fault = progress
                                    .fault()
                                    .unwrap_or(crate::body::DownstreamFault::Aborted);
                                return Err(ProxyError::Downstream(fault));
                            }
                        }
                    }
                }
            };

            if let Some(up) = upgrade {
                let observed = (rec, trace.as_deref_mut());
                return forward_upgrade(ctx, cluster, parts, body, up, observed).await;
            }

            // A stale entry within `stale-while-revalidate` answers now; the revalidation goes on in
            // its own task (a request without a body: nothing of the client's is needed for it).
            if let Some((plan, Some(stale))) =
                cache_plan.take_if(|(_, stale)| stale.is_some() && progress.is_none())
            {
                let out = attempt::Outgoing {
                    head: parts,
                    body,
                    allow_non_idempotent: matched_allows_non_idempotent,
                    key,
                    progress: &crate::body::NO_BODY,
                    request_timeout: route.request_timeout,
                    host_from_endpoint: matches!(
                        route.host_rewrite,
                        Some(crate::route::forward::HostRewrite::Endpoint)
                    ),
                    trace: None,
                    salvage: false,
                };
                let cluster = cluster.clone();
                let events = ctx.runtime.events.clone();
                tokio::spawn(async move {
                    let mut tries = attempt::Tries::default();
                    let result = attempt::run(&cluster, out, &events, &mut tries)
                        .await
                        .map(|a| {
                            let (resp, held) = upstream_response(a);
                            resp.map(|b| b.with_hold(Box::new(held)))
                        });
                    let _ = cache::finish(plan, result).await;
                });
                if let Some(c) = &route_cache {
                    c.count(crate::filter::cache::Lookup::Stale);
                }
                if let Some(r) = rec {
                    r.cache = Some(crate::filter::cache::Lookup::Stale.as_str());
                }
                return Ok(*stale);
            }
            if let Some(m) = &route.mirror {
                mirror::send(
                    (m, &route.name),
                    &snap.clusters,
                    &parts,
                    &body,
                    (&ctx.runtime.metrics, &ctx.runtime.events),
                );
            }
            (parts, body, progress)
        };
        let mut logged = TriesLogged {
            tries: attempt::Tries::default(),
            rec: rec.as_deref_mut(),
        };
        let out = attempt::Outgoing {
            head,
            body,
            allow_non_idempotent: matched_allows_non_idempotent,
            key,
            progress: progress.as_deref().unwrap_or(&crate::body::NO_BODY),
            request_timeout: route.request_timeout,
            host_from_endpoint: matches!(
                route.host_rewrite,
                Some(crate::route::forward::HostRewrite::Endpoint)
            ),
            trace: trace.as_deref(),
            salvage: true,
        };
        let result = attempt::run(cluster, out, &ctx.runtime.events, &mut logged.tries).await;
        if let Some(t) = trace.as_deref_mut() {
            t.tries(logged.tries.last_endpoint.as_ref(), logged.tries.retries);
        }
        drop(logged);
        let result = result.map(|a| {
            let (resp, h) = upstream_response(a);
            *held = Some(h);
            match route.idle_timeout {
                // The backend's silence mid-body ends the response (the client sees it cut short).
                Some(t) => resp.map(|b| b.with_read_timeout(t)),
                None => resp,
            }
        });
        match (cache_plan, &route_cache) {
            (Some((plan, _)), Some(c)) => {
                let (result, lookup) = Box::pin(cache::finish(plan, result)).await;
                c.count(lookup);
                if let Some(r) = rec {
                    r.cache = Some(lookup.as_str());
                }
                result
            }
            _ => result,
        }
    }
}

/// The try loop's account (the endpoint last tried, the retries made, the time upstream),
/// written into the access record however the loop ends: when it returns, and when it is
/// dropped with the request because the client left mid-try, whose `499` line then still names
/// the endpoint that kept it waiting.
struct TriesLogged<'r> {
    tries: attempt::Tries,
    rec: Option<&'r mut AccessRecord>,
}

impl Drop for TriesLogged<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.rec.as_deref_mut() {
            let t = &mut self.tries;
            r.endpoint = t.last_endpoint.take();
            r.retries = t.retries;
            r.upstream_duration = (!t.upstream.is_zero()).then_some(t.upstream);
        }
    }
}

/// A try's answer as the client's response, and what it holds until its body ends.
fn upstream_response(
    a: attempt::Answer,
) -> (
    Response<Body>,
    (
        crate::cluster::endpoint::InFlight,
        Option<crate::cluster::Slot>,
    ),
) {
    let mut resp = a.response;
    headers::strip_hop_by_hop(resp.headers_mut(), None);
    let checkin = a.checkin;
    (
        resp.map(|b| Body::stream(b).with_checkin(checkin)),
        (a.in_flight, a.cluster_slot),
    )
}

/// An upgrade (WebSocket): one try over a dedicated connection, then bytes both ways.
async fn forward_upgrade(
    ctx: &ConnCtx,
    cluster: &Cluster,
    mut parts: http::request::Parts,
    body: attempt::ReqBody,
    upgrade: HeaderValue,
    (rec, trace): (
        Option<&mut AccessRecord>,
        Option<&mut crate::observe::otel::ServerSpan>,
    ),
) -> Result<Response<Body>, ProxyError> {
    let now = tokio::time::Instant::now();
    let picked = cluster
        .pick(now, &[], None, &ctx.runtime.events)
        .ok_or_else(|| ProxyError::NoEligibleEndpoint {
            retry_after: cluster.retry_after(now),
        })?;
    // A tunnel is a request (and a connection) like any other under the cluster's limits.
    let Some(slot) = cluster
        .state
        .take(|s| &s.requests, cluster.limits.max_requests)
    else {
        cluster.retry_counters.overflow_requests.inc();
        return Err(ProxyError::ClusterOverloaded);
    };
    let ep = picked.endpoint;
    let in_flight = ep.state.start_request();
    let body = match body {
        attempt::ReqBody::Replayable(b) => Body::full(b),
        attempt::ReqBody::Once(b) => b,
    };
    let try_span = trace
        .as_deref()
        .map(|t| t.start_try(&parts.method, &ep.state.address, 0));
    if let Some(s) = &try_span {
        parts.headers.insert(TRACEPARENT, s.traceparent());
    }
    let sent = Instant::now();
    let result = tokio::time::timeout(
        cluster.timeouts.request.0,
        ep.client.send_upgrade(Request::from_parts(parts, body)),
    )
    .await
    .unwrap_or(Err(ProxyError::RequestTimeout));
    if let Some(r) = rec {
        r.endpoint = Some(ep.state.address.clone());
        r.upstream_duration = Some(sent.elapsed());
    }
    if let Some(t) = trace {
        t.tries(Some(&ep.state.address), 0);
    }
    if let Some(s) = try_span {
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        s.finish(status, result.as_ref().err().map(ProxyError::reason), false);
    }
    let mut resp = result?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_up = hyper::upgrade::on(&mut resp);
        // The listener hands the client's socket over once hyper has written the 101.
        let (handover, client) = tokio::sync::oneshot::channel();
        *ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(handover);
        ctx.runtime.tunnels.spawn(tunnel(
            client,
            upstream_up,
            (in_flight, slot),
            ctx.runtime.stopping(),
        ));
        // The protocol the backend switched to, as it said it.
        let chosen = resp
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or(upgrade);
        headers::strip_hop_by_hop(resp.headers_mut(), Some(chosen));
        return Ok(resp.map(|_| Body::empty()));
    }
    headers::strip_hop_by_hop(resp.headers_mut(), None);
    Ok(resp.map(|b| Body::stream(b).with_hold(Box::new(in_flight))))
}

/// The bytes a hashing policy hashes for this request, if the request has them.
fn hash_key<B>(on: &HashOn, req: &Request<B>, client: std::net::IpAddr) -> Option<Vec<u8>> {
    let h = req.headers();
    match on {
        HashOn::Header(name) => h.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            }),
        HashOn::ClientIp => Some(client.to_string().into_bytes()),
        HashOn::Path => Some(req.uri().path().as_bytes().to_vec()),
    }
}

/// The upstream request's URI. Its path and query are the request's own (the same shared bytes,
/// no copy) unless a route rewrote the path; an auth filter may already have taken a credential
/// out of the query. The authority: HTTP/2 sends it as `:authority`, so it is the host; for
/// HTTP/1.1 the `Host` header carries the host and the authority only keys the endpoint's pool,
/// so it is one constant (distinct hosts do not split the pool).
fn upstream_uri<B>(
    req: &Request<B>,
    rewritten: Option<String>,
    host: &str,
    protocol: gatehouse_config::Protocol,
) -> Result<Uri, ProxyError> {
    use http::uri::{Authority, PathAndQuery, Scheme};
    let pq = match rewritten {
        None => req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(path) => {
            let text = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(text).map_err(|_| ProxyError::BadRequest("invalid_uri"))?
        }
    };
    const POOL: Authority = Authority::from_static("endpoint.gatehouse.invalid");
    let authority = match protocol {
        gatehouse_config::Protocol::Http2 if !host.is_empty() => {
            Authority::try_from(host).unwrap_or(POOL)
        }
        _ => POOL,
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid_uri"))
}

/// HTTP/2 may split `cookie` into one field per pair; an HTTP/1.1 backend expects one line
/// (RFC 9113 §8.2.3: joined with "; ").
fn join_cookies(h: &mut http::HeaderMap) {
    if h.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        h.insert(header::COOKIE, v);
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until
/// either side closes, or the gateway shuts down (a tunnel has no request boundary to drain at).
async fn tunnel(
    client: tokio::sync::oneshot::Receiver<crate::conn::Handover>,
    upstream: hyper::upgrade::OnUpgrade,
    _held: (crate::cluster::endpoint::InFlight, crate::cluster::Slot),
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let (Ok(mut c), Ok(u)) = (client.await, upstream.await) else {
        return;
    };
    let mut u = TokioIo::new(u);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
}

#[cfg(test)]
mod future_size {
    /// The size of the future a function returns, without calling it.
    fn ret_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper boxes each request's future, and depending on how the optimizer lays the copy
    /// out, the box is filled by a copy of all of it: its size can be paid on every request
    /// (docs/design/performance.md). 8,480 bytes on 2026-12-01 (8,208 before the routing-depth
    /// fields: cors, mirror, host_rewrite); 8,272 with tracing (the request's IDs are made in a
    /// block, so their intermediate copies are not kept across the awaits); 4,720 on
    /// 2026-12-02, once the request and its head were held once each (`async` blocks instead
    /// of `async fn`s on the request path, the try's request made straight into the client's
    /// future). A rarely taken `.await` on a big future must go through `Box::pin`, and a big
    /// value must not be held twice, rather than grow this.
    #[test]
    fn the_request_future_does_not_grow() {
        let size = ret_size(super::handle);
        eprintln!("request future: {size} bytes");
        let bound = 5 << 10;
        assert!(
            size <= bound,
            "the request future is {size} bytes (at most {bound})"
        );
    }
}
