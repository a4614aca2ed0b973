//! The try loop: pick an endpoint → send with a per-try timeout → record the outcome on the
//! endpoint's breaker → retry on another endpoint when the condition, the method, the body and
//! the cluster's retry budget all allow, after a jittered backoff.

use crate::body::{Body, Progress};
use crate::cluster::breaker::Call;
use crate::cluster::endpoint::{Admission, EndpointState, InFlight};
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::observe::events::Events;
use crate::upstream::Connected;
use bytes::Bytes;
use futures_util::future::Either;
use gatehouse_config::policy::RetryOn;
use http::request::Parts;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The request body as the try loop sees it.
pub enum ReqBody {
    /// Buffered (or empty): can be sent again.
    Replayable(Bytes),
    /// Streamed: only one try.
    Once(Body),
}

impl ReqBody {
    /// The body for one try, and whether another try could send it again. A streamed body
    /// leaves an empty one behind, which no try sends: it allows no retry.
    fn for_try(&mut self) -> (Body, bool) {
        match std::mem::replace(self, ReqBody::Replayable(Bytes::new())) {
            ReqBody::Replayable(b) => {
                *self = ReqBody::Replayable(b.clone());
                (Body::full(b), true)
            }
            ReqBody::Once(b) => (b, false),
        }
    }
}

/// A finished exchange: the response, the endpoint that gave it, and its in-flight guard.
pub struct Answer {
    pub response: Response<Incoming>,
    pub endpoint: Arc<str>,
    pub in_flight: InFlight,
    /// The request's place under the cluster's `max_requests`, held until the body ends.
    pub cluster_slot: Option<crate::cluster::Slot>,
    /// Gives the HTTP/1.1 connection back to its pool when the body has been read.
    pub checkin: Option<crate::upstream::Checkin>,
}

/// What the loop reports besides its result.
#[derive(Default)]
pub struct Tries {
    pub retries: u32,
    pub last_endpoint: Option<Arc<str>>,
    pub upstream: Duration,
}

/// Marks a half-open probe that ended without an outcome (the client went away) so that its
/// slot is freed.
struct ProbeGuard {
    state: Arc<EndpointState>,
    armed: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.state.cancel_probe();
        }
    }
}

/// Counts a try as `cancelled` unless its success or failure was counted: however the try
/// ends, also when the client leaves and the request's future is dropped mid-try.
struct TryCounted<'a> {
    metrics: &'a crate::observe::metrics::EndpointMetrics,
    counted: bool,
}

impl Drop for TryCounted<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.metrics.cancelled.inc();
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn condition(r: &Result<Response<Incoming>, ProxyError>) -> Option<RetryOn> {
    match r {
        Ok(resp) => Some(RetryOn::Status(resp.status().as_u16())),
        Err(ProxyError::ConnectRefused | ProxyError::ConnectTimeout) => {
            Some(RetryOn::ConnectFailure)
        }
        Err(ProxyError::UpstreamReset) => Some(RetryOn::Reset),
        Err(ProxyError::RequestTimeout) => Some(RetryOn::Timeout),
        Err(ProxyError::Injected { status }) => Some(RetryOn::Status(*status)),
        Err(_) => None,
    }
}

/// The request the try loop sends: its head (already rewritten), its body, whether the route
/// allows retrying a non-idempotent method, the balancer's hash key, and the body's progress.
pub struct Outgoing<'a> {
    pub head: Parts,
    pub body: ReqBody,
    pub allow_non_idempotent: bool,
    pub key: Option<u64>,
    pub progress: &'a crate::body::Progress,
    /// The route's `timeouts.request`, instead of the cluster's.
    pub request_timeout: Option<std::time::Duration>,
    /// `host_rewrite: {endpoint: true}`: each try's `Host` is its endpoint's address.
    pub host_from_endpoint: bool,
    /// A recorded request's server span: each try is a child span of it.
    pub trace: Option<&'a crate::observe::otel::ServerSpan>,
    /// A client's request (not a mirrored copy or a revalidation): if the client leaves before
    /// the answer, the try's connection is waited for and pooled again ([`Connected`]).
    pub salvage: bool,
}

