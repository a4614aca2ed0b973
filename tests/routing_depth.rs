//! Routing depth through the shipped binary: matches beyond host and path (regex, query,
//! header conditions, client address, gRPC), weighted splits (the ratio over 10,000 requests,
//! stickiness by `hash_on`), mirroring (a hanging shadow never slows the primary; copies past
//! `max_in_flight` are dropped and counted), path and host rewrites, the route idle timeout, and
//! what `check` says about bad settings.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::{eventually, Behavior, FakeUpstream};
use std::time::Duration;

use common::timed_client as client;

fn reply(name: &str) -> String {
    format!("direct_response: {{body: {name}}}")
}

#[tokio::test]
async fn matches_beyond_host_and_path() {
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
routes:
  - {{name: user, match: {{path_regex: '/users/[0-9]+'}}, {}}}
  - {{name: q-exact, match: {{path: /q, query: {{v: '2'}}}}, {}}}
  - {{name: q-regex, match: {{path: /q, query: {{id: {{regex: '[a-f]+'}}}}}}, {}}}
  - {{name: q-plain, match: {{path: /q}}, {}}}
  - {{name: h-prefix, match: {{path: /h, headers: {{authorization: {{prefix: 'Bearer '}}}}}}, {}}}
  - {{name: h-beta, match: {{path: /h, headers: {{x-beta: {{present: true}}}}}}, {}}}
  - {{name: h-not-eu, match: {{path: /h, headers: {{x-region: {{regex: 'eu-.*', invert: true}}}}}}, {}}}
  - {{name: h-plain, match: {{path: /h}}, {}}}
  - {{name: lan, match: {{path: /ip, client_ip: [10.0.0.0/8]}}, {}}}
  - {{name: loopback, match: {{path: /ip, client_ip: [127.0.0.1]}}, {}}}
  - {{name: grpc, match: {{path_prefix: /svc, grpc: true}}, {}}}
  - {{name: not-grpc, match: {{path_prefix: /svc}}, {}}}
"#,
        reply("user"),
        reply("q-exact"),
        reply("q-regex"),
        reply("q-plain"),
        reply("h-prefix"),
        reply("h-beta"),
        reply("h-not-eu"),
        reply("h-plain"),
        reply("lan"),
        reply("loopback"),
        reply("grpc"),
        reply("not-grpc"),
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut r = c.get(format!("http://{}{path}", gw.addr));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if status == 200 {
                body
            } else {
                status.to_string()
            }
        }
    };
    assert_eq!(get("/users/42", &[]).await, "user");
    assert_eq!(get("/users/42/x", &[]).await, "404", "regex is anchored");
    assert_eq!(get("/users/abc", &[]).await, "404");
    assert_eq!(get("/q?v=2", &[]).await, "q-exact");
    assert_eq!(get("/q?v=3", &[]).await, "q-plain");
    assert_eq!(
        get("/q?v=2&v=3", &[]).await,
        "q-plain",
        "every occurrence must match"
    );
    assert_eq!(
        get("/q?id=%61bc", &[]).await,
        "q-regex",
        "values are percent-decoded"
    );
    assert_eq!(get("/q?id=xyz", &[]).await, "q-plain");
    assert_eq!(
        get("/h", &[("authorization", "Bearer t")]).await,
        "h-prefix"
    );
    assert_eq!(get("/h", &[("x-beta", "")]).await, "h-beta");
    // Inverted: no x-region at all also matches.
    assert_eq!(get("/h", &[]).await, "h-not-eu");
    assert_eq!(get("/h", &[("x-region", "us-1")]).await, "h-not-eu");
    assert_eq!(get("/h", &[("x-region", "eu-1")]).await, "h-plain");
    assert_eq!(get("/ip", &[]).await, "loopback");
    assert_eq!(
        get(
            "/svc/Greeter/Hello",
            &[("content-type", "application/grpc+proto")]
        )
        .await,
        "grpc"
    );
    assert_eq!(
        get(
            "/svc/Greeter/Hello",
            &[("content-type", "application/json")]
        )
        .await,
        "not-grpc"
    );
}

async fn scrape(c: &reqwest::Client, gw: &Running) -> String {
    let url = format!("http://{}/metrics", gw.admin_addr());
    c.get(url).send().await.unwrap().text().await.unwrap()
}

fn split_config(v1: &FakeUpstream, v2: &FakeUpstream, admin: bool) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
{}clusters:
  - {{name: v1, endpoints: [{{address: "{}"}}]}}
  - {{name: v2, endpoints: [{{address: "{}"}}]}}
routes:
  - name: canary
    match: {{path_prefix: /api}}
    clusters: [{{name: v1, weight: 95}}, {{name: v2, weight: 5}}]
  - name: sticky
    match: {{path_prefix: /sticky}}
    clusters: [{{name: v1, weight: 50}}, {{name: v2, weight: 50}}]
    hash_on: header:x-user
