//! Serving one accepted connection with hyper's HTTP/1.1 or HTTP/2 server, watched for
//! shutdown, idle keep-alive time and a first request that never comes.
//!
//! An HTTP/1.1 connection idle for [`PARK_AFTER`] is parked, as NGINX does with its keep-alive
//! connections: hyper hands the socket back and its buffers (16 KiB) and state are freed; the
//! socket waits in the listener's lot ([`super::park`]) with no buffer and no task at all
//! until the client sends again, and then gets a new task and a new hyper connection. A WebSocket upgrade leaves hyper the same way, to the tunnel.

use super::park::Transport;
use super::park::{Held, Lot, Parked};
use super::proxy_protocol::Rewind;
use super::{first_head, OpenGuard};
use crate::conn::{Activity, ConnCtx, ListenerSettings};
use crate::proxy;
use crate::runtime::Runtime;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long an HTTP/1.1 keep-alive connection stays with hyper after its last response.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// How long a closing connection with nothing in flight may take to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[allow(clippy::too_many_arguments)] // one call site: the accept path's pieces, by name
pub(super) async fn serve_connection<Io: Transport>(
    stream: Io,
    first: Bytes,
    (peer, tls, first_request_by): (SocketAddr, Option<Box<crate::tls::TlsInfo>>, Instant),
    settings: Arc<ListenerSettings>,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    lot: Lot<Io>,
    open: OpenGuard,
) {
    // HTTP/2 with prior knowledge starts with its preface, or TLS's ALPN chose it; anything
    // else is HTTP/1.x.
    let h2 = tls.as_ref().is_some_and(|t| t.h2) || first.starts_with(b"PRI * HTTP/2.0\r\n\r\n");
    let ctx = Arc::new(ConnCtx {
        tls,
        peer_header: crate::canonical::client::peer_header(peer.ip()),
        runtime,
        listener: settings,
        peer,
        activity: Arc::new(Activity::default()),
        upgrade: std::sync::Mutex::new(None),
        forwarded: std::sync::OnceLock::new(),
    });
    // The first head's deadline is the accept path's (from the accept, or the end of the TLS
    // handshake): what it read of the head already took part of it.
    let mut watch = Watch::new(&ctx, shutdown, first_request_by);
    let held = Held { ctx, _open: open };
    if !h2 {
        return serve_h1_loop(watch, held, stream, first, lot).await;
    }
    // Boxed, as each HTTP/1.1 phase is: the task itself stays small.
    Box::pin(async {
        let io = TokioIo::new(Rewind::new(stream, first));
        let conn = held
            .ctx
            .listener
            .http2
            .serve_connection(io, service(&held.ctx));
        let mut conn = H2 {
            conn: Box::pin(conn),
            graceful: |c| c.graceful_shutdown(),
        };
        watch.drive(&mut conn, false).await;
    })
    .await;
}

/// A parked connection the client has sent on again: its next head, then HTTP/1.1 as before.
pub(super) async fn resume<Io: Transport>(
    conn: Parked<Io>,
    lot: Lot<Io>,
    shutdown: watch::Receiver<bool>,
) {
    // The client has just sent: its idle time starts again (a head still arriving must not
    // look idle since the last response, or it would be parked or closed mid-head).
    conn.held.ctx.activity.touch();
    let mut watch = Watch::new(&conn.held.ctx, shutdown, Instant::now());
    let timeout = conn.held.ctx.listener.header_read_timeout;
    let Some((stream, first)) = Box::pin(watch.next_head(conn.socket, timeout)).await else {
        return;
    };
    serve_h1_loop(watch, conn.held, stream, first, lot).await
}

/// The request path as hyper calls it. hyper keeps one slot for the request future per
/// connection, sized for it, for as long as the connection lives; the request path's future is
/// ~5 KiB. Boxed per request, a keep-alive connection holds a pointer instead (one allocation
/// per request, freed at once).
fn service(
    ctx: &Arc<ConnCtx>,
) -> impl hyper::service::HttpService<
    hyper::body::Incoming,
    ResBody = crate::body::Body,
    Future = impl Future<
        Output = Result<http::Response<crate::body::Body>, std::convert::Infallible>,
    > + Send
                 + Unpin,
    Error = std::convert::Infallible,
