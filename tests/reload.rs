//! Hot reload: under steady load, 20 reloads (weights, an endpoint and a route added and removed)
//! fail no request; breaker state and spent rate-limit budgets survive; an invalid file changes
//! nothing; a WebSocket stays open; file changes, POST /reload and SIGHUP all reload.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::client;
use futures_util::{SinkExt, StreamExt};
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn config(eps: &[(&FakeUpstream, u32)], extra_route: bool) -> String {
    let e: String = eps
        .iter()
        .map(|(u, w)| format!("      - {{address: '{}', weight: {w}}}\n", u.addr()))
        .collect();
    let extra = if extra_route {
        "  - {name: extra, match: {path_prefix: /extra}, cluster: backend}\n"
    } else {
        ""
    };
    format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nrate_limits: [{{name: per-client, rate: 3/m, key: 'header:x-client'}}]\nclusters:\n  - name: backend\n    lb: weighted_round_robin\n    health_check: {{enabled: false}}\n    slow_start: 0s\n    endpoints:\n{e}routes:\n  - {{name: all, cluster: backend, filters: [rate_limit: per-client]}}\n{extra}"
    )
}

/// A gateway started from a config file in a fresh directory (kept alive with the gateway).
async fn from_file(text: &str) -> (TestGateway, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, text).unwrap();
    (TestGateway::start_file(&path).await, dir, path)
}

/// The status of one request from the client that spends its rate-limit budget.
async fn spent(c: &reqwest::Client, gw: &TestGateway) -> reqwest::StatusCode {
    c.get(gw.url("/x"))
        .header("x-client", "spent")
        .send()
        .await
        .unwrap()
        .status()
}

