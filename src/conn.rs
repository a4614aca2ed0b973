//! What a downstream connection is, as the request path sees it: the listener settings it was
//! accepted with (limits, edge rules, protocol builders), its peer, and its activity (requests
//! in flight, idle since). Below both the listener (which makes these) and the proxy (which
//! reads them), so neither imports the other.

use crate::runtime::Runtime;
use gatehouse_config::Listener as ListenerConfig;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a request handler knows about the connection it came in on.
pub struct ConnCtx {
    pub runtime: Arc<Runtime>,
    pub listener: Arc<ListenerSettings>,
    /// The TCP peer, or the source address of the connection's PROXY protocol header.
    pub peer: SocketAddr,
    /// The peer's IP as an `X-Forwarded-For` value, made once per connection.
    pub peer_header: HeaderValue,
    pub activity: Arc<Activity>,
    /// What the TLS handshake settled, on a TLS listener.
    pub tls: Option<Box<crate::tls::TlsInfo>>,
    /// Set by the request path when it answers 101 to an upgrade: the listener hands the
    /// client's socket here once hyper has written the 101, and the tunnel takes it.
    pub upgrade: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Handover>>>,
    /// The `Forwarded` value made for the first request's host (and that host), when the peer
    /// is not trusted: it depends then only on the peer, the host and the scheme, and most
    /// connections name one host, so later requests clone it instead of building it again.
    pub forwarded: std::sync::OnceLock<(HeaderValue, HeaderValue)>,
}

/// A client connection's socket, handed over for a tunnel with the bytes already read past the
/// upgrade request.
pub type Handover = Box<dyn ClientIo>;

/// What a handed-over client connection is: bytes both ways.
pub trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ClientIo for T {}

/// A listener's settings as its connections use them (fixed when the connection is accepted).
pub struct ListenerSettings {
    pub name: Arc<str>,
    pub edge: crate::canonical::EdgeSettings,
    pub max_body_bytes: u64,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// `gatehouse_downstream_connections_rejected_total{listener}`, resolved once.
    pub rejected_connections: prometheus_client::metrics::counter::Counter,
    pub body_read_timeout: Duration,
    pub request_buffering: u64,
    pub proxy_protocol: bool,
    pub header_read_timeout: Duration,
    pub http1: hyper::server::conn::http1::Builder,
    pub http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// HTTPS: the handshake and certificates (shared with reloads, which swap what is inside).
    pub tls: Option<Arc<crate::tls::Terminator>>,
    /// A plain-HTTP listener that sends every request to `https` (308).
    pub redirect_https: bool,
}

impl ListenerSettings {
    /// `runtime` has the listener's TLS terminator, when it is a TLS listener (built with the
    /// snapshot, before listeners are reconciled).
    pub fn new(cfg: &ListenerConfig, runtime: &Runtime) -> Self {
        let metrics = &runtime.metrics;
        let lim = &cfg.limits;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // Off: a head after the first is timed by the connection's watch (`listener::serve`),
            // without a timer per request, as the first head is.
            .header_read_timeout(None)
            .max_buf_size(lim.max_header_bytes.0.max(8192) as usize)
            .max_headers(lim.max_headers);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(lim.max_header_bytes.0).unwrap_or(u32::MAX))
            .max_concurrent_streams(1024);
        ListenerSettings {
            name: cfg.name.as_str().into(),
            edge: crate::canonical::EdgeSettings {
                path: cfg.path_normalization,
                underscores: cfg.headers_with_underscores,
                trusted_proxies: cfg
                    .trusted_proxies
                    .iter()
                    .filter_map(|t| gatehouse_config::validate::parse_cidr(t))
                    .collect(),
            },
            max_body_bytes: lim.max_body_bytes.0,
            idle_timeout: lim.idle_timeout.0,
            max_connections: lim.max_connections,
            rejected_connections: metrics
                .connections_rejected
                .get_or_create(&vec![("listener", cfg.name.clone())])
                .clone(),
            body_read_timeout: lim.body_read_timeout.0,
            request_buffering: lim.request_buffering.0,
            proxy_protocol: cfg.proxy_protocol,
            header_read_timeout: lim.header_read_timeout.0,
            http1,
            http2,
            tls: runtime.tls.get(&cfg.name).filter(|_| cfg.tls.is_some()),
            redirect_https: cfg.redirect_https,
        }
    }
}

/// Per-connection activity: requests in flight and when the last one ended, so an idle
/// keep-alive connection can be closed after the listener's `idle_timeout`.
pub struct Activity {
    base: Instant,
    in_flight: AtomicU32,
    last_ms: AtomicU64,
    /// How many requests have ended: a change the millisecond clock of `last_ms` can miss (a
    /// cached answer ends within the millisecond its connection began).
    ended: AtomicU32,
    /// Whether a request has started on this connection.
    pub used: std::sync::atomic::AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            ended: AtomicU32::new(0),
            used: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Activity {
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.used.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    /// The client sent something (a parked connection woke): idle time counts from now.
    pub fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Changes whenever a request ends (or [`Activity::touch`]): whether anything happened
    /// between two reads.
    pub fn stamp(&self) -> (u32, u64, u32) {
        (
            self.in_flight.load(Ordering::Relaxed),
            self.last_ms.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
        )
    }

    /// When the connection became idle, or `None` while a request is in flight.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Marks a request in flight on its connection until dropped (when its response body ends).
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms
            .store(a.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        // Not a read-modify-write: only whether it changed is read, and a lost count (two
        // HTTP/2 streams ending at once) still changes it.
        a.ended.store(
            a.ended.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
