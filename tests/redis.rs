//! Shared rate limits through a real Redis: two gateway instances hold one global limit; Redis
//! stopped mid-run in each `on_redis_error` mode; Redis restarted without restarting the gateway.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{eventually, FakeUpstream, RedisServer, TestGateway};
use std::time::Duration;

fn config(up: &FakeUpstream, redis: &RedisServer, policy: &str) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
redis: {{url: "{}", timeout: 50ms}}
rate_limits:
  - {policy}
clusters: [{{name: c, health_check: {{enabled: false}}, endpoints: [{{address: "{}"}}]}}]
routes: [{{name: r, cluster: c, filters: [rate_limit: shared]}}]
"#,
        redis.url(),
        up.addr()
    )
}

async fn status(gw: &TestGateway) -> u16 {
    client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until a request passes (the gateway connects to Redis in the background at start).
async fn first_pass(gw: &TestGateway) {
    eventually(
        "a first request through Redis",
        Duration::from_secs(10),
        || async { (status(gw).await == 200).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn two_gateways_share_one_global_limit() {
    let redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    for algorithm in ["token_bucket", "sliding_window"] {
        let policy = format!(
            "{{name: shared, algorithm: {algorithm}, rate: 100/m, key: route, store: redis}}"
        );
        let a = TestGateway::start(&config(&up, &redis, &policy)).await;
        let b = TestGateway::start(&config(&up, &redis, &policy)).await;
        let mut ok = 0;
        for i in 0..300 {
            let gw = if i % 2 == 0 { &a } else { &b };
            if status(gw).await == 200 {
                ok += 1;
            }
        }
        eprintln!("{algorithm}: {ok} of 300 allowed through two gateways with a global 100/m");
        // 100 in the window, plus at most a couple refilled during the run: within 5 %.
        assert!((100..=105).contains(&ok), "{algorithm}: {ok}");
        // Let the next algorithm start from an empty Redis key space.
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn redis_down_fail_open_falls_back_to_the_local_limit() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(
        &up,
        &redis,
        "{name: shared, rate: 3/m, key: route, store: redis, on_redis_error: fail_open}",
    ))
    .await;
    first_pass(&gw).await;
    redis.stop();
    let got: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(status(&gw).await);
        }
        v
    };
    // The one request that went through Redis was counted locally too, so the fallback grants
    // the rest of the budget (2), not a fresh burst of 3.
    assert_eq!(
        got,
        [200, 200, 429, 429, 429],
        "the local limiter, not no limit, and no extra burst"
    );
    // After three failures in a row the breaker is open: checks stop waiting on Redis.
    let store = gw.gateway().runtime().snapshot().limiters["shared"]
        .redis
        .clone()
        .unwrap();
    assert!(store.is_open(), "the Redis breaker opened");
    // Redis back: the background probe closes the breaker and checks go to Redis again.
    redis.restart();
    eventually(
        "the probe to close the breaker",
        Duration::from_secs(15),
        || async { (!store.is_open()).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn redis_down_fail_closed_refuses() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(
        &up,
        &redis,
        "{name: shared, rate: 3/m, key: route, store: redis, on_redis_error: fail_closed}",
    ))
    .await;
    first_pass(&gw).await;
    redis.stop();
    for _ in 0..3 {
        assert_eq!(status(&gw).await, 429);
    }
}

#[tokio::test]
async fn a_restarted_redis_is_used_again_without_restarting_the_gateway() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(
        &up,
        &redis,
        "{name: shared, rate: 1000/m, key: route, store: redis, on_redis_error: fail_closed}",
    ))
    .await;
    first_pass(&gw).await;
    redis.restart();
    // The connection manager reconnects: requests pass through Redis again (fail_closed would
    // refuse them otherwise) and Redis holds the policy's key.
    eventually(
        "the gateway to use the restarted Redis",
        Duration::from_secs(10),
        || async { (status(&gw).await == 200).then_some(()) },
    )
    .await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("gatehouse:rl:shared:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
}