/// The answer a request gets, holding its place under the cluster's `max_requests` until its
/// body ends.
fn with_slot(
    r: Result<Answer, ProxyError>,
    slot: Option<crate::cluster::Slot>,
) -> Result<Answer, ProxyError> {
    r.map(|mut a| {
        a.cluster_slot = slot;
        a
    })
}

/// Waits for a try, and meanwhile: once it has been in the endpoint's hands (see
/// [`in_hands_since`]) for `within`, it ends as a `RequestTimeout`; the moment it has taken
/// `slow_call_duration` it counts as a slow call on the endpoint's breaker (so a hung endpoint
/// is seen while it hangs, not when its tries finally time out); if the breaker opens while the
/// try waits and `may_move`, the try is abandoned (`EndpointEjected`) so the request can be
/// retried on another endpoint. Returns the result and whether the slow call was recorded.
///
/// One timer serves both deadlines, re-armed to whichever is next: a timer costs a wheel
/// insertion and removal, and every try paid for two (docs/design/performance.md).
async fn watched<F>(
    mut send: std::pin::Pin<&mut F>,
    (cfg, may_eject, ep, admission): (
        &gatehouse_config::CircuitBreaker,
        &(dyn Fn() -> bool + Sync),
        &Arc<EndpointState>,
        Admission,
    ),
    (may_move, within, on_wire): (bool, Duration, (&Connected, &Progress)),
    events: &Events,
) -> (Result<Response<Incoming>, ProxyError>, bool)
where
    F: std::future::Future<Output = Result<Response<Incoming>, ProxyError>>,
{
    let slow_after = cfg.slow_call_duration.0;
    // The breaker opening is watched only once the try has waited `WATCH_OPENS_AFTER`: most
    // tries are answered sooner, and waiting on the endpoint's `Notify` takes its lock to join
    // its waiters and again to leave (~380 instructions per request). An opening in the
    // meantime is not missed: a `Notified` sees every `notify_waiters` from its creation on,
    // polled or not.
    let opened = ep.opened.notified();
    tokio::pin!(opened);
    let mut watching_opens = false;
    let mut slow_due = cfg.enabled;
    // Neither deadline can come before its own duration from now.
    let mut first = if slow_due {
        within.min(slow_after)
    } else {
        within
    };
    if may_move {
        first = first.min(WATCH_OPENS_AFTER);
    }
    let timer = tokio::time::sleep(first);
    // When the try began, from the timer's own clock read rather than another one.
    let started = timer.deadline() - first;
    tokio::pin!(timer);
    let mut slow_recorded = false;
    loop {
        tokio::select! {
            biased;
            r = send.as_mut() => return (r, slow_recorded),
            _ = &mut timer => {
                let now = Instant::now();
                // From now on the select polls `opened` (ready at once if the breaker opened
                // since the try began).
                if now >= started + WATCH_OPENS_AFTER {
                    watching_opens = true;
                }
                // Not in the endpoint's hands yet: nothing is due before a whole duration more.
                let held = in_hands_since(on_wire.0, on_wire.1)
                    .map(|since| Duration::from_micros(crate::clock::now_us(now).saturating_sub(since)));
                if held.is_some_and(|h| h >= within) {
                    on_wire.0.give_up();
                    return (Err(ProxyError::RequestTimeout), slow_recorded);
                }
                if slow_due && held.is_some_and(|h| h >= slow_after) {
                    slow_due = false;
                    slow_recorded = true;
                    let may_trip = may_eject();
                    let call = Call { failed: false, slow: true };
                    ep.record(cfg, now, call, admission, may_trip, events);
                }
                let h = held.unwrap_or_default();
                let mut next = within - h;
                if slow_due {
                    next = next.min(slow_after.saturating_sub(h));
                }
                if may_move && !watching_opens {
                    next = next.min((started + WATCH_OPENS_AFTER).saturating_duration_since(now));
                }
                timer.as_mut().reset(now + next);
            }
            _ = &mut opened, if may_move && watching_opens => {
                on_wire.0.give_up();
                return (Err(ProxyError::EndpointEjected), slow_recorded);
            }
        }
    }
}

