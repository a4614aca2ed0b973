//! The admin API's memory: per-second traffic summaries (with per-endpoint figures) and state
//! transitions are kept whether or not anyone listens, served by `GET /history`, and the event
//! stream resumes after a sequence number (`?since=`, `Last-Event-ID`) with no gap and no
//! duplicate; `GET /routes` carries each route's rate limits and cache totals.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use futures_util::StreamExt;
use gatehouse_testkit::{eventually, Behavior, FakeUpstream, TestGateway};
use serde_json::{json, Value};
use std::time::Duration;

/// `bad` answers 500s (its breaker opens after 3), `good` answers; route `limited` allows 2 a
/// minute, route `cached` caches.
fn config(good: &FakeUpstream, bad: &FakeUpstream) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
rate_limits: [{{name: two-a-minute, rate: 2/m, key: route}}]
clusters:
  - name: failing
    health_check: {{enabled: false}}
    retries: {{attempts: 0}}
    circuit_breaker: {{consecutive_failures: 3, open_duration: 60s}}
    endpoints: [{{address: "{bad}"}}]
  - name: fine
    health_check: {{enabled: false}}
    endpoints: [{{address: "{good}"}}]
routes:
  - {{name: broken, match: {{path_prefix: /broken}}, cluster: failing}}
  - {{name: limited, match: {{path_prefix: /limited}}, cluster: fine, filters: [rate_limit: two-a-minute]}}
  - {{name: cached, match: {{path_prefix: /cached}}, cluster: fine, filters: [cache: {{}}]}}
"#,
        bad = bad.addr(),
        good = good.addr()
    )
}

