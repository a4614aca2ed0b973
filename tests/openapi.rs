//! The admin API's OpenAPI document (`GET /openapi.json`) against the router: every route the
//! router has is documented with its method, nothing documented is missing, and each documented
//! operation answers on the shipped binary (no 404 fallback, no 405).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::FakeUpstream;
use serde_json::Value;
use std::collections::BTreeSet;

/// (METHOD, path) of every `.route("...", method(...))` in the router's source, with `{*x}`
/// written as OpenAPI writes it (`{x}`).
fn router_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/admin.rs");
    let start = src.find("pub fn router").unwrap();
    let mut out = BTreeSet::new();
    let mut rest = &src[start..];
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + 7..];
        let q = rest.find('"').unwrap();
        let end = rest[q + 1..].find('"').unwrap();
        let path = rest[q + 1..q + 1 + end].replace("{*", "{");
        let after = &rest[q + 1 + end..];
        let method = ["get(", "post(", "delete(", "put(", "patch("]
            .iter()
            .filter_map(|m| after.find(m).map(|at| (at, m)))
            .min()
            .map(|(_, m)| m.trim_end_matches('(').to_uppercase())
            .unwrap();
        out.insert((method, path));
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_covers_exactly_the_routes_and_each_answers() {
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        "listeners: [{{name: l, address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nclusters: [{{name: app, health_check: {{enabled: false}}, endpoints: [{{address: \"{}\"}}]}}]\nroutes: [{{name: r, cluster: app}}]\n",
        up.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let admin = gw.admin_addr();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .get(format!("http://{admin}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let in_router = router_routes();
    assert!(in_router.len() >= 15, "{in_router:?}");
    let in_doc = documented(&doc);
    let missing: Vec<_> = in_router.difference(&in_doc).collect();
    let extra: Vec<_> = in_doc.difference(&in_router).collect();
    assert!(missing.is_empty(), "routes the document lacks: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    // Each operation, with real names for its parameters, reaches its handler.
    let addr = up.addr().to_string();
    for (method, path) in &in_doc {
        let url = format!(
            "http://{admin}{}",
            path.replace("{name}", "app")
                .replace("{addr}", &addr)
                .replace("{file}", "dashboard.js")
        );
        let req = match method.as_str() {
            "GET" => c.get(&url),
            "DELETE" => c.delete(&url),
            "POST" => {
                let body = if path.ends_with("/breaker") {
                    r#"{"state":"closed"}"#
                } else if path.ends_with("/fault") {
                    r#"{"duration_s":0}"#
                } else {
                    "{}"
                };
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body)
            }
            other => panic!("{other}"),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_ne!(status, 405, "{method} {path}");
        if path != "/events" {
            let text = resp.text().await.unwrap();
            assert!(
                !text.contains("no such admin endpoint"),
                "{method} {path}: {status} {text}"
            );
            assert!(status < 500, "{method} {path}: {status} {text}");
        }
    }
}
