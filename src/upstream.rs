//! Talking to endpoints: a pooled client per endpoint (our own HTTP/1.1 keep-alive pool in
//! [`pool`], or hyper-util's client holding one multiplexed HTTP/2 connection when the cluster
//! says `protocol: http2`), connect/idle timeouts, and a dedicated connection for upgrades
//! (WebSocket), which leave the pool for good.
//!
//! HTTP/1.1 requests go out in origin form with the client's `Host`; for HTTP/2 the URI keeps
//! the client's authority (the `:authority` the upstream sees) and the connector dials the
//! endpoint's address whatever it says.

use crate::body::Body;
use crate::error::{classify_upstream, ProxyError};
pub use limit::ConnLimit;

pub mod limit;
pub mod pool;
pub mod tls;
use gatehouse_config::{Protocol, Timeouts};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A response head the client can be given: a single `chunked` coding at most, and no
/// `Content-Length` beside it (`framing`); a 101 only when an upgrade was asked for.
pub(crate) fn framed(
    mut resp: Response<Incoming>,
    upgrade_asked: bool,
) -> Result<Response<Incoming>, ProxyError> {
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
        return Err(ProxyError::UpstreamBadFraming);
    }
    crate::framing::check_response(resp.headers_mut())
        .map_err(|_| ProxyError::UpstreamBadFraming)?;
    Ok(resp)
}

/// Dials one fixed endpoint (TLS when its cluster says so), ignoring the URI it is asked for,
/// within its cluster's connection limit.
#[derive(Clone)]
pub struct FixedConnector {
    address: Arc<str>,
    tls: Option<Arc<tls::Connector>>,
    limit: Arc<ConnLimit>,
    /// The connect timeout; also how long a request may wait for room under the limit.
    wait: Duration,
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for FixedConnector {
    type Response = limit::Counted<tls::UpstreamIo>;
    type Error = ConnectError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let permit = this.limit.acquire(this.wait).await?;
            let stream = dial(&this.address, this.wait, this.tls.as_deref())
                .await
                .map_err(|e| ConnectError::from(e.reason()))?;
            Ok(limit::Counted::new(stream, permit))
        })
    }
}

/// A pooled client bound to one endpoint: our own HTTP/1.1 pool, or hyper-util's client for
/// one multiplexed HTTP/2 connection.
#[derive(Clone)]
pub struct UpstreamClient {
    kind: Kind,
    address: String,
    connect_timeout: Duration,
    /// The cluster's connection limit, which upgrades' own connections count against too.
    limit: Arc<ConnLimit>,
    /// TLS to the endpoint, when its cluster has `tls` (upgrades' connections too).
    tls: Option<Arc<tls::Connector>>,
}

#[derive(Clone)]
enum Kind {
    H1(Arc<pool::H1Pool>),
    H2(Box<Client<FixedConnector, Body>>),
}

pub use pool::Checkin;

/// When a try's request got its connection ([`crate::clock::now_us`]): from then on the wait is
/// the endpoint's; before, it was the gateway's (room under the cluster's `max_connections`).
/// And whether the try's connection is worth waiting for if the try is dropped before its
/// answer (`pool::Awaiting`): only a client's request, whose client left, not past the try's
/// own deadline, and not once the try has given up on the endpoint (timed out, moved off it).
#[derive(Debug, Default)]
pub struct Connected {
    at_us: std::sync::atomic::AtomicU64,
    salvage: std::sync::atomic::AtomicBool,
    /// The try's deadline: an answer later than that is not waited for by a salvage either.
    salvage_until: Option<tokio::time::Instant>,
}

