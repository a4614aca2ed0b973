//! The shipped monitoring files (`deploy/prometheus/alerts.yaml` with its unit tests,
//! `deploy/grafana/gatehouse.json`) against the metrics the gateway really exports:
//!
//! - `promtool check rules` and `promtool test rules` pass;
//! - the shipped binary runs with a config that makes every referenced series exist, and every
//!   PromQL expression of the alerts and the dashboard (panel targets and template variables)
//!   names only metrics it exports, label names those metrics carry, and equality or regex
//!   matchers that select at least one series of its `/metrics`; grouping labels, legend
//!   labels and the alerts' `$labels.x` are labels the expression's result can have;
//! - a real Prometheus (Debian's `prometheus` package, installed by the test command like
//!   promtool) scrapes that gateway: every expression is accepted by its query API, every
//!   dashboard query returns data, every alert rule evaluates without error, and the alerts the
//!   test provoked (breaker open, endpoint and cluster down, 5xx ratio, retry budget,
//!   certificate expiring, reload failed) become pending or firing, while the healthy route,
//!   cluster and certificate raise none.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "../common/mod.rs"]
mod common;
mod prometheus;
mod promql;

use common::binary::Running;
use common::client;
use gatehouse_testkit::{Behavior, FakeUpstream};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Labels Prometheus adds to every scraped series: not in `/metrics`, valid in expressions.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool is not installed: run ./scripts/test.sh, which installs Debian's prometheus package");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {}:\n{report}",
        args.join(" ")
    );
    report
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let report = promtool(&["check", "rules", "deploy/prometheus/alerts.yaml"]);
    assert!(report.contains("SUCCESS"), "{report}");
    let report = promtool(&["test", "rules", "deploy/prometheus/alerts.test.yaml"]);
    assert!(report.contains("SUCCESS"), "{report}");
}

// ---------------------------------------------------------------------------------------
// The expressions shipped.

/// One PromQL expression and where it comes from.
#[derive(Debug, Clone)]
struct Expr {
    origin: String,
    promql: String,
    /// For a Grafana `label_values(selector, label)` variable: the label.
    label_values_of: Option<String>,
    /// Labels the result must carry: a panel target's `{{x}}` legend, an alert's `$labels.x`.
    uses_labels: BTreeSet<String>,
    /// A dashboard panel query (must return data from a scraping Prometheus).
    panel: bool,
}

fn alert_rules() -> Vec<(String, Expr)> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            let mut uses = BTreeSet::new();
            for (key, a) in rule["annotations"].as_object().unwrap() {
                let a = a.as_str().unwrap();
                uses.extend(template_labels(a, "$labels."));
                assert!(!a.trim().is_empty(), "{name}: empty annotation {key}");
            }
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity label"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key].is_string(),
                    "{name} has no {key} annotation"
                );
            }
            out.push((
                name.clone(),
                Expr {
                    origin: format!("alert {name}"),
                    promql: rule["expr"].as_str().unwrap().to_string(),
                    label_values_of: None,
                    uses_labels: uses,
                    panel: false,
                },
            ));
        }
    }
    out
}

/// Every `{{ $labels.x }}`-style use after `prefix` in a template.
fn template_labels(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every `{{x}}` of a Grafana legend.
fn legend_labels(legend: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = legend;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").expect("unclosed {{ in a legend");
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/gatehouse.json")).unwrap())
        .unwrap()
}

/// The dashboard's template variables: name → `label_values(...)` query (None: not a query).
fn dashboard_variables(d: &Value) -> BTreeMap<String, Option<String>> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let q = match &v["query"] {
                Value::String(s) if v["type"] == "query" => Some(s.clone()),
                Value::Object(o) if v["type"] == "query" => {
                    let q = o["query"].as_str().unwrap().to_string();
                    // Grafana shows `definition` and runs `query.query`: one text.
                    assert_eq!(v["definition"], q.as_str(), "variable {}", v["name"]);
                    Some(q)
                }
                _ => None,
            };
            (v["name"].as_str().unwrap().to_string(), q)
        })
        .collect()
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn dashboard_exprs(d: &Value) -> Vec<Expr> {
    let mut out = Vec::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let legend = t["legendFormat"].as_str().unwrap_or("");
            out.push(Expr {
                origin: format!("panel {title:?} target {}", t["refId"]),
                promql: t["expr"].as_str().unwrap().to_string(),
                label_values_of: None,
                uses_labels: legend_labels(legend).into_iter().collect(),
                panel: true,
            });
        }
    }
    for (name, q) in dashboard_variables(d) {
        let Some(q) = q else { continue };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(selector, label): {q}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {name}: label_values needs a selector: {q}"));
        out.push(Expr {
            origin: format!("variable ${name}"),
            promql: selector.trim().to_string(),
            label_values_of: Some(label.trim().to_string()),
            uses_labels: BTreeSet::new(),
            panel: false,
        });
    }
    out
}