async fn start() -> (FakeUpstream, FakeUpstream, TestGateway) {
    let good = FakeUpstream::start("good").await;
    good.set(Behavior {
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Behavior::default()
    });
    let bad = FakeUpstream::start("bad").await;
    bad.set(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let gw = TestGateway::start(&config(&good, &bad)).await;
    (good, bad, gw)
}

async fn get_json(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn history(gw: &TestGateway, query: &str) -> Value {
    let (status, h) = get_json(gw.admin_url(&format!("/history{query}"))).await;
    assert_eq!(status, 200, "{h}");
    h
}

#[tokio::test]
async fn history_keeps_summaries_and_transitions_nobody_listened_to() {
    let (_good, bad, gw) = start().await;
    let bad_addr = bad.addr().to_string();
    for _ in 0..4 {
        client().get(gw.url("/broken")).send().await.unwrap();
    }
    // Nobody has opened /events: the summaries and the breaker's opening are kept anyway.
    let h = eventually(
        "a summary with the failures and the opened breaker",
        Duration::from_secs(10),
        || async {
            let h = history(&gw, "").await;
            let failed = h["traffic"].as_array().unwrap().iter().any(|s| {
                s["routes"]["broken"]["errors_per_second"].as_u64() >= Some(1)
                    && s["clusters"]["failing"]["endpoints"][&bad_addr]["failures_per_second"]
                        .as_u64()
                        >= Some(1)
            });
            let open_now = h["traffic"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["clusters"]["failing"]["endpoints"][&bad_addr]["breaker"] == "OPEN");
            (failed && open_now).then_some(h)
        },
    )
    .await;
    let opened: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "circuit_opened")
        .collect();
    assert_eq!(opened.len(), 1, "{h}");
    assert_eq!(opened[0]["endpoint"], bad_addr.as_str());
    assert_eq!(opened[0]["reason"], "consecutive_failures");
    // The shape of the stream's messages: numbered, named, timed; an endpoint's figures.
    let sample = h["traffic"].as_array().unwrap().last().unwrap();
    assert_eq!(sample["event"], "traffic");
    let ep = &sample["clusters"]["failing"]["endpoints"][&bad_addr];
    for field in [
        "tries_per_second",
        "failures_per_second",
        "p50_ms",
        "p99_ms",
        "health",
        "breaker",
        "drained",
    ] {
        assert!(ep.get(field).is_some(), "{field} in {ep}");
    }
    assert_eq!(ep["health"], "HEALTHY");
    let all: Vec<u64> = h["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .chain(h["events"].as_array().unwrap())
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    let newest = h["seq"].as_u64().unwrap();
    assert_eq!(all.iter().max(), Some(&newest));
    // `since` gives only what is newer.
    let later = history(&gw, &format!("?since={newest}")).await;
    assert!(later["events"].as_array().unwrap().is_empty(), "{later}");
    assert!(later["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["seq"].as_u64() > Some(newest)));
}

/// Reads `n` messages from an event stream: (id, event, data).
async fn read_messages(resp: reqwest::Response, n: usize) -> Vec<(u64, String, Value)> {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut out = Vec::new();
    let wait = async {
        while out.len() < n {
            let chunk = body.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(id), Some(event), Some(data)) =
                    (field("id: "), field("event: "), field("data: "))
                {
                    out.push((
                        id.parse().unwrap(),
                        event,
                        serde_json::from_str(&data).unwrap(),
                    ));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .unwrap_or_else(|_| panic!("{n} messages not read in 15 s: {out:?}"));
    out
}

#[tokio::test]
async fn the_stream_resumes_where_history_stops_with_no_gap_and_no_duplicate() {
    let (good, _bad, gw) = start().await;
    // A transition and a few summaries, then history up to some number.
    let addr = good.addr().to_string();
    let act = |action: &str| {
        let url = gw.admin_url(&format!("/clusters/fine/endpoints/{addr}/{action}"));
        async move { client().post(url).json(&json!({})).send().await.unwrap() }
    };
    act("drain").await;
    let h = eventually("three summaries kept", Duration::from_secs(10), || async {
        let h = history(&gw, "").await;
        (h["traffic"].as_array().unwrap().len() >= 3).then_some(h)
    })
    .await;
    let drained = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "endpoint_drained")
        .unwrap();
    let from = drained["seq"].as_u64().unwrap();
    // Resume after the drain: every later number once, in order, kept ones then live ones
    // (the enable below happens after the stream opened).
    let resp = client()
        .get(gw.admin_url(&format!("/events?since={from}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    act("enable").await;
    let newest = h["seq"].as_u64().unwrap();
    let n = usize::try_from(newest - from).unwrap() + 3;
    let got = read_messages(resp, n).await;
    let ids: Vec<u64> = got.iter().map(|m| m.0).collect();
    let want: Vec<u64> = (from + 1..=from + n as u64).collect();
    assert_eq!(ids, want, "consecutive numbers from {from}");
    for (id, event, data) in &got {
        assert_eq!(data["seq"].as_u64(), Some(*id));
        assert_eq!(data["event"].as_str(), Some(event.as_str()));
    }
    assert!(
        got.iter().any(|m| m.1 == "endpoint_enabled"),
        "the live transition: {got:?}"
    );
    assert!(
        got.iter().all(|m| m.1 != "endpoint_drained"),
        "nothing at or before since"
    );

    // An EventSource reconnecting sends Last-Event-ID; the later of it and since wins.
    let resp = client()
        .get(gw.admin_url(&format!("/events?since={from}")))
        .header("last-event-id", newest.to_string())
        .send()
        .await
        .unwrap();
    let got = read_messages(resp, 1).await;
    assert_eq!(got[0].0, newest + 1);
    // Without since: live only, starting after the newest number.
    let before = history(&gw, "").await["seq"].as_u64().unwrap();
    let resp = client().get(gw.admin_url("/events")).send().await.unwrap();
    assert!(read_messages(resp, 1).await[0].0 > before);
}

#[tokio::test]
async fn a_bad_since_or_an_unknown_parameter_is_refused() {
    let (_good, _bad, gw) = start().await;
    for (path, words) in [
        ("/history?since=yesterday", "since must be a whole number"),
        ("/history?sinse=3", "unknown parameter \"sinse\""),
        ("/events?since=-1", "since must be a whole number"),
    ] {
        let (status, body) = get_json(gw.admin_url(path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn routes_carry_their_limits_and_cache_figures() {
    let (_good, _bad, gw) = start().await;
    let statuses: Vec<u16> = futures_util::future::join_all((0..3).map(|_| async {
        client()
            .get(gw.url("/limited"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(gw.url("/cached"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let (_, routes) = get_json(gw.admin_url("/routes")).await;
    let route = |name: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let limited = route("limited");
    assert_eq!(
        limited["rate_limits"],
        json!([{"policy": "two-a-minute", "algorithm": "token_bucket", "rate": "2/m", "burst": 2,
                "store": "local", "allowed_total": 2, "limited_total": 1}])
    );
    assert_eq!(limited["cache"], Value::Null);
    let cached = route("cached");
    assert_eq!(cached["rate_limits"], json!([]));
    assert_eq!(
        cached["cache"],
        json!({"hits_total": 2, "lookups_total": 3, "hit_ratio": 66.6})
    );
    // The same second's figures in the summaries.
    eventually(
        "the limited request in a summary",
        Duration::from_secs(10),
        || async {
            let h = history(&gw, "").await;
            let total: u64 = h["traffic"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["routes"]["limited"]["rate_limited_per_second"].as_u64())
                .sum();
            (total == 1).then_some(())
        },
    )
    .await;
}
