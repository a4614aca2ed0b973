//! Routing end to end: host / path / method / header matches pick the cluster, strip_prefix
//! rewrites the path, `/v1/proxy/{service}` picks the cluster by name, round robin spreads.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};

#[tokio::test]
async fn routes_pick_clusters_and_rewrite_paths() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let yaml = format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters:
  - {{name: product, endpoints: [{{address: "{a}"}}]}}
  - {{name: orders, endpoints: [{{address: "{b}"}}]}}
routes:
  - name: products
    match: {{path_prefix: /api/products}}
    cluster: product
    strip_prefix: true
  - name: orders-v2
    match: {{path_prefix: /api/orders, headers: {{x-version: v2}}}}
    cluster: product
  - name: orders-write
    match: {{path_prefix: /api/orders, methods: [POST]}}
    cluster: product
  - name: orders
    match: {{path_prefix: /api/orders}}
    cluster: orders
  - name: admin-host
    match: {{host: "*.internal.example", path_prefix: /}}
    cluster: orders
  - name: users
    match: {{path_template: "/users/{{id}}/profile"}}
    cluster: orders
  - name: seeds-service
    match: {{path_template: "/v1/proxy/{{service}}"}}
    cluster_from_path: {{param: service, allow: [product, orders]}}
"#,
        a = a.addr(),
        b = b.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    let who = |r: reqwest::Response| r.headers()["x-upstream"].to_str().unwrap().to_string();

    let r = c
        .get(gw.url("/api/products/42?full=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(who(r), "a");
    assert_eq!(
        a.last_seen().uri.path_and_query().unwrap().as_str(),
        "/42?full=1"
    );

    assert_eq!(
        who(c.get(gw.url("/api/orders/1")).send().await.unwrap()),
        "b"
    );
    assert_eq!(
        b.last_seen().uri.path(),
        "/api/orders/1",
        "no strip_prefix: path unchanged"
    );
    assert_eq!(
        who(c.post(gw.url("/api/orders")).send().await.unwrap()),
        "a"
    );
    assert_eq!(
        who(c
            .get(gw.url("/api/orders"))
            .header("x-version", "v2")
            .send()
            .await
            .unwrap()),
        "a"
    );
    assert_eq!(
        who(c
            .get(gw.url("/anything"))
            .header("host", "ops.internal.example")
            .send()
            .await
            .unwrap()),
        "b"
    );
    assert_eq!(
        who(c.get(gw.url("/users/7/profile")).send().await.unwrap()),
        "b"
    );
    assert_eq!(
        c.get(gw.url("/users/7")).send().await.unwrap().status(),
        404
    );

    assert_eq!(
        who(c.get(gw.url("/v1/proxy/product")).send().await.unwrap()),
        "a"
    );
    assert_eq!(
        who(c.get(gw.url("/v1/proxy/orders")).send().await.unwrap()),
        "b"
    );
    let r = c.get(gw.url("/v1/proxy/payments")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "unknown_cluster");
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let ups = [
        FakeUpstream::start("1").await,
        FakeUpstream::start("2").await,
        FakeUpstream::start("3").await,
    ];
    let addrs: Vec<_> = ups.iter().map(FakeUpstream::addr).collect();
    let gw = TestGateway::start(&common::one_cluster(&addrs, "", "")).await;
    let c = client();
    let mut order = Vec::new();
    for _ in 0..30 {
        let r = c.get(gw.url("/rr")).send().await.unwrap();
        order.push(r.headers()["x-upstream"].to_str().unwrap().to_string());
    }
    for u in &ups {
        assert_eq!(u.hits(), 10, "upstream {}", u.name());
    }
    // Strict rotation: no endpoint twice in a row.
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
}
