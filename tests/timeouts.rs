//! Every timeout, observed on real sockets: upstream connect, upstream request, idle pooled
//! upstream connection, client header read, idle client keep-alive.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{client, one_cluster};
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback listener whose accept queue is full, so new connects hang (SYNs are dropped).
fn black_hole() -> (
    socket2::Socket,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue; stop once a connect no longer completes quickly.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fillers.push(c),
            Err(_) => break,
        }
    }
    (s, fillers, addr)
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let (_hole, _fillers, addr) = black_hole();
    let gw = TestGateway::start(&one_cluster(
        &[addr],
        "",
        "    timeouts: { connect: 200ms }\n",
    ))
    .await;
    let start = Instant::now();
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "connect_timeout", "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn request_timeout_counts_until_response_head() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_millis(400));
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "",
        "    timeouts: { request: 150ms }\n",
    ))
    .await;
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        504
    );
    // The try gave up on the endpoint: its connection is closed, not kept waiting for an
    // answer that is late (were it kept, it would be pooled once the answer came, and stay open).
    eventually(
        "the timed-out try's connection to close",
        Duration::from_secs(5),
        || async { (up.open_connections() == 0).then_some(()) },
    )
    .await;
    up.update(|b| b.delay = Duration::ZERO);
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn idle_pooled_upstream_connection_is_closed() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "",
        "    timeouts: { idle: 200ms }\n",
    ))
    .await;
    client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(up.open_connections(), 1);
    eventually(
        "the pooled connection to close",
        Duration::from_secs(5),
        || async { (up.open_connections() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn client_header_read_timeout_closes_the_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: { header_read_timeout: 200ms }",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finished
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway closed the slow client's connection"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(up.hits(), 0);
}

/// One request answered on a kept-alive connection, then a head begun at once and never
/// finished: how long after the answer the gateway closed the connection.
async fn stalled_second_head(header_read_timeout: &str) -> Duration {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        &format!("    limits: {{ header_read_timeout: {header_read_timeout} }}"),
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the first response")
            .unwrap();
        assert!(n > 0, "closed before the first response");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let answered = Instant::now();
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n") // never finished
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stalled head's connection was not closed");
    assert_eq!(up.hits(), 1);
    // The response to the first request may still be arriving in `rest`'s bytes.
    answered.elapsed()
}

#[tokio::test]
async fn a_stalled_head_on_a_kept_alive_connection_is_closed_at_header_read_timeout() {
    // Timed by the connection's watch from the response before it, not by a timer per head.
    let took = stalled_second_head("300ms").await;
    // Never before the timeout, and far from the 60 s idle timeout.
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_stalled_head_keeps_its_deadline_when_its_idle_connection_is_parked() {
    // Longer than the 2 s after which an idle HTTP/1.1 connection leaves hyper (parking): the
    // part of a head read by then goes to a new hyper connection, and the deadline goes with it
    // (hyper's own header timer started again there, closing at 2 s + 2.5 s).
    let took = stalled_second_head("2500ms").await;
    assert!(took >= Duration::from_millis(2400), "{took:?}");
    assert!(took < Duration::from_millis(3900), "{took:?}");
}

#[tokio::test]
async fn a_stalled_head_carried_over_two_parks_is_closed_at_its_deadline() {
    // Parked at 2 s, the part of the head read goes to a new hyper connection, which a graceful
    // shutdown does not close (it has served nothing yet): parked again at 4 s, it must still
    // close at the head's deadline.
    let took = stalled_second_head("5s").await;
    assert!(took >= Duration::from_millis(4800), "{took:?}");
    assert!(took < Duration::from_millis(6500), "{took:?}");
}

/// A first head sent in `parts` (each at its offset from the connect, in ms) and never
/// finished: how long after the connect the gateway closed the connection.
async fn stalled_first_head(header_read_timeout: &str, parts: &[(u64, &[u8])]) -> Duration {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        &format!("    limits: {{ header_read_timeout: {header_read_timeout} }}"),
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let start = Instant::now();
    for (at, bytes) in parts {
        // The client's own pace.
        tokio::time::sleep_until((start + Duration::from_millis(*at)).into()).await;
        s.write_all(bytes).await.unwrap();
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the stalled first head's connection was not closed"
    );
    assert_eq!(up.hits(), 0);
    start.elapsed()
}

const HEAD_START: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";

#[tokio::test]
async fn a_first_head_over_1_kib_that_stalls_is_closed_at_header_read_timeout() {
    // The accept path hands hyper the first KiB of a head; the rest never comes. Past the
    // 2 s park time the connection is asked to let go, which hyper does not do with a head half
    // read: the deadline closes it.
    let took = stalled_first_head("3s", &[(0, HEAD_START), (0, &[b'a'; 1500])]).await;
    assert!(took >= Duration::from_millis(2800), "{took:?}");
    assert!(took < Duration::from_millis(4500), "{took:?}");
}

#[tokio::test]
async fn a_first_head_keeps_the_deadline_it_had_from_the_accept() {
    // The accept path reads the first KiB of a head before HTTP starts; a client that takes most
    // of the timeout to send it gets no fresh timeout for the rest.
    let took = stalled_first_head("1s", &[(0, HEAD_START), (700, &[b'a'; 1200])]).await;
    // At the accept's deadline (1 s); a deadline counted from the first KiB's arrival would
    // close at 1.7 s or later.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn idle_keep_alive_client_connection_is_closed() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: { idle_timeout: 300ms }",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the idle connection was closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}
