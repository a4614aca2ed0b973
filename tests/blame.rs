//! Blame the right side: a client that aborts its upload, sends a malformed body, stalls, or
//! uploads slowly past the request timeout never counts against the endpoint. Its breaker stays
//! CLOSED and other clients keep being served; the client's own request gets 400 / 408 / 499.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use gatehouse_testkit::{eventually, FakeUpstream, Mode, TestGateway};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &str, limits: &str, cluster: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n    limits: {{{limits}}}\n\
         admin: {{address: '127.0.0.1:0'}}\n\
         clusters:\n  - {{name: app, endpoints: [{{address: '{upstream}'}}], health_check: {{enabled: false}}, \
         circuit_breaker: {{consecutive_failures: 3}}{cluster}}}\n\
         routes: [{{name: all, cluster: app}}]\n"
    )
}

async fn failures(gw: &TestGateway) -> String {
    common::metrics(gw)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("gatehouse_upstream_requests_total")
                && l.contains("failure")
                && !l.ends_with(" 0")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The admin view of cluster `app`.
async fn cluster_app(gw: &TestGateway) -> serde_json::Value {
    common::client()
        .get(gw.admin_url("/clusters/app"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn breaker(gw: &TestGateway) -> String {
    let v = cluster_app(gw).await;
    v["endpoints"][0]["breaker"].as_str().unwrap().to_string()
}

/// Sends `head` then `body` bytes, half-closes, and returns what came back.
async fn send_and_close(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn aborted_and_malformed_uploads_never_open_the_breaker() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.mode = Mode::Sink);
    // Streamed to the endpoint (no request buffering), so the endpoint is mid-request when the
    // client's body fails.
    let gw = TestGateway::start(&config(&app.addr().to_string(), "request_buffering: 0", "")).await;
    for i in 0..5 {
        // A malformed chunk.
        let r = send_and_close(
            gw.addr(),
            &format!("POST /upload HTTP/1.1\r\nHost: gw\r\nX-Request-Id: bad-{i}\r\nTransfer-Encoding: chunked\r\n\r\n"),
            b"zz\r\n",
        )
        .await;
        assert!(!r.contains("502") && !r.contains("503"), "{r}");
        // A body cut short: Content-Length promises more than ever comes.
        let r = send_and_close(
            gw.addr(),
            &format!("POST /upload HTTP/1.1\r\nHost: gw\r\nX-Request-Id: short-{i}\r\nContent-Length: 200000\r\n\r\n"),
            b"0123456789",
        )
        .await;
        assert!(!r.contains("502") && !r.contains("503"), "{r}");
    }
    let line = gw.log_line("bad-0").await;
    assert_eq!(line["error"], "bad_request_body", "{line}");
    assert_eq!(line["status"], 400);
    let line = gw.log_line("short-0").await;
    assert_eq!(line["error"], "client_aborted", "{line}");
    assert_eq!(line["status"], 499);
    assert_eq!(breaker(&gw).await, "CLOSED");
    assert_eq!(
        failures(&gw).await,
        "",
        "no failure recorded on the endpoint"
    );
    let ok = common::client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_stalled_body_is_a_408_and_not_the_endpoints_fault() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.mode = Mode::Sink);
    for buffering in ["request_buffering: 0", "request_buffering: 64KiB"] {
        let gw = TestGateway::start(&config(
            &app.addr().to_string(),
            &format!("{buffering}, body_read_timeout: 1s"),
            "",
        ))
        .await;
        for i in 0..4 {
            let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
            s.write_all(
                format!("POST /slow HTTP/1.1\r\nHost: gw\r\nX-Request-Id: stall-{i}\r\nContent-Length: 100\r\n\r\n0123456789").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            let started = std::time::Instant::now();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            let r = String::from_utf8_lossy(&out);
            assert!(r.starts_with("HTTP/1.1 408"), "{buffering}: {r}");
            assert!(r.contains("body_read_timeout"), "{r}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(breaker(&gw).await, "CLOSED", "{buffering}");
        assert_eq!(failures(&gw).await, "", "{buffering}");
        gw.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn a_slow_steady_upload_is_not_cut_by_the_request_timeout() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.mode = Mode::Sink);
    // The request timeout (500ms) runs from when the request is fully sent; the upload itself
    // takes ~1.5 s, a byte every 150 ms (never idle for the body read timeout).
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "request_buffering: 0, body_read_timeout: 1s",
        ", timeouts: {request: 500ms}, retries: {attempts: 0}",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"received\":10"), "{out}");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_buffered_slow_client_holds_no_upstream_connection() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.mode = Mode::Sink);
    let gw = TestGateway::start(&config(&app.addr().to_string(), "", "")).await;
    // Ten clients start small uploads and stall halfway: the backend sees no connection at all.
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\nhalf")
            .await
            .unwrap();
        held.push(s);
    }
    let _ = eventually("gateway holds the ten", Duration::from_secs(5), || async {
        (gw.gateway().runtime().metrics.in_flight.get() >= 10).then_some(())
    })
    .await;
    assert_eq!(
        app.connections(),
        0,
        "no upstream connection while bodies are incomplete"
    );
    for mut s in held {
        s.write_all(&[b'x'; 996]).await.unwrap();
        let mut out = vec![0u8; 512];
        let n = s.read(&mut out).await.unwrap();
        assert!(String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 200"));
    }
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_limits_answer_overload_at_once_and_cap_connections() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.delay = Duration::from_millis(600));
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "",
        ", retries: {attempts: 0}, limits: {max_connections: 1, max_pending: 1, max_requests: 3}",
    ))
    .await;
    let url = gw.url("/slow");
    let send = || {
        let url = url.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = common::client().get(url).send().await.unwrap();
            let s = r.status().as_u16();
            let body = r.text().await.unwrap();
            (s, body, t.elapsed())
        })
    };
    // One on the connection, one waiting for it; the third finds the queue full.
    let first = send();
    app.wait_hits(1).await;
    let second = send();
    let v: serde_json::Value = eventually("one pending", Duration::from_secs(5), || async {
        let v = cluster_app(&gw).await;
        (v["load"]["pending"] == 1).then_some(v)
    })
    .await;
    assert_eq!(v["load"]["connections"], 1, "{v}");
    assert_eq!(v["limits"]["max_connections"], 1, "{v}");
    let (s, body, took) = send().await.unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("cluster_overloaded"), "{body}");
    assert!(
        took < Duration::from_millis(300),
        "answered at once: {took:?}"
    );
    // The waiting one rides the first one's connection when it is free: one connection total.
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    assert_eq!(app.connections(), 1, "never more than max_connections");

    // max_requests: three in flight, the fourth is refused at once.
    let gw2 = TestGateway::start(&config(
        &app.addr().to_string(),
        "",
        ", retries: {attempts: 0}, limits: {max_requests: 2}",
    ))
    .await;
    let url2 = gw2.url("/slow");
    let a = tokio::spawn({
        let u = url2.clone();
        async move { common::client().get(u).send().await.unwrap().status() }
    });
    let b = tokio::spawn({
        let u = url2.clone();
        async move { common::client().get(u).send().await.unwrap().status() }
    });
    app.wait_hits(4).await;
    let r = common::client().get(&url2).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        (a.await.unwrap().as_u16(), b.await.unwrap().as_u16()),
        (200, 200)
    );
    let m = common::metrics(&gw2).await;
    assert!(
        m.contains("gatehouse_cluster_overflow_total{cluster=\"app\",limit=\"requests\"} 1"),
        "{m}"
    );
    let m1 = common::metrics(&gw).await;
    assert!(
        m1.contains("gatehouse_cluster_overflow_total{cluster=\"app\",limit=\"connections\"} 1"),
        "{m1}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
    gw2.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_and_waiting_for_a_connection_are_not_slow_calls() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.mode = Mode::Sink);
    // Slow means 300 ms of the endpoint's time; 3 calls are enough for the rate to count.
    let slow_config = |limits: &str, cluster: &str| {
        config(&app.addr().to_string(), limits, cluster).replace(
            "circuit_breaker: {consecutive_failures: 3}",
            "circuit_breaker: {slow_call_duration: 300ms, slow_call_rate: 50%, minimum_calls: 3}",
        )
    };
    let gw = TestGateway::start(&slow_config(
        "request_buffering: 0, body_read_timeout: 2s",
        ", retries: {attempts: 0}",
    ))
    .await;
    // Four uploads that each take ~700 ms to arrive, answered at once by the endpoint.
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let addr = gw.addr();
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                for b in b"01234567" {
                    tokio::time::sleep(Duration::from_millis(90)).await;
                    s.write_all(&[*b]).await.unwrap();
                }
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            })
        })
        .collect();
    for u in uploads {
        let out = u.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    assert_eq!(
        breaker(&gw).await,
        "CLOSED",
        "slow uploads counted against the endpoint"
    );
    gw.shutdown(Duration::from_secs(2)).await;

    // One connection allowed: six concurrent 150 ms calls queue for it, the last ones for
    // ~750 ms, yet each is only 150 ms of the endpoint's time.
    app.update(|b| {
        b.mode = Mode::Normal;
        b.delay = Duration::from_millis(150);
    });
    let gw = TestGateway::start(&slow_config(
        "",
        ", retries: {attempts: 0}, limits: {max_connections: 1, max_pending: 10}, timeouts: {connect: 5s}",
    ))
    .await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/q");
            tokio::spawn(async move { common::client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(
        breaker(&gw).await,
        "CLOSED",
        "queue time counted against the endpoint"
    );
    // Every try is counted, slow or not.
    let text = common::metrics(&gw).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("gatehouse_upstream_requests_total")
                && l.contains("success")
                && l.ends_with(" 6")),
        "{text}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_streamed_upload_with_a_length_still_times_out_on_a_slow_endpoint() {
    let app = FakeUpstream::start("app").await;
    // The endpoint takes 5 s before it answers (and before it reads the body).
    app.update(|b| {
        b.mode = Mode::Sink;
        b.delay = Duration::from_secs(5);
    });
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "request_buffering: 0",
        ", retries: {attempts: 0}, timeouts: {request: 600ms}",
    ))
    .await;
    // Small (all of it fits in socket buffers) and large (the endpoint must read to take it).
    for size in [1000usize, 8 << 20] {
        let body = vec![b'x'; size];
        let started = std::time::Instant::now();
        let r = common::client()
            .post(gw.url("/up"))
            .header("content-length", size.to_string())
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                body.chunks(64 << 10)
                    .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            )))
            .send()
            .await;
        let took = started.elapsed();
        match r {
            Ok(r) => assert_eq!(r.status(), 504, "{size} bytes"),
            // The gateway may answer 504 before reading the rest of a large body.
            Err(e) => assert!(size > 1000, "{size} bytes: {e}"),
        }
        assert!(took < Duration::from_secs(3), "{size} bytes: {took:?}");
    }
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let app = FakeUpstream::start("app").await;
    app.update(|b| b.delay = Duration::from_secs(3));
    let gw = TestGateway::start(&config(&app.addr().to_string(), "", "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: gw\r\nX-Request-Id: gone-1\r\n\r\n")
        .await
        .unwrap();
    app.wait_hits(1).await;
    drop(s);
    let line = gw.log_line("gone-1").await;
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["error"], "client_closed", "{line}");
    // The endpoint that kept it waiting is named, though the try never ended.
    assert_eq!(line["endpoint"], app.addr().to_string(), "{line}");
    assert_eq!(line["retries"], 0, "{line}");
    let text = common::metrics(&gw).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("gatehouse_requests_total")
                && l.contains("4xx")
                && l.ends_with(" 1")),
        "{}",
        text.lines()
            .filter(|l| l.starts_with("gatehouse_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The try is counted, as neither the endpoint's success nor its failure.
    let tries: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gatehouse_upstream_requests_total") && !l.ends_with(" 0"))
        .collect();
    assert!(
        tries.len() == 1 && tries[0].contains("outcome=\"cancelled\"") && tries[0].ends_with(" 1"),
        "{tries:?}"
    );
    assert_eq!(breaker(&gw).await, "CLOSED");
    gw.shutdown(Duration::from_secs(1)).await;
}
