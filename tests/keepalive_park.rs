//! Idle HTTP/1.1 keep-alive connections are parked outside hyper after 2 s (no buffers held)
//! and served again on the same socket when the client sends; parked connections still close
//! at their idle timeout and at once on shutdown.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::one_cluster;
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one response with a Content-Length; returns its head.
async fn response(s: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text[..end].to_string();
            }
        }
    }
}

async fn parked(gw: &TestGateway, n: i64) {
    eventually(&format!("{n} parked"), Duration::from_secs(10), || async {
        (gw.gateway().runtime().metrics.connections_parked.get() == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_on_the_same_socket() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    parked(&gw, 1).await;
    // The next request arrives in two pieces: the parked socket wakes on the first.
    s.write_all(b"GET /two HTTP/1.1\r\nHo").await.unwrap();
    parked(&gw, 0).await;
    s.write_all(b"st: gw\r\nX-Request-Id: after-park\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert_eq!(gw.log_line("after-park").await["status"], 200);
    // Parked again, then two pipelined requests at once.
    parked(&gw, 1).await;
    s.write_all(b"GET /3 HTTP/1.1\r\nHost: gw\r\n\r\nGET /4 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert_eq!(up.connections(), 1, "one upstream connection throughout");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_parked_connection_closes_at_its_idle_timeout_and_on_shutdown() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: {idle_timeout: 3s}\n",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    parked(&gw, 1).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed at the idle timeout");
    parked(&gw, 0).await;

    // On shutdown a parked connection closes at once.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    parked(&gw, 1).await;
    let started = std::time::Instant::now();
    assert!(gw.shutdown(Duration::from_secs(10)).await, "drained");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
