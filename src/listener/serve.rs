//! Serving one accepted connection with hyper's HTTP/1.1 or HTTP/2 server, watched for
//! shutdown, idle keep-alive time and a first request that never comes.
//!
//! An HTTP/1.1 connection idle for [`PARK_AFTER`] is parked, as NGINX does with its keep-alive
//! connections: hyper hands the socket back and its buffers (16 KiB) and state are freed; the
//! socket waits with no buffer at all until the client sends again, and then gets a new hyper
//! connection. A WebSocket upgrade leaves hyper the same way, to the tunnel.

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
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long an HTTP/1.1 keep-alive connection stays with hyper after its last response.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// How long a closing connection with nothing in flight may take to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[allow(clippy::too_many_arguments)] // one call site: the accept path's pieces, by name
pub(super) async fn serve_connection(
    stream: TcpStream,
    first: Bytes,
    h2: bool,
    peer: SocketAddr,
    settings: Arc<ListenerSettings>,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    _tokens: OpenGuard,
) {
    let activity = Arc::new(Activity::default());
    let mut watch = Watch {
        activity: activity.clone(),
        idle: settings.idle_timeout,
        // hyper's header timer starts with the first byte; a connection that sends nothing at
        // all gets the same bound, counted from the accept.
        first_request_by: Instant::now() + settings.header_read_timeout,
        shutdown,
        metrics: runtime.metrics.clone(),
    };
    let ctx = Arc::new(ConnCtx {
        runtime,
        listener: settings.clone(),
        peer,
        peer_header: crate::canonical::client::peer_header(peer.ip()),
        activity,
        upgrade: std::sync::Mutex::new(None),
    });
    // hyper keeps one slot for the request future per connection, sized for it, for as long as
    // the connection lives; the request path's future is ~8 KiB. Boxed per request, an idle
    // keep-alive connection holds a pointer instead (one allocation per request, freed at once).
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| Box::pin(proxy::handle(ctx.clone(), req)))
    };
    if h2 {
        // Boxed, as each HTTP/1.1 phase is below: the task itself stays small.
        Box::pin(async {
            let io = TokioIo::new(Rewind::new(stream, first));
            let conn = Box::pin(settings.http2.serve_connection(io, service));
            let mut conn = H2 {
                conn,
                graceful: |c| c.graceful_shutdown(),
            };
            watch.drive(&mut conn, false).await;
        })
        .await;
        return;
    }
    let (mut stream, mut pending) = (stream, first);
    loop {
        // Each phase with hyper is boxed and freed when it ends: a parked connection's task
        // holds only what the wait below needs.
        let next = Box::pin(serve_h1(
            &mut watch, &ctx, &settings, &service, stream, pending,
        ));
        match next.await {
            Next::Stop => return,
            Next::Again(socket, first) => (stream, pending) = (socket, first),
            Next::Park(socket) => match watch.park(socket, settings.header_read_timeout).await {
                Some((socket, first)) => (stream, pending) = (socket, first),
                None => return,
            },
        }
    }
}

/// What follows one hyper HTTP/1.1 connection on a socket.
enum Next {
    /// The connection is over (closed, handed to a tunnel).
    Stop,
    /// The next request had begun arriving: serve it at once.
    Again(TcpStream, Bytes),
    /// Idle past [`PARK_AFTER`]: wait for the client without hyper.
    Park(TcpStream),
}

/// Serves `stream` with one hyper HTTP/1.1 connection until it ends, is upgraded or is idle
/// long enough to park.
async fn serve_h1<S>(
    watch: &mut Watch,
    ctx: &ConnCtx,
    settings: &ListenerSettings,
    service: &S,
    stream: TcpStream,
    pending: Bytes,
) -> Next
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
        settings.http1.serve_connection(io, service.clone()),
    )));
    let end = watch.drive(&mut conn, true).await;
    let Some(boxed) = conn.0.take() else {
        return Next::Stop;
    };
    let handover = ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    if end == End::Closed || (end == End::Finished && handover.is_none()) {
        return Next::Stop;
    }
    let parts = (*boxed).into_parts();
    let (socket, unread) = parts.io.into_inner().into_parts();
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
    first_request_by: Instant,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<crate::observe::metrics::Metrics>,
}

