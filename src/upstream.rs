//! Talking to endpoints: a pooled client per endpoint (HTTP/1.1 keep-alive, or one multiplexed
//! HTTP/2 connection when the cluster says `protocol: http2`), connect/idle timeouts, and a
//! dedicated connection for upgrades (WebSocket), which leave the pool for good.
//!
//! The connector always dials the endpoint's address whatever the request's authority says,
//! so the request URI can carry the client's `Host` as its authority: HTTP/2 upstreams then get
//! the right `:authority`, and HTTP/1.1 ones the right `Host`.

use crate::body::Body;
use crate::error::{classify_upstream, ProxyError};
pub use limit::ConnLimit;

pub mod limit;
use gatehouse_config::{Protocol, Timeouts};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A response head the client can be given: a single `chunked` coding at most, and no
/// `Content-Length` beside it (`canonical::framing`); a 101 only when an upgrade was asked for.
fn framed(
    mut resp: Response<Incoming>,
    upgrade_asked: bool,
) -> Result<Response<Incoming>, ProxyError> {
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
        return Err(ProxyError::UpstreamBadFraming);
    }
    crate::canonical::framing::check_response(resp.headers_mut())
        .map_err(|_| ProxyError::UpstreamBadFraming)?;
    Ok(resp)
}

/// Dials one fixed endpoint, ignoring the URI it is asked for, within its cluster's connection
/// limit.
#[derive(Clone)]
pub struct FixedConnector {
    inner: HttpConnector,
    target: Uri,
    limit: Arc<ConnLimit>,
    /// How long a request may wait for room under the limit (the connect timeout).
    wait: Duration,
}

type Dialed = <HttpConnector as tower_service::Service<Uri>>::Response;
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for FixedConnector {
    type Response = limit::Counted<Dialed>;
    type Error = ConnectError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let dial = self.inner.call(self.target.clone());
        let limit = self.limit.clone();
        let wait = self.wait;
        Box::pin(async move {
            let permit = limit.acquire(wait).await?;
            let stream = dial.await?;
            Ok(limit::Counted::new(stream, permit))
        })
    }
}

/// A pooled client bound to one endpoint.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<FixedConnector, Body>,
    address: String,
    connect_timeout: Duration,
}

impl UpstreamClient {
    /// A client for one endpoint whose connections count against `limit` (its cluster's) and
    /// of which at most `max_idle` stay pooled while idle.
    pub fn new(
        address: &str,
        protocol: Protocol,
        timeouts: &Timeouts,
        limit: Arc<ConnLimit>,
        max_idle: usize,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect.0));
        let target: Uri = format!("http://{address}/")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid/"));
        let connector = FixedConnector {
            inner: http,
            target,
            limit,
            wait: timeouts.connect.0,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(timeouts.idle.0)
            .pool_max_idle_per_host(max_idle)
            // A slow client reading a fast backend's body: hyper reads the body only as the
            // client takes it, into at most this much, and TCP pushes back on the backend.
            .http1_max_buf_size(64 << 10)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(protocol == Protocol::Http2)
            .build(connector);
        UpstreamClient {
            client,
            address: address.to_string(),
            connect_timeout: timeouts.connect.0,
        }
    }

    /// Sends a request over a pooled connection; resolves when the response head arrives.
    pub fn send(
        &self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'static {
        let fut = self.client.request(req);
        async move {
            fut.await
                .map_err(|e| classify_upstream(&e))
                .and_then(|r| framed(r, false))
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
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.address.as_str()),
        )
        .await
        {
            Err(_) => return Err(ProxyError::ConnectTimeout),
            Ok(Err(_)) => return Err(ProxyError::ConnectRefused),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
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
