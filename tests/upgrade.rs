//! Binary upgrades on the shipped binary (docs/fleet.md#upgrades): a new `gatehouse run
//! --upgrade-from PATH` takes the listening sockets over from the one running with
//! `--upgrade-socket PATH`, which drains and exits 0. Under open-loop load no request fails; a
//! WebSocket through the old process runs on until it closes; an idle keep-alive connection is
//! closed cleanly; a new process that cannot start leaves the old one serving and offering; a
//! garbled handshake is an error on either side; a DOWN endpoint stays DOWN and an OPEN
//! breaker OPEN across the switch.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use futures_util::{SinkExt, StreamExt};
use gatehouse_testkit::{eventually, Behavior, FakeUpstream};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One listener and the admin listener on ports the system picks (the new process adopts
/// them by their configured address, `127.0.0.1:0`), one cluster `backend`.
fn config(endpoints: &[SocketAddr], cluster_extra: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect();
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\ndrain_timeout: 10s\nclusters:\n  - name: backend\n    endpoints:\n{eps}{cluster_extra}routes:\n  - name: all\n    cluster: backend\n"
    )
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn sock(&self) -> String {
        self.dir.path().join("upgrade.sock").display().to_string()
    }
}

fn old_process(cfg: &Path, sock: &str) -> Running {
    Running::start_path(cfg, &["--upgrade-socket", sock], &[])
}

/// A new process taking over at `sock` (and offering there in turn); returns once it serves.
async fn new_process(cfg: &Path, sock: &str, env: &[(&str, &str)]) -> Running {
    let new = Running::start_path(
        cfg,
        &["--upgrade-from", sock, "--upgrade-socket", sock],
        env,
    );
    new.wait_logged("the old process drains", Duration::from_secs(20))
        .await;
    new
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn status(admin: SocketAddr) -> Value {
    client()
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Open-loop load: `total` requests, one every `every`, each on the shared pool (keep-alive
/// connections, new ones as needed). Returns the failures.
async fn load(addr: SocketAddr, total: u32, every: Duration) -> Vec<String> {
    let c = client();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + every * i).await;
        let c = c.clone();
        tasks.spawn(async move {
            let t0 = start.elapsed();
            match c.get(format!("http://{addr}/load/{i}")).send().await {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(_) => None,
                    Err(e) => Some(format!("request {i}: body: {e:?}")),
                },
                Ok(r) => {
                    let st = r.status();
                    Some(format!("request {i}: status {st}: {:?}", r.text().await))
                }
                Err(e) => Some(format!(
                    "request {i} sent at {t0:?}, failed at {:?}: {e:?}",
                    start.elapsed()
                )),
            }
        });
    }
    // The open loop's real rate: a loaded machine's client can fall behind its schedule.
    let sent_in = start.elapsed();
    eprintln!(
        "{total} requests started in {sent_in:?} ({:.0} per second; scheduled: {:.0})",
        f64::from(total) / sent_in.as_secs_f64(),
        1.0 / every.as_secs_f64()
    );
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        failures.extend(r.unwrap());
    }
    failures
}

