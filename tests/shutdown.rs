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

#[tokio::test]
async fn sigterm_reaches_an_http2_connection_that_never_stops_sending() {
    // A client that writes PING frames without pause: the connection's task always has frames
    // to read, so each of its polls can spend tokio's whole budget on them. The shutdown must
    // still reach it (a GOAWAY) and the process exit.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start("up").await;
    let mut gw = Running::start(&one_cluster(&[up.addr()], "", ""), &[]);
    let h2 = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = h2.into_split();
    wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // 16 KiB of PINGs (9-byte header, 8-byte payload) per write, for at most 20 s.
            let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00gatehous";
            let batch: Vec<u8> = ping
                .iter()
                .copied()
                .cycle()
                .take(ping.len() * 960)
                .collect();
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                if wr.write_all(&batch).await.is_err() {
                    break;
                }
            }
        })
    };
    // Frames from the gateway, until its GOAWAY (type 7) or the connection ends.
    let (tx, goaway) = tokio::sync::oneshot::channel::<Instant>();
    let pongs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let pongs = pongs.clone();
        async move {
            let mut tx = Some(tx);
            let mut head = [0u8; 9];
            while rd.read_exact(&mut head).await.is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                match head[3] {
                    6 => {
                        pongs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    7 => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    // The flood is under way: pongs are coming back.
    let until = Instant::now() + Duration::from_secs(10);
    while pongs.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(Instant::now() < until, "no pongs from the gateway");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = Instant::now();
    gw.signal("TERM");
    let at = tokio::time::timeout(Duration::from_secs(10), goaway)
        .await
        .expect("no GOAWAY within 10 s")
        .expect("the connection ended without a GOAWAY");
    assert!(
        at.duration_since(sent) < Duration::from_secs(2),
        "GOAWAY {:?} after SIGTERM",
        at.duration_since(sent)
    );
    let (status, took) = exit_after(&mut gw, sent).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    let _ = flood.await;
    let _ = reader.await;
}
