//! Chaos: steady load (200 req/s for 15 s, bounded) over three backends; one is killed at 5 s
//! and restarted at 9 s. Idempotent GETs see no failure outside one health-check interval of the
//! kill, and the restarted backend is back at full share once slow start is done.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use gatehouse_testkit::{FakeUpstream, TestGateway};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const RATE: u64 = 200;
const RUN: Duration = Duration::from_secs(15);
const KILL_AT: Duration = Duration::from_secs(5);
const RESTART_AT: Duration = Duration::from_secs(9);
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_a_backend_under_load() {
    let a = FakeUpstream::start("a").await;
    let mut b = FakeUpstream::start("b").await;
    let c = FakeUpstream::start("c").await;
    let gw = TestGateway::start(&common::one_cluster(
        &[a.addr(), b.addr(), c.addr()],
        "",
        "    health_check: { interval: 500ms, timeout: 200ms, jitter: 0%, unhealthy_threshold: 2, healthy_threshold: 2 }\n    slow_start: 2s\n",
    ))
    .await;
    let url = gw.url("/chaos");
    let client = common::client();
    // (offset since start, status, upstream name)
    let results: Arc<Mutex<Vec<(Duration, u16, String)>>> = Arc::default();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut killed, mut restarted) = (false, false);
    for _ in 0..(RATE * RUN.as_secs()) {
        tick.tick().await;
        let at = start.elapsed();
        if !killed && at >= KILL_AT {
            b.stop().await;
            killed = true;
        }
        if !restarted && at >= RESTART_AT {
            b.restart().await;
            restarted = true;
        }
        let (client, url, results) = (client.clone(), url.clone(), results.clone());
        tasks.spawn(async move {
            let r = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let (status, who) = match r {
                Ok(r) => (
                    r.status().as_u16(),
                    r.headers()
                        .get("x-upstream")
                        .map_or("-".into(), |v| v.to_str().unwrap().to_string()),
                ),
                Err(_) => (0, "-".into()),
            };
            results.lock().unwrap().push((at, status, who));
        });
    }
    while tasks.join_next().await.is_some() {}
    let results = results.lock().unwrap().clone();
    let failures: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    let window_end = KILL_AT + CHECK_INTERVAL;
    let late_failures: Vec<_> = failures
        .iter()
        .filter(|r| r.0 < KILL_AT || r.0 > window_end)
        .collect();
    // Share of b over the last 3 s (slow start ends ~2 s after b is HEALTHY again at ~10 s).
    let tail: Vec<_> = results
        .iter()
        .filter(|r| r.0 >= RUN - Duration::from_secs(3))
        .collect();
    let b_tail = tail.iter().filter(|r| r.2 == "b").count() as f64 / tail.len() as f64;
    let b_while_down = results
        .iter()
        .filter(|r| r.0 > window_end + CHECK_INTERVAL && r.0 < RESTART_AT && r.2 == "b")
        .count();
    eprintln!(
        "chaos: {} requests, {} failures ({} outside the kill window), b's share in the last 3 s {:.3}, b answers while down {}",
        results.len(),
        failures.len(),
        late_failures.len(),
        b_tail,
        b_while_down
    );
    assert_eq!(results.len() as u64, RATE * RUN.as_secs());
    assert!(
        late_failures.is_empty(),
        "failures outside one check interval of the kill: {late_failures:?}"
    );
    assert_eq!(b_while_down, 0);
    assert!(
        (0.25..=0.42).contains(&b_tail),
        "b back at about a third: {b_tail}"
    );
}
