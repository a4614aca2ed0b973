//! Proxy transparency and header handling, as tables: what the client sends, what the
//! upstream sees, what the upstream answers, what the client gets.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{client, h2_client, one_cluster};
use gatehouse_testkit::{Behavior, FakeUpstream, TestGateway};
use http::Version;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    send: &'static [(&'static str, &'static str)],
    body: &'static str,
    upstream_headers: &'static [(&'static str, &'static str)],
    upstream_status: u16,
    /// Headers the upstream must see with these values.
    seen: &'static [(&'static str, &'static str)],
    /// Headers the upstream must not see.
    not_seen: &'static [&'static str],
    /// What the client must get.
    status: u16,
    got: &'static [(&'static str, &'static str)],
    not_got: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "plain GET passes path, query, method and end-to-end headers",
        method: "GET",
        path: "/a/b?x=1&y=%20",
        send: &[
            ("x-custom", "v"),
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
        ],
        body: "",
        upstream_headers: &[("x-resp", "r"), ("cache-control", "no-store")],
        upstream_status: 200,
        seen: &[
            ("x-custom", "v"),
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
        ],
        not_seen: &[],
        status: 200,
        got: &[("x-resp", "r"), ("cache-control", "no-store")],
        not_got: &[],
    },
    Case {
        name: "hop-by-hop request headers and those named in Connection are removed",
        method: "GET",
        path: "/hop",
        send: &[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("upgrade", "something"),
        ],
        body: "",
        upstream_headers: &[],
        upstream_status: 204,
        seen: &[],
        not_seen: &[
            "keep-alive",
            "x-private",
            "proxy-authorization",
            "te",
            "upgrade",
            "proxy-connection",
        ],
        status: 204,
        got: &[],
        not_got: &[],
    },
    Case {
        name: "hop-by-hop response headers are removed",
        method: "GET",
        path: "/hop-resp",
        send: &[],
        body: "",
        upstream_headers: &[
            ("connection", "x-resp-private"),
            ("x-resp-private", "1"),
            ("keep-alive", "timeout=9"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "yes"),
        ],
        upstream_status: 200,
        seen: &[],
        not_seen: &[],
        status: 200,
        got: &[("x-kept", "yes")],
        not_got: &["x-resp-private", "keep-alive", "proxy-authenticate"],
    },
    Case {
        name: "POST body and upstream error statuses pass unchanged",
        method: "POST",
        path: "/submit",
        send: &[("content-type", "text/plain")],
        body: "hello upstream",
        upstream_headers: &[],
        upstream_status: 503,
        seen: &[("content-type", "text/plain"), ("content-length", "14")],
        not_seen: &[],
        status: 503,
        got: &[],
        not_got: &[],
    },
    Case {
        name: "forwarding headers from an untrusted client are replaced",
        method: "GET",
        path: "/fwd",
        send: &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
        ],
        body: "",
        upstream_headers: &[],
        upstream_status: 200,
        seen: &[
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("via", "1.1 gatehouse"),
        ],
        // `forwarded` is replaced too: `host_is_preserved_and_forwarded_host_set` checks it.
        not_seen: &[],
        status: 200,
        got: &[],
        not_got: &[],
    },
];

#[tokio::test]
async fn transparency_table() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let c = client();
    for case in CASES {
        up.set(Behavior {
            status: case.upstream_status,
            body: "payload".into(),
            headers: case
                .upstream_headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Behavior::default()
        });
        let mut req = c.request(case.method.parse().unwrap(), gw.url(case.path));
        for (k, v) in case.send {
            req = req.header(*k, *v);
        }
        if !case.body.is_empty() {
            req = req.body(case.body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let seen = up.last_seen();
        assert_eq!(
            seen.uri.path_and_query().unwrap().as_str(),
            case.path,
            "{}",
            case.name
        );
        assert_eq!(seen.method.as_str(), case.method, "{}", case.name);
        for (k, v) in case.seen {
            assert_eq!(
                seen.headers.get(*k).map(|v| v.to_str().unwrap()),
                Some(*v),
                "{}: upstream header {k}",
                case.name
            );
        }
        for k in case.not_seen {
            assert!(
                seen.headers.get(*k).is_none(),
                "{}: upstream must not see {k}",
                case.name
            );
        }
        assert_eq!(resp.status().as_u16(), case.status, "{}", case.name);
        for (k, v) in case.got {
            assert_eq!(
                resp.headers().get(*k).map(|v| v.to_str().unwrap()),
                Some(*v),
                "{}: response header {k}",
                case.name
            );
        }
        for k in case.not_got {
            assert!(
                resp.headers().get(*k).is_none(),
                "{}: client must not get {k}",
                case.name
            );
        }
        assert!(resp.headers().contains_key("x-request-id"), "{}", case.name);
        if case.status != 204 {
            assert_eq!(resp.text().await.unwrap(), "payload", "{}", case.name);
        }
    }
}

#[tokio::test]
async fn host_is_preserved_and_forwarded_host_set() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    client()
        .get(gw.url("/h"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    let seen = up.last_seen();
    assert_eq!(seen.headers["host"], "api.example.com");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;host=api.example.com;proto=http"
    );
}

#[tokio::test]
async fn trusted_proxy_forwarding_headers_are_kept_and_appended() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "    trusted_proxies: [127.0.0.0/8]",
        "",
    ))
    .await;
    client()
        .get(gw.url("/t"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "shop.example")
        .header("via", "1.1 edge")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .send()
        .await
        .unwrap();
    let h = up.last_seen().headers;
    let host = gw.addr().to_string();
    assert_eq!(
        h["forwarded"],
        format!("for=203.0.113.7;proto=https, for=127.0.0.1;host=\"{host}\";proto=http").as_str()
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["via"], "1.1 edge, 1.1 gatehouse");
}

