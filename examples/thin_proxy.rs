//! The thinnest hyper proxy: one thread, pooled legacy client, round robin, no features.
//! A benchmark baseline only (what tokio + hyper cost before any gateway work):
//! `GATEWAY_CMD="target/release/examples/thin_proxy" GATEWAY_NAME=thin $HARNESS/run.sh thin`
//! reads LISTEN_ADDR and UPSTREAMS from the environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn main() {
    let listen = std::env::var("LISTEN_ADDR").expect("LISTEN_ADDR");
    let ups: Vec<String> = std::env::var("UPSTREAMS")
        .expect("UPSTREAMS")
        .split(',')
        .map(str::to_string)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(http);
        let next = Arc::new(AtomicUsize::new(0));
        let ups = Arc::new(ups);
        let l = tokio::net::TcpListener::bind(&listen).await.unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            let (client, next, ups) = (client.clone(), next.clone(), ups.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                    let i = next.fetch_add(1, Ordering::Relaxed) % ups.len();
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    *req.uri_mut() = format!("http://{}{pq}", ups[i]).parse().unwrap();
                    client.request(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
