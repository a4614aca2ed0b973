//! Load-balancing policies end to end: weights, least request, latency-aware P2C-EWMA, sticky
//! consistent hashing on a header or cookie, and policy/weight changes that keep endpoint state.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};
use std::collections::HashMap;
use std::time::Duration;

fn config(ups: &[(&FakeUpstream, u32)], lb: &str) -> String {
    let eps: String = ups
        .iter()
        .map(|(u, w)| format!("      - {{ address: '{}', weight: {w} }}\n", u.addr()))
        .collect();
    format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters:\n  - name: backend\n    {lb}\n    health_check: {{ enabled: false }}\n    slow_start: 0s\n    endpoints:\n{eps}routes: [{{name: all, cluster: backend}}]\n"
    )
}

async fn who(gw: &TestGateway, req: reqwest::RequestBuilder) -> String {
    let _ = gw;
    req.send().await.unwrap().headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn weighted_round_robin_follows_weights_smoothly() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let gw = TestGateway::start(&config(&[(&a, 3), (&b, 1)], "lb: weighted_round_robin")).await;
    let c = client();
    let mut seq = String::new();
    for _ in 0..8 {
        seq += &who(&gw, c.get(gw.url("/w"))).await;
    }
    assert_eq!(seq, "aabaaaba", "3:1 without bursts");
}

#[tokio::test]
async fn p2c_ewma_moves_traffic_away_from_a_slow_backend() {
    let (fast, slow) = (
        FakeUpstream::start("fast").await,
        FakeUpstream::start("slow").await,
    );
    slow.update(|b| b.delay = Duration::from_millis(40));
    let gw = TestGateway::start(&config(&[(&fast, 1), (&slow, 1)], "lb: p2c_ewma")).await;
    let c = client();
    let start = std::time::Instant::now();
    let mut got: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *got.entry(who(&gw, c.get(gw.url("/l"))).await).or_default() += 1;
    }
    eprintln!("p2c_ewma: {got:?} in {:?}", start.elapsed());
    assert!(got.get("slow").copied().unwrap_or(0) <= 5, "{got:?}");
    // Round robin would have sent 100 requests to the slow one (4 s of waiting).
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn least_request_sends_new_requests_to_the_idle_backend() {
    let (busy, idle) = (
        FakeUpstream::start("busy").await,
        FakeUpstream::start("idle").await,
    );
    busy.update(|b| b.delay = Duration::from_millis(500));
    let gw = TestGateway::start(&config(&[(&busy, 1), (&idle, 1)], "lb: least_request")).await;
    // Tie up the busy backend with requests in flight (the first goes anywhere).
    let mut hold = Vec::new();
    for _ in 0..4 {
        let url = gw.url("/hold");
        hold.push(tokio::spawn(async move {
            client().get(url).send().await.map(|r| r.status())
        }));
    }
    gatehouse_testkit::eventually(
        "requests in flight on busy",
        Duration::from_secs(5),
        || async { (busy.hits() >= 1).then_some(()) },
    )
    .await;
    let c = client();
    let mut to_idle = 0;
    for _ in 0..20 {
        if who(&gw, c.get(gw.url("/new"))).await == "idle" {
            to_idle += 1;
        }
    }
    assert_eq!(to_idle, 20);
    for h in hold {
        h.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn ring_hash_on_a_header_is_sticky() {
    let ups = [
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    ];
    let eps: Vec<(&FakeUpstream, u32)> = ups.iter().map(|u| (u, 1)).collect();
    let gw = TestGateway::start(&config(&eps, "lb: ring_hash\n    hash_on: header:x-user")).await;
    let c = client();
    let mut used = std::collections::BTreeSet::new();
    for user in 0..30 {
        let first = who(
            &gw,
            c.get(gw.url("/s")).header("x-user", format!("user-{user}")),
        )
        .await;
        for _ in 0..4 {
            let again = who(
                &gw,
                c.get(gw.url("/s")).header("x-user", format!("user-{user}")),
            )
            .await;
            assert_eq!(again, first, "user-{user} moved");
        }
        used.insert(first);
    }
    assert_eq!(used.len(), 3, "30 users spread over all three");
    // Without the header: round robin.
    let mut rr = std::collections::BTreeSet::new();
    for _ in 0..3 {
        rr.insert(who(&gw, c.get(gw.url("/s"))).await);
    }
    assert_eq!(rr.len(), 3);
}

#[tokio::test]
async fn maglev_on_a_cookie_is_sticky_and_skips_a_drained_endpoint() {
    let ups = [
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    ];
    let eps: Vec<(&FakeUpstream, u32)> = ups.iter().map(|u| (u, 1)).collect();
    let gw = TestGateway::start(&config(&eps, "lb: maglev\n    hash_on: cookie:session")).await;
    let c = client();
    let mut owner = HashMap::new();
    for s in 0..40 {
        let cookie = format!("theme=dark; session=s{s}");
        owner.insert(
            s,
            who(&gw, c.get(gw.url("/m")).header("cookie", cookie)).await,
        );
    }
    let rt = gw.gateway().runtime();
    let b = rt.endpoint("backend", &ups[1].addr().to_string()).unwrap();
    b.set_drained(true, &rt.events);
    for s in 0..40 {
        let cookie = format!("session=s{s}");
        let now = who(&gw, c.get(gw.url("/m")).header("cookie", cookie)).await;
        if owner[&s] == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(
                now, owner[&s],
                "session s{s} moved though its endpoint is fine"
            );
        }
    }
}

#[tokio::test]
async fn policy_and_weight_changes_keep_endpoint_state() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let gw = TestGateway::start(&config(&[(&a, 1), (&b, 1)], "lb: round_robin")).await;
    let rt = gw.gateway().runtime().clone();
    let before = rt.endpoint("backend", &b.addr().to_string()).unwrap();
    let snap = rt.snapshot();
    before.force_breaker(&snap.clusters["backend"].breaker, true, &rt.events);
    drop(snap);
    let cfg = gatehouse_config::load_str(
        &config(&[(&a, 1), (&b, 5)], "lb: weighted_round_robin"),
        "<reload>",
    )
    .unwrap();
    let generation = rt.apply(cfg).unwrap();
    assert_eq!(generation, 2);
    let after = rt.endpoint("backend", &b.addr().to_string()).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&before, &after),
        "same runtime state"
    );
    assert_eq!(
        after.breaker_state(),
        gatehouse::cluster::breaker::State::Open,
        "still OPEN after the change"
    );
    let c = client();
    for _ in 0..10 {
        assert_eq!(who(&gw, c.get(gw.url("/after"))).await, "a");
    }
}
