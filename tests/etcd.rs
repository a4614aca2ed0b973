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

/// A fake etcd on loopback: answers every request with `head` and then `body` (written in
/// 1 MiB pieces), then holds the connection open. `body` is produced lazily so the test never
/// holds it whole.
async fn fake_etcd(head: String, body_len: usize, byte: u8) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let head = head.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = vec![byte; 1 << 20];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(piece.len());
                    let chunk = if head.contains("chunked") {
                        let mut c = format!("{n:x}\r\n").into_bytes();
                        c.extend_from_slice(&piece[..n]);
                        c.extend_from_slice(b"\r\n");
                        c
                    } else {
                        piece[..n].to_vec()
                    };
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                // Then nothing more: a stream that never ends its line.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_line_that_never_ends_is_cut_off_not_buffered() {
    let addr = fake_etcd(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .into(),
        48 << 20,
        b'a',
    )
    .await;
    let client = gatehouse::etcd::Client::new(vec![format!("http://{addr}")]);
    let started = std::time::Instant::now();
    let got = client
        .changed_after("/services/shop/", true, 1, Duration::from_secs(4))
        .await;
    let err = got.expect_err("a line longer than any etcd answer is an error, not a wait");
    assert!(err.contains("longer than"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "cut off early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_answer_larger_than_the_limit_is_refused() {
    let addr = fake_etcd(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            80 << 20
        ),
        80 << 20,
        b' ',
    )
    .await;
    let client = gatehouse::etcd::Client::new(vec![format!("http://{addr}")]);
    let err = client.range("/services/shop/", true).await.unwrap_err();
    assert!(err.contains("larger than"), "{err}");
}

/// An etcd member that accepts connections and never answers (a hung process), listed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_first_etcd_member_does_not_hide_changes() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let etcd = EtcdServer::start();
    etcd.put(&format!("/services/shop/{}", a.addr()), "");
    // Never accepted: the kernel completes the handshake, nobody reads or answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = format!(
        "etcd: {{endpoints: ['http://{}', '{}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{etcd: {{prefix: /services/shop/}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
        hung.local_addr().unwrap(),
        etcd.url()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let (ea, eb) = (a.addr().to_string(), b.addr().to_string());
    eventually("the registered endpoint", DEADLINE, || async {
        (endpoints(&c, &gw).await == vec![(ea.clone(), 1)]).then_some(())
    })
    .await;
    etcd.put(&format!("/services/shop/{}", b.addr()), "");
    let mut want = vec![(ea.clone(), 1), (eb.clone(), 1)];
    want.sort();
    eventually(
        "the change, seen through the member that answers",
        DEADLINE,
        || async { (endpoints(&c, &gw).await == want).then_some(()) },
    )
    .await;
}

/// Keys under the prefix that name no endpoint one could send to are skipped; and a reload
/// that points the cluster at another prefix drops the old prefix's endpoints at once
/// (they belong to another service), even while the new prefix is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_skipped_and_a_new_prefix_drops_the_old_endpoints() {
    let a = FakeUpstream::start("a").await;
    let etcd = EtcdServer::start();
    for k in [
        a.addr().to_string(),
        "a/b:80".into(),
        "../x:80".into(),
        "0.0.0.0:80".into(),
        "224.0.0.1:80".into(),
        "255.255.255.255:80".into(),
        "[::]:80".into(),
        "[ff02::1]:80".into(),
        "[fe80::1]:80".into(),
        "127.0.0.1:0".into(),
        "".into(),
        format!("{}/", a.addr()),
    ] {
        etcd.put(&format!("/services/shop/{k}"), "");
    }
    let yaml = |prefix: &str| {
        format!(
            "etcd: {{endpoints: ['{}']}}\n\
             listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
             admin: {{address: 127.0.0.1:0}}\n\
             access_log: off\n\
             clusters:\n  - name: shop\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
             endpoints_from: {{etcd: {{prefix: {prefix}}}}}\n\
             routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
            etcd.url()
        )
    };
    let gw = Running::start(&yaml("/services/shop/"), &[]);
    let c = client();
    let ea = a.addr().to_string();
    eventually("the one real endpoint", DEADLINE, || async {
        (endpoints(&c, &gw).await == vec![(ea.clone(), 1)]).then_some(())
    })
    .await;

    std::fs::write(
        gw._dir.path().join("gatehouse.yaml"),
        yaml("/services/cart/"),
    )
    .unwrap();
    let r = c
        .post(format!("http://{}/reload", gw.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view = eventually(
        "the new source, and no endpoint of the old",
        DEADLINE,
        || async {
            let v = get_json(&c, format!("http://{}/clusters/shop", gw.admin_addr())).await;
            (v["discovery"]["source"] == "etcd:/services/cart/").then_some(v)
        },
    )
    .await;
    assert_eq!(view["endpoints"], serde_json::json!([]), "{view}");
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(a.hits(), 0);
}

/// A fake etcd whose range answer is `range` (JSON) and whose watches say "created" and then
/// nothing.
async fn fake_etcd_answering(range: serde_json::Value) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let range = range.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let range = range.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let answer = if req.starts_with("POST /v3/watch") {
                    let line = "{\"result\":{\"header\":{\"revision\":\"7\"},\"created\":true}}\n";
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
                        line.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{range}",
                        range.len()
                    )
                };
                let _ = s.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

