//! `GET /metrics`: Prometheus names and bounded labels, values that follow traffic, and the
//! output accepted by `promtool check metrics` (Debian's `prometheus` package, installed by the
//! test command).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_follow_traffic_and_pass_promtool() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    b.update(|x| x.status = 503);
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nconsumers: [{{name: c1, api_keys: ['sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']}}]\nrate_limits: [{{name: tight, rate: 2/m, key: route}}]\nclusters:\n  - name: backend\n    health_check: {{enabled: false}}\n    circuit_breaker: {{enabled: false}}\n    endpoints: [{{address: '{}'}}, {{address: '{}'}}]\nroutes:\n  - {{name: api, match: {{path_prefix: /api}}, cluster: backend}}\n  - {{name: limited, match: {{path_prefix: /limited}}, cluster: backend, filters: [rate_limit: tight]}}\n  - {{name: secure, match: {{path_prefix: /secure}}, cluster: backend, filters: [auth: {{api_key: {{}}}}]}}\n",
        a.addr(),
        b.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/api/x")).send().await.unwrap().status(),
            200,
            "retried onto a"
        );
    }
    for _ in 0..3 {
        c.get(gw.url("/limited")).send().await.unwrap();
    }
    c.get(gw.url("/secure")).send().await.unwrap();
    c.get(gw.url("/nowhere")).send().await.unwrap();
    let r = c.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();

    assert_eq!(
        value(
            &text,
            "gatehouse_requests_total{route=\"api\",status_class=\"2xx\"}"
        ),
        10.0
    );
    assert_eq!(
        value(
            &text,
            "gatehouse_requests_total{route=\"limited\",status_class=\"4xx\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "gatehouse_requests_total{route=\"none\",status_class=\"4xx\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "gatehouse_request_duration_seconds_count{route=\"api\"}"
        ),
        10.0
    );
    let a_ok = format!("gatehouse_upstream_requests_total{{cluster=\"backend\",endpoint=\"{}\",outcome=\"success\"}}", a.addr());
    let b_fail = format!("gatehouse_upstream_requests_total{{cluster=\"backend\",endpoint=\"{}\",outcome=\"failure\"}}", b.addr());
    assert!(value(&text, &a_ok) >= 10.0);
    assert!(value(&text, &b_fail) >= 5.0);
    assert_eq!(
        value(&text, "gatehouse_retries_total{cluster=\"backend\"}"),
        value(&text, &b_fail)
    );
    assert_eq!(value(&text, "gatehouse_rate_limit_decisions_total{route=\"limited\",policy=\"tight\",decision=\"allowed\"}"), 2.0);
    assert_eq!(value(&text, "gatehouse_rate_limit_decisions_total{route=\"limited\",policy=\"tight\",decision=\"limited\"}"), 1.0);
    assert_eq!(
        value(
            &text,
            "gatehouse_auth_failures_total{route=\"secure\",reason=\"missing_api_key\"}"
        ),
        1.0
    );
    assert_eq!(value(&text, "gatehouse_config_generation"), 1.0);
    assert_eq!(
        value(
            &text,
            &format!(
                "gatehouse_endpoint_breaker_state{{cluster=\"backend\",endpoint=\"{}\"}}",
                a.addr()
            )
        ),
        0.0
    );
    assert!(text.contains("gatehouse_build_info{version=\""));
    // Bounded labels: no client address or raw path anywhere.
    assert!(
        !text.contains("127.0.0.1\",") || !text.contains("client"),
        "no client labels"
    );
    assert!(!text.contains("/api/x") && !text.contains("/nowhere"));

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run ./scripts/test.sh, which installs Debian's prometheus package");
    let mut child = promtool;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert!(
        report.trim().is_empty(),
        "promtool found problems:\n{report}"
    );
}

#[tokio::test]
async fn openmetrics_when_asked() {
    let a = FakeUpstream::start("a").await;
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nclusters: [{{name: c, endpoints: [{{address: '{}'}}]}}]\nroutes: [{{name: r, cluster: c}}]\n",
        a.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let r = client()
        .get(gw.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.text().await.unwrap().trim_end().ends_with("# EOF"));
}