impl Connected {
    /// For a client's request whose try ends at `until`: dropped before its answer because the
    /// client left, its connection is waited for (until then at most) and pooled again.
    pub fn salvageable(until: tokio::time::Instant) -> Self {
        Connected {
            salvage: true.into(),
            salvage_until: Some(until),
            ..Default::default()
        }
    }
    /// The first mark sticks.
    pub fn mark(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::clock::now_us(tokio::time::Instant::now());
        let _ = self.at_us.compare_exchange(0, now, Relaxed, Relaxed);
    }
    pub fn at_us(&self) -> Option<u64> {
        Some(self.at_us.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t != 0)
    }
    /// The try stops waiting for the endpoint's answer: its connection is closed, not salvaged.
    pub fn give_up(&self) {
        self.salvage
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    /// Until when a salvage may wait for the answer; `None`: not at all.
    pub fn salvage_until(&self) -> Option<tokio::time::Instant> {
        self.salvage_until
            .filter(|_| self.salvage.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl UpstreamClient {
    /// A client for one endpoint whose connections count against `limit` (its cluster's) and
    /// of which at most `max_idle` stay pooled while idle.
    pub fn new(
        address: &str,
        protocol: Protocol,
        timeouts: &Timeouts,
        (limit, max_idle): (Arc<ConnLimit>, usize),
        tls: Option<Arc<tls::Connector>>,
    ) -> Self {
        if protocol == Protocol::Http1 {
            return UpstreamClient {
                kind: Kind::H1(pool::H1Pool::new(
                    address,
                    timeouts.connect.0,
                    timeouts.idle.0,
                    max_idle,
                    (limit.clone(), tls.clone()),
                )),
                address: address.to_string(),
                connect_timeout: timeouts.connect.0,
                limit,
                tls,
            };
        }
        let connector = FixedConnector {
            address: address.into(),
            tls: tls.clone(),
            limit: limit.clone(),
            wait: timeouts.connect.0,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(timeouts.idle.0)
            .pool_max_idle_per_host(max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        UpstreamClient {
            kind: Kind::H2(Box::new(client)),
            address: address.to_string(),
            connect_timeout: timeouts.connect.0,
            limit,
            tls,
        }
    }

    /// Sends a request over a pooled connection; resolves when the response head arrives, with
    /// what gives an HTTP/1.1 connection back to the pool when the body has been read.
    /// `connected` is marked when the request has a connection.
    ///
    /// Not an `async fn`: the head is fixed up now and the pool's (or hyper-util's) future is
    /// returned as it is, so the request is held once in it rather than again by a layer
    /// around it (this future is part of every request's; docs/design/performance.md).
    pub fn send<'a>(
        &'a self,
        mut req: Request<Body>,
        connected: &'a Connected,
    ) -> impl Future<Output = Result<(Response<Incoming>, Option<Checkin>), ProxyError>> + Send + 'a
    {
        use futures_util::future::Either;
        match &self.kind {
            Kind::H1(pool) => {
                // On the wire: origin form, and a Host (the proxy sets the client's; a health
                // check names the endpoint).
                if !req.headers().contains_key(http::header::HOST) {
                    if let Ok(h) = http::HeaderValue::from_str(&self.address) {
                        req.headers_mut().insert(http::header::HOST, h);
                    }
                }
                if let Some(pq) = req.uri().path_and_query().cloned() {
                    *req.uri_mut() = Uri::from(pq);
                }
                // Checked for framing in the pool: no layer here moves the answer once more.
                Either::Left(pool.send(req, connected))
            }
            Kind::H2(client) => Either::Right(async move {
                // Multiplexed: a request waits for no connection of its own.
                connected.mark();
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| classify_upstream(&e))?;
                Ok((framed(resp, false)?, None))
            }),
        }
    }

    /// Sends an upgrade request (HTTP/1.1 `Upgrade`) over a new connection of its own, in
    /// origin form like every other request.
    pub async fn send_upgrade(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        if let Some(pq) = req.uri().path_and_query() {
            if let Ok(origin) = Uri::builder().path_and_query(pq.clone()).build() {
                *req.uri_mut() = origin;
            }
        }
        let permit = self
            .limit
            .acquire(self.connect_timeout)
            .await
            .map_err(|_| ProxyError::ClusterOverloaded)?;
        // Boxed: a dial's future is big and this one would sit in every request's future.
        let stream = Box::pin(dial(
            &self.address,
            self.connect_timeout,
            self.tls.as_deref(),
        ))
        .await?;
        let io = limit::Counted::new(stream, permit);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|_| ProxyError::UpstreamReset)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| classify_upstream(&e))
            .and_then(|r| framed(r, true))
    }
}

/// A connection to `address`: TCP, then TLS when the cluster has it (the connect timeout
/// bounds each).
pub(crate) async fn dial(
    address: &str,
    timeout: Duration,
    tls: Option<&tls::Connector>,
) -> Result<tls::UpstreamIo, ProxyError> {
    let tcp = connect(address, timeout).await?;
    match tls {
        None => Ok(tls::UpstreamIo::Plain(TokioIo::new(tcp))),
        Some(t) => {
            let s = t.handshake(tcp, address, timeout).await?;
            Ok(tls::UpstreamIo::Tls(Box::new(TokioIo::new(s))))
        }
    }
}

/// A TCP connection to `address` (Nagle off: heads and small bodies go out at once), or the
/// error that says whether the endpoint refused or did not answer in time.
pub(crate) async fn connect(
    address: &str,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Err(_) => Err(ProxyError::ConnectTimeout),
        Ok(Err(_)) => Err(ProxyError::ConnectRefused),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}
