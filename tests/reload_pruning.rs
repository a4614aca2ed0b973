//! Registries follow the config: 1,000 reloads through the shipped binary, each replacing the
//! endpoints (new addresses), changing timeouts and adding/removing routes, with traffic through
//! each generation, leave resident memory, open file descriptors and the `/metrics` line count
//! where they were after the first 100.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use bytes::Bytes;
use http_body_util::Full;
use std::convert::Infallible;
use std::net::SocketAddr;

/// A backend on every loopback address (0.0.0.0:port), so `127.0.0.N:port` are distinct
/// endpoints that all answer.
async fn backend() -> u16 {
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

fn config(i: usize, ports: &[u16], admin: u16) -> String {
    // Three endpoints, new ones each generation (cycling through 3 ports x 240 addresses).
    let eps: String = (0..3)
        .map(|k| {
            let n = i * 3 + k;
            let ip = 2 + (n / ports.len()) % 240;
            format!("{{address: '127.0.0.{ip}:{}'}}, ", ports[n % ports.len()])
        })
        .collect();
    let connect = if i.is_multiple_of(2) { "1s" } else { "2s" };
    let extra_route = format!(
        "  - {{name: extra-{}, match: {{path_prefix: /extra}}, cluster: app}}\n",
        i % 7
    );
    format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:{admin}'}}\n\
         access_log: off\n\
         clusters:\n  - {{name: app, endpoints: [{eps}], timeouts: {{connect: {connect}}}, health_check: {{interval: 1s}}}}\n\
         routes:\n  - {{name: all, cluster: app}}\n{extra_route}"
    )
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_leave_memory_fds_and_metrics_flat() {
    let ports = [backend().await, backend().await, backend().await];
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config(0, &ports, admin)).unwrap();
    let gw = common::binary::Running::start_with_env(&path, &[]);
    let pid = gw.pid();
    let c = reqwest::Client::new();
    let admin_url = |p: &str| format!("http://127.0.0.1:{admin}{p}");
    gatehouse_testkit::eventually("admin up", std::time::Duration::from_secs(10), || async {
        c.get(admin_url("/status")).send().await.ok().map(|_| ())
    })
    .await;
    let gw_addr: SocketAddr = gw.addr;
    let mut at_100 = None;
    for i in 1..=1000 {
        // Written without the file watcher's help (it may or may not see each write): the
        // reload is asked for explicitly.
        std::fs::write(&path, config(i, &ports, admin)).unwrap();
        let r = c
            .post(admin_url("/reload"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "reload {i}: {}", r.text().await.unwrap());
        let r = c.get(format!("http://{gw_addr}/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "traffic after reload {i}");
        let _ = r.bytes().await;
        if i == 100 {
            let lines = metric_lines(&c, &admin_url("/metrics")).await;
            at_100 = Some((rss_kib(pid), fds(pid), lines));
        }
    }
    let (rss0, fds0, lines0) = at_100.unwrap();
    let lines1 = metric_lines(&c, &admin_url("/metrics")).await;
    let (rss1, fds1) = (rss_kib(pid), fds(pid));
    eprintln!("after 100 reloads: {rss0} KiB, {fds0} fds, {lines0} metric lines; after 1000: {rss1} KiB, {fds1} fds, {lines1} lines");
    assert!(
        lines1 <= lines0 + 5,
        "/metrics grew from {lines0} to {lines1} lines"
    );
    assert!(fds1 <= fds0 + 10, "open files grew from {fds0} to {fds1}");
    assert!(
        rss1 <= rss0 + 8 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}

/// How many lines `/metrics` has now.
async fn metric_lines(c: &reqwest::Client, url: &str) -> usize {
    let text = c.get(url).send().await.unwrap().text().await.unwrap();
    text.lines().count()
}
