//! The listener's parking lot: idle HTTP/1.1 keep-alive connections wait here, all of them in
//! one task, each holding only its socket, its context and a timer — no task, no serving state
//! and no buffer of its own. When a client sends again its connection leaves the lot in a new
//! task; when its idle timeout passes, or the listener stops, the lot closes it.
//!
//! NGINX keeps an idle keep-alive connection as little more than its socket and event; this is
//! the same idea. A task per parked connection cost ~1.3 KiB more (the task and the serving
//! future waiting in it), which at 10,000 idle clients is most of the process's memory.

use super::OpenGuard;
use crate::conn::ConnCtx;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// What a connection holds for its whole life, across the tasks that serve it and the lot.
pub(super) struct Held {
    pub ctx: Arc<ConnCtx>,
    pub _open: OpenGuard,
}

/// A client connection's byte stream, as it is served and as the lot waits on it: a TCP
/// socket, or TLS over one.
pub(crate) trait Transport:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static
{
    /// Ready when the client has sent something (or closed).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;

    /// Ends the connection the way its protocol says: TLS sends its close_notify alert first
    /// (RFC 8446 §6.1, so a client can tell a complete close-delimited response from a cut
    /// one), within a second; TCP just closes.
    fn close(self) -> impl Future<Output = ()> + Send;
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
    async fn close(self) {}
}

/// TLS: the socket's readiness. A parked connection's rustls state holds no plaintext hyper
/// has not read (hyper was idle, its last read came back empty); a record that arrives later
/// makes the socket readable.
impl Transport for super::TlsIo {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let (io, _) = self.get_ref();
        if io.has_prefix() {
            return Poll::Ready(Ok(()));
        }
        io.get_ref().poll_read_ready(cx)
    }
    async fn close(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.shutdown()).await;
    }
}

/// An idle connection in the lot.
pub(super) struct Parked<Io> {
    pub socket: Io,
    pub held: Held,
    /// When its last response ended: its idle timeout counts from here.
    pub since: Instant,
}

/// Where a listener's connections park. Cloned into each connection (a channel handle).
pub(super) struct Lot<Io> {
    tx: mpsc::UnboundedSender<Parked<Io>>,
}

impl<Io> Clone for Lot<Io> {
    fn clone(&self) -> Self {
        Lot {
            tx: self.tx.clone(),
        }
    }
}

impl<Io: Transport> Lot<Io> {
    /// Starts the listener's lot on `tracker`. A connection that wakes is served again by
    /// `resume`, in a task of its own on `tracker`, with its own clone of `shutdown`. The lot
    /// closes every parked connection and ends when `shutdown` changes.
    pub fn start<F, R>(
        tracker: &TaskTracker,
        shutdown: watch::Receiver<bool>,
        parked: prometheus_client::metrics::gauge::Gauge,
        resume: R,
    ) -> Lot<Io>
    where
        R: Fn(Parked<Io>, Lot<Io>, watch::Receiver<bool>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let lot = Lot { tx };
        tracker.spawn(run(
            rx,
            lot.clone(),
            shutdown,
            tracker.clone(),
            parked,
            resume,
        ));
        lot
    }

    /// Parks `conn`; once the lot has ended (shutdown) the connection is closed instead.
    pub fn park(&self, conn: Parked<Io>) {
        let _ = self.tx.send(conn);
    }
}

async fn run<Io: Transport, F, R>(
    mut arriving: mpsc::UnboundedReceiver<Parked<Io>>,
    lot: Lot<Io>,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
    parked: prometheus_client::metrics::gauge::Gauge,
    resume: R,
) where
    R: Fn(Parked<Io>, Lot<Io>, watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(conn) = arriving.recv() => {
                parked.inc();
                waiting.push(wait(conn));
            }
            Some(woken) = waiting.next(), if !waiting.is_empty() => {
                parked.dec();
                if let Some(conn) = woken {
                    tracker.spawn(resume(conn, lot.clone(), shutdown.clone()));
                }
            }
        }
    }
    // Dropping the waits closes their sockets: nothing is in flight on a parked connection.
    parked.dec_by(waiting.len() as i64);
}

/// Waits until the client sends again (`Some`), or its idle timeout passes (`None`).
async fn wait<Io: Transport>(conn: Parked<Io>) -> Option<Parked<Io>> {
    let deadline = conn.since + conn.held.ctx.listener.idle_timeout;
    // `poll_read_ready`, not `readable()`: the registration's own waker slot, no waiter node.
    let ready = std::future::poll_fn(|cx| conn.socket.poll_read_ready(cx));
    let woke = matches!(tokio::time::timeout_at(deadline, ready).await, Ok(Ok(())));
    if woke {
        return Some(conn);
    }
    conn.socket.close().await;
    None
}
