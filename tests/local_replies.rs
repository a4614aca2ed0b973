//! Local replies: every error the gateway answers itself is JSON with status, reason and the
//! request ID; malformed and oversized requests get the right 4xx.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{client, one_cluster, raw};
use gatehouse_testkit::{Behavior, FakeUpstream, Mode, TestGateway};
use std::time::Duration;

async fn json_reply(resp: reqwest::Response, status: u16, reason: &str) {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["request_id"], id.as_str(), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn no_route_is_404() {
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters: [{{name: c, endpoints: [{{address: '{}'}}]}}]\nroutes: [{{name: r, match: {{path_prefix: /api}}, cluster: c}}]\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    json_reply(
        client().get(gw.url("/nope")).send().await.unwrap(),
        404,
        "no_route",
    )
    .await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn refused_connection_is_502() {
    let mut up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    up.stop().await;
    let resp = client()
        .get(gw.url("/x"))
        .header("x-request-id", "r502")
        .send()
        .await
        .unwrap();
    json_reply(resp, 502, "connect_refused").await;
    let line = gw.log_line("r502").await;
    assert_eq!(line["error"], "connect_refused");
    assert_eq!(line["status"], 502);
}

#[tokio::test]
async fn reset_before_response_is_502() {
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        mode: Mode::Drop,
        ..Behavior::default()
    });
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    json_reply(
        client().get(gw.url("/x")).send().await.unwrap(),
        502,
        "upstream_reset",
    )
    .await;
}

#[tokio::test]
async fn no_eligible_endpoint_is_503() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let ep = gw
        .gateway()
        .runtime()
        .endpoint("backend", &up.addr().to_string())
        .expect("endpoint state");
    let events = &gw.gateway().runtime().events;
    let mut rx = events.subscribe();
    ep.set_drained(true, events);
    assert_eq!(rx.try_recv().unwrap()["event"], "endpoint_drained");
    json_reply(
        client().get(gw.url("/x")).send().await.unwrap(),
        503,
        "no_eligible_endpoint",
    )
    .await;
    assert_eq!(up.hits(), 0);
    ep.set_drained(false, events);
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn slow_response_is_504() {
    let up = FakeUpstream::start("up").await;
    up.update(|b| b.delay = Duration::from_secs(3));
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "",
        "    timeouts: { request: 200ms }\n",
    ))
    .await;
    let start = std::time::Instant::now();
    json_reply(
        client().get(gw.url("/slow")).send().await.unwrap(),
        504,
        "request_timeout",
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "answered at the timeout, not after the backend"
    );
}

#[tokio::test]
async fn malformed_request_is_400() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let out = raw(gw.addr(), b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "conflicting lengths: {out:?}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: { max_header_bytes: 8KiB, max_headers: 10 }",
        "",
    ))
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 << 10)
    );
    let out = raw(gw.addr(), big.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{:?}",
        &out[..out.len().min(80)]
    );
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw(
        gw.addr(),
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    assert_eq!(up.hits(), 0);
}

/// A raw HTTP/1.1 answer is a 413 that says `Connection: close`.
fn assert_413_closing(out: &str) {
    let head = out
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 413") && head.contains("\r\nconnection: close"),
        "{head}"
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        mode: Mode::Sink,
        ..Behavior::default()
    });
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    limits: { max_body_bytes: 1KiB }",
        "",
    ))
    .await;
    let c = client();
    // Declared too large: refused before the upstream is contacted.
    json_reply(
        c.post(gw.url("/up"))
            .body(vec![b'a'; 2048])
            .send()
            .await
            .unwrap(),
        413,
        "body_too_large",
    )
    .await;
    assert_eq!(up.hits(), 0);
    // The body is left unread, so the connection closes, and the 413 says so first.
    let out = raw(
        gw.addr(),
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\nabc",
    )
    .await;
    assert_413_closing(&out);
    // Within the limit: passes.
    let ok = c
        .post(gw.url("/up"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "{\"received\":1024}");
    // Chunked, growing past the limit while streaming: cut off and answered 413.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'b'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    json_reply(
        c.post(gw.url("/up")).body(body).send().await.unwrap(),
        413,
        "body_too_large",
    )
    .await;
    // That 413 says `Connection: close` too: the rest of the body is not read either.
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'c'; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    let out = raw(gw.addr(), &req).await;
    assert_413_closing(&out);
}

#[tokio::test]
async fn a_restarted_backend_is_reachable_again() {
    let mut up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let c = client();
    assert_eq!(c.get(gw.url("/a")).send().await.unwrap().status(), 200);
    up.stop().await;
    assert_eq!(c.get(gw.url("/b")).send().await.unwrap().status(), 502);
    up.restart().await;
    assert_eq!(c.get(gw.url("/c")).send().await.unwrap().status(), 200);
    assert_eq!(up.hits(), 2);
}
