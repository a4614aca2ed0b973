//! Fault injection: the `fault` route filter (abort and delay, by share) and endpoint fault
//! drills from the admin API, which feed the breaker like real failures.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_fault_filter_aborts_and_delays() {
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters: [{{name: c, health_check: {{enabled: false}}, endpoints: [{{address: '{}'}}]}}]\nroutes:\n  - {{name: abort, match: {{path_prefix: /abort}}, cluster: c, filters: [fault: {{abort: 503, percent: 100%}}]}}\n  - {{name: half, match: {{path_prefix: /half}}, cluster: c, filters: [fault: {{abort: 500, percent: 50%}}]}}\n  - {{name: slow, match: {{path_prefix: /slow}}, cluster: c, filters: [fault: {{delay: 300ms}}]}}\n",
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    let r = c.get(gw.url("/abort")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "fault_injected");
    assert_eq!(up.hits(), 0, "aborted before the backend");
    let mut aborted = 0;
    for _ in 0..200 {
        if c.get(gw.url("/half")).send().await.unwrap().status() == 500 {
            aborted += 1;
        }
    }
    assert!((70..=130).contains(&aborted), "{aborted} of 200 at 50 %");
    let start = Instant::now();
    assert_eq!(c.get(gw.url("/slow")).send().await.unwrap().status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_fault_drill_opens_the_breaker_and_it_recovers() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nclusters:\n  - name: c\n    health_check: {{enabled: false}}\n    slow_start: 0s\n    circuit_breaker: {{consecutive_failures: 3, open_duration: 300ms}}\n    endpoints: [{{address: '{}'}}, {{address: '{}'}}]\nroutes: [{{name: r, cluster: c}}]\n",
        a.addr(),
        b.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let mut events = gw.gateway().runtime().events.subscribe();
    let c = client();
    let r = c
        .post(gw.admin_url(&format!("/clusters/c/endpoints/{}/fault", a.addr())))
        .json(&json!({"abort": 503, "duration_s": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Retries hide the drill from clients; the breaker sees the failures and opens.
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(a.hits(), 0, "the drill answered in a's place");
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let e = events.recv().await.unwrap();
            seen.push(e["event"].as_str().unwrap().to_string());
            if e["event"] == "circuit_closed" {
                break;
            }
            // Keep traffic flowing so a half-open probe happens after the drill.
            let _ = c.get(gw.url("/x")).send().await;
        }
    };
    let keep = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = client().get(gw.url("/y")).send().await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(15), wait) => {}
        _ = keep => {}
    }
    for ev in [
        "fault_started",
        "circuit_opened",
        "circuit_half_opened",
        "circuit_closed",
    ] {
        assert!(seen.iter().any(|s| s == ev), "{ev} in {seen:?}");
    }
    let r = c
        .post(gw.admin_url(&format!("/clusters/c/endpoints/{}/fault", a.addr())))
        .json(&json!({"abort": 503, "delay_ms": 10, "duration_s": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "abort and delay together are refused");
}
