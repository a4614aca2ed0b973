//! The `gatehouse` command: --help, --version, `check` on good and bad files, every example
//! config, the demo config, and `demo-backend`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

fn gatehouse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let out = gatehouse(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["run", "check", "demo", "demo-backend"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = gatehouse(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = gatehouse(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} example configs");
}

#[test]
fn check_reports_every_error_with_position_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - name: public\n    address: nowhere\nclusters:\n  - name: products\n    endpoints:\n      - address: 127.0.0.1:9001\n        weight: 0\nroutes:\n  - name: r\n    cluster: product\n",
    )
    .unwrap();
    let out = gatehouse(&["check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let f = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{f}:3:5: listeners[0].address: invalid address \"nowhere\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:8:9: clusters[0].endpoints[0].weight: invalid value 0"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{f}:11:5: routes[0].cluster: no cluster named \"product\" (did you mean \"products\"?)")), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");

    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "listeners:\n  - name: public\n    adress: 127.0.0.1:1\n",
    )
    .unwrap();
    let out = gatehouse(&["check", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(":3:5: listeners[0].adress: "), "{err}");
    assert!(err.contains("adress"), "{err}");

    let missing = gatehouse(&["check", "/nonexistent/gatehouse.yaml"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("cannot read file"));
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listeners: []\n").unwrap();
    let out = gatehouse(&["run", "-c", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("listeners: at least one listener is required"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn demo_config_is_valid() {
    let out = gatehouse(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let cfg = gatehouse_config::load_str(&yaml, "<demo>").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(cfg.clusters.len(), 4);
    assert!(cfg.routes.iter().any(|r| r.cluster_from_path.is_some()));
    // With a real port, the backends' are the three after it: what a run then uses.
    let out = gatehouse(&["demo", "--listen", "127.0.0.1:18080", "--print-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = gatehouse_config::load_str(&text(&out.stdout), "<demo>").unwrap();
    let products = cfg.clusters.iter().find(|c| c.name == "products").unwrap();
    let addrs: Vec<&str> = products
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"]
    );
}

/// Reads the child's stdout until a line starts with `prefix`; returns the rest of it.
fn read_line_starting(child: &mut std::process::Child, prefix: &str) -> String {
    use std::io::{BufRead, BufReader};
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("line printed")
}

#[tokio::test]
async fn the_demo_serves_through_its_backends() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = read_line_starting(&mut child, "Gateway: ");
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut backends = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = c
            .get(format!("{base}/v1/proxy/stable/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["path"], "/hello");
        backends.insert(body["backend"].as_str().unwrap().to_string());
    }
    assert_eq!(backends.into_iter().collect::<Vec<_>>(), ["alpha", "beta"]);
    let r = c
        .get(format!("{base}/api/slow?delay=3s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    // What the banner promises: gamma's 500s are retried on another endpoint ...
    for _ in 0..30 {
        let r = c.get(format!("{base}/api/products")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a failure of gamma reached the client");
    }
    // ... and three 500s in a row open gamma's breaker behind the flaky cluster.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = c
            .get(format!("{base}/v1/proxy/flaky/?status=500"))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [500, 500, 500, 503]);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn demo_backend_answers_with_its_name() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["demo-backend", "--listen", "127.0.0.1:0", "--name", "solo"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let line = BufReader::new(err)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("http://"))
        .expect("address line");
    let url = line[line.find("http://").unwrap()..].trim().to_string();
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{url}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend"], "solo");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["backend"], "solo");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn hash_key_digests_a_key_and_refuses_an_empty_one() {
    let out = gatehouse(&["hash-key", "k-123"]);
    assert!(out.status.success());
    let digest = text(&out.stdout);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let empty = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("hash-key")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!empty.status.success(), "an empty key was hashed");
    assert!(text(&empty.stderr).contains("the key is empty"));
    assert!(empty.stdout.is_empty());
}

#[test]
fn every_stderr_line_has_one_flat_shape() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(
        &path,
        "listeners: [{name: l, address: \"127.0.0.1:0\"}]\nroutes: [{name: r, direct_response: {status: 200}}]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut lines = Vec::new();
    let next = |lines: &mut Vec<String>| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a log line before the deadline");
        lines.push(line.clone());
        line
    };
    while !next(&mut lines).contains("\"listening\"") {}
    // A refused reload: an operational error line and an event line.
    std::fs::write(&path, "listeners: nope\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    while !next(&mut lines).contains("config_reload_failed") {}
    let _ = child.kill();
    let _ = child.wait();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        assert!(v.get("fields").is_none(), "nested fields: {line}");
    }
    let event = lines
        .iter()
        .find(|l| l.contains("config_reload_failed"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(v["event"], "config_reload_failed");
    assert_eq!(v["source"], "sighup");
}
