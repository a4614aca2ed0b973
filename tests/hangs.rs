//! A backend that hangs is noticed by default: its tries count as slow the moment they cross
//! `slow_call_duration` (2 s), every recent call slow opens its breaker, and the requests that were
//! waiting on it move to the other endpoints. Against the shipped binary, default settings.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::FakeUpstream;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_is_ejected_within_seconds_and_its_requests_move() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let hung = FakeUpstream::start("hung").await;
    // It accepts connections (a TCP health check still passes) and never answers in time.
    hung.update(|x| x.delay = Duration::from_secs(60));
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:{admin_port}'}}\n\
         access_log: off\n\
         clusters: [{{name: app, endpoints: [{{address: '{}'}}, {{address: '{}'}}, {{address: '{}'}}]}}]\n\
         routes: [{{name: all, cluster: app}}]\n",
        a.addr(),
        b.addr(),
        hung.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let admin = format!("http://127.0.0.1:{admin_port}/clusters/app");
    gatehouse_testkit::eventually("admin up", Duration::from_secs(10), || async {
        reqwest::get(&admin).await.ok().map(|_| ())
    })
    .await;
    let url = format!("http://{}/x", gw.addr);
    let started = Instant::now();
    // Twenty clients in a closed loop for 5 s.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let c = common::client();
            let mut worst = Duration::ZERO;
            let mut statuses = Vec::new();
            while started.elapsed() < Duration::from_secs(5) {
                let t = Instant::now();
                let s = match c.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                worst = worst.max(t.elapsed());
                statuses.push(s);
            }
            (worst, statuses)
        }));
    }
    let ejected_at = loop {
        let v: serde_json::Value = reqwest::get(&admin).await.unwrap().json().await.unwrap();
        let e = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == hung.addr().to_string())
            .unwrap()
            .clone();
        if e["breaker"] == "OPEN" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never ejected: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("the hung endpoint was ejected after {ejected_at:?}");
    assert!(
        ejected_at < Duration::from_secs(5),
        "ejected after {ejected_at:?}"
    );
    for c in clients {
        let (worst, statuses) = c.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        // Waiting on the hung endpoint ended when it was ejected, not at the 30 s timeout.
        assert!(worst < Duration::from_secs(5), "a request took {worst:?}");
    }
}

/// A try waiting on an endpoint whose breaker is opened (here by the operator) moves to another
/// endpoint at once, whether the opening comes in its first moments (before it watches the
/// breaker, seen from the count of openings) or later.
#[tokio::test]
async fn a_waiting_try_moves_when_its_endpoints_breaker_opens() {
    let slow = FakeUpstream::start("slow").await;
    let fast = FakeUpstream::start("fast").await;
    slow.update(|x| x.delay = Duration::from_secs(30));
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:0'}}\n\
         clusters: [{{name: app, health_check: {{enabled: false}}, endpoints: [{{address: '{}'}}, {{address: '{}'}}]}}]\n\
         routes: [{{name: all, cluster: app}}]\n",
        slow.addr(),
        fast.addr()
    );
    let gw = gatehouse_testkit::TestGateway::start(&yaml).await;
    let c = common::client();
    let breaker = gw.admin_url(&format!("/clusters/app/endpoints/{}/breaker", slow.addr()));
    let set_breaker = |state: &'static str| {
        let r = c
            .post(&breaker)
            .json(&serde_json::json!({ "state": state }))
            .send();
        async move { assert_eq!(r.await.unwrap().status(), 200, "breaker {state}") }
    };
    for wait_before_opening in [Duration::ZERO, Duration::from_millis(200)] {
        // Requests until one is waiting on the slow endpoint (round robin: within two).
        let before = slow.hits();
        let mut waiting = None;
        for _ in 0..4 {
            let req = tokio::spawn(c.get(gw.url("/x")).send());
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                if slow.hits() > before {
                    waiting = Some((req, Instant::now()));
                    break;
                }
                if req.is_finished() || Instant::now() > until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if waiting.is_some() {
                break;
            }
        }
        let (req, since) = waiting.expect("no request reached the slow endpoint");
        tokio::time::sleep(wait_before_opening).await;
        set_breaker("open").await;
        let resp = tokio::time::timeout(Duration::from_secs(10), req)
            .await
            .expect("the waiting request did not move")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream"], "fast");
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "took {:?}",
            since.elapsed()
        );
        set_breaker("closed").await;
    }
}
