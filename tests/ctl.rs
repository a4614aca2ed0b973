//! `gatehouse ctl` against a running gateway (the shipped binary, both ends): status, the
//! cluster table, drain and enable, the breaker, reload, `--json`, the token from the
//! environment, `events --follow`; and the completions and man page made from the CLI.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::FakeUpstream;
use std::process::{Command, Output};

fn ctl(admin: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(["ctl", "--admin", admin]).args(args);
    cmd.env_remove("GATEHOUSE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("GATEHOUSE_ADMIN_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test]
async fn ctl_reads_and_changes_a_running_gateway() {
    const TOKEN: &str = "ctl-test-token-0123456789";
    std::env::set_var("GH_CTL_TEST_TOKEN", TOKEN);
    let up = FakeUpstream::start("up").await;
    let yaml = format!(
        "listeners: [{{name: l, address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\", token_env: GH_CTL_TEST_TOKEN}}\nclusters: [{{name: app, health_check: {{enabled: false}}, endpoints: [{{address: \"{}\"}}]}}]\nroutes: [{{name: r, cluster: app}}]\n",
        up.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let admin = gw.admin_addr().to_string();
    let ep = up.addr().to_string();
    let t = Some(TOKEN);

    let status = out(&ctl(&admin, t, &["status"]));
    assert!(
        status.starts_with("version ") && status.contains("generation 1"),
        "{status}"
    );

    let table = out(&ctl(&admin, t, &["clusters"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CLUSTER") && lines[0].contains("BREAKER"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("app") && lines[1].contains(&ep),
        "{table}"
    );
    assert!(
        lines[1].contains("HEALTHY") && lines[1].contains("CLOSED"),
        "{table}"
    );

    // events --follow sees the drain as it happens.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["ctl", "--admin", &admin, "--json", "events", "--follow"])
        .env("GATEHOUSE_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    // Connected once the first line (a traffic summary, each second) arrives.
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the event stream connected");
    let drained = out(&ctl(&admin, t, &["drain", "app", &ep]));
    assert!(drained.lines().nth(1).unwrap().contains("yes"), "{drained}");
    let json: serde_json::Value =
        serde_json::from_str(&out(&ctl(&admin, t, &["--json", "clusters", "app"]))).unwrap();
    assert_eq!(json["endpoints"][0]["drained"], true);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seen = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = rx
            .recv_timeout(left)
            .expect("endpoint_drained on the stream");
        if l.contains("endpoint_drained") {
            break l;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        (v["cluster"].as_str(), v["endpoint"].as_str()),
        (Some("app"), Some(ep.as_str()))
    );
    let _ = follow.kill();
    let _ = follow.wait();

    let enabled = out(&ctl(&admin, t, &["enable", "app", &ep]));
    assert!(
        enabled.lines().nth(1).unwrap().contains(" no "),
        "{enabled}"
    );
    let opened = out(&ctl(&admin, t, &["breaker", "app", &ep, "open"]));
    assert!(opened.contains("OPEN"), "{opened}");
    let reloaded = out(&ctl(&admin, t, &["reload"]));
    assert!(reloaded.starts_with("ok (generation 2)"), "{reloaded}");

    // Without the token, or with a wrong one: the API's refusal, exit 1.
    let refused = ctl(&admin, Some("wrong-token-0123456789"), &["status"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let bad = ctl(&admin, t, &["breaker", "app", &ep, "sideways"]);
    assert!(
        !bad.status.success(),
        "clap refuses a state it does not know"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let bash = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).unwrap();
    assert!(bash.contains("gatehouse") && bash.contains("ctl") && bash.contains("check"));
    let man = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("man")
        .output()
        .unwrap();
    assert!(man.status.success());
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains("gatehouse"));
}