/// Writes like an editor: a temporary file renamed over the config.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_nothing_and_keep_state() {
    let (a, b, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    );
    let (gw, _dir, path) = from_file(&config(&[(&a, 1), (&b, 1)], false)).await;
    let rt = gw.gateway().runtime().clone();

    // A client spends its budget; b's breaker is opened by an operator.
    let cl = client();
    for _ in 0..3 {
        assert_eq!(spent(&cl, &gw).await, 200);
    }
    let b_state = rt.endpoint("backend", &b.addr().to_string()).unwrap();
    b_state.force_breaker(&rt.snapshot().clusters["backend"].breaker, true, &rt.events);

    // A WebSocket opened before the reloads.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr()))
        .await
        .unwrap();

    // Steady load on another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), gw.url("/load"));
        tokio::spawn(async move {
            let c = client();
            for i in 0..20_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = c
                    .get(&url)
                    .header("x-client", format!("load-{}", i % 100_000))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    for i in 0..20u32 {
        let text = match i % 4 {
            0 => config(&[(&a, 2), (&b, 1)], false),
            1 => config(&[(&a, 1), (&b, 3), (&c, 1)], true),
            2 => config(&[(&a, 5), (&b, 1), (&c, 2)], false),
            _ => config(&[(&a, 1), (&b, 1)], true),
        };
        save(&path, &text);
        gw.gateway().reload("test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    eprintln!(
        "reload under load: {} ok, {} failed, generation {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        rt.snapshot().generation
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert!(rt.snapshot().generation >= 21);

    // State that must survive: b still OPEN (same state object), the spent budget still spent.
    let after = rt.endpoint("backend", &b.addr().to_string()).unwrap();
    assert!(Arc::ptr_eq(&b_state, &after));
    assert_eq!(
        after.breaker_state(),
        gatehouse::cluster::breaker::State::Open
    );
    assert_eq!(spent(&cl, &gw).await, 429);
    // The WebSocket is still open.
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_is_reported() {
    let a = FakeUpstream::start("a").await;
    let (gw, _dir, path) = from_file(&config(&[(&a, 1)], false)).await;
    let before = gw.gateway().runtime().snapshot().generation;
    save(
        &path,
        &config(&[(&a, 1)], false).replace("weighted_round_robin", "fastest_please"),
    );
    let r = client()
        .post(gw.admin_url("/reload"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.contains("gatehouse.yaml:") && err.contains("clusters[0].lb"),
        "{err}"
    );
    assert_eq!(gw.gateway().runtime().snapshot().generation, before);
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200,
        "still serving"
    );
    let cfg: serde_json::Value = client()
        .get(gw.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["last_reload"]["result"], "error");
    assert_eq!(cfg["last_reload"]["failures"], 1);
}

#[tokio::test]
async fn a_saved_file_is_picked_up_by_the_watcher() {
    let a = FakeUpstream::start("a").await;
    let (gw, _dir, path) = from_file(&config(&[(&a, 1)], false)).await;
    assert_eq!(
        client()
            .get(gw.url("/extra/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the catch-all route"
    );
    save(&path, &config(&[(&a, 1)], true));
    let rt = gw.gateway().runtime().clone();
    eventually("the watcher to reload", Duration::from_secs(10), || async {
        (rt.snapshot().generation == 2).then_some(())
    })
    .await;
    assert!(rt
        .snapshot()
        .routes
        .routes()
        .iter()
        .any(|r| &*r.name == "extra"));
}

/// A refused file is tried once, not again on every read of it; put back as it was, the file
/// is loaded again and the report no longer shows the refusal.
#[tokio::test]
async fn a_refused_file_is_not_retried_and_its_fix_clears_the_report() {
    let a = FakeUpstream::start("a").await;
    let good = config(&[(&a, 1)], false);
    let (gw, _dir, path) = from_file(&good).await;
    let mut events = gw.gateway().runtime().events.subscribe();
    save(&path, &good.replace("slow_start: 0s", "slow_start: soon"));
    let failed = |e: &serde_json::Value| e["event"] == "config_reload_failed";
    tokio::time::timeout(Duration::from_secs(10), async {
        while !failed(&events.recv().await.unwrap()) {}
    })
    .await
    .expect("the refusal");
    // Nothing changes the file for 1 s: no second attempt (the reload's own read of the file
    // used to wake the watcher again, every 150 ms).
    let again = tokio::time::timeout(Duration::from_secs(1), async {
        while !failed(&events.recv().await.unwrap()) {}
    })
    .await;
    assert!(again.is_err(), "the same refused file was tried again");
    assert_eq!(gw.gateway().runtime().snapshot().generation, 1);
    save(&path, &good);
    let rt = gw.gateway().runtime().clone();
    eventually(
        "the fixed file is loaded",
        Duration::from_secs(10),
        || async { (rt.snapshot().generation == 2).then_some(()) },
    )
    .await;
    let report: serde_json::Value = client()
        .get(gw.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["last_reload"]["result"], "ok", "{report}");
}

#[tokio::test]
async fn sighup_reloads_the_shipped_binary() {
    let a = FakeUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&[(&a, 1)], false).replace("admin: {address: '127.0.0.1:0'}\n", "");
    let gw = Running::start(&yaml, &[]);
    let path = gw._dir.path().join("gatehouse.yaml");
    let _ = dir;
    // Replace the file in a way the watcher also sees; SIGHUP must work on its own anyway.
    std::fs::write(&path, yaml.replace("rate: 3/m", "rate: 1/m")).unwrap();
    gw.signal("HUP");
    let url = format!("http://{}/x", gw.addr);
    eventually(
        "the 1/m limit after SIGHUP",
        Duration::from_secs(10),
        || async {
            let r1 = client()
                .get(&url)
                .header("x-client", "h")
                .send()
                .await
                .unwrap()
                .status();
            let r2 = client()
                .get(&url)
                .header("x-client", "h")
                .send()
                .await
                .unwrap()
                .status();
            (r1 == 429 || r2 == 429).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn listeners_are_added_and_removed_by_reload() {
    let a = FakeUpstream::start("a").await;
    let base = config(&[(&a, 1)], false);
    let (gw, _dir, path) = from_file(&base).await;
    let first = gw.addr();
    // Add a second listener on a free port.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let two = base.replace(
        "listeners: [{name: l, address: '127.0.0.1:0'}]",
        &format!(
            "listeners: [{{name: l, address: '127.0.0.1:0'}}, {{name: second, address: '{free}'}}]"
        ),
    );
    save(&path, &two);
    gw.gateway().reload("test").await.unwrap();
    assert_eq!(gw.gateway().addr("second"), Some(free));
    let r = client()
        .get(format!("http://{free}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new listener serves");
    // Remove the first: it stops accepting; the second keeps serving.
    let only_second = base.replace(
        "listeners: [{name: l, address: '127.0.0.1:0'}]",
        &format!("listeners: [{{name: second, address: '{free}'}}]"),
    );
    save(&path, &only_second);
    gw.gateway().reload("test").await.unwrap();
    eventually(
        "the removed listener to stop accepting",
        Duration::from_secs(5),
        || async {
            tokio::net::TcpStream::connect(first)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        client()
            .get(format!("http://{free}/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