> + Clone
       + Unpin
       + Send {
    let ctx = ctx.clone();
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let h1 = req.version() < http::Version::HTTP_2;
        let ctx = ctx.clone();
        // `handle`'s future is made inside the box, not moved into it: a 4.7 KiB future built
        // outside and moved in is copied whole into the box on every request (+9,000
        // instructions, docs/design/performance.md). And the box is allocated first and the
        // future written into it (`Box::write`), so only its captures are written:
        // `Box::pin` built the 4.3 KiB future on the stack and copied all of it, 4 KiB of it
        // padding (−720 instructions per request).
        Box::into_pin(Box::write(Box::new_uninit(), async move {
            let runtime = ctx.runtime.clone();
            let mut resp = proxy::handle(ctx, req).await?;
            // A handover's drain: the client learns from the response that the connection
            // ends, so it never sends on a connection being closed (HTTP/2 gets GOAWAY).
            if h1
                && runtime.handing_over()
                && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(resp)
        }))
    })
}

/// HTTP/1.1 on `stream`, one hyper connection after another, until the connection ends or
/// parks (then the listener's lot has it, and this task ends).
async fn serve_h1_loop<Io: Transport>(
    mut watch: Watch,
    held: Held,
    stream: Io,
    first: Bytes,
    lot: Lot<Io>,
) {
    let service = service(&held.ctx);
    let (mut stream, mut pending) = (stream, first);
    loop {
        // Each phase with hyper is boxed and freed when it ends.
        let next = Box::pin(serve_h1(&mut watch, &held.ctx, &service, stream, pending));
        match next.await {
            Next::Stop => return,
            Next::Again(socket, first) => (stream, pending) = (socket, first),
            Next::Park(socket) => {
                let since = held.ctx.activity.idle_since().unwrap_or_else(Instant::now);
                return lot.park(Parked {
                    socket,
                    held,
                    since,
                });
            }
        }
    }
}

/// What follows one hyper HTTP/1.1 connection on a socket.
enum Next<Io> {
    /// The connection is over (closed, handed to a tunnel).
    Stop,
    /// The next request had begun arriving: serve it at once.
    Again(Io, Bytes),
    /// Idle past [`PARK_AFTER`]: wait for the client without hyper.
    Park(Io),
}

/// Serves `stream` with one hyper HTTP/1.1 connection until it ends, is upgraded or is idle
/// long enough to park.
async fn serve_h1<Io: Transport, S>(
    watch: &mut Watch,
    ctx: &ConnCtx,
    service: &S,
    stream: Io,
    pending: Bytes,
) -> Next<Io>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::Body>
        + Clone
        + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(Rewind::new(stream, pending));
    // Boxed: a parked connection's task keeps no room for hyper's connection state.
    let mut conn = H1(Some(Box::new(
        ctx.listener.http1.serve_connection(io, service.clone()),
    )));
    let end = watch.drive(&mut conn, true).await;
    let Some(boxed) = conn.0.take() else {
        return Next::Stop;
    };
    let handover = ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    let parts = (*boxed).into_parts();
    let (socket, unread) = parts.io.into_inner().into_parts();
    if end == End::Closed || (end == End::Finished && handover.is_none()) {
        drop(parts.read_buf);
        socket.close().await;
        return Next::Stop;
    }
    // What hyper had read past its last message comes first, then what it had not yet taken of
    // the replayed bytes.
    let rest: Bytes = if unread.is_empty() {
        parts.read_buf
    } else {
        [parts.read_buf, unread].concat().into()
    };
    if let Some(handover) = handover {
        let _ = handover.send(Box::new(Rewind::new(socket, rest)));
        return Next::Stop;
    }
    if !rest.is_empty() {
        return Next::Again(socket, rest);
    }
    // Even empty, `rest` may point into hyper's 8 KiB read buffer: it goes with this phase.
    Next::Park(socket)
}

/// What woke [`Watch::drive`].
enum Event {
    Done(Result<(), hyper::Error>),
    Shutdown,
    Check,
}

/// How a served connection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// On its own: the client closed, asked to close, erred, or was upgraded.
    Finished,
    /// Closed by the gateway: shutdown, idle timeout, or no first request in time.
    Closed,
    /// Idle past [`PARK_AFTER`]: hyper let go of it, the socket is open.
    Parked,
}

/// A hyper connection as [`Watch::drive`] runs it.
trait Served {
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>>;
    fn graceful(&mut self);
}

/// HTTP/1.1: run without shutting the socket down, so it can be taken back.
struct H1<C>(Option<C>);

impl<I, S, B> Served for H1<Box<hyper::server::conn::http1::Connection<I, S>>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        match self.0.as_mut() {
            Some(c) => c.poll_without_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn graceful(&mut self) {
        if let Some(c) = self.0.as_mut() {
            std::pin::Pin::new(&mut **c).graceful_shutdown();
        }
    }
}

