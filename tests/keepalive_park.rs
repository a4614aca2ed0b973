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

/// A connection that has had one answer and is parked now.
async fn answered_then_parked(gw: &TestGateway) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    parked(gw, 1).await;
    s
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_on_the_same_socket() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let mut s = answered_then_parked(&gw).await;
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
    let open = || gw.gateway().runtime().metrics.connections.get();
    let mut s = answered_then_parked(&gw).await;
    assert_eq!(open(), 1, "a parked connection is still counted as open");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed at the idle timeout");
    parked(&gw, 0).await;
    eventually("no connection open", Duration::from_secs(5), || async {
        (open() == 0).then_some(())
    })
    .await;

    // On shutdown a parked connection closes at once.
    let _held = answered_then_parked(&gw).await;
    let started = std::time::Instant::now();
    assert!(gw.shutdown(Duration::from_secs(10)).await, "drained");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_response_still_being_flushed_to_a_slow_reader_is_not_cut_by_parking() {
    let up = FakeUpstream::start("up").await;
    const SIZE: u64 = 6 << 20;
    up.update(|b| b.mode = gatehouse_testkit::Mode::Stream(SIZE));
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing until the gateway has taken the whole body from the backend (its
    // tail waits in socket and hyper buffers), then past the moment the connection would park.
    eventually("body taken", Duration::from_secs(10), || async {
        (gw.gateway().runtime().metrics.in_flight.get() == 0).then_some(())
    })
    .await;
    // The scenario itself: a reader that stalls past the park delay.
    tokio::time::sleep(past_the_park_delay()).await;
    let mut got = Vec::with_capacity(SIZE as usize + 1024);
    let mut buf = vec![0u8; 1 << 16];
    let body_start = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..body_start]).to_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked")
            || head.contains(&format!("content-length: {SIZE}")),
        "{head}"
    );
    // Read until the whole body has arrived (chunked framing adds a few bytes per chunk).
    while (got.len() - body_start) < SIZE as usize {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the rest of the body arrives")
            .unwrap();
        assert!(n > 0, "cut after {} body bytes", got.len() - body_start);
        got.extend_from_slice(&buf[..n]);
    }
    // And the connection still serves.
    up.update(|b| b.mode = gatehouse_testkit::Mode::Normal);
    if head.contains("transfer-encoding: chunked") {
        // Drain the final chunk marker if it has not arrived yet.
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }
    s.write_all(b"GET /after HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_cached_response_to_a_slow_reader_is_not_cut_at_the_next_heads_deadline() {
    // A cache hit is one 6 MiB frame: hyper takes it at once (the response's body has ended for
    // the gateway) and writes it for as long as the client takes. The next head's deadline
    // (1 s) passes meanwhile; the connection must not be closed under the write.
    let up = FakeUpstream::start("up").await;
    const SIZE: usize = 6 << 20;
    up.set(gatehouse_testkit::Behavior {
        body: vec![b'x'; SIZE].into(),
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Default::default()
    });
    let cfg = one_cluster(&[up.addr()], "    limits: { header_read_timeout: 1s }", "")
        + "    filters: [cache: {max_entry_bytes: 8MiB}]\n";
    let gw = TestGateway::start(&cfg).await;
    let url = format!("http://{}/big", gw.addr());
    // Stored once it has been read whole; asked again until the cache answers.
    eventually("the response cached", Duration::from_secs(10), || async {
        let r = common::client().get(&url).send().await.ok()?;
        let hit = r
            .headers()
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().starts_with(b"hit") || v.as_bytes().starts_with(b"HIT"));
        (r.bytes().await.ok()?.len() == SIZE && hit).then_some(())
    })
    .await;
    let fetched = up.hits();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let mut s = socket.connect(gw.addr()).await.unwrap();
    // The host the cache stored it under (the key includes it).
    let get = format!("GET /big HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr());
    s.write_all(get.as_bytes()).await.unwrap();
    // The scenario itself: a reader that stalls past the deadline and the grace after it.
    tokio::time::sleep(past_the_park_delay()).await;
    let mut got = Vec::with_capacity(SIZE + 1024);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the rest of the response arrives")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let body = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        if body.is_some_and(|b| got.len() - b >= SIZE) {
            break;
        }
        assert!(n > 0, "cut after {} bytes", got.len());
    }
    assert_eq!(
        up.hits(),
        fetched,
        "the slow reader's answer was the cache's"
    );
}

/// Longer than the park delay (2 s).
fn past_the_park_delay() -> Duration {
    gatehouse::listener::PARK_AFTER + Duration::from_millis(500)
}

#[tokio::test]
async fn many_parked_connections_wake_independently() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
        conns.push(s);
    }
    parked(&gw, 20).await;
    // Every other connection sends again: those wake, the rest stay parked.
    for (i, s) in conns.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        let id = format!("X-Request-Id: wake-{i}\r\n");
        s.write_all(format!("GET /two HTTP/1.1\r\nHost: gw\r\n{id}\r\n").as_bytes())
            .await
            .unwrap();
    }
    for s in conns.iter_mut().step_by(2) {
        assert!(response(s).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(gw.log_line("wake-18").await["status"], 200);
    // Those served park again; one closed by its client leaves the lot.
    parked(&gw, 20).await;
    drop(conns.pop());
    parked(&gw, 19).await;
    for s in conns.iter_mut().skip(1).step_by(2) {
        s.write_all(b"GET /three HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        assert!(response(s).await.starts_with("HTTP/1.1 200"));
    }
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_listener_removed_by_a_reload_closes_its_parked_connections() {
    let up = FakeUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, one_cluster(&[up.addr()], "", "")).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let mut s = answered_then_parked(&gw).await;
    let renamed = one_cluster(&[up.addr()], "", "").replace("name: public", "name: other");
    std::fs::write(&path, renamed).unwrap();
    gw.gateway().reload("test").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the removed listener's parked connection is closed"
    );
    parked(&gw, 0).await;
    gw.shutdown(Duration::from_secs(2)).await;
}

/// A woken connection's next head may arrive slowly: it is neither parked again nor closed for
/// idleness mid-head (the idle time counts from the wake), and its answer keeps the connection.
#[tokio::test]
async fn a_slow_head_after_waking_is_served_on_a_kept_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: {idle_timeout: 3s}\n",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    let answered = tokio::time::Instant::now();
    parked(&gw, 1).await;
    // Woken shortly before the idle timeout, the rest of the head (over 1 KiB, so it does not
    // come with the wake) only after it.
    tokio::time::sleep_until(answered + Duration::from_millis(2700)).await;
    let cookie = "a".repeat(2500);
    s.write_all(format!("GET /late HTTP/1.1\r\nCookie: {cookie}\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep_until(answered + Duration::from_millis(3300)).await;
    s.write_all(b"Host: gw\r\nX-Request-Id: slow-head\r\n\r\n")
        .await
        .unwrap();
    let head = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // Still open and served.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    gw.shutdown(Duration::from_secs(2)).await;
}