/// How long a try waits before it watches its endpoint's breaker for an opening (see
/// [`watched`]); an opening before then moves it at this age.
const WATCH_OPENS_AFTER: Duration = Duration::from_millis(20);

/// Since when (µs, [`crate::clock::now_us`]) the try's request has been in the endpoint's
/// hands: from when it had its connection and the client's body had been read to the end, or
/// from when the endpoint stopped taking a body that is still streaming. `None` until then:
/// time spent waiting for room under the cluster's connection limit or for a slow client's
/// body is never the endpoint's.
fn in_hands_since(connected: &Connected, progress: &Progress) -> Option<u64> {
    match (connected.at_us(), progress.ended_at_us()) {
        (Some(c), Some(b)) => Some(c.max(b)),
        (Some(c), None) => progress.stalled_since_us().map(|t| t.max(c)),
        (None, _) => None,
    }
}

/// How long the try has been in the endpoint's hands (see [`in_hands_since`]); `total` when it
/// never got that far.
fn endpoint_took(
    connected: &Connected,
    progress: &Progress,
    total: Duration,
    now: Instant,
) -> Duration {
    let Some(c) = connected.at_us() else {
        return total;
    };
    let since = progress.ended_at_us().map_or(c, |b| b.max(c));
    let now = crate::clock::now_us(now);
    Duration::from_micros(now.saturating_sub(since)).min(total)
}

