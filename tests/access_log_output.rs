//! The access log's destinations through the shipped binary: a file that `SIGUSR1` reopens
//! after logrotate moved it, `min_status` and `sample` choosing lines, `fields` choosing what
//! a line carries, and a reload changing the filter at once.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::{eventually, FakeUpstream};
use std::path::Path;
use std::time::Duration;

use common::timed_client as client;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn get(gw: &Running, path: &str) -> u16 {
    client()
        .get(format!("http://{}{path}", gw.addr))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn config(up: &FakeUpstream, log: &Path, access: &str) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
access_log: {{output: file, path: "{}"{access}}}
clusters: [{{name: c, health_check: {{enabled: false}}, retries: {{attempts: 1}}, endpoints: [{{address: "{}"}}]}}]
routes:
  - {{name: missing, match: {{path: /missing}}, direct_response: {{status: 404, body: nope}}}}
  - {{name: boom, match: {{path_prefix: /boom}}, direct_response: {{status: 500, body: boom}}}}
  - {{name: r, cluster: c}}
"#,
        log.display(),
        up.addr()
    )
}

#[tokio::test]
async fn a_file_is_reopened_on_sigusr1_after_logrotate_moved_it() {
    let up = FakeUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = Running::start(&config(&up, &log, ""), &[]);
    assert_eq!(get(&gw, "/one").await, 200);
    eventually(
        "the first line in the file",
        Duration::from_secs(5),
        || async { (lines(&log).len() == 1).then_some(()) },
    )
    .await;
    // logrotate: move the file, then tell the gateway.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("USR1");
    // A line written before the gateway reopened would land in the moved file; poll until a
    // fresh line reaches the new file.
    eventually(
        "lines reach the reopened file",
        Duration::from_secs(5),
        || async {
            get(&gw, "/two").await;
            (!lines(&log).is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(lines(&rotated)[0]["path"], "/one");
    assert!(lines(&log).iter().all(|l| l["path"] == "/two"));
}

#[tokio::test]
async fn min_status_sample_and_fields_choose_what_is_written_and_a_reload_changes_them() {
    let up = FakeUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml_path = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &yaml_path,
        config(
            &up,
            &log,
            ", min_status: 400, fields: [status, path, request_id]",
        ),
    )
    .unwrap();
    let gw = Running::start_with_env(&yaml_path, &[]);
    assert_eq!(get(&gw, "/ok").await, 200);
    assert_eq!(get(&gw, "/missing").await, 404);
    assert_eq!(get(&gw, "/boom/1").await, 500);
    let written = eventually("two lines", Duration::from_secs(5), || async {
        let l = lines(&log);
        (l.len() >= 2).then_some(l)
    })
    .await;
    let paths: Vec<&str> = written
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/missing", "/boom/1"],
        "the 200 is below min_status"
    );
    let keys: Vec<&String> = written[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["path", "request_id", "status"]);

    // sample: 0% keeps no line below 500 but every 5xx; the reload applies it at once.
    std::fs::write(&yaml_path, config(&up, &log, ", sample: 0%")).unwrap();
    gw.signal("HUP");
    eventually(
        "the reload took the new filter",
        Duration::from_secs(5),
        || async {
            get(&gw, "/boom/2").await;
            lines(&log)
                .iter()
                .any(|l| l["path"] == "/boom/2" && l.get("time").is_some())
                .then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get(&gw, "/sampled-out").await, 200);
    }
    assert_eq!(get(&gw, "/missing").await, 404);
    assert_eq!(get(&gw, "/boom/last").await, 500);
    let all = eventually("the last 5xx line", Duration::from_secs(5), || async {
        let l = lines(&log);
        l.iter().any(|l| l["path"] == "/boom/last").then_some(l)
    })
    .await;
    assert!(
        all.iter()
            .all(|l| l["path"] != "/sampled-out" && l["path"] != "/missing"
                || l.get("time").is_none()),
        "sample: 0% wrote a line below 500: {all:?}"
    );
}

#[test]
fn check_refuses_a_file_output_without_a_path_and_unknown_fields() {
    let err = common::binary::check_refused(
        "listeners: [{name: l, address: \"127.0.0.1:0\"}]\naccess_log: {output: file, fields: [status, colour]}\n",
    );
    assert!(
        err.contains("access_log.path: output: file needs a path"),
        "{err}"
    );
    assert!(
        err.contains("access_log.fields[1]: unknown field \"colour\""),
        "{err}"
    );
}