"#,
        if admin {
            "admin: {address: \"127.0.0.1:0\"}\n"
        } else {
            ""
        },
        v1.addr(),
        v2.addr()
    )
}

#[tokio::test]
async fn weighted_split_holds_its_ratio_and_sticks_by_hash_on() {
    let v1 = FakeUpstream::start("v1").await;
    let v2 = FakeUpstream::start("v2").await;
    let gw = Running::start(&split_config(&v1, &v2, false), &[]);
    let c = client();
    let url = format!("http://{}/api/x", gw.addr);
    const N: u64 = 10_000;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move {
            let mut i = w;
            while i < N {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                i += 16;
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    assert_eq!(v1.hits() + v2.hits(), N);
    let share = v2.hits() as f64 / N as f64;
    assert!(
        (0.03..=0.07).contains(&share),
        "v2 got {:.2} % of {N}, expected 5 % ± 2",
        share * 100.0
    );

    // hash_on: one user, one side, every time; users spread over both.
    let mut sides = std::collections::BTreeSet::new();
    for user in 0..40 {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let r = c
                .get(format!("http://{}/sticky", gw.addr))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .unwrap();
            let body = r.text().await.unwrap();
            seen.insert(body.contains("\"v2\""));
        }
        assert_eq!(seen.len(), 1, "user-{user} moved between sides");
        sides.extend(seen);
    }
    assert_eq!(sides.len(), 2, "40 users all went to one side");
}

#[tokio::test]
async fn a_hanging_mirror_never_slows_the_primary() {
    let primary = FakeUpstream::start("primary").await;
    let shadow = FakeUpstream::start("shadow").await;
    // The shadow takes the copies and never answers.
    shadow.set(Behavior {
        delay: Duration::from_secs(3600),
        ..Behavior::default()
    });
    let copy = FakeUpstream::start("copy").await;
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
clusters:
  - {{name: primary, endpoints: [{{address: "{}"}}]}}
  - {{name: shadow, endpoints: [{{address: "{}"}}], timeouts: {{request: 1h}}}}
  - {{name: copy, endpoints: [{{address: "{}"}}]}}
routes:
  - name: shadowed
    match: {{path_prefix: /api}}
    cluster: primary
    mirror: {{cluster: shadow, max_in_flight: 4}}
  - name: copied
    match: {{path_prefix: /copy}}
    cluster: primary
    mirror: {{cluster: copy, max_body_bytes: 8}}
"#,
        primary.addr(),
        shadow.addr(),
        copy.addr()
    );
    let gw = Running::start(&yaml, &[]);
    // Each request has 2 s, where the shadow would take an hour.
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for i in 0..20 {
        let r = c
            .get(format!("http://{}/api/{i}", gw.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(primary.hits(), 20);
    eventually(
        "the shadow holds 4 copies",
        Duration::from_secs(5),
        || async { (shadow.hits() == 4).then_some(()) },
    )
    .await;
    let metrics = scrape(&c, &gw).await;
    for (outcome, n) in [("sent", 4), ("dropped", 16)] {
        let line = format!(
            "gatehouse_mirror_requests_total{{route=\"shadowed\",cluster=\"shadow\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(metrics.contains(&line), "missing {line:?} in:\n{metrics}");
    }

    // The copy is the request as the backend gets it; a body over max_body_bytes is not copied.
    let r = c
        .post(format!("http://{}/copy/a?x=1", gw.addr))
        .header("x-t", "1")
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    copy.wait_hits(1).await;
    let seen = copy.last_seen();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/copy/a?x=1");
    assert_eq!(seen.headers["x-t"], "1");
    assert!(seen.headers.contains_key("x-request-id"));
    let r = c
        .post(format!("http://{}/copy/b", gw.addr))
        .body("more than eight bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(primary.hits(), 22);
    // The big one was counted as skipped, never sent: the copy still has one.
    let metrics = scrape(&c, &gw).await;
    assert!(metrics.contains(
        "gatehouse_mirror_requests_total{route=\"copied\",cluster=\"copy\",outcome=\"skipped_body\"} 1"
    ));
    assert_eq!(copy.hits(), 1);
}

#[tokio::test]
async fn rewrites_change_the_path_and_host_the_backend_gets() {
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters: [{{name: c, endpoints: [{{address: "{0}"}}]}}]
routes:
  - {{name: prefix, match: {{path_prefix: /old/api}}, cluster: c, rewrite: {{path_prefix: /v2}}}}
  - {{name: regex, match: {{path_regex: '/users/[0-9]+/.*'}}, cluster: c, rewrite: {{path_regex: '/users/([0-9]+)/(?P<rest>.*)', substitution: '/u/$1/${{rest}}'}}}}
  - {{name: files, match: {{path_regex: '/v1.*'}}, cluster: c, rewrite: {{path_regex: '/v1(.*)', substitution: '/files/$1'}}}}
  - {{name: ic, match: {{path_regex: '/ic/(.*)', ignore_case: true}}, cluster: c, rewrite: {{path_regex: '/ic/(.*)', substitution: '/icx/$1'}}}}
  - {{name: literal, match: {{path_prefix: /lit}}, cluster: c, host_rewrite: api.internal}}
  - {{name: endpoint, match: {{path_prefix: /ep}}, cluster: c, host_rewrite: {{endpoint: true}}}}
"#,
        up.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let cases = [
        ("/old/api/items?x=1", "/v2/items?x=1", None),
        ("/old/api", "/v2", None),
        ("/users/42/orders/7", "/u/42/orders/7", None),
        // Rewrites apply to the normalized path.
        ("/users/42/a/../b", "/u/42/b", None),
        // As the route matched: without case.
        ("/IC/a", "/icx/a", None),
        ("/lit/x", "/lit/x", Some("api.internal".to_string())),
        ("/ep/x", "/ep/x", Some(up.addr().to_string())),
    ];
    for (path, want, host) in cases {
        let r = c
            .get(format!("http://{}{path}", gw.addr))
            .header("host", "public.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let seen = up.last_seen();
        assert_eq!(seen.uri.path_and_query().unwrap().as_str(), want, "{path}");
        let host = host.unwrap_or_else(|| "public.example.com".into());
        assert_eq!(seen.headers["host"], host.as_str(), "{path}");
        // The original host still travels in X-Forwarded-Host.
        assert_eq!(seen.headers["x-forwarded-host"], "public.example.com");
    }
    // A capture that would start a `..` segment in the new path is refused, not forwarded.
    let hits = up.hits();
    assert_eq!(
        c.get(format!("http://{}/v1x/ok", gw.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(up.last_seen().uri.path(), "/files/x/ok");
    let r = c
        .get(format!("http://{}/v1../admin", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_path"));
    assert_eq!(up.hits(), hits + 1);
}

#[tokio::test]
async fn the_route_idle_timeout_ends_a_stalled_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        mode: gatehouse_testkit::Mode::Sink,
        ..Behavior::default()
    });
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0", limits: {{body_read_timeout: 1h}}}}]
clusters: [{{name: c, endpoints: [{{address: "{}"}}]}}]
routes:
  - {{name: upload, match: {{path_prefix: /up}}, cluster: c, timeouts: {{idle: 200ms}}}}
"#,
        up.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
        .await
        .unwrap();
    // The listener would wait an hour; the route's 200 ms answer within the 2 s we give it.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered within 2 s")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // The client's stall is not the backend's fault.
    assert_eq!(up.hits(), 0);

    // The other way: a backend that sends 1 byte of 10 and goes silent has the response cut
    // off after the route's 200 ms (nothing else would end it for 30 s).
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = stall.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nx")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters: [{{name: c, endpoints: [{{address: "{stall_addr}"}}], timeouts: {{request: 30s}}}}]
routes:
  - {{name: download, match: {{path_prefix: /}}, cluster: c, timeouts: {{idle: 200ms}}}}
"#
    );
    let gw = Running::start(&yaml, &[]);
    let r = client()
        .get(format!("http://{}/file", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(2), r.bytes())
        .await
        .expect("cut off within 2 s");
    assert!(body.is_err(), "a 1-byte body of 10 must not end cleanly");
}

#[test]
fn check_names_bad_routing_settings() {
    let err = common::binary::check_refused(
        r#"listeners: [{name: l, address: "127.0.0.1:0"}]
clusters: [{name: c, endpoints: [{address: "127.0.0.1:1"}]}]
routes:
  - {name: a, match: {path_regex: '/(unclosed'}, cluster: c}
  - {name: b, match: {path_regex: '/(a{1000}){1000}'}, cluster: c}
  - {name: d, match: {path: /d, client_ip: [10.0.0.0/33], headers: {x-a: {exact: a, prefix: b}}}, cluster: c}
  - {name: e, match: {path: /e}, clusters: [{name: c, weight: 1}, {name: nope, weight: 1}]}
  - {name: f, match: {path: /f}, cluster: c, hash_on: header:x-user}
  - {name: g, match: {path: /g}, cluster: c, mirror: {cluster: ghost}, rewrite: {path_prefix: /x}}
  - {name: h, match: {path: /h}, cluster: c, filters: [cors: {allow_origins: ['*'], allow_credentials: true}]}
  - {name: i, match: {path: /i, headers: {x-gatehouse-consumer: admin}}, cluster: c}
  - {name: j, match: {path_regex: '/s/(.*)'}, cluster: c, rewrite: {path_regex: '/s/(.*)', substitution: '/x?inject=$1'}}
  - {name: admin, match: {path_prefix: /api/v1/admin}, cluster: c, filters: [auth: {api_key: {}}]}
  - {name: versioned, match: {path_regex: '/api/v[0-9]+/.*'}, cluster: c}
consumers: [{name: a, api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}]
"#,
    );
    for want in [
        "routes[0].match.path_regex: invalid regex \"/(unclosed\"",
        "routes[1].match.path_regex: regex \"/(a{1000}){1000}\" is too big",
        "routes[2].match.client_ip[0]: invalid address range \"10.0.0.0/33\"",
        "routes[2].match.headers.x-a: give exactly one of exact, prefix, regex and present",
        "routes[3].clusters[1].name: unknown cluster \"nope\"",
        "routes[4].hash_on: hash_on keeps a client on one side of a split",
        "routes[5].mirror.cluster: unknown cluster \"ghost\"",
        "routes[5].rewrite.path_prefix: replaces the matched prefix",
        "routes[6].filters[0].cors.allow_credentials: with allow_credentials any page could act as the signed-in user",
        "routes[7].match.headers.x-gatehouse-consumer: \"x-gatehouse-consumer\" is an identity header",
        "routes[8].rewrite.substitution: '?' cannot be in a path",
        "routes[10].match.path_regex: route \"versioned\" also matches \"/api/v1/admin\", a path of route \"admin\" (routes[9]), and wins over it (with different authentication)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Each problem names its line.
    assert!(err.contains("bad.yaml:4:"), "{err}");
}

/// The access log names the side a split chose; a reload that changes the weights keeps the
/// clusters (the same endpoints, their state) and moves the traffic.
#[tokio::test]
async fn the_access_log_names_the_chosen_side_and_weights_reload() {
    let v1 = FakeUpstream::start("v1").await;
    let v2 = FakeUpstream::start("v2").await;
    let config = |w1: u32, w2: u32| {
        format!(
            r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters:
  - {{name: v1, endpoints: [{{address: "{}"}}]}}
  - {{name: v2, endpoints: [{{address: "{}"}}]}}
routes:
  - {{name: canary, match: {{path_prefix: /}}, clusters: [{{name: v1, weight: {w1}}}, {{name: v2, weight: {w2}}}]}}
"#,
            v1.addr(),
            v2.addr()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, config(0, 1)).unwrap();
    let gw = gatehouse_testkit::TestGateway::start_file(&path).await;
    let c = client();
    let r = c
        .get(gw.url("/x"))
        .header("x-request-id", "split-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = gw.log_line("split-1").await;
    assert_eq!(line["cluster"], "v2");
    assert_eq!(line["route"], "canary");
    assert_eq!(v2.hits(), 1);
    let conns = v2.connections();

    std::fs::write(&path, config(1, 0)).unwrap();
    gw.gateway().reload("test").await.unwrap();
    let r = c
        .get(gw.url("/x"))
        .header("x-request-id", "split-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gw.log_line("split-2").await["cluster"], "v1");
    assert_eq!(v1.hits(), 1);
    // v2's pooled connection survived the reload (its cluster was kept, not rebuilt).
    std::fs::write(&path, config(0, 1)).unwrap();
    gw.gateway().reload("test").await.unwrap();
    c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(v2.hits(), 2);
    assert_eq!(v2.connections(), conns, "v2's connection was reused");
}

/// A CORS preflight is routed as the request it asks about: a `methods: [PUT]` route answers
/// the preflight for its PUT, and a route without a cors filter gets the preflight forwarded.
#[tokio::test]
async fn preflights_are_routed_as_the_request_they_ask_about() {
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters: [{{name: c, endpoints: [{{address: "{}"}}]}}]
routes:
  - {{name: put, match: {{path_prefix: /p, methods: [PUT]}}, cluster: c, filters: [cors: {{allow_origins: ['https://a.test'], allow_methods: [PUT]}}]}}
  - {{name: post, match: {{path_prefix: /p, methods: [POST]}}, cluster: c}}
"#,
        up.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let preflight = |method: &'static str| {
        c.request(reqwest::Method::OPTIONS, format!("http://{}/p/x", gw.addr))
            .header("origin", "https://a.test")
            .header("access-control-request-method", method)
            .send()
    };
    let r = preflight("PUT").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://a.test");
    assert_eq!(up.hits(), 0, "answered by the gateway");
    let r = preflight("POST").await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "forwarded: the POST route has no cors filter"
    );
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last_seen().method, "OPTIONS");
}
