//! The edge beyond paths: rejections are counted and logged, `max_connections` closes what it
//! cannot take without stalling the accept loop, the PROXY protocol sets the client address,
//! a client behind a trusted proxy cannot evade a per-IP limit by writing `X-Forwarded-For`,
//! HTTP/2 `:authority` and `host` must agree, and the binary raises its open-file limit.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use bytes::Bytes;
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use http_body_util::{BodyExt, Empty};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &str, listener_extra: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n{listener_extra}\n\
         admin: {{address: '127.0.0.1:0'}}\n\
         clusters: [{{name: app, endpoints: [{{address: '{upstream}'}}], health_check: {{enabled: false}}}}]\n\
         {extra}\
         routes:\n  - {{name: all, cluster: app, filters: [{{rate_limit: per-ip}}]}}\n\
         rate_limits: [{{name: per-ip, rate: 3/m, key: client_ip}}]\n"
    )
}

async fn metrics(gw: &TestGateway) -> String {
    common::metrics(gw).await
}

#[tokio::test]
async fn rejections_are_counted_and_logged() {
    let app = FakeUpstream::start("app").await;
    let gw = TestGateway::start(&config(&app.addr().to_string(), "", "")).await;
    let r = common::raw(
        gw.addr(),
        b"GET /x%2f..%2fadmin HTTP/1.1\r\nHost: gw.test\r\nX-Request-Id: rejected-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let line = gw.log_line("rejected-1").await;
    assert_eq!(line["status"], 400);
    assert_eq!(line["error"], "invalid_path");
    assert_eq!(line["path"], "/x%2f..%2fadmin", "the path as it was sent");
    assert_eq!(line["host"], "gw.test");
    assert!(line["route"].is_null());

    let r = common::raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // hyper's own refusals (a bare 400) are counted too.
    let r = common::raw(gw.addr(), b"GET / HTTP/1.1\r\nHost : a\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let m = eventually("rejection counters", Duration::from_secs(5), || async {
        let m = metrics(&gw).await;
        (m.contains("gatehouse_requests_rejected_total{reason=\"invalid_path\"} 1")
            && m.contains("gatehouse_requests_rejected_total{reason=\"invalid_host\"} 1")
            && m.contains("gatehouse_requests_rejected_total{reason=\"malformed_request\"} 1"))
        .then_some(m)
    })
    .await;
    assert!(!m.contains("reason=\"/"), "no path in a label");
    // The normalized path is what the log shows for a request that went through.
    let ok = common::client()
        .get(gw.url("/a/./b/../c"))
        .header("x-request-id", "normal-1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(gw.log_line("normal-1").await["path"], "/a/c");
    assert_eq!(app.last_seen().uri.path(), "/a/c");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_trusted_proxys_client_cannot_rotate_its_way_past_a_per_ip_limit() {
    let app = FakeUpstream::start("app").await;
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "    trusted_proxies: [127.0.0.1]",
        "",
    ))
    .await;
    let c = common::client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        // The client writes a new leftmost entry each time; the proxy appended 203.0.113.9.
        let r = c
            .get(gw.url("/x"))
            .header("x-forwarded-for", format!("10.9.9.{i}, 203.0.113.9"))
            .header("x-request-id", format!("rot-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(gw.log_line("rot-0").await["client"], "203.0.113.9");
    let seen = app.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn max_connections_closes_the_extra_connection_at_once() {
    let app = FakeUpstream::start("app").await;
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "    limits: {max_connections: 3}",
        "",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(gw.addr()).await.unwrap());
    }
    // The held connections are counted once accepted; wait until the gateway sees them.
    eventually("three connections open", Duration::from_secs(5), || async {
        metrics(&gw)
            .await
            .contains("gatehouse_downstream_connections 3")
            .then_some(())
    })
    .await;
    let mut extra = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("closed at once, not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    eventually(
        "the rejection is counted",
        Duration::from_secs(5),
        || async {
            metrics(&gw)
                .await
                .contains("gatehouse_downstream_connections_rejected_total{listener=\"public\"} 1")
                .then_some(())
        },
    )
    .await;
    // The held ones still work, and a slot freed is a slot to use.
    let mut s = held.pop().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let r = eventually(
        "a new connection is served",
        Duration::from_secs(5),
        || async {
            let r = common::raw(
                gw.addr(),
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            r.starts_with("HTTP/1.1 200").then_some(r)
        },
    )
    .await;
    assert!(r.contains("app"));
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn proxy_protocol_sets_the_client_and_is_required() {
    let app = FakeUpstream::start("app").await;
    let gw = TestGateway::start(&config(
        &app.addr().to_string(),
        "    proxy_protocol: true\n    limits: {header_read_timeout: 1s}",
        "",
    ))
    .await;
    let r = common::raw(
        gw.addr(),
        b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\nGET /p HTTP/1.1\r\nHost: a\r\nX-Request-Id: pp-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(app.last_seen().headers["x-forwarded-for"], "192.0.2.7");
    let line = gw.log_line("pp-1").await;
    assert_eq!(line["client"], "192.0.2.7");
    assert_eq!(line["peer"], "192.0.2.7:5555");

    // v2, binary.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 4, 10, 0, 0, 1, 0x1f, 0x90, 0, 80]);
    v2.extend_from_slice(b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = common::raw(gw.addr(), &v2).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(app.last_seen().headers["x-forwarded-for"], "198.51.100.4");

    // Without a header, or with a broken one, the connection is closed unanswered.
    let hits = app.hits();
    for bad in [
        &b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 80\r\nGET /p HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let r = common::raw(gw.addr(), bad).await;
        assert!(r.is_empty(), "{r}");
    }
    // A client that sends nothing is dropped after header_read_timeout.
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("dropped within the header timeout");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(app.hits(), hits);
    eventually("PROXY refusals counted", Duration::from_secs(5), || async {
        metrics(&gw)
            .await
            .contains("gatehouse_requests_rejected_total{reason=\"proxy_protocol\"} 3")
            .then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(2)).await;
}

/// Sends one HTTP/2 request with this `:authority` (from the URI) and `host` header.
async fn h2(addr: std::net::SocketAddr, uri: &str, host: Option<&str>) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().uri(uri);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let app = FakeUpstream::start("app").await;
    let gw = TestGateway::start(&config(&app.addr().to_string(), "", "")).await;
    assert_eq!(h2(gw.addr(), "http://a.example/x", None).await, 200);
    assert_eq!(
        h2(gw.addr(), "http://a.example/x", Some("A.example")).await,
        200
    );
    assert_eq!(
        h2(gw.addr(), "http://a.example/x", Some("b.example")).await,
        400
    );
    assert_eq!(h2(gw.addr(), "http://a.example/x/../y", None).await, 200);
    assert_eq!(app.last_seen().uri.path(), "/y");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn the_binary_raises_its_open_file_limit() {
    let app = "127.0.0.1:9";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config(app, "", "")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("RLIMIT_NOFILE"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the limit is logged");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    let logged = v["nofile"].as_u64().unwrap();
    if hard != "unlimited" {
        assert_eq!(logged.to_string(), hard, "raised to the hard limit");
    }
}

/// A backend that answers every request with `response`, as raw bytes, then closes.
async fn raw_backend(response: &'static [u8]) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_response_is_framed_safely_or_refused() {
    // A transfer coding the gateway cannot decode: 502, and a failure of that endpoint.
    let gzip = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&config(&gzip.to_string(), "", "")).await;
    let r = common::client()
        .get(gw.url("/x"))
        .header("x-request-id", "bad-framing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        gw.log_line("bad-framing").await["error"],
        "upstream_bad_framing"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains(&format!("gatehouse_upstream_requests_total{{cluster=\"app\",endpoint=\"{gzip}\",outcome=\"failure\"}} 1")),
        "{m}"
    );
    gw.shutdown(Duration::from_secs(2)).await;

    // Both Transfer-Encoding and a lying Content-Length: the chunked body wins and the client
    // gets it whole, framed once.
    let both = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&config(&both.to_string(), "", "")).await;
    let r = common::raw(
        gw.addr(),
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("content-length: 2"), "{r}");
    assert!(r.contains("hello"), "{r}");
    gw.shutdown(Duration::from_secs(2)).await;
}

/// A response refused for its framing ended its exchange in doubt (where its body ends is the
/// backend's word against the gateway's reading): its connection is closed, never pooled for the
/// next request, where a misread body would become the next answer.
#[tokio::test]
async fn a_connection_that_brought_a_refused_response_is_not_reused() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                loop {
                    match s.read(&mut buf).await {
                        // The gateway closed it: what this test waits for.
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        got.clear();
                        // A whole chunked body under a coding the gateway refuses, and the
                        // connection kept open, as for keep-alive.
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                            .await;
                    }
                }
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let gw = TestGateway::start(&config(&addr.to_string(), "", "")).await;
    let r = common::client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    eventually(
        "the refused response's connection to close",
        Duration::from_secs(5),
        || async { (closed.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    gw.shutdown(Duration::from_secs(2)).await;
}

/// A backend that records each request head it gets and answers `response` to every request.
async fn recording_backend(
    response: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn upgrades_in_origin_form_h2c_never_and_no_unasked_101() {
    let (up, heads) = recording_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&config(&up.to_string(), "", "")).await;
    // A WebSocket upgrade: origin form, and the 101 names the backend's protocol.
    let r = common::raw(
        gw.addr(),
        b"GET /ws?x=1 HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    let head = heads.lock().unwrap().pop().unwrap();
    assert!(head.starts_with("GET /ws?x=1 HTTP/1.1\r\n"), "{head}");
    // h2c anywhere in the list: not an upgrade, and HTTP2-Settings never passes. The backend's
    // 101 to a request that asked for nothing is a 502.
    let r = common::raw(
        gw.addr(),
        b"GET /h2c HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(r.contains("upstream_bad_framing"), "{r}");
    let head = heads.lock().unwrap().pop().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /h2c http/1.1\r\n"), "{head}");
    assert!(
        !head.contains("upgrade:") && !head.contains("http2-settings"),
        "{head}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn response_lists_client_headers_and_silent_connections() {
    let (up, heads) =
        recording_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello").await;
    let gw = TestGateway::start(&config(
        &up.to_string(),
        "    trusted_proxies: [127.0.0.1]\n    limits: {header_read_timeout: 1s, idle_timeout: 30s}",
        "",
    ))
    .await;
    let r = common::raw(
        gw.addr(),
        b"GET /a HTTP/1.1\r\nHost: gw.test\r\nX-Forwarded-For: \x80, 7.7.7.7\r\nX-Original-URL: /admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("content-length: 5\r\n"),
        "{r}"
    );
    assert!(r.ends_with("hello"), "{r}");
    let head = heads.lock().unwrap().pop().unwrap().to_ascii_lowercase();
    // One non-UTF-8 entry does not hide the trusted proxy's own.
    assert!(
        head.contains("x-forwarded-for: 7.7.7.7, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(!head.contains("x-original-url"), "{head}");

    // Cookies an HTTP/2 client split arrive as one line.
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://gw.test/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let head = heads.lock().unwrap().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("cookie: a=1; b=2\r\n"), "{head}");
    assert_eq!(head.matches("cookie:").count(), 1, "{head}");

    // A connection that never sends a byte is closed at header_read_timeout, not idle_timeout.
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown(Duration::from_secs(2)).await;
}