/// Runs the tries for one request. `out.head` is the upstream request head, already rewritten.
///
/// An `async` block that uses `out`'s fields where they are, rather than an `async fn` that
/// takes them apart: an `async fn` keeps its argument and the locals its parts are moved to,
/// and this future is part of every request's (docs/design/performance.md).
#[allow(clippy::manual_async_fn)] // an `async fn` would hold the argument twice (above)
pub fn run<'a>(
    cluster: &'a Cluster,
    mut out: Outgoing<'a>,
    events: &'a Events,
    tries: &'a mut Tries,
) -> impl std::future::Future<Output = Result<Answer, ProxyError>> + 'a {
    async move {
        let (progress, trace, key) = (out.progress, out.trace, out.key);
        let started = Instant::now();
        let request_timeout = out.request_timeout.unwrap_or(cluster.timeouts.request.0);
        // The cluster's own limit first: past it, answer at once rather than pile on.
        let Some(cluster_slot) = cluster
            .state
            .take(|s| &s.requests, cluster.limits.max_requests)
        else {
            cluster.retry_counters.overflow_requests.inc();
            return Err(ProxyError::ClusterOverloaded);
        };
        let mut cluster_slot = Some(cluster_slot);
        // Held for as long as the retry it was taken for runs (replaced by the next one).
        let mut _retry_slot: Option<crate::cluster::Slot> = None;
        let deadline = started + request_timeout;
        let per_try = cluster
            .retries
            .per_try_timeout
            .map_or(request_timeout, |d| d.0.min(request_timeout));
        let may_retry_method = idempotent(&out.head.method) || out.allow_non_idempotent;
        cluster.state.budget.record_request(started);
        // Inline: most requests make one try, and no try should cost an allocation for this.
        let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        // The previous try's result, answered if no other endpoint is left to retry on.
        let mut last: Option<Result<Answer, ProxyError>> = None;
        let mut first_try = Some(started);
        loop {
            let now = first_try.take().unwrap_or_else(Instant::now);
            let Some(picked) = cluster.pick(now, &tried, key, events) else {
                let last = last.unwrap_or_else(|| {
                    Err(ProxyError::NoEligibleEndpoint {
                        retry_after: cluster.retry_after(now),
                    })
                });
                return with_slot(last, cluster_slot);
            };
            tried.push(picked.index);
            let ep = picked.endpoint;
            tries.last_endpoint = Some(ep.state.address.clone());
            let mut guard = ProbeGuard {
                state: ep.state.clone(),
                armed: picked.admission == Admission::Probe,
            };
            let in_flight = ep.state.start_request();
            let mut counted = TryCounted {
                metrics: &ep.metrics,
                counted: false,
            };

            let (req_body, can_replay) = out.body.for_try();
            // The head is copied only when another try could need it; the last possible try
            // takes it.
            let another_try_possible =
                can_replay && may_retry_method && tries.retries < cluster.retries.attempts;
            // A recorded request: this try's span, which the backend's `traceparent` names.
            let try_span =
                trace.map(|t| t.start_try(&out.head.method, &ep.state.address, tries.retries));
            let budget_left = deadline.saturating_duration_since(now);
            // The pick took nanoseconds: one clock read serves both.
            let sent = now;
            let fault = ep.state.active_fault(now, events);
            let mut checkin: Option<crate::upstream::Checkin> = None;
            let connected = if out.salvage {
                Connected::salvageable(now + per_try.min(budget_left))
            } else {
                Connected::default()
            };
            let (result, slow_recorded) = {
                // The try's futures are pinned here and lent to the layers that watch them:
                // passed by value, each layer would hold its own copy (an async fn keeps its
                // argument and the local it moves it to), and the request's future was 16 KiB,
                // copied onto the heap for every request. The try's request is made straight
                // into the client's future (held there only, not also in a local here), and a
                // drill's abort answers in the endpoint's place: recorded like a real failure.
                let upstream = match fault.and_then(|f| f.abort) {
                    Some(status) => {
                        // Moved on both paths: a body left in a local would be kept in this
                        // future across the try.
                        drop(req_body);
                        Either::Right(std::future::ready(Err(ProxyError::Injected { status })))
                    }
                    None => Either::Left(ep.client.send(
                        try_request(
                            &mut out.head,
                            req_body,
                            another_try_possible,
                            out.host_from_endpoint.then_some(&*ep.state.address),
                            try_span.as_deref(),
                        ),
                        &connected,
                    )),
                };
                let mut upstream = std::pin::pin!(upstream);
                let send = std::pin::pin!(async {
                    if let Some(d) = fault.and_then(|f| f.delay) {
                        // The drill's delay stands in for the endpoint's own.
                        connected.mark();
                        tokio::time::sleep(d).await;
                    }
                    upstream.as_mut().await.map(|(resp, c)| {
                        checkin = c;
                        resp
                    })
                });
                let may_move =
                    can_replay && may_retry_method && tries.retries < cluster.retries.attempts;
                let on_wire = (&connected, progress);
                watched(
                    send,
                    (
                        &cluster.breaker,
                        &|| cluster.may_eject(),
                        &ep.state,
                        picked.admission,
                    ),
                    (may_move, per_try.min(budget_left), on_wire),
                    events,
                )
                .await
            };
            if slow_recorded {
                // The breaker has this try's outcome (and a probe its verdict) already.
                guard.armed = false;
            }
            // A failure the client's body caused is the client's: not retried, not recorded.
            let result = match (result, progress.fault()) {
                (Err(_), Some(f)) => Err(ProxyError::Downstream(f)),
                (r, _) => r,
            };
            // One clock read for everything after the try (latency, breaker, retry decision).
            let after = Instant::now();
            let elapsed = after.saturating_duration_since(sent);
            tries.upstream += elapsed;
            // The endpoint's own time: not the wait for a connection, not a slow client's upload.
            let took = endpoint_took(&connected, progress, elapsed, after);
            if matches!(result, Ok(_) | Err(ProxyError::RequestTimeout)) {
                ep.state.observe_latency(took, after);
            }
            ep.metrics.duration.observe(took.as_secs_f64());
            ep.state.latency.observe(took.as_secs_f64());

            // Record the outcome on the endpoint (errors that are not the endpoint's fault aren't).
            let call = match &result {
                Ok(resp) => Some(Call {
                    failed: resp.status().is_server_error(),
                    slow: took >= cluster.breaker.slow_call_duration.0,
                }),
                Err(ProxyError::Injected { status }) => Some(Call {
                    failed: *status >= 500,
                    slow: took >= cluster.breaker.slow_call_duration.0,
                }),
                Err(e)
                    if e.retryable()
                        || matches!(
                            e,
                            ProxyError::RequestTimeout | ProxyError::UpstreamBadFraming
                        ) =>
                {
                    Some(Call {
                        failed: true,
                        slow: took >= cluster.breaker.slow_call_duration.0,
                    })
                }
                Err(_) => None,
            };
            if let Some(c) = &call {
                counted.counted = true;
                if c.failed {
                    ep.metrics.failure.inc();
                } else {
                    ep.metrics.success.inc();
                }
            }
            // A try already counted as slow when it crossed the threshold adds only a failure.
            let call = call.filter(|c| !slow_recorded || c.failed);
            if let Some(call) = call {
                guard.armed = false;
                let may_trip = !(call.failed || call.slow) || cluster.may_eject();
                let t = ep.state.record(
                    &cluster.breaker,
                    after,
                    call,
                    picked.admission,
                    may_trip,
                    events,
                );
                if t == Some(crate::cluster::breaker::Transition::Closed) {
                    // Back in rotation: ramp its share up rather than hand it a full share at once.
                    ep.state.start_ramp(cluster.slow_start);
                }
            }

            let wanted = tries.retries < cluster.retries.attempts
                && may_retry_method
                && can_replay
                && (condition(&result).is_some_and(|c| cluster.retry_on.contains(&c))
                    || matches!(result, Err(ProxyError::EndpointEjected)))
                && after < deadline;
            // At most `max_retries` retries in flight at once.
            let next_slot = if wanted {
                let slot = cluster
                    .state
                    .take(|s| &s.retries, cluster.limits.max_retries);
                if slot.is_none() {
                    cluster.retry_counters.overflow_retries.inc();
                }
                slot
            } else {
                None
            };
            let retry = next_slot.is_some()
                && cluster.state.budget.try_spend(
                    after,
                    cluster.retries.budget.0,
                    cluster.retries.min_retries_per_second,
                );
            if next_slot.is_some() && !retry {
                cluster.retry_counters.refused_by_budget.inc();
            }
            if retry {
                cluster.retry_counters.sent.inc();
            }
            if matches!(result, Err(ProxyError::ClusterOverloaded)) {
                cluster.retry_counters.overflow_connections.inc();
            }
            if let Some(s) = try_span {
                let (status, failure) = match &result {
                    Ok(r) => (Some(r.status().as_u16()), None),
                    Err(e @ ProxyError::Injected { status }) => (Some(*status), Some(e.reason())),
                    Err(e) => (None, Some(e.reason())),
                };
                s.finish(status, failure, retry);
            }
            // The answer given holds the request's place; one kept for later does not yet. Set
            // as it is made: the answer is 224 bytes, and each move is a copy.
            let slot = if retry { None } else { cluster_slot.take() };
            let result = result.map(|response| Answer {
                response,
                endpoint: ep.state.address.clone(),
                in_flight,
                cluster_slot: slot,
                // A backend that answered before the whole request body was read has a connection
                // still busy with the upload: the body does not hand it back; dropped here, the pool
                // takes it back only once it is idle (`Checkin`'s `Drop`).
                checkin: checkin.take().filter(|_| progress.ended()),
            });
            if !retry {
                return result;
            }
            _retry_slot = next_slot;
            last = Some(result);
            tries.retries += 1;
            let base = cluster.retries.backoff.0;
            let exp = base
                .saturating_mul(1 << (tries.retries - 1).min(10))
                .min(Duration::from_secs(1));
            let wait = exp.mul_f64(0.5 + 0.5 * fastrand::f64());
            let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
        }
    }
}

