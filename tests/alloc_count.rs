//! A deterministic guard on the request path's cost: heap allocations per proxied request,
//! counted by a global allocator in this process, which runs only the gateway and an
//! allocation-free client (the backend is the `demo-backend` binary, another process). Counts,
//! not timings: the same build makes the same allocations for the same requests, so a
//! regression fails here instead of hiding in benchmark noise.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The most allocations a plain proxied GET may cost on the gateway's thread (routing, the
/// filters-free path, metrics, the access log, the upstream pool). Measured, plus a margin;
/// lower it when the request path gets cheaper. 16.1 on 2026-12-01, one of them the RFC 7239
/// `Forwarded` value (its host and proto vary per request); 17.1 on 2026-12-03, one more for the
/// boxed upstream exchange that is handed to a task when the client leaves before the answer
/// (`upstream::pool::Awaiting`: the connection is kept rather than closed); 15.0 on 2026-12-04,
/// hyper's header timer (a boxed `Sleep` per head) replaced by the connection's watch, one more
/// for the response body's box (`body::Body`).
const MAX_PER_REQUEST: u64 = 16;

/// Reads one response with a Content-Length into `buf` (reused); returns its status line start.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).await.unwrap();
        assert!(n > 0, "closed");
        have += n;
        let got = &buf[..have];
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &got[..end];
            let len = head
                .split(|b| *b == b'\n')
                .find_map(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    (l.len() > 16 && l[..16].eq_ignore_ascii_case(b"content-length: "))
                        .then(|| {
                            std::str::from_utf8(&l[16..])
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .flatten()
                })
                .unwrap();
            if have >= end + 4 + len {
                return head.starts_with(b"HTTP/1.1 200");
            }
        }
    }
}

/// The same GET with tracing on at `sampling_ratio: 1`: two spans per request (~18 on the
/// request's own path: the span objects and their attribute strings), their queue, and the
/// export (the OTLP transform copies every attribute into the protobuf message, ~20 a span;
/// its receiver is the backend process). Measured 72–84 on 2026-12-02, varying with how many
/// spans each export batch holds.
const MAX_PER_TRACED_REQUEST: u64 = 100;

/// The allocator's counts are the whole process's: one measurement at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn allocations_per_proxied_request_stay_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let per_request = measure("");
    eprintln!("{per_request:.1} allocations per proxied request (gateway and its threads)");
    assert!(
        per_request <= MAX_PER_REQUEST as f64,
        "{per_request:.1} allocations per request (at most {MAX_PER_REQUEST})"
    );
}

#[test]
fn allocations_per_traced_request_stay_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Spans go to the backend process too (it answers any POST): their encoding and sending
    // are counted here, the receiving is not.
    let per_request =
        measure("tracing: {otlp: {endpoint: 'http://UP/v1/traces'}, sampling_ratio: 1}\n");
    eprintln!("{per_request:.1} allocations per traced request (gateway and its threads)");
    assert!(
        per_request <= MAX_PER_TRACED_REQUEST as f64,
        "{per_request:.1} allocations per traced request (at most {MAX_PER_TRACED_REQUEST})"
    );
}

/// Allocations per request over 1000 GETs on one connection (after 200 to warm up), with
/// `extra` appended to the config (`UP` in it is the backend's address).
fn measure(extra: &str) -> f64 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut backend = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "demo-backend",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--name",
            "up",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_request = rt.block_on(async move {
        let up = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&up).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "backend did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let yaml = format!(
            "listeners: [{{name: l, address: '127.0.0.1:0'}}]\n\
             clusters: [{{name: c, endpoints: [{{address: '{up}'}}], health_check: {{enabled: false}}}}]\n\
             routes: [{{name: all, cluster: c}}]\n{}",
            extra.replace("UP", &up)
        );
        let cfg = gatehouse_config::load_str(&yaml, "t").unwrap();
        let sink = gatehouse::observe::access_log::AccessLogSink::to_writer(Box::new(std::io::sink()));
        let gw = gatehouse::Gateway::start(cfg, Some(sink)).await.unwrap();
        let addr = gw.addrs()[0].1;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
        let mut buf = vec![0u8; 16384];
        // Warm up: pools, metric series, buffers.
        for _ in 0..200 {
            s.write_all(req).await.unwrap();
            assert!(read_response(&mut s, &mut buf).await);
        }
        let n = 1000u64;
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            s.write_all(req).await.unwrap();
            assert!(read_response(&mut s, &mut buf).await);
        }
        let stats = region.change();
        gw.shutdown(Duration::from_secs(1)).await;
        (stats.allocations + stats.reallocations) as f64 / n as f64
    });
    let _ = backend.kill();
    let _ = backend.wait();
    per_request
}