impl Watch {
    /// Runs `conn` to its end, asking it to close gracefully on shutdown or idleness, or, when
    /// `park`, to let go of an HTTP/1.1 connection idle past [`PARK_AFTER`].
    async fn drive(&mut self, conn: &mut impl Served, park: bool) -> End {
        let idle = self.idle;
        let park = park && PARK_AFTER < idle;
        let first = if park { PARK_AFTER } else { idle };
        let mut check_at = self.first_request_by.min(Instant::now() + first);
        let mut closing = false;
        let mut parking = false;
        loop {
            tokio::select! {
                done = std::future::poll_fn(|cx| conn.poll_end(cx)) => {
                    return match done {
                        Err(e) => {
                            count_malformed(&self.metrics, &e);
                            End::Closed
                        }
                        Ok(()) if closing => End::Closed,
                        Ok(()) if parking => End::Parked,
                        Ok(()) => End::Finished,
                    };
                }
                _ = self.shutdown.changed(), if !closing => {
                    closing = true;
                    conn.graceful();
                    // An HTTP/2 client that never acknowledges the GOAWAY must not hold the
                    // process for the whole drain: idle a moment after it, it is dropped.
                    check_at = Instant::now() + CLOSE_GRACE;
                }
                _ = tokio::time::sleep_until(check_at) => {
                    let a = &self.activity;
                    let now = Instant::now();
                    if closing || parking {
                        if closing && a.idle_since().is_some() {
                            return End::Closed;
                        }
                        check_at = now + CLOSE_GRACE;
                        continue;
                    }
                    if !a.used.load(Ordering::Relaxed) && now >= self.first_request_by {
                        closing = true;
                        conn.graceful();
                        check_at = now + CLOSE_GRACE;
                        continue;
                    }
                    match a.idle_since() {
                        Some(since) if since + idle <= now => {
                            closing = true;
                            conn.graceful();
                            check_at = now + CLOSE_GRACE;
                        }
                        Some(since) if park && since + PARK_AFTER <= now => {
                            parking = true;
                            conn.graceful();
                            check_at = now + CLOSE_GRACE;
                        }
                        Some(since) if park => check_at = since + PARK_AFTER,
                        Some(since) => check_at = since + idle,
                        None => check_at = now + first,
                    }
                }
            }
        }
    }

    /// Holds a parked connection's socket, with no buffer, until the client sends again (then
    /// reads its next head as the accept path does), its idle timeout passes, or shutdown.
    async fn park(
        &mut self,
        socket: TcpStream,
        header_read_timeout: Duration,
    ) -> Option<(TcpStream, Bytes)> {
        let since = self.activity.idle_since().unwrap_or_else(Instant::now);
        let parked = self.metrics.connections_parked.clone();
        parked.inc();
        // `poll_read_ready`, not `readable()`: the registration's own waker slot, no waiter
        // node in the parked connection's state.
        let woke = tokio::select! {
            ready = std::future::poll_fn(|cx| socket.poll_read_ready(cx)) => ready.is_ok(),
            _ = tokio::time::sleep_until(since + self.idle) => false,
            _ = self.shutdown.changed() => false,
        };
        parked.dec();
        if !woke {
            return None;
        }
        // Boxed: while parked, the connection's task holds only the wait above.
        Box::pin(self.next_head(socket, header_read_timeout)).await
    }

    /// A woken parked connection's next head, read as the accept path reads a first one.
    async fn next_head(
        &mut self,
        mut socket: TcpStream,
        header_read_timeout: Duration,
    ) -> Option<(TcpStream, Bytes)> {
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
