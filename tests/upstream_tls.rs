//! TLS to endpoints: verified against a CA (and failing against another), the SNI sent,
//! `insecure_skip_verify`, a client certificate for backends that require one, HTTP/2 over TLS
//! (`protocol: http2`, as gRPC uses), pooled connections reused.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::pki::{self, Pki};
use gatehouse_testkit::TestGateway;
use std::time::Duration;

fn config(backend: std::net::SocketAddr, cluster_extra: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nclusters:\n  - name: backend\n    health_check: {{interval: 1h}}\n    retries: {{attempts: 0}}\n    endpoints: [{{address: '{backend}'}}]\n{cluster_extra}routes:\n  - name: all\n    cluster: backend\n"
    )
}

#[tokio::test]
async fn verified_tls_to_the_backend_with_sni_and_pooled_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let leaf = ca.leaf("backend", &["backend.internal"]);
    let (addr, seen, accepted) = pki::tls_backend(&leaf, None).await;
    let tls = format!(
        "    tls: {{ca: '{}', sni: backend.internal}}\n",
        ca.ca_file("ca").display()
    );
    let gw = TestGateway::start(&config(addr, &tls)).await;
    let c = common::client();
    for _ in 0..5 {
        let r = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "tls backend");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert!(seen
        .iter()
        .all(|s| s.sni.as_deref() == Some("backend.internal")));
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_11));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one pooled connection"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_backend_certificate_from_another_ca_fails_unless_verification_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let other = Pki::new(dir.path(), "other");
    let leaf = other.leaf("backend", &["backend.internal"]);
    let (addr, seen, _) = pki::tls_backend(&leaf, None).await;
    let verified = format!(
        "    tls: {{ca: '{}', sni: backend.internal}}\n",
        ca.ca_file("ca").display()
    );
    let gw = TestGateway::start(&config(addr, &verified)).await;
    let r = common::client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "upstream_tls_failed");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(seen.lock().unwrap().is_empty(), "no request reached it");
    gw.shutdown(Duration::from_secs(2)).await;

    let gw = TestGateway::start(&config(addr, "    tls: {insecure_skip_verify: true}\n")).await;
    let r = common::client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An IP endpoint without `sni`: no SNI is sent.
    assert_eq!(seen.lock().unwrap()[0].sni, None);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_client_certificate_for_a_backend_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let leaf = ca.leaf("backend", &["backend.internal"]);
    let me = ca.client("gateway", "gateway");
    let (addr, seen, _) = pki::tls_backend(&leaf, Some(&ca.ca_pem)).await;
    let base = format!(
        "ca: '{}', sni: backend.internal",
        ca.ca_file("ca").display()
    );
    let gw = TestGateway::start(&config(addr, &format!("    tls: {{{base}}}\n"))).await;
    let r = common::client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(
        r.status(),
        502,
        "the backend refuses a gateway without a certificate"
    );
    gw.shutdown(Duration::from_secs(2)).await;
    let with_cert = format!(
        "    tls: {{{base}, client_cert: {{cert: '{}', key: '{}'}}}}\n",
        me.cert.display(),
        me.key.display()
    );
    let gw = TestGateway::start(&config(addr, &with_cert)).await;
    let r = common::client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(seen.lock().unwrap().last().unwrap().client_cert);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http2_over_tls_to_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let leaf = ca.leaf("backend", &["grpc.internal"]);
    let (addr, seen, accepted) = pki::tls_backend(&leaf, None).await;
    let tls = format!(
        "    protocol: http2\n    tls: {{ca: '{}', sni: grpc.internal}}\n",
        ca.ca_file("ca").display()
    );
    let gw = TestGateway::start(&config(addr, &tls)).await;
    let c = common::client();
    for _ in 0..3 {
        let r = c
            .post(gw.url("/pkg.Service/Call"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one multiplexed connection"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn a_missing_ca_file_is_a_config_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(
        &path,
        config(
            "127.0.0.1:9".parse().unwrap(),
            "    tls: {ca: nowhere.pem}\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("clusters[0].tls.ca"), "{err}");
    assert!(err.contains("nowhere.pem: cannot read file"), "{err}");
}
