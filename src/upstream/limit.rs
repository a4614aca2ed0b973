//! A cluster's connection limit (Envoy's `max_connections` / `max_pending_requests` circuit
//! breakers): at most `max_connections` upstream connections open at once across the cluster's
//! endpoints; a request that needs a new connection beyond that waits for one to close (or for a
//! pooled one to come free, which hyper's pool hands it first) — but only `max_pending` may wait,
//! and not longer than the connect timeout. Past either, the try fails at once with
//! [`PoolFull`], a gateway-side overload (503 `cluster_overloaded`), never the endpoint's fault.
//! A slow backend can therefore no longer make every concurrent request open a connection until
//! file descriptors run out.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// The limit a cluster's connectors share; outlives snapshots (its maxima follow reloads).
#[derive(Debug, Default)]
pub struct ConnLimit {
    open: AtomicUsize,
    pending: AtomicUsize,
    max_open: AtomicUsize,
    max_pending: AtomicUsize,
    freed: Notify,
    /// Signalled when a request starts waiting for room: a connection held only in the hope of
    /// reuse (a salvage, `pool::Awaiting`) is closed for it.
    wanted: Notify,
}

/// Why no connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFull {
    /// `max_pending` requests were already waiting.
    Pending,
    /// No connection came free within the connect timeout.
    Connections,
}

impl std::fmt::Display for PoolFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolFull::Pending => "too many requests waiting for a connection (max_pending)",
            PoolFull::Connections => "no upstream connection came free (max_connections)",
        })
    }
}
impl std::error::Error for PoolFull {}

impl ConnLimit {
    pub fn set(&self, max_open: usize, max_pending: usize) {
        self.max_open.store(max_open, Ordering::Relaxed);
        self.max_pending.store(max_pending, Ordering::Relaxed);
        // A raised limit lets waiters through.
        self.freed.notify_waiters();
    }

    /// Connections open now, and requests waiting for one.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.open.load(Ordering::Relaxed),
            self.pending.load(Ordering::Relaxed),
        )
    }

    /// Resolves when a request starts waiting for room (enable it before checking
    /// [`ConnLimit::counts`], so that none is missed).
    pub fn wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.wanted.notified()
    }

    fn try_take(&self) -> bool {
        let max = self.max_open.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Waits for room for one more connection.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<ConnPermit, PoolFull> {
        if self.try_take() {
            return Ok(ConnPermit(self.clone()));
        }
        let max_pending = self.max_pending.load(Ordering::Relaxed);
        if self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_pending).then_some(n + 1)
            })
            .is_err()
        {
            return Err(PoolFull::Pending);
        }
        let _waiting = Pending(self);
        self.wanted.notify_waiters();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take() {
                return Ok(ConnPermit(self.clone()));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(PoolFull::Connections);
            }
        }
    }
}

struct Pending<'a>(&'a ConnLimit);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open connection's place in the limit; released when the connection is dropped.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnLimit>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A connection that holds its permit for as long as it is open.
    pub struct Counted<T> {
        #[pin]
        inner: T,
        permit: ConnPermit,
    }
}

impl<T> Counted<T> {
    pub fn new(inner: T, permit: ConnPermit) -> Self {
        Counted { inner, permit }
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl<T: Read> Read for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: Write> Write for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_max_open_then_max_pending_wait_then_refused() {
        let l = Arc::new(ConnLimit::default());
        l.set(2, 1);
        let a = l.acquire(Duration::from_secs(5)).await.unwrap();
        let _b = l.acquire(Duration::from_secs(5)).await.unwrap();
        assert_eq!(l.counts(), (2, 0));
        // The third waits; a fourth is refused while it does.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        assert_eq!(l.counts(), (2, 1));
        assert_eq!(
            l.acquire(Duration::from_secs(5)).await.unwrap_err(),
            PoolFull::Pending
        );
        // A connection closes: the waiter gets its place.
        drop(a);
        let c = waiter.await.unwrap().unwrap();
        assert_eq!(l.counts(), (2, 0));
        // Nothing frees within the wait: refused.
        assert_eq!(
            l.acquire(Duration::from_secs(1)).await.unwrap_err(),
            PoolFull::Connections
        );
        drop(c);
        assert_eq!(l.counts(), (1, 0));
    }
}