#[tokio::test]
async fn request_id_and_traceparent() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let c = client();

    // Kept from the client, sent upstream, returned, logged.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = c
        .get(gw.url("/id"))
        .header("x-request-id", "client-id-1")
        .header("traceparent", tp)
        .header("tracestate", "vendor=kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-1");
    let h = up.last_seen().headers;
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(
        h["tracestate"], "vendor=kept",
        "it goes with its traceparent"
    );
    let sent_tp = h["traceparent"].to_str().unwrap();
    assert!(
        sent_tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{sent_tp}"
    );
    assert!(
        !sent_tp.contains("b7ad6b7169203331"),
        "the gateway's span becomes the parent"
    );
    assert!(sent_tp.ends_with("-01"));
    let line = gw.log_line("client-id-1").await;
    assert_eq!(line["trace_id"], "0af7651916cd43dd8448eb211c80319c");

    // Generated when missing or insane; a new trace starts.
    let resp = c
        .get(gw.url("/id"))
        .header("x-request-id", "bad id with spaces")
        .header("traceparent", "nonsense")
        .header("tracestate", "stale=1")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    let h = up.last_seen().headers;
    assert_eq!(h["x-request-id"], id.as_str());
    let tp = h["traceparent"].to_str().unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-"));
    // W3C: a tracestate without a valid traceparent is discarded, not sent with a new trace.
    assert!(h.get("tracestate").is_none(), "{h:?}");
}

#[tokio::test]
async fn access_log_line_has_every_field() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    client()
        .post(gw.url("/logged?q=secret"))
        .header("x-request-id", "log-1")
        .header("host", "api.example.com")
        .body("12345")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let l = gw.log_line("log-1").await;
    for field in [
        "time",
        "request_id",
        "trace_id",
        "client",
        "method",
        "host",
        "path",
        "route",
        "cluster",
        "endpoint",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "error",
    ] {
        assert!(l.get(field).is_some(), "missing {field} in {l}");
    }
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], "api.example.com");
    assert_eq!(l["path"], "/logged", "the query string is not logged");
    assert_eq!(l["route"], "all");
    assert_eq!(l["cluster"], "backend");
    assert_eq!(l["endpoint"], up.addr().to_string());
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 5);
    assert_eq!(l["bytes_out"], "{\"upstream\":\"up\"}".len());
    assert_eq!(l["client"], "127.0.0.1");
    assert!(l["error"].is_null());
}

#[tokio::test]
async fn http2_client_to_http1_backend() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let resp = h2_client().get(gw.url("/h2")).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let seen = up.last_seen();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], gw.addr().to_string().as_str());
    assert_eq!(seen.headers["via"], "2 gatehouse");
}

#[tokio::test]
async fn h2c_to_http2_backend() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "    protocol: http2\n")).await;
    for c in [client(), h2_client()] {
        let resp = c
            .get(gw.url("/grpc-like"))
            .header("te", "trailers")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen = up.last_seen();
        assert_eq!(
            seen.version,
            Version::HTTP_2,
            "the cluster speaks HTTP/2 upstream"
        );
        assert_eq!(
            seen.uri.authority().unwrap().as_str(),
            gw.addr().to_string()
        );
        assert_eq!(seen.headers["te"], "trailers");
    }
    assert_eq!(up.connections(), 1, "one multiplexed HTTP/2 connection");
}

#[tokio::test]
async fn upstream_keep_alive_connections_are_reused() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let c = client();
    for _ in 0..20 {
        c.get(gw.url("/ka"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests reuse one pooled connection"
    );
}
