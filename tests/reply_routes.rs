//! Routes that answer themselves, through the shipped binary: `redirect` (location from the
//! route and the request, query kept or not, the request's port only while scheme and host are
//! its own) and `direct_response`, both after the route's filters; `check` names bad settings.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const CONFIG: &str = r#"
listeners: [{name: l, address: "127.0.0.1:0"}]
consumers: [{name: a, api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}]
routes:
  - name: moved
    match: {path_prefix: /old}
    redirect: {status: 301, path: /new}
  - name: secure
    match: {path_prefix: /login}
    redirect: {scheme: https, strip_query: true}
  - name: elsewhere
    match: {path: /docs}
    redirect: {host: docs.example.com, port: 8443, scheme: https, status: 308}
  - name: health
    match: {path: /healthz}
    direct_response: {body: "ok\n"}
  - name: gone
    match: {path: /v0}
    direct_response: {status: 410, body: '{"error": "v0 is gone"}', content_type: application/json}
  - name: private
    match: {path: /private}
    direct_response: {body: secret}
    filters: [auth: {api_key: {}}]
"#;

#[tokio::test]
async fn redirects_and_direct_responses() {
    let gw = Running::start(CONFIG, &[]);
    let c = no_redirects();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let port = gw.addr.port();

    let r = c.get(url("/old/page?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("http://127.0.0.1:{port}/new?x=1").as_str()
    );

    let r = c
        .get(url("/login?next=/me"))
        .header("host", "shop.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://shop.test/login");

    let r = c.get(url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://docs.example.com:8443/docs"
    );

    let r = c.get(url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), "ok\n");

    let r = c.get(url("/v0")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"error": "v0 is gone"}"#);

    // The route's filters run first.
    assert_eq!(c.get(url("/private")).send().await.unwrap().status(), 401);
    let r = c
        .get(url("/private"))
        .header("x-api-key", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap().as_str()),
        (200, "secret")
    );
}

#[test]
fn check_names_bad_reply_routes() {
    let err = common::binary::check_refused(
        r#"listeners: [{name: l, address: "127.0.0.1:0"}]
clusters: [{name: c, endpoints: [{address: "127.0.0.1:1"}]}]
routes:
  - {name: a, redirect: {status: 200, scheme: ftp, host: "x/y", path: "nope"}}
  - {name: b, match: {path: /b}, cluster: c, direct_response: {}}
  - {name: d, match: {path: /d}, direct_response: {status: 99}, strip_prefix: true}
  - {name: e, match: {path: /e}, cluster: c, request_headers: {set: {host: x, x-a: "%{nope}"}}, response_headers: {remove: [content-length]}}
"#,
    );
    for want in [
        "routes[0].redirect.status: 200 is not a redirect",
        "routes[0].redirect.scheme: expected http or https",
        "routes[0].redirect.host: expected a host name",
        "routes[0].redirect.path: expected an absolute path",
        "routes[1].cluster: use one of cluster, clusters, cluster_from_path, redirect and direct_response",
        "routes[2].direct_response.status: must be a status from 200 to 599",
        "routes[2].strip_prefix: a redirect or direct_response route forwards nothing to strip",
        "routes[3].request_headers.set.host: \"host\" is not a header name the gateway lets you set",
        "routes[3].request_headers.set.x-a: unknown variable %{nope}",
        "routes[3].response_headers.remove[0]",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `request_headers` / `response_headers` on a cluster and a route: remove, set (the route's
/// after the cluster's), add, variables; response rules also on a direct response, never on a
/// local reply.
#[tokio::test]
async fn header_rules_on_requests_and_responses() {
    use gatehouse_testkit::{Behavior, FakeUpstream, TestGateway};
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        headers: vec![
            ("server".into(), "backend/1.2".into()),
            ("x-powered-by".into(), "php".into()),
        ],
        ..Behavior::default()
    });
    let gw = TestGateway::start(&format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters:
  - name: c
    endpoints: [{{address: "{}"}}]
    request_headers: {{set: {{x-env: staging, x-layer: cluster}}}}
    response_headers: {{remove: [x-powered-by], set: {{x-served-by: cluster}}}}
routes:
  - name: api
    match: {{path_prefix: /api}}
    cluster: c
    request_headers:
      set: {{x-layer: route, x-client: "%{{client_ip}}", x-rid: "id=%{{request_id}}"}}
      add: {{x-route: "%{{route}}"}}
      remove: [x-debug]
    response_headers: {{set: {{x-served-by: route}}, add: {{x-route: "%{{route}}"}}, remove: [server]}}
  - name: ping
    match: {{path: /ping}}
    direct_response: {{body: pong}}
    response_headers: {{set: {{cache-control: no-store}}}}
"#,
        up.addr()
    ))
    .await;
    let c = common::client();
    let r = c
        .get(gw.url("/api/x"))
        .header("x-debug", "1")
        .header("x-request-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(!h.contains_key("x-powered-by") && !h.contains_key("server"));
    assert_eq!(h["x-served-by"], "route");
    assert_eq!(h["x-route"], "api");
    let seen = up.last_seen().headers;
    assert_eq!(seen["x-env"], "staging");
    assert_eq!(seen["x-layer"], "route", "the route's set wins");
    assert_eq!(seen["x-client"], "127.0.0.1");
    assert_eq!(seen["x-rid"], "id=abc");
    assert_eq!(seen["x-route"], "api");
    assert!(!seen.contains_key("x-debug"));

    let r = c.get(gw.url("/ping")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    // A local reply (no route) gets no route's rules.
    let r = c.get(gw.url("/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.headers().contains_key("x-served-by"));
    gw.shutdown(std::time::Duration::from_secs(2)).await;
}

/// A route's `timeouts.request` and `limits.max_body_bytes` win over the cluster's and the
/// listener's, for that route only.
#[tokio::test]
async fn route_timeouts_and_body_limits() {
    use gatehouse_testkit::{Behavior, FakeUpstream, TestGateway};
    use std::time::Duration;
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        delay: Duration::from_millis(600),
        ..Behavior::default()
    });
    let gw = TestGateway::start(&format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters: [{{name: c, health_check: {{enabled: false}}, retries: {{attempts: 0}}, endpoints: [{{address: "{}"}}]}}]
routes:
  - {{name: quick, match: {{path_prefix: /quick}}, cluster: c, timeouts: {{request: 200ms}}, limits: {{max_body_bytes: 10}}}}
  - {{name: rest, cluster: c}}
"#,
        up.addr()
    ))
    .await;
    let c = common::client();
    let r = c.get(gw.url("/quick")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("request_timeout"));
    assert_eq!(c.get(gw.url("/slow")).send().await.unwrap().status(), 200);
    let big = "x".repeat(100);
    let r = c
        .post(gw.url("/quick"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        c.post(gw.url("/other"))
            .body(big)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.shutdown(Duration::from_secs(2)).await;
}
