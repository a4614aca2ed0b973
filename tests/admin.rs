//! The admin API: views of the runtime, operator actions, the event stream, the bearer token.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use futures_util::StreamExt;
use gatehouse_testkit::{FakeUpstream, TestGateway};
use serde_json::{json, Value};

fn config(ups: &[&FakeUpstream], admin_extra: &str) -> String {
    let eps: String = ups
        .iter()
        .map(|u| format!("      - address: {}\n", u.addr()))
        .collect();
    format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'{admin_extra}}}\nconsumers: [{{name: a, api_keys: ['sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']}}]\nclusters:\n  - name: backend\n    health_check: {{enabled: false}}\n    retries: {{attempts: 0}}\n    endpoints:\n{eps}routes: [{{name: all, cluster: backend}}]\n"
    )
}

async fn get(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn views_and_operator_actions() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let gw = TestGateway::start(&config(&[&a, &b], "")).await;
    let (s, status) = get(gw.admin_url("/status")).await;
    assert_eq!(s, 200);
    assert_eq!(status["generation"], 1);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(get(gw.admin_url("/healthz")).await.1["status"], "ok");
    assert_eq!(get(gw.admin_url("/readyz")).await.1["ready"], true);
    assert_eq!(
        get(gw.admin_url("/routes")).await.1["routes"][0]["name"],
        "all"
    );
    let (_, config) = get(gw.admin_url("/config")).await;
    assert_eq!(
        config["config"]["consumers"][0]["api_keys"][0],
        "sha256:<redacted>"
    );
    let (_, clusters) = get(gw.admin_url("/clusters")).await;
    let eps = &clusters["clusters"][0]["endpoints"];
    assert_eq!(eps.as_array().unwrap().len(), 2);
    for field in [
        "address",
        "health",
        "breaker",
        "drained",
        "weight",
        "effective_weight",
        "in_flight",
        "latency_ewma_ms",
        "slow_start_progress",
    ] {
        assert!(eps[0].get(field).is_some(), "{field} in {}", eps[0]);
    }
    assert_eq!(get(gw.admin_url("/clusters/nope")).await.0, 404);

    let mut events = gw.gateway().runtime().events.subscribe();
    let b_addr = b.addr().to_string();
    let c = client();
    let r = c
        .post(gw.admin_url(&format!("/clusters/backend/endpoints/{b_addr}/drain")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(events.recv().await.unwrap()["event"], "endpoint_drained");
    for _ in 0..6 {
        let r = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.headers()["x-upstream"], "a");
    }
    c.post(gw.admin_url(&format!("/clusters/backend/endpoints/{b_addr}/enable")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let a_addr = a.addr().to_string();
    let r = c
        .post(gw.admin_url(&format!("/clusters/backend/endpoints/{a_addr}/breaker")))
        .json(&json!({"state": "open"}))
        .send()
        .await
        .unwrap();
    let view: Value = r.json().await.unwrap();
    let a_view = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == a_addr.as_str())
        .unwrap()
        .clone();
    assert_eq!(a_view["breaker"], "OPEN");
    for _ in 0..6 {
        let r = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.headers()["x-upstream"], "b");
    }
    let r = c
        .post(gw.admin_url(&format!("/clusters/backend/endpoints/{a_addr}/breaker")))
        .json(&json!({"state": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Reads an event stream until `needle` shows up (10 s at most); returns what was read.
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    needle: &str,
) -> String {
    let mut seen = String::new();
    let wait = async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains(needle) {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} not seen in 10 s"));
    seen
}

#[tokio::test]
async fn the_event_stream_carries_transitions() {
    let a = FakeUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[&a], "")).await;
    let resp = client().get(gw.admin_url("/events")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let addr = a.addr().to_string();
    client()
        .post(gw.admin_url(&format!("/clusters/backend/endpoints/{addr}/drain")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let seen = read_until(&mut body, "endpoint_drained").await;
    assert!(seen.contains("event: endpoint_drained"), "{seen}");
    assert!(seen.contains(&addr), "{seen}");
    // The once-a-second traffic summary counts the requests of the last second.
    for _ in 0..3 {
        client().get(gw.url("/t")).send().await.unwrap();
    }
    let traffic = read_until(&mut body, "\"requests_per_second\":3").await;
    assert!(traffic.contains("event: traffic"), "{traffic}");
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    std::env::set_var("GATEHOUSE_TEST_ADMIN_TOKEN", "t0ken-for-the-admin-tests");
    let a = FakeUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[&a], ", token_env: GATEHOUSE_TEST_ADMIN_TOKEN")).await;
    assert_eq!(get(gw.admin_url("/status")).await.0, 401);
    assert_eq!(get(gw.admin_url("/healthz")).await.0, 200);
    let r = client()
        .get(gw.admin_url("/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(gw.admin_url("/status"))
        .bearer_auth("t0ken-for-the-admin-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_public_admin_address_without_a_token_is_refused() {
    let a = FakeUpstream::start("a").await;
    let yaml = config(&[&a], "").replace(
        "admin: {address: '127.0.0.1:0'",
        "admin: {address: '0.0.0.0:0'",
    );
    // `check` and `run` share the validation: refused before anything starts.
    let err = gatehouse_config::load_str(&yaml, "t").unwrap_err();
    assert!(
        err.to_string()
            .contains("admin.address: 0.0.0.0:0 is not loopback: set admin.token_env"),
        "{err}"
    );
}
