//! Self-healing end to end with FakeUpstreams: ejection by the circuit breaker, limited
//! half-open probes, recovery, slow start, active checks finding a killed backend, the panic
//! threshold, degraded endpoints, and 503 + Retry-After when nothing is left.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use std::collections::HashMap;
use std::time::Duration;

/// A gateway over `ups` with the given cluster settings (YAML lines at cluster level).
async fn gateway(ups: &[&FakeUpstream], cluster: &str) -> TestGateway {
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    TestGateway::start(&common::one_cluster(&addrs, "", cluster)).await
}

/// Sends `n` GETs and counts answers by upstream name (or by status for local replies).
async fn spread(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let c = client();
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = c.get(gw.url("/work")).send().await.unwrap();
        let key = match r.headers().get("x-upstream") {
            Some(v) if r.status() == 200 => v.to_str().unwrap().to_string(),
            _ => format!("status {}", r.status().as_u16()),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<serde_json::Value>>,
    name: &str,
) -> serde_json::Value {
    let wait = async {
        loop {
            let e = rx.recv().await.unwrap();
            if e["event"] == name {
                return (*e).clone();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
}

const NO_ACTIVE: &str = "    health_check: { enabled: false }\n";

#[tokio::test]
async fn failing_backend_is_ejected_probed_once_and_recovers() {
    let (a, b, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    );
    let gw = gateway(
        &[&a, &b, &c],
        &format!("{NO_ACTIVE}    retries: {{ attempts: 0 }}\n    slow_start: 0s\n    circuit_breaker: {{ consecutive_failures: 3, open_duration: 400ms, half_open_calls: 1 }}\n"),
    )
    .await;
    let mut events = gw.gateway().runtime().events.subscribe();
    b.update(|x| x.status = 500);

    // b fails three times in a row (every third request), then is ejected.
    let got = spread(&gw, 30).await;
    assert_eq!(b.hits(), 3, "{got:?}");
    assert_eq!(got.get("status 500"), Some(&3));
    let e = next_event(&mut events, "circuit_opened").await;
    assert_eq!(e["endpoint"], b.addr().to_string());
    assert_eq!(e["reason"], "consecutive_failures");
    assert_eq!(e["failures"], 3);
    assert_eq!(e["open_for_ms"], 400);

    // While OPEN: no traffic to b at all.
    let got = spread(&gw, 10).await;
    assert_eq!(
        got.get("a").copied().unwrap_or(0) + got.get("c").copied().unwrap_or(0),
        10
    );
    assert_eq!(b.hits(), 3);

    // After the open duration exactly one probe reaches b; it fails; b is OPEN again for 800ms.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let got = spread(&gw, 10).await;
    assert_eq!(b.hits(), 4, "one half-open probe: {got:?}");
    assert_eq!(
        next_event(&mut events, "circuit_half_opened").await["endpoint"],
        b.addr().to_string()
    );
    let e = next_event(&mut events, "circuit_opened").await;
    assert_eq!(e["reason"], "half_open_probe_failed");
    assert_eq!(e["open_for_ms"], 800, "the open duration doubles");

    // b recovers: the next probe succeeds and closes the breaker; b serves its share again.
    b.update(|x| x.status = 200);
    tokio::time::sleep(Duration::from_millis(850)).await;
    let got = spread(&gw, 30).await;
    next_event(&mut events, "circuit_closed").await;
    assert!(got.get("b").copied().unwrap_or(0) >= 8, "{got:?}");
}

#[tokio::test]
async fn all_endpoints_open_gives_503_with_retry_after() {
    let a = FakeUpstream::start("a").await;
    a.update(|x| x.status = 502);
    let gw = gateway(
        &[&a],
        &format!("{NO_ACTIVE}    retries: {{ attempts: 0 }}\n    circuit_breaker: {{ consecutive_failures: 2, open_duration: 7s }}\n"),
    )
    .await;
    spread(&gw, 2).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((6..=7).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "no_eligible_endpoint");
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn max_ejection_percent_keeps_part_of_the_cluster() {
    let ups = [
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    ];
    for u in &ups {
        u.update(|x| x.status = 500);
    }
    let refs: Vec<&FakeUpstream> = ups.iter().collect();
    let gw = gateway(
        &refs,
        &format!("{NO_ACTIVE}    retries: {{ attempts: 0 }}\n    circuit_breaker: {{ consecutive_failures: 2, open_duration: 30s }}\n    outlier_detection: {{ max_ejection_percent: 50% }}\n"),
    )
    .await;
    spread(&gw, 30).await;
    let rt = gw.gateway().runtime();
    let open = ups
        .iter()
        .filter(|u| {
            rt.endpoint("backend", &u.addr().to_string())
                .unwrap()
                .breaker_state()
                != gatehouse::cluster::breaker::State::Closed
        })
        .count();
    assert_eq!(open, 1, "50 % of 3 rounds down to 1 ejected endpoint");
}

#[tokio::test]
async fn active_checks_find_a_killed_backend_and_its_return() {
    let a = FakeUpstream::start("a").await;
    let mut b = FakeUpstream::start("b").await;
    let gw = gateway(
        &[&a, &b],
        "    health_check: { interval: 100ms, timeout: 100ms, jitter: 0%, unhealthy_threshold: 2, healthy_threshold: 2 }\n    retries: { attempts: 0 }\n    slow_start: 0s\n    outlier_detection: { panic_threshold: 0% }\n    circuit_breaker: { enabled: false }\n",
    )
    .await;
    let mut events = gw.gateway().runtime().events.subscribe();
    b.stop().await;
    let e = next_event(&mut events, "health_changed").await;
    assert_eq!(
        (e["endpoint"].as_str().unwrap(), e["to"].as_str().unwrap()),
        (b.addr().to_string().as_str(), "DOWN")
    );
    assert_eq!(e["from"], "HEALTHY");
    // DOWN endpoints get no traffic: every request succeeds on a.
    let got = spread(&gw, 20).await;
    assert_eq!(got.get("a"), Some(&20), "{got:?}");
    b.restart().await;
    let e = next_event(&mut events, "health_changed").await;
    assert_eq!(e["to"], "HEALTHY");
    let got = spread(&gw, 20).await;
    assert_eq!(got.get("b"), Some(&10), "{got:?}");
}

#[tokio::test]
async fn panic_threshold_ignores_a_broken_health_check() {
    let ups = [
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    ];
    // b and c fail their health check but serve traffic fine.
    for u in &ups[1..] {
        u.update(|x| x.path_status = vec![("/healthz".into(), 503)]);
    }
    let refs: Vec<&FakeUpstream> = ups.iter().collect();
    let hc = "    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, jitter: 0%, unhealthy_threshold: 1 }\n    slow_start: 0s\n";
    let gw = gateway(
        &refs,
        &format!("{hc}    outlier_detection: {{ panic_threshold: 50% }}\n"),
    )
    .await;
    let rt = gw.gateway().runtime().clone();
    let down = |u: &FakeUpstream| {
        rt.endpoint("backend", &u.addr().to_string())
            .unwrap()
            .health()
            == gatehouse::cluster::endpoint::Health::Down
    };
    eventually("b and c DOWN", Duration::from_secs(5), || async {
        (down(&ups[1]) && down(&ups[2])).then_some(())
    })
    .await;
    // 1 of 3 passes (33 % < 50 %): panic mode balances over all three.
    let got = spread(&gw, 30).await;
    assert_eq!(
        (got.get("a"), got.get("b"), got.get("c")),
        (Some(&10), Some(&10), Some(&10)),
        "{got:?}"
    );

    // With the threshold at 30 %, 33 % passing is enough: only a gets traffic.
    let gw2 = gateway(
        &refs,
        &format!("{hc}    outlier_detection: {{ panic_threshold: 30% }}\n"),
    )
    .await;
    let rt2 = gw2.gateway().runtime().clone();
    eventually(
        "b and c DOWN in the second gateway",
        Duration::from_secs(5),
        || async {
            let d = |u: &FakeUpstream| {
                rt2.endpoint("backend", &u.addr().to_string())
                    .unwrap()
                    .health()
                    == gatehouse::cluster::endpoint::Health::Down
            };
            (d(&ups[1]) && d(&ups[2])).then_some(())
        },
    )
    .await;
    let got = spread(&gw2, 30).await;
    assert_eq!(got.get("a"), Some(&30), "{got:?}");
}

#[tokio::test]
async fn degraded_endpoint_gets_a_reduced_share() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    b.update(|x| x.headers = vec![("x-health".into(), "degraded".into())]);
    let gw = gateway(
        &[&a, &b],
        "    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, jitter: 0% }\n    slow_start: 0s\n    outlier_detection: { degraded_weight: 20% }\n",
    )
    .await;
    let mut events = gw.gateway().runtime().events.subscribe();
    let e = next_event(&mut events, "health_changed").await;
    assert_eq!(e["to"], "DEGRADED");
    assert_eq!(e["endpoint"], b.addr().to_string());
    let got = spread(&gw, 400).await;
    let share = got.get("b").copied().unwrap_or(0) as f64 / 400.0;
    // Round robin would give 50 %; at 20 % weight b keeps about 0.5 × 0.2 = 10 %.
    assert!((0.04..0.2).contains(&share), "b's share {share}: {got:?}");
}

#[tokio::test]
async fn slow_start_ramps_a_recovered_endpoint() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let gw = gateway(
        &[&a, &b],
        &format!("{NO_ACTIVE}    retries: {{ attempts: 0 }}\n    slow_start: 3s\n    circuit_breaker: {{ consecutive_failures: 1, open_duration: 200ms }}\n"),
    )
    .await;
    let mut events = gw.gateway().runtime().events.subscribe();
    b.update(|x| x.status = 500);
    spread(&gw, 4).await;
    next_event(&mut events, "circuit_opened").await;
    b.update(|x| x.status = 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    spread(&gw, 4).await; // the probe closes it
    next_event(&mut events, "circuit_closed").await;
    let early = spread(&gw, 300).await;
    let early_share = early.get("b").copied().unwrap_or(0) as f64 / 300.0;
    let ep = gw
        .gateway()
        .runtime()
        .endpoint("backend", &b.addr().to_string())
        .unwrap();
    eventually("slow start to finish", Duration::from_secs(10), || async {
        (ep.slow_start_factor(tokio::time::Instant::now()) >= 1.0).then_some(())
    })
    .await;
    let late = spread(&gw, 300).await;
    let late_share = late.get("b").copied().unwrap_or(0) as f64 / 300.0;
    assert!(early_share < 0.35, "early {early_share}: {early:?}");
    assert!(
        (0.45..=0.55).contains(&late_share),
        "late {late_share}: {late:?}"
    );
    assert!(late_share > early_share + 0.1);
}

#[tokio::test]
async fn slow_probes_mark_an_endpoint_degraded() {
    let a = FakeUpstream::start("a").await;
    a.update(|x| x.delay = Duration::from_millis(120));
    let gw = gateway(
        &[&a],
        "    health_check: { path: /healthz, interval: 300ms, timeout: 300ms, jitter: 0%, degraded_latency: 50ms }\n",
    )
    .await;
    let mut events = gw.gateway().runtime().events.subscribe();
    let e = next_event(&mut events, "health_changed").await;
    assert_eq!(
        (e["to"].as_str(), e["reason"].as_str()),
        (Some("DEGRADED"), Some("degraded"))
    );
    a.update(|x| x.delay = Duration::ZERO);
    let e = next_event(&mut events, "health_changed").await;
    assert_eq!(
        (e["from"].as_str(), e["to"].as_str()),
        (Some("DEGRADED"), Some("HEALTHY"))
    );
}
