//! Where config comes from, through the shipped binary: `${VAR}` from the environment,
//! `*_file` secrets, the `services:` shorthand, `gatehouse schema` in sync with the file in the
//! repo, and `check` reporting every problem at once. Secrets never show in `GET /config`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::{check_refused, Running};
use gatehouse_testkit::FakeUpstream;

use common::timed_client as client;

#[test]
fn the_schema_in_the_repo_is_what_the_binary_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/gatehouse.schema.json");
    let in_repo = std::fs::read_to_string(file).unwrap();
    assert!(
        printed == in_repo,
        "schema/gatehouse.schema.json is stale: run `cargo run -- schema > schema/gatehouse.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert!(v["$defs"]["Cluster"]["properties"]["endpoints"].is_object());
}

#[test]
fn check_reports_a_type_error_an_unknown_key_and_a_bad_reference_together() {
    let err = check_refused(
        "listeners: [{name: l, address: \"127.0.0.1:0\"}]\nclusters:\n  - name: c\n    endpoints:\n      - address: 127.0.0.1:1\n        weight: heavy\n    retires: 2\nroutes:\n  - name: r\n    cluster: nope\n",
    );
    assert!(
        err.contains(":6:17: clusters[0].endpoints[0].weight: "),
        "{err}"
    );
    assert!(
        err.contains(":7:5: clusters[0].retires: unknown field"),
        "{err}"
    );
    assert!(
        err.contains(":10:5: routes[0].cluster: no cluster named \"nope\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn an_unset_variable_is_refused_with_its_line() {
    let err = check_refused(
        "listeners: [{name: l, address: \"127.0.0.1:0\"}]\nclusters:\n  - name: c\n    endpoints: [{address: \"${GATEHOUSE_TEST_UNSET_BACKEND}\"}]\n",
    );
    assert!(
        err.contains(":4:") && err.contains("GATEHOUSE_TEST_UNSET_BACKEND is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn variables_and_secret_files_fill_the_config_and_stay_hidden() {
    let up = FakeUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("redis-url"),
        "redis://:pw-from-a-file@127.0.0.1:1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("admin-token"),
        "admin-token-from-a-file-0123\n",
    )
    .unwrap();
    let path = dir.path().join("gatehouse.yaml");
    // Relative `*_file` names are taken against the config file's directory.
    std::fs::write(
        &path,
        r#"
listeners: [{name: l, address: "127.0.0.1:${GH_TEST_PORT:-0}"}]
admin: {address: "127.0.0.1:0", token_file: admin-token}
redis: {url_file: redis-url}
clusters:
  - name: c
    health_check: {enabled: false}
    request_headers: {set: {x-api-key: "${GH_TEST_BACKEND_KEY}"}}
    endpoints: [{address: "${GH_TEST_BACKEND}"}]
routes: [{name: r, cluster: c}]
"#,
    )
    .unwrap();
    let backend = up.addr().to_string();
    let gw = Running::start_with_env(
        &path,
        &[
            ("GH_TEST_BACKEND", &backend),
            ("GH_TEST_BACKEND_KEY", "backend-key-from-env-42"),
        ],
    );
    let c = client();
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.last_seen().headers.get("x-api-key").unwrap(),
        "backend-key-from-env-42"
    );

    let admin = format!("http://{}/config", gw.admin_addr());
    let refused = c.get(&admin).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the token from the file is required");
    let shown = c
        .get(&admin)
        .bearer_auth("admin-token-from-a-file-0123")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [
        "backend-key-from-env-42",
        "pw-from-a-file",
        "admin-token-from-a-file",
        &backend,
    ] {
        assert!(!shown.contains(secret), "{secret} in GET /config: {shown}");
    }
    assert!(shown.contains("${GH_TEST_BACKEND_KEY}"), "{shown}");
    assert!(shown.contains("${GH_TEST_BACKEND}"), "{shown}");
}

#[tokio::test]
async fn the_services_shorthand_runs_and_shows_its_expansion() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let orders = FakeUpstream::start("orders").await;
    let yaml = format!(
        "listeners: [{{name: l, address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nservices:\n  product: [http://{}, http://{}]\n  orders: [\"{}\"]\n",
        a.addr(),
        b.addr(),
        orders.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    for _ in 0..4 {
        let r = c
            .get(format!("http://{}/v1/proxy/product/items/7", gw.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (2, 2), "round robin");
    assert_eq!(a.last_seen().uri.path(), "/items/7");
    let r = c
        .get(format!("http://{}/v1/proxy/orders/1", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(orders.hits(), 1);
    let r = c
        .get(format!("http://{}/v1/proxy/nosuch/1", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let config: serde_json::Value = c
        .get(format!("http://{}/config", gw.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let clusters: Vec<&str> = config["config"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, ["orders", "product"]);
    assert_eq!(config["config"]["routes"][0]["name"], "services");
    assert_eq!(
        config["config"]["routes"][0]["cluster_from_path"]["allow"],
        serde_json::json!(["orders", "product"])
    );
}

#[test]
fn check_prints_what_services_expand_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        "services:\n  product: [http://localhost:9001, http://localhost:9002]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("services.product: cluster \"product\" (round robin over localhost:9001, localhost:9002)"),
        "{said}"
    );
    assert!(said.contains("listening on 0.0.0.0:8080"), "{said}");
    let err = check_refused("services:\n  product: [https://localhost:9001]\n");
    assert!(
        err.contains("services.product[0]: ") && err.contains("full form"),
        "{err}"
    );
}
