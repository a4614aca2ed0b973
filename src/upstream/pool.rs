//! The HTTP/1.1 connection pool of one endpoint, owned here rather than by hyper-util's legacy
//! client: idle connections are `hyper::client::conn::http1` senders in a LIFO stack (the
//! warmest first), a request takes one (or dials within the cluster's [`ConnLimit`]) and gives it
//! back when its response body has ended cleanly. No pool key, no per-request checkout future or
//! extension map: the legacy client's per-request bookkeeping was a fifth of our allocations.
//!
//! A pooled connection the backend closed while idle is noticed by its connection task (the
//! sender reports closed and is discarded) or, in the race where the backend closes it just as
//! it is taken, by hyper handing the unsent request back: it is sent again on a fresh
//! connection, once.

use super::limit::{ConnLimit, Counted};
use crate::body::Body;
use crate::error::{classify_upstream, ProxyError};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

type Sender = SendRequest<Body>;

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct H1Pool {
    address: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    limit: Arc<ConnLimit>,
    /// TLS to the endpoint, when its cluster has `tls`.
    tls: Option<Arc<super::tls::Connector>>,
    idle: Mutex<Vec<Idle>>,
    /// Signalled when a connection is given back: a request waiting for room under
    /// `max_connections` takes it rather than waiting for one to close.
    returned: tokio::sync::Notify,
    /// Whether a task is closing connections idle past `idle_timeout` (one per pool, running
    /// only while the pool has idle connections). Read and written under the `idle` lock.
    sweeping: std::sync::atomic::AtomicBool,
    /// [`SALVAGE_WITHIN`]; longer in tests that must tell a salvage cut short from one that ran
    /// out.
    salvage_within: Duration,
}

/// Gives a connection back to its pool when the response body it carried ends cleanly.
pub struct Checkin {
    pool: Arc<H1Pool>,
    sender: Option<Sender>,
}

/// How long a connection whose exchange was abandoned may take to become idle again and be
/// taken back.
const SALVAGE_WITHIN: Duration = Duration::from_secs(1);

impl Checkin {
    /// Called by the response body when it is dropped: `clean` when it was read to its end.
    pub fn finish(mut self, clean: bool) {
        if clean {
            if let Some(sender) = self.sender.take() {
                self.pool.put(sender);
            }
        }
        // Otherwise dropped here: see `Drop`.
    }
}

impl Drop for Checkin {
    /// A response abandoned before its body ended — the client left, a retry replaced it, an
    /// upload was still going — does not have to cost the connection: hyper drops the rest of a
    /// body it already has and the connection is idle again (one with more to read, it closes).
    /// Taken back if that happens soon, rather than dialing anew for the next request.
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        drop(rt.spawn(salvage(pool, sender, None, None)));
    }
}

/// What a pooled connection's exchange resolves to: the response head, or the request handed
/// back when it was never written.
type Answer = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>>;
type AnswerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

/// An exchange in flight on a pooled connection, with the connection. hyper closes a connection
/// whose answer nobody waits for any more, so a client's request dropped before its head
/// arrives — the client left mid-request, as every load generator's connections do when it
/// stops — hands both to a task that waits for the answer, drops it and gives the connection
/// back: without it, each abandoned request cost the pool a connection and the next request a
/// dial (~150 per run at 256 client connections in `../shared/bench/`). Not when the try gave up
/// on the endpoint (timed out, moved on: [`super::Connected::give_up`]), was not a client's (a
/// health check, a mirrored copy, a revalidation), or is past its own deadline: their answers
/// are not expected soon.
struct Awaiting<'a> {
    answer: Option<AnswerFuture>,
    sender: Option<Sender>,
    pool: &'a Arc<H1Pool>,
    connected: &'a super::Connected,
}

impl Awaiting<'_> {
    /// The exchange, to be awaited in its box. Not an `async fn` returning the answer: that
    /// would move the answer (the request, when handed back, is in it) once more per request.
    fn pending(&mut self) -> std::pin::Pin<&mut (dyn std::future::Future<Output = Answer> + Send)> {
        self.answer.as_mut().expect("until done").as_mut()
    }

    /// The answer came: the connection it came on, for the pool once the body is read.
    fn done(&mut self) -> Sender {
        self.answer = None;
        self.sender.take().expect("done once")
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        let (Some(answer), Some(sender)) = (self.answer.take(), self.sender.take()) else {
            return;
        };
        let Some(until) = self
            .connected
            .salvage_until()
            .filter(|u| *u > Instant::now())
        else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        drop(rt.spawn(salvage(
            self.pool.clone(),
            sender,
            Some(answer),
            Some(until),
        )));
    }
}

