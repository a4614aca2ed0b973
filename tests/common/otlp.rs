//! An OTLP/HTTP receiver for tests: a hyper server on `127.0.0.1:0` that decodes each
//! `ExportTraceServiceRequest` (protobuf) and keeps the spans, or takes requests and never
//! answers; and helpers to read spans' attributes.

use gatehouse_testkit::eventually;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as received, with its resource's and scope's attributes.
#[derive(Clone, Debug)]
pub struct Got {
    pub service: String,
    pub scope: String,
    pub span: Span,
}

/// An OTLP/HTTP receiver on `127.0.0.1:0`.
pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    /// Export requests seen, with their content type and `x-tenant` header.
    pub requests: Arc<Mutex<Vec<(String, String)>>>,
    pub hung: Arc<AtomicU64>,
}

impl Receiver {
    /// `hang`: take each request and never answer it.
    pub async fn start(hang: bool) -> Receiver {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hung = Arc::new(AtomicU64::new(0));
        let (s, r, h) = (spans.clone(), requests.clone(), hung.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r, h) = (s.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (s, r, h) = (s.clone(), r.clone(), h.clone());
                        async move { receive(req, hang, (s, r, h)).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            requests,
            hung,
        }
    }

    pub fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// The server span whose `gatehouse.request_id` is `id`, once it has arrived.
    pub async fn server_span(&self, id: &str) -> Got {
        eventually(&format!("the server span of {id}"), wait(), || async {
            self.spans().into_iter().find(|g| {
                g.span.kind == SpanKind::Server as i32
                    && attr(&g.span, "gatehouse.request_id") == Some(s(id))
            })
        })
        .await
    }

    /// The client spans (tries) under `parent`, once `n` have arrived, in start order.
    pub async fn tries(&self, parent: &Span, n: usize) -> Vec<Span> {
        eventually(&format!("{n} client spans"), wait(), || async {
            let mut got: Vec<Span> = self
                .spans()
                .into_iter()
                .map(|g| g.span)
                .filter(|sp| {
                    sp.kind == SpanKind::Client as i32 && sp.parent_span_id == parent.span_id
                })
                .collect();
            got.sort_by_key(|sp| sp.start_time_unix_nano);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

type Shared = (
    Arc<Mutex<Vec<Got>>>,
    Arc<Mutex<Vec<(String, String)>>>,
    Arc<AtomicU64>,
);

async fn receive(
    req: http::Request<hyper::body::Incoming>,
    hang: bool,
    (spans, requests, hung): Shared,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    requests
        .lock()
        .unwrap()
        .push((header("content-type"), header("x-tenant")));
    if hang {
        hung.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let decoded = ExportTraceServiceRequest::decode(body).unwrap();
    let mut out = spans.lock().unwrap();
    for rs in decoded.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| find(&r.attributes, "service.name"))
            .and_then(|v| match v {
                Value::StringValue(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for span in ss.spans {
                out.push(Got {
                    service: service.clone(),
                    scope: scope.clone(),
                    span,
                });
            }
        }
    }
    let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(resp)
}

pub fn wait() -> Duration {
    Duration::from_secs(15)
}

pub fn find(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

pub fn attr(span: &Span, key: &str) -> Option<Value> {
    find(&span.attributes, key)
}

pub fn s(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

pub fn i(v: i64) -> Value {
    Value::IntValue(v)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn status_code(span: &Span) -> i32 {
    span.status.as_ref().map_or(0, |s| s.code)
}
