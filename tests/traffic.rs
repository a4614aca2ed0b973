//! Traffic control end to end: rate limits per route / client / header / consumer with the
//! IETF headers and 429 + Retry-After; leaky-bucket smoothing; API keys (401/403, stripped
//! before the backend, never logged); the seeds' RATE_LIMIT=100-M override.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};
use std::time::{Duration, Instant};

const ALICE_KEY: &str = "alice-secret-key";
const BOB_KEY: &str = "bob-secret-key";

fn config(up: &FakeUpstream, policies: &str, filters: &str) -> String {
    let digest = gatehouse::filter::api_key::digest_string;
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0", trusted_proxies: [127.0.0.1]}}]
consumers:
  - {{name: alice, api_keys: ["{}"]}}
  - {{name: bob, api_keys: ["{}"]}}
rate_limits:
{policies}
clusters: [{{name: c, health_check: {{enabled: false}}, endpoints: [{{address: "{}"}}]}}]
routes:
  - name: limited
    cluster: c
    filters: {filters}
"#,
        digest(ALICE_KEY),
        digest(BOB_KEY),
        up.addr()
    )
}

/// A fake upstream and a gateway in front of it with these policies and route filters.
async fn start(policies: &str, filters: &str) -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, policies, filters)).await;
    (up, gw)
}

async fn statuses(
    gw: &TestGateway,
    n: usize,
    f: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Vec<u16> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            f(c.get(gw.url("/r")))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn token_bucket_per_client_with_headers_and_429() {
    let (up, gw) = start(
        "  - {name: per-client, algorithm: token_bucket, rate: 3/m, burst: 3, key: client_ip}",
        "[rate_limit: per-client]",
    )
    .await;
    let c = client();
    for remaining in [2, 1, 0] {
        let r = c
            .get(gw.url("/r"))
            .header("x-forwarded-for", "203.0.113.1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"per-client\";q=3;w=60");
        let rl = r.headers()["ratelimit"].to_str().unwrap();
        assert!(
            rl.starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{rl}"
        );
    }
    let r = c
        .get(gw.url("/r"))
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "20", "one token every 20 s");
    assert!(r.headers().contains_key("ratelimit"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "rate_limited");
    assert_eq!(up.hits(), 3);
    // Another client (a trusted proxy's X-Forwarded-For) has its own budget.
    let other = statuses(&gw, 3, |r| r.header("x-forwarded-for", "203.0.113.2")).await;
    assert_eq!(other, [200, 200, 200]);
    // IPv6 clients in one /64 share a budget.
    let a = statuses(&gw, 2, |r| r.header("x-forwarded-for", "2001:db8:1:2::1")).await;
    let b = statuses(&gw, 2, |r| {
        r.header("x-forwarded-for", "2001:db8:1:2::ffff")
    })
    .await;
    assert_eq!([a, b].concat(), [200, 200, 200, 429]);
}

#[tokio::test]
async fn per_route_and_per_header_budgets() {
    let (_up, gw) = start("  - {name: route-wide, rate: 4/m, key: route}\n  - {name: per-tenant, rate: 2/m, key: \"header:x-tenant\"}", "[rate_limit: per-tenant, rate_limit: route-wide]").await;
    let a = statuses(&gw, 3, |r| r.header("x-tenant", "a")).await;
    assert_eq!(a, [200, 200, 429], "tenant a's own limit");
    let b = statuses(&gw, 3, |r| r.header("x-tenant", "b")).await;
    assert_eq!(b, [200, 200, 429]);
    // The route-wide budget (4) is now spent by a and b together.
    let c = statuses(&gw, 1, |r| r.header("x-tenant", "c")).await;
    assert_eq!(c, [429]);
}

#[tokio::test]
async fn api_keys_map_to_consumers_and_never_reach_the_backend() {
    let (up, gw) = start(
        "  - {name: per-consumer, rate: 2/m, key: consumer}",
        "[auth: {api_key: {header: x-api-key, query: api_key}}, rate_limit: per-consumer]",
    )
    .await;
    let c = client();
    let r = c.get(gw.url("/r")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "missing_api_key");
    let r = c
        .get(gw.url("/r"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.hits(), 0);

    let r = c
        .get(gw.url("/r?x=1"))
        .header("x-api-key", ALICE_KEY)
        .header("x-request-id", "alice-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last_seen();
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "the key is removed before the backend"
    );
    let line = gw.log_line("alice-1").await;
    assert_eq!(line["consumer"], "alice");
    assert!(!line.to_string().contains(ALICE_KEY));

    // The query-parameter form, stripped from the forwarded query.
    let r = c
        .get(gw.url(&format!("/r?api_key={BOB_KEY}&keep=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last_seen().uri.query(), Some("keep=1"));

    // Budgets per consumer: alice has one left, bob one.
    let alice = statuses(&gw, 2, |r| r.header("x-api-key", ALICE_KEY)).await;
    assert_eq!(alice, [200, 429]);
    let bob = statuses(&gw, 2, |r| r.header("x-api-key", BOB_KEY)).await;
    assert_eq!(bob, [200, 429]);
}

#[tokio::test]
async fn leaky_bucket_smooths_a_burst() {
    let (_up, gw) = start(
        "  - {name: smooth, algorithm: leaky_bucket, rate: 10/s, burst: 2, key: route}",
        "[rate_limit: smooth]",
    )
    .await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = gw.url("/r");
        tasks.push(tokio::spawn(async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), Instant::now())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [200, 200, 200, 429],
        "one served, two queued, one refused"
    );
    let last_ok = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| r.1)
        .max()
        .unwrap();
    assert!(
        last_ok - start >= Duration::from_millis(190),
        "queued requests leave at 10/s: {:?}",
        last_ok - start
    );
}

#[tokio::test]
async fn sliding_window_and_the_environment_override() {
    std::env::set_var("GATEHOUSE_TEST_RATE_LIMIT", "2-M");
    let (_up, gw) = start("  - {name: window, algorithm: sliding_window, rate: 100/m, rate_env: GATEHOUSE_TEST_RATE_LIMIT, key: route}", "[rate_limit: window]").await;
    assert_eq!(
        statuses(&gw, 3, |r| r).await,
        [200, 200, 429],
        "RATE_LIMIT-style 2-M wins over 100/m"
    );
}