/// Gives `sender` back to `pool` if, within the pool's salvage window (and before `until`, the
/// try's deadline, for an answer still owed), the answer it owes (if any) arrives and the
/// connection is idle again; otherwise drops it, which closes it. A
/// request waiting for room under `max_connections` meanwhile ends the wait at once: the
/// connection's place is worth more to it than a maybe-reusable connection (and clients that
/// leave mid-request must not be able to keep every place taken).
async fn salvage(
    pool: Arc<H1Pool>,
    mut sender: Sender,
    answer: Option<AnswerFuture>,
    until: Option<Instant>,
) {
    let within = until.map_or(pool.salvage_within, |u| {
        pool.salvage_within
            .min(u.saturating_duration_since(Instant::now()))
    });
    let wanted = pool.limit.wanted();
    tokio::pin!(wanted);
    wanted.as_mut().enable();
    if pool.limit.counts().1 > 0 {
        return;
    }
    let ready = async {
        if let Some(answer) = answer {
            // Dropped unread: hyper discards a body it has whole, or closes the connection.
            answer.await.ok()?;
        }
        sender.ready().await.ok()
    };
    tokio::select! {
        r = tokio::time::timeout(within, ready) => {
            if let Ok(Some(())) = r {
                pool.put(sender);
            }
        }
        _ = wanted => {}
    }
}

impl H1Pool {
    pub fn new(
        address: &str,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        (limit, tls): (Arc<ConnLimit>, Option<Arc<super::tls::Connector>>),
    ) -> Arc<Self> {
        Arc::new(H1Pool {
            address: address.to_string(),
            connect_timeout,
            idle_timeout,
            max_idle,
            limit,
            tls,
            idle: Mutex::new(Vec::new()),
            returned: tokio::sync::Notify::new(),
            sweeping: Default::default(),
            salvage_within: SALVAGE_WITHIN,
        })
    }

