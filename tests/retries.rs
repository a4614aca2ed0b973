//! Retries: on a different endpoint, only for idempotent methods unless the route opts in,
//! never past the retry budget, with small bodies buffered so they can be sent again.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{Behavior, FakeUpstream, Mode, TestGateway};

fn config(ups: &[&FakeUpstream], retries: &str, route_extra: &str) -> String {
    let eps: String = ups
        .iter()
        .map(|u| format!("      - address: {}\n", u.addr()))
        .collect();
    format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters:\n  - name: backend\n    health_check: {{ enabled: false }}\n    circuit_breaker: {{ enabled: false }}\n    retries: {retries}\n    endpoints:\n{eps}routes:\n  - name: all\n    cluster: backend\n{route_extra}"
    )
}

#[tokio::test]
async fn a_failed_try_is_retried_on_another_endpoint() {
    let bad = FakeUpstream::start("bad").await;
    let good = FakeUpstream::start("good").await;
    bad.update(|b| b.status = 503);
    let gw = TestGateway::start(&config(&[&bad, &good], "{ attempts: 2, backoff: 1ms }", "")).await;
    let c = client();
    for i in 0..10 {
        let r = c
            .get(gw.url("/r"))
            .header("x-request-id", format!("r{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-upstream"], "good");
    }
    assert_eq!(good.hits(), 10);
    assert_eq!(
        bad.hits(),
        5,
        "round robin put every other request first on bad"
    );
    let retried: Vec<_> = (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>();
    let mut n = 0;
    for id in &retried {
        let l = gw.log_line(id).await;
        assert_eq!(l["endpoint"], good.addr().to_string());
        n += l["retries"].as_u64().unwrap();
    }
    assert_eq!(n, 5);
}

#[tokio::test]
async fn connect_failures_and_resets_are_retried() {
    let mut dead = FakeUpstream::start("dead").await;
    let resets = FakeUpstream::start("resets").await;
    let good = FakeUpstream::start("good").await;
    dead.stop().await;
    resets.set(Behavior {
        mode: Mode::Drop,
        ..Behavior::default()
    });
    let gw = TestGateway::start(&config(
        &[&dead, &resets, &good],
        "{ attempts: 2, backoff: 1ms }",
        "",
    ))
    .await;
    for _ in 0..9 {
        assert_eq!(
            client().get(gw.url("/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(good.hits(), 9);
}

#[tokio::test]
async fn post_is_not_retried_unless_the_route_opts_in() {
    let bad = FakeUpstream::start("bad").await;
    let good = FakeUpstream::start("good").await;
    bad.update(|b| b.status = 503);
    let gw = TestGateway::start(&config(&[&bad, &good], "{ attempts: 2, backoff: 1ms }", "")).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            client()
                .post(gw.url("/p"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(bad.hits() + good.hits(), 10, "one try per POST");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);

    let bad2 = FakeUpstream::start("bad").await;
    let good2 = FakeUpstream::start("good").await;
    bad2.update(|b| b.status = 503);
    let gw2 = TestGateway::start(&config(
        &[&bad2, &good2],
        "{ attempts: 2, backoff: 1ms }",
        "    retry_non_idempotent: true\n",
    ))
    .await;
    for _ in 0..10 {
        let r = client()
            .post(gw2.url("/p"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The buffered body reached the second endpoint intact.
    let seen = good2.last_seen();
    assert_eq!(seen.headers["content-length"], "7");
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    a.update(|x| x.status = 503);
    b.update(|x| x.status = 503);
    let gw = TestGateway::start(&config(
        &[&a, &b],
        "{ attempts: 1, backoff: 1ms, budget: 20%, min_retries_per_second: 1 }",
        "",
    ))
    .await;
    let c = client();
    for _ in 0..100 {
        assert_eq!(c.get(gw.url("/b")).send().await.unwrap().status(), 503);
    }
    let tries = a.hits() + b.hits();
    // 100 requests in well under 10 s: the budget allows max(20 % of 100, 1/s × 10 s) = 20 retries.
    assert_eq!(tries, 120, "retries capped by the budget");
}

#[tokio::test]
async fn a_large_streamed_body_is_not_retried() {
    let bad = FakeUpstream::start("bad").await;
    let good = FakeUpstream::start("good").await;
    bad.set(Behavior {
        status: 503,
        mode: Mode::Sink,
        ..Behavior::default()
    });
    good.set(Behavior {
        mode: Mode::Sink,
        ..Behavior::default()
    });
    let gw = TestGateway::start(&config(
        &[&bad, &good],
        "{ attempts: 2, backoff: 1ms, max_body_bytes: 1KiB }",
        "    retry_non_idempotent: true\n",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = client()
            .put(gw.url("/big"))
            .body(vec![b'z'; 100 << 10])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        bad.hits() + good.hits(),
        4,
        "bodies over max_body_bytes and request_buffering are streamed once"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
}