/// HTTP/2: hyper's connection future, closed with GOAWAY (`graceful`).
struct H2<C> {
    conn: std::pin::Pin<Box<C>>,
    graceful: fn(std::pin::Pin<&mut C>),
}

impl<C: Future<Output = Result<(), hyper::Error>>> Served for H2<C> {
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.conn.as_mut().poll(cx)
    }
    fn graceful(&mut self) {
        (self.graceful)(self.conn.as_mut());
    }
}

/// What a served connection is watched for: shutdown, a first request that never comes, idle
/// keep-alive time, and (HTTP/1.1) the moment to park it.
struct Watch {
    activity: Arc<Activity>,
    idle: Duration,
    /// `header_read_timeout`: every head after the first must be complete within this of the
    /// previous response (HTTP/1.1). Checked here with the idle time rather than by hyper's
    /// header timer, which was a timer made, registered and dropped for every request (~650
    /// instructions each); this watch's one timer is not touched per request.
    head: Duration,
    first_request_by: Instant,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<crate::observe::metrics::Metrics>,
}

impl Watch {
    fn new(ctx: &ConnCtx, shutdown: watch::Receiver<bool>, first_request_by: Instant) -> Self {
        Watch {
            activity: ctx.activity.clone(),
            idle: ctx.listener.idle_timeout,
            head: ctx.listener.header_read_timeout,
            first_request_by,
            shutdown,
            metrics: ctx.runtime.metrics.clone(),
        }
    }

