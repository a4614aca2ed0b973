//! etcd on the shipped binary, against a real etcd (Debian's `etcd-server`, started by the
//! test): endpoints registered under a prefix (`endpoints_from: {etcd: {prefix}}`) follow
//! puts and deletes and survive an outage; and two gateway processes run one config held in one
//! key (`run --config-etcd`), converge on each change at the same generation (the key's
//! revision), and both refuse a bad one while serving the last good config.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::timed_client as client;
use gatehouse_testkit::{eventually, EtcdServer, FakeUpstream};
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

async fn get_json(c: &reqwest::Client, url: String) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

async fn endpoints(c: &reqwest::Client, gw: &Running) -> Vec<(String, u64)> {
    let v = get_json(c, format!("http://{}/clusters/shop", gw.admin_addr())).await;
    let mut out: Vec<(String, u64)> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_string(),
                e["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_registered_under_a_prefix_follow_puts_and_deletes() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let mut etcd = EtcdServer::start();
    etcd.put(&format!("/services/shop/{}", a.addr()), "");
    let yaml = format!(
        "etcd: {{endpoints: ['{}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    lb: weighted_round_robin\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{etcd: {{prefix: /services/shop/}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
        etcd.url()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let (ea, eb) = (a.addr().to_string(), b.addr().to_string());
    eventually("the registered endpoint", DEADLINE, || async {
        (endpoints(&c, &gw).await == vec![(ea.clone(), 1)]).then_some(())
    })
    .await;
    let view = get_json(&c, format!("http://{}/clusters/shop", gw.admin_addr())).await;
    assert_eq!(
        view["discovery"]["source"], "etcd:/services/shop/",
        "{view}"
    );
    assert_eq!(view["endpoints"][0]["source"], "etcd", "{view}");

    // A second registration, with a weight: watched, not polled.
    etcd.put(&format!("/services/shop/{}", b.addr()), r#"{"weight": 3}"#);
    eventually("the second endpoint", DEADLINE, || async {
        let want = {
            let mut w = vec![(ea.clone(), 1), (eb.clone(), 3)];
            w.sort();
            w
        };
        (endpoints(&c, &gw).await == want).then_some(())
    })
    .await;
    for _ in 0..8 {
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (2, 6),
        "1:3 by the registered weights"
    );

    // An etcd outage keeps the last good set, which keeps serving.
    etcd.stop();
    eventually("the failure is counted", DEADLINE, || async {
        let m = c
            .get(format!("http://{}/metrics", gw.admin_addr()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .any(|l| {
                l.starts_with("gatehouse_discovery_resolutions_total{")
                    && l.contains("source=\"etcd\"")
                    && l.contains("outcome=\"failed\"")
            })
            .then_some(())
    })
    .await;
    assert_eq!(endpoints(&c, &gw).await.len(), 2);
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Back, and a deregistration.
    etcd.restart();
    etcd.delete(&format!("/services/shop/{}", a.addr()));
    eventually("a is gone", DEADLINE, || async {
        (endpoints(&c, &gw).await == vec![(eb.clone(), 3)]).then_some(())
    })
    .await;
}

fn config_yaml(backend: &FakeUpstream, extra: &str) -> String {
    format!(
        "listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters: [{{name: app, health_check: {{enabled: false}}, endpoints: [{{address: '{}'}}]}}]\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: app}}]\n{extra}",
        backend.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_one_config_from_etcd_and_converge_on_each_change() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let etcd = EtcdServer::start();
    let key = "/gatehouse/config";
    let first = etcd.put(key, &config_yaml(&a, ""));
    let url = etcd.url();
    let args = ["--config-etcd", url.as_str(), "--config-key", key];
    let one = Running::start_args(&args);
    let two = Running::start_args(&args);
    let c = client();
    let config = |gw: &Running| get_json(&c, format!("http://{}/config", gw.admin_addr()));
    for gw in [&one, &two] {
        let v = config(gw).await;
        assert_eq!(
            v["generation"], first,
            "the generation is the key's revision: {v}"
        );
        assert_eq!(v["source"], format!("etcd:{key}"));
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(a.hits(), 2);

    // A change: both take it, at the same generation.
    let second = etcd.put(key, &config_yaml(&b, ""));
    for gw in [&one, &two] {
        eventually("the new config", DEADLINE, || async {
            (config(gw).await["generation"] == second).then_some(())
        })
        .await;
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));

    // A bad config: both refuse it, say so, and keep serving the last good one.
    etcd.put(key, &config_yaml(&a, "drain_timeout: soon\n"));
    for gw in [&one, &two] {
        let v = eventually("the refusal", DEADLINE, || async {
            let v = config(gw).await;
            (v["last_reload"]["result"] == "error").then_some(v)
        })
        .await;
        assert_eq!(v["generation"], second, "{v}");
        let errors = v["last_reload"]["errors"].to_string();
        assert!(
            errors.contains("etcd:/gatehouse/config:6:") && errors.contains("drain_timeout"),
            "{errors}"
        );
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (2, 4), "still the last good config");
}

#[test]
fn a_missing_key_stops_the_start_with_a_clear_message() {
    let etcd = EtcdServer::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "run",
            "--config-etcd",
            &etcd.url(),
            "--config-key",
            "/nothing/here",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd has no key \"/nothing/here\""), "{err}");
}