#[tokio::test]
async fn an_upgrade_under_load_fails_no_request() {
    let up = FakeUpstream::start("up").await;
    let d = Dir::new();
    let cfg = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let sock = d.sock();
    let mut old = old_process(&cfg, &sock);
    let addr = old.addr;
    let old_admin = old.admin_addr();
    assert_eq!(status(old_admin).await["pid"], old.pid());
    // 2,000 requests a second for 3 s.
    let started = Instant::now();
    let load = tokio::spawn(load(addr, 6000, Duration::from_micros(500)));
    // A second of it on the old process, then the switch.
    up.wait_hits(1000).await;
    let new = new_process(&cfg, &sock, &[]).await;
    eprintln!("switched at {:?}", started.elapsed());
    assert_eq!(new.addr, addr, "the new process serves the same socket");
    let exit = old.exit_status(Duration::from_secs(10)).await;
    assert!(exit.success(), "the old process: {exit:?}");
    let old_gone = started.elapsed();
    let failures = load.await.unwrap();
    let load_took = started.elapsed();
    eprintln!(
        "old process gone after {old_gone:?}; load of 6000 requests took {load_took:?}; {} hits",
        up.hits()
    );
    if !failures.is_empty() {
        eprintln!("OLD LOG:\n{}", old.log_lines().join("\n"));
        eprintln!("NEW LOG:\n{}", new.log_lines().join("\n"));
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(old_gone < load_took, "the load went on after the switch");
    // What answers now is the new process, on the old admin address too.
    assert_eq!(status(new.admin_addr()).await["pid"], new.pid());
    assert_eq!(new.admin_addr(), old_admin);
    let r = client()
        .get(format!("http://{addr}/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_websocket_runs_on_and_an_idle_connection_closes_between_requests() {
    let up = FakeUpstream::start("up").await;
    let d = Dir::new();
    let cfg = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let sock = d.sock();
    let mut old = old_process(&cfg, &sock);
    let addr = old.addr;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send("before".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_text().unwrap(),
        "before"
    );
    // A keep-alive connection that has had one response and then sits idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&head).contains("\"up\"") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before its response");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));

    let new = new_process(&cfg, &sock, &[]).await;
    // The idle connection ends with a clean close (EOF), not a reset, and no stray bytes, once
    // the handover's grace (4 s) is over.
    let n = tokio::time::timeout(Duration::from_secs(15), idle.read(&mut buf))
        .await
        .expect("the idle connection was closed")
        .expect("a clean close, not a reset");
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The WebSocket still goes through the old process, which waits for it.
    ws.send("after".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_text().unwrap(),
        "after"
    );
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old process waits for the WebSocket"
    );
    // New connections reach the new process meanwhile.
    let r = client()
        .get(format!("http://{addr}/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ws.close(None).await.unwrap();
    // The backend's close frame, then the end of the stream.
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let exit = old.exit_status(Duration::from_secs(5)).await;
    assert!(exit.success(), "{exit:?}");
    drop(new);
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let up = FakeUpstream::start("up").await;
    let d = Dir::new();
    let good = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let bad = d.file(
        "bad.yaml",
        "listeners:\n  - name: public\n    address: nowhere\n",
    );
    let sock = d.sock();
    let mut old = old_process(&good, &sock);
    let addr = old.addr;
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c", bad.to_str().unwrap(), "--upgrade-from", &sock])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yaml") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // The old process noticed and serves on, its socket still offered.
    old.wait_logged(
        "upgrade failed; this process keeps serving",
        Duration::from_secs(10),
    )
    .await;
    let r = client()
        .get(format!("http://{addr}/still"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(old.child.try_wait().unwrap().is_none());
    // A garbled answer from a "new process": refused, and the old one still serves.
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut hello).await.unwrap();
    let hello: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["gatehouse_upgrade"], 1);
    assert_eq!(hello["sockets"].as_array().unwrap().len(), 2, "{hello}");
    s.write_all(b"\0\0\0\x04nope").await.unwrap();
    eventually(
        "the old process refuses the garbled ready",
        Duration::from_secs(10),
        || async {
            (old.log_count("upgrade failed; this process keeps serving") >= 2).then_some(())
        },
    )
    .await;
    assert!(old.logged("garbled handshake"));
    // A good new process then takes over as usual.
    let new = new_process(&good, &sock, &[]).await;
    assert!(old.exit_status(Duration::from_secs(10)).await.success());
    let r = client()
        .get(format!("http://{addr}/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(new);
}

#[tokio::test]
async fn a_garbled_hello_fails_the_new_process_with_a_message() {
    let d = Dir::new();
    let up = FakeUpstream::start("up").await;
    let cfg = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let sock = d.sock();
    let fake_old = tokio::net::UnixListener::bind(&sock).unwrap();
    let serve = tokio::spawn(async move {
        let (mut s, _) = fake_old.accept().await.unwrap();
        s.write_all(b"\0\0\0\x05hello").await.unwrap();
        // Held open until the new process gives up.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let args = ["run", "-c", cfg.to_str().unwrap(), "--upgrade-from", &sock].map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .stdout(Stdio::null())
            .output()
    });
    // The new process's own 10 s step bound ends it if it hangs.
    let out = out.await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--upgrade-from") && stderr.contains("garbled handshake: not JSON"),
        "{stderr}"
    );
    serve.await.unwrap();
}

#[tokio::test]
async fn a_down_endpoint_stays_down_and_an_open_breaker_open() {
    let good = FakeUpstream::start("good").await;
    // Serves traffic, fails its health check: DOWN, yet traffic sent to it would succeed (and
    // be counted), so any request it gets after the switch shows.
    let sick = FakeUpstream::start("sick").await;
    sick.set(Behavior {
        path_status: vec![("/healthz".into(), 503)],
        ..Behavior::default()
    });
    let tripped = FakeUpstream::start("tripped").await;
    let d = Dir::new();
    let extra = "    health_check:\n      path: /healthz\n      interval: 1s\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n    circuit_breaker:\n      open_duration: 60s\n      max_open_duration: 60s\n";
    let cfg = d.file(
        "gatehouse.yaml",
        &config(&[good.addr(), sick.addr(), tripped.addr()], extra),
    );
    let sock = d.sock();
    let mut old = old_process(&cfg, &sock);
    let admin = old.admin_addr();
    let endpoint = |v: &Value, a: SocketAddr| -> Value {
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == a.to_string())
            .cloned()
            .unwrap()
    };
    let cluster = move || async move {
        client()
            .get(format!("http://{admin}/clusters/backend"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    eventually(
        "sick is DOWN in the old process",
        Duration::from_secs(10),
        || async { (endpoint(&cluster().await, sick.addr())["health"] == "DOWN").then_some(()) },
    )
    .await;
    let r = client()
        .post(format!(
            "http://{admin}/clusters/backend/endpoints/{}/breaker",
            tripped.addr()
        ))
        .json(&serde_json::json!({"state": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let traffic = |f: &FakeUpstream| {
        f.seen()
            .iter()
            .filter(|s| s.uri.path() != "/healthz")
            .count()
    };
    let (sick_before, tripped_before) = (traffic(&sick), traffic(&tripped));

    let new = new_process(&cfg, &sock, &[]).await;
    // A connection the old process accepted just before it stopped accepting is still its to
    // answer: wait until the shared admin socket is the new process's, then look at once
    // (the new process's first health check is a second away).
    let new_pid = new.pid();
    eventually(
        "the admin socket answers from the new process",
        Duration::from_secs(5),
        || async move { (status(admin).await["pid"] == new_pid).then_some(()) },
    )
    .await;
    let v = cluster().await;
    assert_eq!(endpoint(&v, sick.addr())["health"], "DOWN", "{v}");
    assert_eq!(endpoint(&v, tripped.addr())["breaker"], "OPEN", "{v}");
    let c = client();
    for i in 0..30 {
        let r = c
            .get(format!("http://{}/r/{i}", new.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        traffic(&sick),
        sick_before,
        "a DOWN endpoint got traffic after the switch"
    );
    assert_eq!(
        traffic(&tripped),
        tripped_before,
        "an OPEN endpoint got traffic after the switch"
    );
    assert!(old.exit_status(Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn the_new_process_tells_systemd_it_is_the_main_process() {
    use std::os::unix::net::UnixDatagram;
    let up = FakeUpstream::start("up").await;
    let d = Dir::new();
    let cfg = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let sock = d.sock();
    let mut old = old_process(&cfg, &sock);
    let notify_path = d.dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let new = new_process(
        &cfg,
        &sock,
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    )
    .await;
    let mut buf = vec![0u8; 4096];
    let n = manager.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let lines: Vec<&str> = msg.lines().collect();
    assert!(
        lines.contains(&format!("MAINPID={}", new.pid()).as_str()),
        "{msg}"
    );
    assert!(lines.contains(&"READY=1"), "{msg}");
    assert!(
        msg.contains(&format!("took over from pid {}", old.pid())),
        "{msg}"
    );
    assert!(old.exit_status(Duration::from_secs(10)).await.success());
}

/// Runs `gatehouse run -c cfg ARGS...` to its exit; returns its exit code and stderr.
async fn run_to_exit(cfg: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["run".to_string(), "-c".into(), cfg.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A process that was not refused would serve on: it fails the test, not hangs it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway was not refused: still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = Vec::new();
        child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: err,
        }
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A second gateway given a live gateway's `--upgrade-socket` path is refused before it binds
/// anything (it would have replaced the socket and, on exit, removed it: the running gateway
/// could never be upgraded again); `--upgrade-from` pointed at a file and a socket path in a
/// missing directory are refused with what is wrong. The running one stays upgradable.
#[tokio::test]
async fn a_live_upgrade_socket_is_not_taken_by_another_gateway() {
    let up = FakeUpstream::start("up").await;
    let d = Dir::new();
    let cfg = d.file("gatehouse.yaml", &config(&[up.addr()], ""));
    let sock = d.sock();
    let mut old = old_process(&cfg, &sock);
    old.wait_logged("offering the listening sockets", Duration::from_secs(10))
        .await;

    let (code, err) = run_to_exit(&cfg, &["--upgrade-socket", &sock]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("another gateway is offering its sockets there"),
        "{err}"
    );
    let file = d.file("not-a-socket", "hello");
    let (code, err) = run_to_exit(&cfg, &["--upgrade-from", file.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    let missing = d.dir.path().join("nodir/x.sock");
    let (code, err) = run_to_exit(&cfg, &["--upgrade-socket", missing.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // Still offered: an upgrade from it works, and the old process exits 0.
    let new = new_process(&cfg, &sock, &[]).await;
    assert!(old.exit_status(Duration::from_secs(15)).await.success());
    assert_eq!(status(new.admin_addr()).await["pid"], new.pid());
}
