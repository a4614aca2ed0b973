//! The response cache over a real Redis: two gateways share one entry, the tiered store keeps
//! a Redis hit in memory, Redis stopped mid-test means misses (never errors, never a stall)
//! until it is back, and the admin purge reaches Redis.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{eventually, Behavior, FakeUpstream, RedisServer, TestGateway};
use std::time::{Duration, Instant};

fn config(up: &FakeUpstream, redis: &RedisServer, store: &str) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
redis: {{url: "{}", timeout: 50ms}}
clusters: [{{name: c, health_check: {{enabled: false}}, endpoints: [{{address: "{}"}}]}}]
routes: [{{name: r, cluster: c, filters: [cache: {{store: {store}}}]}}]
"#,
        redis.url(),
        up.addr()
    )
}

fn cacheable(up: &FakeUpstream, body: &str) {
    up.set(Behavior {
        body: body.to_string().into(),
        headers: vec![("cache-control".into(), "max-age=600".into())],
        ..Behavior::default()
    });
}

/// Status, `X-Cache` and body of a GET. The same host for every gateway (it is in the key).
async fn get(gw: &TestGateway, path: &str) -> (u16, String, String) {
    let r = client()
        .get(gw.url(path))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    let x = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), x, r.text().await.unwrap())
}

#[tokio::test]
async fn two_gateways_share_one_entry() {
    let redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    cacheable(&up, "shared");
    let a = TestGateway::start(&config(&up, &redis, "redis")).await;
    let b = TestGateway::start(&config(&up, &redis, "redis")).await;
    // The gateways connect to Redis in the background: the first store may miss it.
    eventually(
        "a's response is in Redis",
        Duration::from_secs(10),
        || async { (get(&a, "/one").await.1 == "HIT").then_some(()) },
    )
    .await;
    assert_eq!(get(&b, "/one").await.1, "HIT", "stored by a");
    let hits = up.hits();
    assert_eq!(get(&a, "/one").await, (200, "HIT".into(), "shared".into()));
    assert_eq!(get(&b, "/two").await.1, "MISS");
    assert_eq!(get(&a, "/two").await, (200, "HIT".into(), "shared".into()));
    assert_eq!(up.hits(), hits + 1);

    // A purge through one gateway's admin API is a purge for both.
    let r = client()
        .delete(a.admin_url("/cache?prefix=http://shop.test/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let purged: serde_json::Value = r.json().await.unwrap();
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");
    assert_eq!(get(&b, "/two").await.1, "MISS");
}

#[tokio::test]
async fn redis_down_is_a_miss_and_tiered_memory_still_serves() {
    let mut redis = RedisServer::start();
    let up = FakeUpstream::start("up").await;
    cacheable(&up, "body");
    let redis_only = TestGateway::start(&config(&up, &redis, "redis")).await;
    let tiered = TestGateway::start(&config(&up, &redis, "tiered")).await;
    eventually("stored in Redis", Duration::from_secs(10), || async {
        get(&redis_only, "/t").await;
        (get(&redis_only, "/t").await.1 == "HIT").then_some(())
    })
    .await;
    // The tiered gateway finds it in Redis and keeps it in memory.
    assert_eq!(get(&tiered, "/t").await.1, "HIT");

    redis.stop();
    let hits = up.hits();
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            get(&redis_only, "/t").await,
            (200, "MISS".into(), "body".into())
        );
    }
    // Each miss costs at most the 50 ms deadline, then the Redis breaker answers at once.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(up.hits(), hits + 10);
    assert_eq!(get(&tiered, "/t").await.1, "HIT", "memory tier");
    let m = common::metrics(&redis_only).await;
    assert!(m.contains("gatehouse_cache_redis_errors_total"), "{m}");

    redis.restart();
    eventually(
        "caching resumes with Redis",
        Duration::from_secs(60),
        || async {
            get(&redis_only, "/back").await;
            (get(&redis_only, "/back").await.1 == "HIT").then_some(())
        },
    )
    .await;
}
