//! Security filters fail closed: a filter that refers to something missing or malformed is a
//! `check` error with its line, `run` refuses to start, a reload is refused and the running
//! config keeps serving; and a filter that passes validation but cannot be built (a key file
//! that cannot be read) makes the snapshot fail to build instead of vanishing from its route.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use gatehouse_testkit::{FakeUpstream, TestGateway};
use std::process::Command;

/// A config with a protected route; `filters` and `extra` (top-level sections) vary per case.
fn config(upstream: &str, filters: &str, extra: &str) -> String {
    format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\n\
         clusters: [{{name: app, endpoints: [{{address: '{upstream}'}}], health_check: {{enabled: false}}}}]\n\
         consumers: [{{name: alice, api_keys: ['sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b']}}]\n\
         rate_limits: [{{name: per-client, rate: 5/s}}]\n\
         jwt_issuers: [{{name: corp, algorithms: [HS256], secret_env: GH_TEST_SECRET}}]\n\
         {extra}\
         routes:\n  - name: admin\n    match: {{path_prefix: /admin}}\n    cluster: app\n    filters: {filters}\n"
    )
}

/// (case, filters, extra top-level text, field path and message the error must name, text on
/// the line it must point at)
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "jwt issuer that does not exist",
        "[{auth: {jwt: {issuer: nobody}}}]",
        "",
        "routes[0].filters[0].auth.jwt.issuer: no jwt issuer named \"nobody\"",
        "nobody",
    ),
    (
        "rate limit that does not exist",
        "[{rate_limit: nolimit}]",
        "",
        "routes[0].filters[0].rate_limit: no rate limit named \"nolimit\"",
        "nolimit",
    ),
    (
        "a rate that does not parse",
        "[{rate_limit: fast}]",
        "rate_limits: [{name: fast, rate: fast}]\n",
        "rate_limits[0].rate: invalid rate \"fast\"",
        "rate: fast",
    ),
    (
        "a plaintext api key",
        "[{auth: {api_key: {}}}]",
        "consumers: [{name: bob, api_keys: [hunter2]}]\n",
        "consumers[0].api_keys[0]: expected sha256:<64 hex digits>",
        "hunter2",
    ),
    (
        "store: redis without a redis section",
        "[{rate_limit: shared}]",
        "rate_limits: [{name: shared, rate: 5/s, store: redis}]\n",
        "rate_limits[0].store: store: redis needs a top-level redis section",
        "store: redis",
    ),
    (
        "a fault filter that does nothing",
        "[{fault: {percent: 50%}}]",
        "",
        "routes[0].filters[0].fault: use exactly one of abort and delay",
        "fault:",
    ),
    (
        "an api key header that is not a header name",
        "[{auth: {api_key: {header: 'x key'}}}]",
        "",
        "routes[0].filters[0].auth.api_key.header: invalid header name \"x key\"",
        "x key",
    ),
];

/// The later `consumers:` / `rate_limits:` line replaces the default one, so the case's text
/// is the one that counts.
fn case_config(upstream: &str, filters: &str, extra: &str) -> String {
    let mut text = config(upstream, filters, "");
    for line in extra.lines() {
        let key = line.split(':').next().unwrap();
        let mut out = String::new();
        for l in text.lines() {
            if l.starts_with(&format!("{key}:")) {
                out.push_str(line);
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
        text = out;
    }
    text
}

fn gatehouse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("GH_TEST_SECRET", "a-long-enough-test-secret-0123456789")
        .output()
        .unwrap()
}

#[test]
fn check_and_run_refuse_every_unbuildable_filter_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, filters, extra, wanted, needle) in CASES {
        let path = dir.path().join("gw.yaml");
        let text = case_config("127.0.0.1:9", filters, extra);
        let line = 1 + text.lines().position(|l| l.contains(needle)).unwrap();
        std::fs::write(&path, &text).unwrap();
        let p = path.to_str().unwrap();
        let out = gatehouse(&["check", p]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: check accepted it");
        assert!(err.contains(wanted), "{name}: {err}");
        assert!(
            err.contains(&format!("{p}:{line}:")),
            "{name}: line {line}: {err}"
        );

        let out = gatehouse(&["run", "-c", p]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: run started");
        assert!(err.contains(wanted), "{name}: run: {err}");
    }
}

#[test]
fn a_key_file_that_cannot_be_read_is_a_check_error_not_an_open_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let text = config("127.0.0.1:9", "[{auth: {jwt: {issuer: files}}}]", "").replace(
        "jwt_issuers: [",
        "jwt_issuers: [{name: files, algorithms: [RS256], key_file: /nonexistent/key.pem}, ",
    );
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let out = gatehouse(&["check", p]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{p}:10:15: routes[0].filters[0]: auth.jwt: issuer \"files\": /nonexistent/key.pem"
        )),
        "{err}"
    );
    let out = gatehouse(&["run", "-c", p]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_filter_that_cannot_be_built_fails_the_snapshot_and_the_running_one_stays() {
    std::env::set_var("GH_TEST_SECRET", "a-long-enough-test-secret-0123456789");
    let app = FakeUpstream::start("app").await;
    let good = config(&app.addr().to_string(), "[{auth: {api_key: {}}}]", "");
    let gw = TestGateway::start(&good).await;
    let rt = gw.gateway().runtime().clone();
    let c = common::client();
    assert_eq!(c.get(gw.url("/admin")).send().await.unwrap().status(), 401);

    // Validation passes (the path looks fine), building does not: the key file is missing.
    let bad = config(
        &app.addr().to_string(),
        "[{auth: {jwt: {issuer: files}}}]",
        "",
    )
    .replace(
        "jwt_issuers: [",
        "jwt_issuers: [{name: files, algorithms: [ES256], key_file: /nonexistent/key.pem}, ",
    );
    let cfg = gatehouse_config::load_str(&bad, "<test>").unwrap();
    let generation = rt.snapshot().generation;
    let errors = rt.apply(cfg).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "routes[0].filters[0]");
    assert!(errors[0].1.contains("/nonexistent/key.pem"), "{errors:?}");
    assert_eq!(
        rt.snapshot().generation,
        generation,
        "nothing was published"
    );
    assert_eq!(c.get(gw.url("/admin")).send().await.unwrap().status(), 401);

    // And a gateway cannot start from it at all.
    let cfg = gatehouse_config::load_str(&bad, "<test>").unwrap();
    let started = gatehouse::Gateway::start(cfg, None).await;
    let err = started.err().expect("refused").to_string();
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
    gw.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_reload_to_an_invalid_rate_is_refused_and_limits_keep_working() {
    let app = FakeUpstream::start("app").await;
    let text = config(&app.addr().to_string(), "[{rate_limit: per-client}]", "")
        .replace("rate: 5/s", "rate: 2/m");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, &text).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let c = common::client();
    for _ in 0..2 {
        assert_eq!(c.get(gw.url("/admin")).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(gw.url("/admin")).send().await.unwrap().status(), 429);

    std::fs::write(&path, text.replace("rate: 2/m", "rate: lots")).unwrap();
    let errors = gw.gateway().reload("test").await.unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("rate_limits[0].rate: invalid rate \"lots\"")),
        "{errors:?}"
    );
    assert_eq!(c.get(gw.url("/admin")).send().await.unwrap().status(), 429);
    gw.shutdown(std::time::Duration::from_secs(2)).await;
}