/// A key outside the prefix (which only a broken or hostile etcd would send) cut the key's
/// text inside a character: the discovery task panicked and the cluster never got its
/// endpoints. Now the key is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_prefix_is_skipped_not_a_panic() {
    use base64::Engine;
    let a = FakeUpstream::start("a").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let range = serde_json::json!({
        "header": {"revision": "7"},
        "kvs": [
            {"key": b64("/services/shopé"), "value": "", "mod_revision": "3"},
            {"key": b64(&format!("/services/shop/{}", a.addr())), "mod_revision": "4"},
        ],
    });
    let etcd = fake_etcd_answering(range).await;
    let yaml = format!(
        "etcd: {{endpoints: ['http://{etcd}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{etcd: {{prefix: /services/shop/}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n"
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let ea = a.addr().to_string();
    eventually("the key under the prefix", DEADLINE, || async {
        (endpoints(&c, &gw).await == vec![(ea.clone(), 1)]).then_some(())
    })
    .await;
}

/// The config key changed (the watch said so) but etcd failed the read that followed: the
/// change was marked seen and never applied, since the next watch started after it. Now the
/// change is looked at again until it can be read. The fake etcd: the key is at revision 5,
/// then 6; its first read after the start fails with 503; a watch from revision 6 or before
/// reports the change at 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_whose_read_fails_is_read_again() {
    use base64::Engine;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let range = |text: &str, rev: u64| {
        serde_json::json!({
            "header": {"revision": rev.to_string()},
            "kvs": [{"key": b64("/gatehouse/config"), "value": b64(text), "mod_revision": rev.to_string()}],
        })
        .to_string()
    };
    let (v1, v2) = (
        range(&config_yaml(&a, ""), 5),
        range(&config_yaml(&b, ""), 6),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let etcd = l.local_addr().unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (v1, v2, reads) = (v1.clone(), v2.clone(), reads.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = req.split("\r\n\r\n").nth(1).unwrap_or("");
                let answer = if req.starts_with("POST /v3/watch") {
                    let v: Value = serde_json::from_str(body).unwrap_or_default();
                    let from: u64 = v["create_request"]["start_revision"]
                        .as_str()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    let mut lines =
                        "{\"result\":{\"header\":{\"revision\":\"6\"},\"created\":true}}\n"
                            .to_string();
                    if from <= 6 {
                        lines.push_str("{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":[{\"kv\":{}}]}}\n");
                    }
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{lines}\r\n",
                        lines.len()
                    )
                } else {
                    match reads.fetch_add(1, Ordering::SeqCst) {
                        0 => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{v1}",
                            v1.len()
                        ),
                        1 => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{v2}",
                            v2.len()
                        ),
                    }
                };
                let _ = s.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let url = format!("http://{etcd}");
    let gw = Running::start_args(&["--config-etcd", url.as_str()]);
    let c = client();
    eventually("the change, read again", DEADLINE, || async {
        let v = get_json(&c, format!("http://{}/config", gw.admin_addr())).await;
        (v["generation"] == 6).then_some(())
    })
    .await;
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.hits(), 1);
}

/// etcd down when the gateway starts: it exits at once, saying what it was reading.
#[test]
fn etcd_down_at_start_stops_the_start_with_what_it_was_reading() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "--config-etcd", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the config from etcd key \"/gatehouse/config\"")
            && err.contains("Connection refused"),
        "{err}"
    );
}

/// The config key deleted: refused like a bad config (the report says so), and the running
/// config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_config_key_is_refused_and_said() {
    let a = FakeUpstream::start("a").await;
    let etcd = EtcdServer::start();
    let key = "/gatehouse/config";
    etcd.put(key, &config_yaml(&a, ""));
    let url = etcd.url();
    let gw = Running::start_args(&["--config-etcd", url.as_str()]);
    let c = client();
    etcd.delete(key);
    let v = eventually("the refusal", DEADLINE, || async {
        let v = get_json(&c, format!("http://{}/config", gw.admin_addr())).await;
        (v["last_reload"]["result"] == "error").then_some(v)
    })
    .await;
    assert!(
        v["last_reload"]["errors"]
            .to_string()
            .contains("etcd has no key"),
        "{v}"
    );
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The key rewritten with the same text: a new revision, which the running instance takes as
/// its generation, as an instance started now would (before, it kept the old number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_text_written_again_moves_the_generation_to_the_new_revision() {
    let a = FakeUpstream::start("a").await;
    let etcd = EtcdServer::start();
    let key = "/gatehouse/config";
    let text = config_yaml(&a, "");
    etcd.put(key, &text);
    let url = etcd.url();
    let gw = Running::start_args(&["--config-etcd", url.as_str()]);
    let c = client();
    let second = etcd.put(key, &text);
    eventually("the new revision as the generation", DEADLINE, || async {
        let v = get_json(&c, format!("http://{}/config", gw.admin_addr())).await;
        (v["generation"] == second).then_some(())
    })
    .await;
}
