//! Graceful shutdown: stop accepting, let in-flight requests finish, then exit 0; give up at
//! the drain timeout.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::{client, one_cluster};
use gatehouse_testkit::{FakeUpstream, TestGateway};
use std::time::{Duration, Instant};

#[tokio::test]
async fn in_flight_request_finishes_during_drain() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_millis(500));
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let addr = gw.addr();
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    up.wait_hits(1).await;
    let drained = gw.shutdown(Duration::from_secs(10)).await;
    assert!(drained, "all connections finished within the drain timeout");
    assert_eq!(
        inflight.await.unwrap().unwrap(),
        200,
        "the in-flight request completed"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting connections"
    );
}

#[tokio::test]
async fn drain_gives_up_at_its_timeout() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_secs(30));
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let url = gw.url("/stuck");
    let _inflight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    up.wait_hits(1).await;
    let start = Instant::now();
    assert!(!gw.shutdown(Duration::from_millis(200)).await);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_millis(700));
    let yaml = format!("{}drain_timeout: 10s\n", one_cluster(&[up.addr()], "", ""));
    let mut gw = Running::start(&yaml, &[]);
    let url = format!("http://{}/slow", gw.addr);
    let inflight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    up.wait_hits(1).await;
    gw.signal("TERM");
    assert_eq!(
        inflight.await.unwrap().unwrap(),
        200,
        "in-flight request finished after SIGTERM"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Waits for the child to exit; returns how long after `since` it did.
async fn exit_after(gw: &mut Running, since: Instant) -> (std::process::ExitStatus, Duration) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            return (s, since.elapsed());
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sigterm_with_idle_connections_exits_at_once() {
    let up = FakeUpstream::start("up").await;
    // Started from a file (the reloader and the file watcher are running), with the default
    // 30 s drain timeout: nothing in flight must mean no waiting.
    let mut gw = Running::start(&one_cluster(&[up.addr()], "", ""), &[]);
    // An idle keep-alive connection and an open WebSocket hold nothing in flight.
    let keepalive = client();
    assert_eq!(
        keepalive
            .get(format!("http://{}/a", gw.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .unwrap();
    // A connection that has sent nothing, and one halfway through a request head.
    let _silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    partial
        .write_all(b"GET /half HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let sent = Instant::now();
    gw.signal("TERM");
    let (status, took) = exit_after(&mut gw, sent).await;
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(1), "exited after {took:?}");
}

#[tokio::test]
async fn sigterm_does_not_wait_for_an_http2_client_that_ignores_goaway() {
    let up = FakeUpstream::start("up").await;
    let mut gw = Running::start(&one_cluster(&[up.addr()], "", ""), &[]);
    // The HTTP/2 preface and an empty SETTINGS frame, then silence: never an ACK, never a PING
    // answer, so a graceful close can never complete on its own.
    use tokio::io::AsyncWriteExt;
    let mut h2 = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // Wait until the gateway is serving it (it answers with its own SETTINGS).
    let mut buf = [0u8; 9];
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(5), h2.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let sent = Instant::now();
    gw.signal("TERM");
    let (status, took) = exit_after(&mut gw, sent).await;
    assert!(status.success(), "{status:?}");
    // One second of grace for the GOAWAY, not the 30 s drain timeout.
    assert!(took < Duration::from_millis(2500), "exited after {took:?}");
}

#[tokio::test]
async fn sigterm_exits_as_soon_as_the_last_request_ends() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_secs(2));
    let mut gw = Running::start(&one_cluster(&[up.addr()], "", ""), &[]);
    let url = format!("http://{}/slow", gw.addr);
    let inflight = tokio::spawn(async move {
        let r = client().get(url).send().await.map(|r| r.status());
        (r, Instant::now())
    });
    up.wait_hits(1).await;
    gw.signal("TERM");
    let (r, ended) = inflight.await.unwrap();
    assert_eq!(r.unwrap(), 200, "the in-flight request finished");
    let (status, took) = exit_after(&mut gw, ended).await;
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after the last request ended"
    );
}

#[tokio::test]
async fn sigterm_exits_even_when_nobody_reads_the_access_log() {
    let up = FakeUpstream::start("up").await;
    let mut gw = Running::start_with_unread_stdout(&one_cluster(&[up.addr()], "", ""));
    // Enough lines to fill the pipe (64 KiB) many times over: the writer thread blocks in write.
    let c = client();
    for i in 0..1500 {
        let r = c
            .get(format!("http://{}/fill?{}", gw.addr, "x".repeat(200)))
            .header("x-request-id", format!("fill-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let sent = Instant::now();
    gw.signal("TERM");
    let (status, took) = exit_after(&mut gw, sent).await;
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_millis(2500), "exited after {took:?}");
}