/// One try's request: the head cloned when another try could need it, else taken; the
/// endpoint's `Host` (`host_rewrite: {endpoint: true}`) and the try span's `traceparent`.
fn try_request(
    head: &mut Parts,
    body: Body,
    keep_head: bool,
    endpoint_host: Option<&str>,
    span: Option<&crate::observe::otel::TrySpan>,
) -> Request<Body> {
    let mut req = Request::new(body);
    *req.version_mut() = head.version;
    if keep_head {
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
    } else {
        *req.method_mut() = std::mem::take(&mut head.method);
        *req.uri_mut() = std::mem::take(&mut head.uri);
        *req.headers_mut() = std::mem::take(&mut head.headers);
    }
    if let Some(address) = endpoint_host {
        set_host(&mut req, address);
    }
    if let Some(s) = span {
        req.headers_mut()
            .insert(crate::observe::ids::TRACEPARENT, s.traceparent());
    }
    req
}

/// `host_rewrite: {endpoint: true}`: the try's `Host` (HTTP/1.1) or `:authority` (HTTP/2) is
/// the endpoint's `host:port`.
fn set_host<B>(req: &mut Request<B>, address: &str) {
    let Ok(v) = http::HeaderValue::from_str(address) else {
        return;
    };
    if req.version() == http::Version::HTTP_2 {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(a) = http::uri::Authority::try_from(address) {
            parts.authority = Some(a);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    } else {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A try that never gets an answer, watched with `may_move`; what `watched` returns and when.
    async fn watch_until_done(open_at: Option<Duration>) -> (Result<(), ProxyError>, Duration) {
        let cfg = gatehouse_config::CircuitBreaker::default();
        let ep = Arc::new(EndpointState::new("c".into(), "10.0.0.1:80".into(), &cfg));
        let events = Events::default();
        let (connected, progress) = (Connected::default(), Progress::default());
        let send = std::future::pending::<Result<Response<Incoming>, ProxyError>>();
        tokio::pin!(send);
        let start = Instant::now();
        let watch = watched(
            send.as_mut(),
            (&cfg, &|| false, &ep, Admission::Normal),
            (true, Duration::from_secs(30), (&connected, &progress)),
            &events,
        );
        tokio::pin!(watch);
        if let Some(at) = open_at {
            tokio::select! {
                biased;
                _ = &mut watch => panic!("the try ended before its endpoint's breaker opened"),
                _ = tokio::time::sleep(at) => {}
            }
            ep.opened.notify_waiters();
        }
        let end = tokio::time::timeout(Duration::from_secs(1), watch).await;
        let r = match end {
            Ok((r, _)) => r.map(|_| ()),
            Err(_) => Ok(()), // still waiting a second on: no move
        };
        (r, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_opening_in_a_tries_first_moments_moves_it_at_20_ms() {
        let (r, took) = watch_until_done(Some(Duration::from_millis(5))).await;
        assert!(matches!(r, Err(ProxyError::EndpointEjected)), "{r:?}");
        assert_eq!(took, WATCH_OPENS_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_opening_moves_the_try_at_once() {
        let (r, took) = watch_until_done(Some(Duration::from_millis(300))).await;
        assert!(matches!(r, Err(ProxyError::EndpointEjected)), "{r:?}");
        assert_eq!(took, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_opening_the_try_stays() {
        let (r, took) = watch_until_done(None).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(took, Duration::from_secs(1));
    }
}
