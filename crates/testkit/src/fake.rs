//! FakeUpstream: an HTTP/1.1 + HTTP/2 (h2c) backend that records what it saw and answers as
//! scripted: status, delay, body, streaming N bytes, echoing or sinking the request body,
//! dropping the connection, or echoing WebSocket messages. It can be stopped and restarted on
//! the same port, and counts hits and connections.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// What the fake does with a request.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// Answer with the configured status and body.
    #[default]
    Normal,
    /// Stream the request body back as the response body.
    Echo,
    /// Read the whole request body, answer `{"received": N}`.
    Sink,
    /// Answer with this many bytes, produced in 64 KiB chunks.
    Stream(u64),
    /// Close the connection without answering.
    Drop,
}

#[derive(Clone, Debug)]
pub struct Behavior {
    pub status: u16,
    pub delay: Duration,
    /// Response body for `Mode::Normal`; empty means a small JSON naming the fake.
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub mode: Mode,
    /// Status overrides for exact paths (e.g. a failing `/healthz` while traffic succeeds).
    pub path_status: Vec<(String, u16)>,
    /// The headers of a 304 (default: `headers`), for origins that send less on one.
    pub not_modified_headers: Option<Vec<(String, String)>>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            delay: Duration::ZERO,
            body: Bytes::new(),
            headers: Vec::new(),
            mode: Mode::Normal,
            path_status: Vec::new(),
            not_modified_headers: None,
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

struct Shared {
    name: String,
    behavior: Mutex<Behavior>,
    hits: AtomicU64,
    accepted: AtomicU64,
    open: AtomicI64,
    seen: Mutex<Vec<Seen>>,
    /// 304s answered to a matching `If-None-Match`.
    not_modified: AtomicU64,
}

pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
}

impl FakeUpstream {
    /// Starts a fake named `name` on a free loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts a fake at `addr` (`127.0.0.2:0`: another loopback address, so that several fakes
    /// can share one port, as endpoints from DNS A records do).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind fake upstream");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            behavior: Mutex::new(Behavior::default()),
            hits: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            open: AtomicI64::new(0),
            seen: Mutex::new(Vec::new()),
            not_modified: AtomicU64::new(0),
        });
        let addr = listener.local_addr().expect("local addr");
        let mut f = FakeUpstream {
            addr,
            shared,
            tasks: None,
        };
        f.serve(listener);
        f
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let shared = self.shared.clone();
        // The accept loop owns a JoinSet of its connections: aborting it closes them all.
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                shared.open.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                conns.spawn(async move {
                    let s2 = shared.clone();
                    let svc = service_fn(move |req| handle(s2.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        self.tasks = Some(tasks);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Replaces the whole behaviour.
    pub fn set(&self, b: Behavior) {
        *self.shared.behavior.lock().expect("lock") = b;
    }

    /// Changes part of the behaviour.
    pub fn update(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.shared.behavior.lock().expect("lock"));
    }

    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Requests answered 304 because their `If-None-Match` named the configured `ETag`.
    pub fn not_modified(&self) -> u64 {
        self.shared.not_modified.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until the fake has seen at least `n` requests.
    pub async fn wait_hits(&self, n: u64) {
        crate::eventually(
            &format!("{} to see {n} requests", self.shared.name),
            Duration::from_secs(10),
            || async { (self.hits() >= n).then_some(()) },
        )
        .await;
    }

    /// TCP connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> i64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    pub fn last_seen(&self) -> Seen {
        self.seen().pop().expect("the fake upstream saw no request")
    }

    /// Stops listening and closes every connection (a killed backend).
    pub async fn stop(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
            while t.join_next().await.is_some() {}
        }
        self.shared.open.store(0, Ordering::SeqCst);
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind fake upstream");
        self.serve(listener);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(t) = self.tasks.as_mut() {
            t.abort_all();
        }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.seen.lock().expect("lock").push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let b = shared.behavior.lock().expect("lock").clone();
    let req_path = req.uri().path().to_string();
    let req_headers = req.headers().clone();
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    if is_websocket(&req) {
        return websocket(&mut req);
    }
    let body: Body = match b.mode {
        Mode::Drop => return Err("dropping the connection on purpose".into()),
        Mode::Echo => req.into_body().map_err(|e| Box::new(e) as BoxError).boxed(),
        Mode::Sink => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame?.data_ref() {
                    n += d.len() as u64;
                }
            }
            full(format!("{{\"received\":{n}}}"))
        }
        Mode::Stream(total) => {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let n = left.min(chunk.len() as u64);
                        (
                            Ok::<_, BoxError>(Frame::data(chunk.slice(..n as usize))),
                            left - n,
                        )
                    })
                }
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Mode::Normal if b.body.is_empty() => full(format!("{{\"upstream\":\"{}\"}}", shared.name)),
        Mode::Normal => full(b.body.clone()),
    };
    let path = req_path;
    let status = b
        .path_status
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(b.status, |(_, s)| *s);
    // An origin that honours validators: the configured ETag and a matching If-None-Match
    // (or the configured Last-Modified and an equal If-Modified-Since) make a bodiless 304.
    let configured = |name: &str| {
        b.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let sent = |name: &str| req_headers.get(name).and_then(|v| v.to_str().ok());
    let revalidated = status == 200
        && match (configured("etag"), sent("if-none-match")) {
            (Some(tag), Some(inm)) => inm.split(',').any(|t| t.trim() == tag),
            _ => {
                configured("last-modified").is_some()
                    && configured("last-modified") == sent("if-modified-since")
            }
        };
    let (status, body) = if revalidated {
        shared.not_modified.fetch_add(1, Ordering::SeqCst);
        (304, full(Bytes::new()))
    } else {
        (status, body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert("x-upstream", shared.name.parse().expect("header value"));
    let headers = match (&b.not_modified_headers, revalidated) {
        (Some(h), true) => h,
        _ => &b.headers,
    };
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    Ok(resp)
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Accepts a WebSocket upgrade and echoes every message until the client closes.
fn websocket(req: &mut Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .ok_or("missing sec-websocket-key")?
        .as_bytes()
        .to_vec();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", "upgrade".parse()?);
    h.insert("upgrade", "websocket".parse()?);
    h.insert("sec-websocket-accept", accept.parse()?);
    Ok(resp)
}