/// Grafana's variables replaced by what Grafana would send for "All" (and a concrete rate
/// interval); a `$` left over is an undefined variable.
fn substitute(e: &Expr, vars: &BTreeMap<String, Option<String>>) -> String {
    let mut s = e
        .promql
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    for name in vars.keys() {
        s = s
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    assert!(
        !s.contains('$'),
        "{}: a variable the dashboard does not define: {}",
        e.origin,
        e.promql
    );
    s
}

#[test]
fn dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(d["uid"], "gatehouse");
    let vars = dashboard_variables(&d);
    for v in ["DS_PROMETHEUS", "cluster", "route"] {
        assert!(vars.contains_key(v), "no ${v} variable");
    }
    let mut ids = BTreeSet::new();
    let ps = panels(&d);
    for p in &ps {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id twice: {title}"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
    // What the issue asks the dashboard to show, by the metric each panel must query.
    let all: String = dashboard_exprs(&d)
        .iter()
        .map(|e| e.promql.clone())
        .collect();
    for needed in [
        "gatehouse_requests_total",
        "gatehouse_request_duration_seconds_bucket",
        "gatehouse_upstream_request_duration_seconds_bucket",
        "gatehouse_endpoint_health",
        "gatehouse_endpoint_breaker_state",
        "gatehouse_retries_total",
        "gatehouse_retry_budget_exhausted_total",
        "gatehouse_rate_limit_decisions_total",
        "gatehouse_auth_failures_total",
        "gatehouse_cache_lookups_total",
        "gatehouse_requests_in_flight",
        "gatehouse_downstream_connections",
        "gatehouse_config_reloads_total",
        "gatehouse_config_generation",
        "gatehouse_tls_certificate_expiry_timestamp_seconds",
        "gatehouse_access_log_dropped_lines_total",
    ] {
        assert!(all.contains(needed), "no panel queries {needed}");
    }
    for q in [0.5, 0.95, 0.99] {
        assert!(
            all.contains(&format!("histogram_quantile({q},")),
            "no p{q} latency"
        );
    }
}

use prometheus::Prometheus;
use promql::*;

// ---------------------------------------------------------------------------------------
// The gateway, with traffic that makes every referenced series exist.

const CONSUMER_KEY_DIGEST: &str =
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A self-signed certificate for `name`, valid until `not_after` (Unix seconds), written as
/// `<dir>/<name>.crt` and `.key`.
fn certificate(dir: &Path, name: &str, not_after: u64) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn admin_metrics(admin: std::net::SocketAddr) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const SOON: &str = "soon.gatehouse.test";
const LATER: &str = "later.gatehouse.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_query_what_the_gateway_exports() {
    // Backends: `ok` answers 200 (cacheable), `bad1`/`bad2` answer 503; `dead` is a closed port.
    let ok = FakeUpstream::start("ok").await;
    ok.set(Behavior {
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Behavior::default()
    });
    let (bad1, bad2) = (
        FakeUpstream::start("bad1").await,
        FakeUpstream::start("bad2").await,
    );
    bad1.update(|b| b.status = 503);
    bad2.update(|b| b.status = 503);
    let tripped = FakeUpstream::start("tripped").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The TLS listener's port is picked here (Running reports only the first listener's).
    let tls_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let now = unix_now();
    let (soon_crt, soon_key) = certificate(certs.path(), SOON, now + 2 * 86400);
    let (later_crt, later_key) = certificate(certs.path(), LATER, now + 365 * 86400);
    let yaml = format!(
        r#"listeners:
  - {{name: public, address: '127.0.0.1:0'}}
  - name: secure
    address: '{tls_addr}'
    tls:
      certificates:
        - {{cert: '{}', key: '{}'}}
        - {{cert: '{}', key: '{}'}}
admin: {{address: '127.0.0.1:0'}}
consumers: [{{name: c1, api_keys: ['{CONSUMER_KEY_DIGEST}']}}]
rate_limits: [{{name: tight, rate: 2/m, key: route}}]
clusters:
  - name: backend
    health_check: {{enabled: false}}
    endpoints: [{{address: '{}'}}]
  - name: flaky
    health_check: {{enabled: false}}
    circuit_breaker: {{enabled: false}}
    retries: {{budget: 10%, min_retries_per_second: 0}}
    endpoints: [{{address: '{}'}}, {{address: '{}'}}]
  - name: tripped
    health_check: {{enabled: false}}
    circuit_breaker: {{open_duration: 10m, max_open_duration: 10m}}
    endpoints: [{{address: '{}'}}]
  - name: dead
    health_check: {{interval: 1s, timeout: 500ms, unhealthy_threshold: 1}}
    endpoints: [{{address: '{dead}'}}]
routes:
  - {{name: api, match: {{path_prefix: /api}}, cluster: backend}}
  - {{name: cached, match: {{path_prefix: /cached}}, cluster: backend, filters: [cache: {{}}]}}
  - {{name: limited, match: {{path_prefix: /limited}}, cluster: backend, filters: [rate_limit: tight]}}
  - {{name: secure, match: {{path_prefix: /secure}}, cluster: backend, filters: [auth: {{api_key: {{}}}}]}}
  - {{name: broken, match: {{path_prefix: /broken}}, cluster: flaky}}
  - {{name: gone, match: {{path_prefix: /gone}}, cluster: dead}}
  - {{name: drill, match: {{path_prefix: /drill}}, cluster: tripped}}
"#,
        soon_crt.display(),
        soon_key.display(),
        later_crt.display(),
        later_key.display(),
        ok.addr(),
        bad1.addr(),
        bad2.addr(),
        tripped.addr(),
    );
    let gw = Running::start(&yaml, &[]);
    let admin = gw.admin_addr();
    let c = client();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    for _ in 0..5 {
        assert_eq!(c.get(url("/api/x")).send().await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get(url("/cached/x")).send().await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        c.get(url("/limited")).send().await.unwrap();
    }
    assert_eq!(c.get(url("/secure")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(url("/broken")).send().await.unwrap().status(), 503);
    c.get(url("/nowhere")).send().await.unwrap();
    // A TLS handshake on the secure listener (counted by result).
    let tls = common::pki::connect(tls_addr, SOON, &common::pki::Client::default())
        .await
        .unwrap();
    drop(tls);
    // The breaker of `tripped`'s endpoint, opened as a drill.
    let r = c
        .post(format!(
            "http://{admin}/clusters/tripped/endpoints/{}/breaker",
            tripped.addr()
        ))
        .json(&json!({"state": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Wait for the health checks to mark `dead` DOWN.
    let down = format!("gatehouse_endpoint_health{{cluster=\"dead\",endpoint=\"{dead}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = admin_metrics(admin).await;
        if metric_value(&text, &down) == Some(2.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "dead never DOWN:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Both reload results are exported from the start, at 0, before any reload: so the
    // failure alert's `increase()` sees the first failure (it happens below, once Prometheus
    // has scraped the 0).
    for result in ["success", "failure"] {
        assert_eq!(
            metric_value(
                &text,
                &format!("gatehouse_config_reloads_total{{result=\"{result}\"}}")
            ),
            Some(0.0),
            "{result}"
        );
    }
    let metrics = exposition(&text);

    // Every expression against the scrape.
    let d = dashboard();
    let vars = dashboard_variables(&d);
    let rules = alert_rules();
    let mut exprs: Vec<Expr> = rules.iter().map(|(_, e)| e.clone()).collect();
    exprs.extend(dashboard_exprs(&d));
    let problems: Vec<String> = exprs
        .iter()
        .flat_map(|e| check_against(e, &substitute(e, &vars), &metrics))
        .collect();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n\nthe gateway's /metrics:\n{text}",
        problems.len(),
        problems.join("\n")
    );

    // A real Prometheus scraping the gateway, with the alert rules loaded.
    let prom = Prometheus::start(admin, &repo("deploy/prometheus/alerts.yaml")).await;
    // Traffic to the failing route all along (bounded: at most 1500 requests, 20 a second).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, c, u) = (stop.clone(), c.clone(), url("/broken"));
        tokio::spawn(async move {
            for _ in 0..1500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = c.get(&u).send().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let p = &prom;
    prom.until(
        "three scrapes of the gateway",
        Duration::from_secs(60),
        move || async move {
            let r = p
                .query("count_over_time(gatehouse_build_info{job=\"gatehouse\"}[1m])")
                .await;
            let n: f64 = r["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if n >= 3.0 {
                Ok(())
            } else {
                Err(format!("{r}"))
            }
        },
    )
    .await;

    // A reload that fails: the file is broken; the gateway keeps running its config.
    std::fs::write(gw._dir.path().join("gatehouse.yaml"), "routes: 42\n").unwrap();
    let r = c
        .post(format!("http://{admin}/reload"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Every expression parses and evaluates; every dashboard query and every selector returns
    // series; every label_values variable finds values.
    let mut failures = Vec::new();
    for e in &exprs {
        let promql = substitute(e, &vars);
        let r = prom.query(&promql).await;
        if r["status"] != "success" {
            failures.push(format!("{}: {}\n    {promql}", e.origin, r));
            continue;
        }
        if e.panel && r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            failures.push(format!("{}: no data\n    {promql}", e.origin));
        }
        if let Some(l) = &e.label_values_of {
            let r = prom.query(&format!("count by ({l}) ({promql})")).await;
            let found = r["data"]["result"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["metric"][l].is_string()));
            if !found {
                failures.push(format!("{}: label_values finds no {l}: {r}", e.origin));
            }
        }
        for s in parse(&promql).selectors {
            let r = prom.query(&format!("count({})", s.promql())).await;
            if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                failures.push(format!(
                    "{}: {} selects nothing in Prometheus",
                    e.origin,
                    s.promql()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every rule evaluated without error.
    let n_rules = rules.len();
    prom.until(
        "every rule evaluated and healthy",
        Duration::from_secs(30),
        move || async move {
            let r = p.get("/api/v1/rules", &[]).await;
            let rules: Vec<&Value> = r["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .collect();
            let healthy = rules.iter().filter(|r| r["health"] == "ok").count();
            if rules.len() == n_rules && healthy == n_rules {
                Ok(())
            } else {
                Err(format!("{r:#}"))
            }
        },
    )
    .await;

    // The alerts the test provoked become pending (their `for` has not passed) or firing.
    let dead_s = dead.to_string();
    let tripped_s = tripped.addr().to_string();
    let expected: &[(&str, &str, &str)] = &[
        ("GatehouseCircuitBreakerOpen", "endpoint", &tripped_s),
        ("GatehouseEndpointDown", "endpoint", &dead_s),
        ("GatehouseClusterDown", "cluster", "dead"),
        ("GatehouseRoute5xxRatioHigh", "route", "broken"),
        ("GatehouseRetryBudgetExhausted", "cluster", "flaky"),
        ("GatehouseTLSCertificateExpiringSoon", "name", SOON),
        ("GatehouseTLSCertificateExpiryCritical", "name", SOON),
        ("GatehouseConfigReloadFailed", "job", "gatehouse"),
    ];
    let alerts = prom
        .until(
            "the provoked alerts",
            Duration::from_secs(60),
            move || async move {
                let r = p.get("/api/v1/alerts", &[]).await;
                let alerts = r["data"]["alerts"].as_array().cloned().unwrap_or_default();
                let missing: Vec<_> = expected
                    .iter()
                    .filter(|(name, label, value)| {
                        !alerts.iter().any(|a| {
                            a["labels"]["alertname"] == *name && a["labels"][*label] == *value
                        })
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(alerts)
                } else {
                    Err(format!("missing {missing:?} among {alerts:#?}"))
                }
            },
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let reload = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "GatehouseConfigReloadFailed")
        .unwrap();
    assert_eq!(reload["state"], "firing", "no `for`: fires at once");
    for a in &alerts {
        let l = &a["labels"];
        assert!(
            l["cluster"] != "backend" && l["route"] != "api" && l["name"] != LATER,
            "an alert about something healthy: {a:#}"
        );
        for k in ["summary", "description"] {
            let text = a["annotations"][k].as_str().unwrap();
            assert!(!text.contains("<no value>"), "{k} of {a:#}");
        }
    }
    drop(gw);
}
