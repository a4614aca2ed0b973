//! Shared helpers for the integration tests: config builders and clients.
#![allow(dead_code)]

pub mod binary;
pub mod pki;

use std::net::SocketAddr;

/// A config with one listener (`extra_listener` is appended under it, indented), one cluster
/// `backend` over `addrs` (`extra_cluster` likewise) and a catch-all route to it.
pub fn one_cluster(addrs: &[SocketAddr], extra_listener: &str, extra_cluster: &str) -> String {
    let endpoints: String = addrs
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect();
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n{extra_listener}\nclusters:\n  - name: backend\n    endpoints:\n{endpoints}{extra_cluster}\nroutes:\n  - name: all\n    cluster: backend\n"
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .expect("client")
}

/// [`client`] with a 5 s deadline per request, for tests where a hang is the failure.
#[allow(dead_code)]
pub fn timed_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("client")
}

pub fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client")
}

/// Sends raw bytes on a new connection and reads until the server closes or `limit` passes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway's `/metrics` text, from its admin listener.
#[allow(dead_code)]
pub async fn metrics(gw: &gatehouse_testkit::TestGateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}
