//! The embedded demo: small HTTP backends inside the process (each answers with its own name;
//! one fails a share of its requests on purpose) and a demo config that routes to them.
//! `gatehouse demo-backend` runs one such backend alone.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a demo backend behaves.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    pub name: String,
    /// Share of requests (0.0–1.0) answered with 500, except `/healthz`.
    pub fail_rate: f64,
    /// Added to every response.
    pub latency: Duration,
}

/// Serves a demo backend on `listener` until the task is dropped.
///
/// Besides answering with its name, it obeys `?status=NNN`, `?delay=250ms` and `?max_age=30`
/// (a `Cache-Control: max-age`) so the demo can
/// show local replies and timeouts.
pub async fn serve_backend(listener: TcpListener, spec: BackendSpec) {
    let spec = Arc::new(spec);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let spec = spec.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(spec.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    spec: Arc<BackendSpec>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = req.uri().query().unwrap_or("");
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    let mut delay = spec.latency;
    if let Some(d) = param("delay").and_then(|d| gatehouse_config::units::parse_duration(d).ok()) {
        delay = delay.saturating_add(d.min(Duration::from_secs(60)));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.uri().path().to_string();
    let mut status = param("status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if path != "/healthz" && spec.fail_rate > 0.0 && fastrand::f64() < spec.fail_rate {
        status = StatusCode::INTERNAL_SERVER_ERROR;
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = serde_json::json!({
        "backend": spec.name,
        "status": status.as_u16(),
        "method": req.method().as_str(),
        "path": path,
        "request_id": request_id,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&spec.name) {
        h.insert("x-backend", v);
    }
    // `?max_age=30`: a cacheable answer, for the demo's cached route.
    if let Some(v) = param("max_age")
        .and_then(|s| s.parse::<u32>().ok())
        .and_then(|n| http::HeaderValue::from_str(&format!("max-age={n}")).ok())
    {
        h.insert("cache-control", v);
    }
    Ok(resp)
}

/// The demo's backends: two steady ones and one that fails 30 % of its requests.
pub fn demo_backends() -> Vec<BackendSpec> {
    let spec = |name: &str, fail_rate| BackendSpec {
        name: name.into(),
        fail_rate,
        latency: Duration::from_millis(2),
    };
    vec![spec("alpha", 0.0), spec("beta", 0.0), spec("gamma", 0.3)]
}

/// The demo config, with the gateway on `listen` and the backends at `backends`
/// (alpha, beta, gamma in that order).
pub fn demo_config(listen: &str, admin: &str, backends: &[SocketAddr]) -> String {
    let b = |i: usize| backends.get(i).map(ToString::to_string).unwrap_or_default();
    DEMO_TEMPLATE
        .replace("{listen}", listen)
        .replace("{admin}", admin)
        .replace("{alpha}", &b(0))
        .replace("{beta}", &b(1))
        .replace("{gamma}", &b(2))
}

const DEMO_TEMPLATE: &str = r#"# The embedded demo config (printed by `gatehouse demo --print-config`).
listeners:
  - name: public
    address: {listen}

admin:
  address: {admin}

clusters:
  - name: products          # all three backends; gamma fails 30 % of requests with a 500
    health_check: { path: /healthz, interval: 2s }
    # 500 is not retried by default (the backend may have acted); the demo's backends are
    # read-only, so here it is: a failed try goes to another endpoint, and the client sees 200.
    retries: { on: [connect_failure, reset, "500", "502", "503", "504"], budget: 50% }
    circuit_breaker: { consecutive_failures: 3, failure_rate: 25%, minimum_calls: 8, open_duration: 5s }
    slow_start: 10s
    endpoints:
      - address: {alpha}
      - address: {beta}
      - address: {gamma}
  - name: stable            # the two healthy backends
    endpoints:
      - address: {alpha}
      - address: {beta}
  - name: flaky             # gamma alone, no retries: watch its breaker open and half-open
    retries: { attempts: 0 }
    circuit_breaker: { consecutive_failures: 3, open_duration: 5s }
    endpoints:
      - address: {gamma}
  - name: slow              # short request timeout: try ?delay=2s for a 504
    timeouts: { request: 1s }
    endpoints:
      - address: {alpha}

routes:
  - name: products-api
    match: { path_prefix: /api/products }
    cluster: products
  - name: slow-api
    match: { path_prefix: /api/slow }
    cluster: slow
    strip_prefix: true
  - name: catalog            # cached: /api/catalog?max_age=30 twice is X-Cache MISS, then HIT
    match: { path_prefix: /api/catalog }
    cluster: stable
    filters:
      - cache: { serve_stale_on_error: 5m }
  - name: services           # GET /v1/proxy/{service}: the cluster is named in the path
    match: { path_template: "/v1/proxy/{service}/{*rest}" }
    cluster_from_path: { param: service, allow: [products, stable, flaky, slow] }
    strip_prefix: true
"#;