    fn put(self: &Arc<Self>, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
            if !self.sweeping.swap(true, Ordering::Relaxed) {
                // A body dropped outside the runtime (at exit) has no one to sweep for it.
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => drop(rt.spawn(sweep(Arc::downgrade(self)))),
                    Err(_) => {
                        idle.pop();
                        self.sweeping.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            }
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// The warmest idle connection that is still open and not idle too long.
    fn take(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && now.saturating_duration_since(i.since) < self.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    /// Connections idle in the pool now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// An idle connection, or a new one once there is room under the cluster's
    /// `max_connections`, whichever comes first (`true` when new). Only called when none was
    /// idle: its future (a waiter, a deadline, the dial) is boxed by the caller, so that the
    /// request that finds one idle does not carry it.
    async fn checkout_wait(&self) -> Result<(Sender, bool), ProxyError> {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(s) = self.take() {
                return Ok((s, false));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                biased;
                permit = self.limit.acquire(wait) => {
                    let permit = permit.map_err(|_| ProxyError::ClusterOverloaded)?;
                    return Ok((Box::pin(self.dial(permit)).await?, true));
                }
                _ = returned => {}
            }
        }
    }

    /// A new connection for a request a pooled one handed back (see [`H1Pool::send`]).
    async fn redial(&self) -> Result<Sender, ProxyError> {
        let permit = self
            .limit
            .acquire(self.connect_timeout)
            .await
            .map_err(|_| ProxyError::ClusterOverloaded)?;
        self.dial(permit).await
    }

    /// A new connection. Its future (TCP, TLS, the HTTP/1.1 handshake) is big and rarely
    /// needed: callers box it, so that it is not part of every request's future.
    async fn dial(&self, permit: super::limit::ConnPermit) -> Result<Sender, ProxyError> {
        let stream = super::dial(&self.address, self.connect_timeout, self.tls.as_deref()).await?;
        let io = Counted::new(stream, permit);
        let (sender, conn) = Builder::new()
            // A slow client reading a fast backend's body: hyper reads the body only as the
            // client takes it, into at most this much, and TCP pushes back on the backend.
            .max_buf_size(64 << 10)
            .handshake(io)
            .await
            .map_err(|_| ProxyError::UpstreamReset)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req` over a pooled (or new) connection; resolves when the response head arrives
    /// (checked for framing, `super::framed`), with what gives the connection back once the
    /// body has been read.
    ///
    /// An `async` block rather than an `async fn`: the block holds the request once, as its
    /// capture, where an `async fn` would hold it twice (its argument and the local it is moved
    /// to), and this future is part of every request's (docs/design/performance.md).
    #[allow(clippy::manual_async_fn)] // an `async fn` would hold the argument twice (above)
    pub fn send<'a>(
        self: &'a Arc<Self>,
        mut req: Request<Body>,
        connected: &'a super::Connected,
    ) -> impl std::future::Future<Output = Result<(Response<Incoming>, Option<Checkin>), ProxyError>>
           + Send
           + 'a {
        async move {
            // Whether the request has already been handed back once by a pooled connection
            // that closed under it: then it goes on a new connection and is not handed back
            // again.
            let mut resent = false;
            loop {
                // Most requests find one idle; waiting and dialing are boxed, off that path.
                let (mut sender, fresh) = if resent {
                    (Box::pin(self.redial()).await?, true)
                } else if let Some(s) = self.take() {
                    (s, false)
                } else {
                    Box::pin(self.checkout_wait()).await?
                };
                if futures_util::future::poll_fn(|cx| sender.poll_ready(cx))
                    .await
                    .is_err()
                {
                    if fresh {
                        return Err(ProxyError::UpstreamReset);
                    }
                    // Closed while idle: try the next one (or a new one).
                    continue;
                }
                connected.mark();
                // Boxed, to be handed to a task if this request is dropped before its answer
                // (see `Awaiting`): the one allocation the pool makes per request.
                let answer = Box::pin(sender.try_send_request(req));
                let mut awaiting = Awaiting {
                    answer: Some(answer),
                    sender: Some(sender),
                    pool: self,
                    connected,
                };
                let answer = awaiting.pending().await;
                let sender = awaiting.done();
                match answer {
                    Ok(resp) => {
                        // A head the client cannot be given: its connection is not reused
                        // either (the sender is dropped here, not given back).
                        let resp = super::framed(resp, false)?;
                        let held = Checkin {
                            pool: self.clone(),
                            sender: Some(sender),
                        };
                        return Ok((resp, Some(held)));
                    }
                    Err(mut e) => match e.take_message() {
                        // Never written: the pooled connection had just closed. Once more on
                        // a new one.
                        Some(back) if !fresh => {
                            req = back;
                            resent = true;
                        }
                        _ => return Err(classify_upstream(e.error())),
                    },
                }
            }
        }
    }
}

/// Closes a pool's connections as they pass its idle timeout; ends when none is idle (the next
/// [`H1Pool::put`] starts it again) or the pool is gone.
async fn sweep(pool: Weak<H1Pool>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let now = Instant::now();
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|i| {
                !i.sender.is_closed() && now.saturating_duration_since(i.since) < pool.idle_timeout
            });
            match idle.iter().map(|i| i.since).min() {
                Some(oldest) => oldest + pool.idle_timeout,
                None => {
                    pool.sweeping.store(false, Ordering::Relaxed);
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers each connection's first request and then closes it without saying
    /// so (no `Connection: close`), like one whose keep-alive timeout is shorter than ours.
    async fn one_request_per_connection() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn pool(addr: &str) -> Arc<H1Pool> {
        let limit = Arc::new(ConnLimit::default());
        limit.set(16, 16);
        H1Pool::new(
            addr,
            Duration::from_secs(2),
            Duration::from_secs(60),
            8,
            (limit, None),
        )
    }

    async fn get(pool: &Arc<H1Pool>) -> u16 {
        let req = Request::get("/")
            .header("host", "x")
            .body(Body::empty())
            .unwrap();
        let (resp, checkin) = pool.send(req, &Default::default()).await.unwrap();
        let status = resp.status().as_u16();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        checkin.unwrap().finish(true);
        status
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_not_used() {
        let (addr, accepted) = one_request_per_connection().await;
        let pool = pool(&addr);
        for _ in 0..5 {
            assert_eq!(get(&pool).await, 200);
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 5);
    }

    /// A backend on hyper answering every request with `body`; counts connections.
    async fn hyper_backend(body: &'static [u8]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(body),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_connection_whose_short_response_was_abandoned_is_taken_back() {
        let (addr, accepted) = hyper_backend(b"a short answer nobody reads").await;
        let pool = pool(&addr);
        let req = Request::get("/")
            .header("host", "x")
            .body(Body::empty())
            .unwrap();
        let (resp, checkin) = pool.send(req, &Default::default()).await.unwrap();
        // The client went away before the body was read.
        drop(resp);
        checkin.unwrap().finish(false);
        wait_idle(&pool).await;
        assert_eq!(get(&pool).await, 200);
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    }

    async fn wait_idle(pool: &H1Pool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.idle_count() == 0 {
            assert!(Instant::now() < deadline, "never taken back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A backend on hyper that tells `got` of each request and answers it once `release` has a
    /// permit for it; counts connections accepted and closed.
    struct HeldBackend {
        addr: String,
        got: tokio::sync::mpsc::UnboundedReceiver<()>,
        release: Arc<tokio::sync::Semaphore>,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        closed: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn held_backend() -> HeldBackend {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, a, c) = (release.clone(), accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                let (tx, r, c) = (tx.clone(), r.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let (tx, r) = (tx.clone(), r.clone());
                        async move {
                            let _ = tx.send(());
                            r.acquire().await.unwrap().forget();
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"late")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                    c.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        HeldBackend {
            addr,
            got,
            release,
            accepted,
            closed,
        }
    }

    /// Sends a request and drops it once the backend has it, before its answer: as when the
    /// client leaves mid-request (`how`: a client's request, or one whose try then gave up, or
    /// not a client's).
    async fn abandon(pool: &Arc<H1Pool>, backend: &mut HeldBackend, how: Abandoned) {
        let req = Request::get("/")
            .header("host", "x")
            .body(Body::empty())
            .unwrap();
        let connected = match how {
            Abandoned::NotAClients => super::super::Connected::default(),
            // The try's deadline already passed (its own timer has not fired yet).
            Abandoned::PastDeadline => super::super::Connected::salvageable(Instant::now()),
            _ => super::super::Connected::salvageable(Instant::now() + Duration::from_secs(3600)),
        };
        let send = pool.send(req, &connected);
        tokio::pin!(send);
        tokio::select! {
            _ = &mut send => panic!("answered before it was released"),
            _ = backend.got.recv() => {}
        }
        if how == Abandoned::GaveUp {
            connected.give_up();
        }
    }

    #[derive(PartialEq)]
    enum Abandoned {
        ClientLeft,
        GaveUp,
        NotAClients,
        PastDeadline,
    }

    #[tokio::test]
    async fn a_connection_whose_request_was_abandoned_before_its_answer_is_taken_back() {
        let mut backend = held_backend().await;
        let pool = pool(&backend.addr);
        abandon(&pool, &mut backend, Abandoned::ClientLeft).await;
        assert_eq!(pool.idle_count(), 0);
        // The backend answers after the client left; the connection comes back to the pool.
        backend.release.add_permits(2);
        wait_idle(&pool).await;
        assert_eq!(get(&pool).await, 200);
        assert_eq!(backend.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(backend.closed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_connection_whose_try_gave_up_or_was_not_a_clients_is_closed_not_waited_for() {
        for how in [
            Abandoned::GaveUp,
            Abandoned::NotAClients,
            Abandoned::PastDeadline,
        ] {
            let mut backend = held_backend().await;
            let mut pool = pool(&backend.addr);
            // Longer than any test: only the try's own deadline can end the wait.
            Arc::get_mut(&mut pool).unwrap().salvage_within = Duration::from_secs(3600);
            abandon(&pool, &mut backend, how).await;
            // Answered: a salvage (wrongly) waiting for it would pool the connection, and it
            // would stay open; closed, the backend sees it end.
            backend.release.add_permits(1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while backend.closed.load(Ordering::Relaxed) == 0 {
                assert!(Instant::now() < deadline, "never closed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(pool.idle_count(), 0);
        }
    }

    #[tokio::test]
    async fn a_request_waiting_for_room_ends_a_salvage() {
        let mut backend = held_backend().await;
        // One connection at most; a salvage that would outlast the wait for room.
        let limit = Arc::new(ConnLimit::default());
        limit.set(1, 16);
        let mut pool = H1Pool::new(
            &backend.addr,
            Duration::from_secs(5),
            Duration::from_secs(60),
            8,
            (limit, None),
        );
        Arc::get_mut(&mut pool).unwrap().salvage_within = Duration::from_secs(3600);
        abandon(&pool, &mut backend, Abandoned::ClientLeft).await;
        // The first answer never comes; the next request needs the only place.
        let mut next = tokio::spawn({
            let pool = pool.clone();
            async move { get(&pool).await }
        });
        tokio::select! {
            _ = backend.got.recv() => {}
            r = &mut next => panic!("the next request ended before reaching the backend: {r:?}"),
        }
        // The first request's handler takes the first permit (its answer goes nowhere).
        backend.release.add_permits(2);
        assert_eq!(next.await.unwrap(), 200);
        assert_eq!(backend.accepted.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_finished_connection_is_reused() {
        let (addr, accepted) = hyper_backend(b"ok").await;
        let pool = pool(&addr);
        for _ in 0..5 {
            assert_eq!(get(&pool).await, 200);
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
        assert_eq!(pool.idle_count(), 1);
    }
}