    /// Runs `conn` to its end, asking it to close gracefully on shutdown or idleness, or, when
    /// `park`, to let go of an HTTP/1.1 connection idle past [`PARK_AFTER`].
    async fn drive(&mut self, conn: &mut impl Served, park: bool) -> End {
        let idle = self.idle;
        let h1 = park;
        let park = park && PARK_AFTER < idle;
        // How long a connection may sit between responses: its idle time, or (HTTP/1.1, where
        // that time is spent waiting for the next head) the head bound when it is shorter.
        let quiet = if h1 { idle.min(self.head) } else { idle };
        // When to look again while it sits: at the park time, else when it is over.
        let first = if park { PARK_AFTER.min(quiet) } else { quiet };
        // The first-request bound only matters until a request has come.
        let now = Instant::now();
        let mut check_at = if self.activity.used.load(Ordering::Relaxed) {
            // A connection back from parking with part of a head keeps that head's deadline,
            // counted from the response before it.
            let by = self.activity.idle_since().map(|since| since + quiet);
            by.map_or(now + first, |by| by.min(now + first))
        } else {
            self.first_request_by.min(now + first)
        };
        let mut closing = false;
        // Closing for a late head on a connection that has answered here: hyper ends it between
        // messages itself, after writing what it still has of the last response, so it is not
        // cut after the grace second (only past its idle time).
        let mut lenient = false;
        // What the activity was when this hyper connection began: unchanged, it has answered
        // nothing, and a graceful shutdown does not make it give up a head it has begun reading.
        let began = self.activity.stamp();
        let mut parking = false;
        // What the activity was when parking was asked for: a request that still came in the
        // meantime was answered `Connection: close` by hyper, so the socket must close, not park.
        let mut parked_at = (0, 0, 0);
        // Tells whether the shutdown signal has been given without polling `changed()`.
        let probe = self.shutdown.clone();
        loop {
            let event = {
                let mut changed = std::pin::pin!(self.shutdown.changed());
                let mut timer = std::pin::pin!(tokio::time::sleep_until(check_at));
                let (mut changed_armed, mut timer_armed) = (false, false);
                // Not `select!`, which polls every branch on every wake-up of the task (each
                // read, write and answer of every request): the shutdown signal and the timer
                // keep the waker they were first polled with (this task's), so after that they
                // are only looked at (`has_changed`, `is_elapsed`: a load each), never polled
                // again. A poll of `changed()` takes the watch's waiter lock, a poll of the
                // timer reaches the wheel: ~600 instructions per request between them.
                //
                // A poll made with the task's budget spent (tokio's cooperative scheduling)
                // registers nothing, so a future counts as armed only once polled with budget
                // left; and the arming polls come before the connection's, which can spend the
                // whole budget (an HTTP/2 connection reads frames until none are left). A
                // signal already given is acted on without a poll, which could be refused.
                std::future::poll_fn(|cx| {
                    if !closing && probe.has_changed().unwrap_or(true) {
                        return Poll::Ready(Event::Shutdown);
                    }
                    if timer_armed && timer.is_elapsed() {
                        return Poll::Ready(Event::Check);
                    }
                    if !closing && !changed_armed {
                        let budget = tokio::task::coop::has_budget_remaining();
                        if changed.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Shutdown);
                        }
                        changed_armed = budget;
                    }
                    if !timer_armed {
                        let budget = tokio::task::coop::has_budget_remaining();
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Check);
                        }
                        timer_armed = budget;
                    }
                    match conn.poll_end(cx) {
                        Poll::Ready(done) => Poll::Ready(Event::Done(done)),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await
            };
            match event {
                Event::Done(done) => {
                    return match done {
                        Err(e) => {
                            count_malformed(&self.metrics, &e);
                            End::Closed
                        }
                        Ok(()) if closing => End::Closed,
                        Ok(()) if parking && self.activity.stamp() == parked_at => End::Parked,
                        Ok(()) if parking => End::Closed,
                        Ok(()) => End::Finished,
                    };
                }
                Event::Shutdown => {
                    // Seen, as a completed `changed()` would have marked it.
                    self.shutdown.borrow_and_update();
                    closing = true;
                    lenient = false;
                    conn.graceful();
                    // An HTTP/2 client that never acknowledges the GOAWAY must not hold the
                    // process for the whole drain: idle a moment after it, it is dropped.
                    check_at = Instant::now() + CLOSE_GRACE;
                }
                Event::Check => {
                    let a = &self.activity;
                    let now = Instant::now();
                    let used = a.used.load(Ordering::Relaxed);
                    // When a connection with nothing in flight is closed here at the latest,
                    // whatever hyper makes of a graceful shutdown: the first head is due
                    // `header_read_timeout` after the accept; a later one (HTTP/1.1) that long
                    // after the previous response if this hyper connection has answered nothing
                    // (a head carried over a park, or after a wake); else hyper closes it
                    // between messages itself, once the last response is written (a slow reader
                    // may take longer than the head bound), and the idle time is the bound.
                    let close_by = match a.idle_since() {
                        None => None,
                        Some(_) if !used => Some(self.first_request_by),
                        Some(since) if a.stamp() == began => Some(since + quiet),
                        Some(since) => Some(since + idle),
                    };
                    let recheck =
                        close_by.map_or(now + CLOSE_GRACE, |by| by.min(now + CLOSE_GRACE));
                    if closing || parking {
                        let overdue = close_by.is_some_and(|by| by <= now);
                        if (closing && !lenient && a.idle_since().is_some()) || overdue {
                            return End::Closed;
                        }
                        check_at = recheck;
                        continue;
                    }
                    if !used && now >= self.first_request_by {
                        // Nothing was ever asked, so nothing is lost: closed at once (a
                        // graceful shutdown would not close a half-read first head anyway).
                        return End::Closed;
                    }
                    match a.idle_since() {
                        Some(since) if since + idle <= now => {
                            closing = true;
                            conn.graceful();
                            check_at = now + CLOSE_GRACE;
                        }
                        // (HTTP/1.1) The next head not complete in time.
                        Some(since) if since + quiet <= now => {
                            closing = true;
                            lenient = true;
                            conn.graceful();
                            check_at = recheck;
                        }
                        Some(since) if park && since + PARK_AFTER <= now => {
                            parking = true;
                            parked_at = a.stamp();
                            conn.graceful();
                            check_at = recheck;
                        }
                        Some(since) => check_at = since + first,
                        None => check_at = now + first,
                    }
                }
            }
        }
    }

    /// A woken parked connection's next head, read as the accept path reads a first one.
    async fn next_head<Io: Transport>(
        &mut self,
        mut socket: Io,
        header_read_timeout: Duration,
    ) -> Option<(Io, Bytes)> {
        let deadline = Instant::now() + header_read_timeout;
        tokio::select! {
            first = first_head(&mut socket, Bytes::new(), deadline) => first.map(|f| (socket, f)),
            _ = self.shutdown.changed() => None,
        }
    }
}

/// hyper answers what it cannot parse itself (a bare 400 or 431) and ends the connection;
/// those refusals are counted with the gateway's own.
fn count_malformed(metrics: &crate::observe::metrics::Metrics, e: &hyper::Error) {
    let reason = if e.is_parse_too_large() {
        "header_too_large"
    } else if e.is_parse() {
        "malformed_request"
    } else {
        return;
    };
    metrics.rejected.count(reason);
}
