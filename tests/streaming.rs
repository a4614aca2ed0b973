//! Streaming: a 1 GiB download and a 1 GiB upload pass through the shipped binary while its
//! peak memory stays flat (nothing is buffered whole).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::{client, one_cluster};
use futures_util::StreamExt;
use gatehouse_testkit::{Behavior, FakeUpstream, Mode};

const GIB: u64 = 1 << 30;
/// The gateway's whole peak RSS must stay under this while 1 GiB passes each way.
const PEAK_RSS_LIMIT_KIB: u64 = 64 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_with_flat_memory() {
    let up = FakeUpstream::start("big").await;
    let gw = Running::start(
        &format!(
            "access_log: off\n{}",
            one_cluster(&[up.addr()], "    limits: { max_body_bytes: 2GiB }", "")
        ),
        &[],
    );
    let c = client();

    up.set(Behavior {
        mode: Mode::Stream(GIB),
        ..Behavior::default()
    });
    let resp = c
        .get(format!("http://{}/download", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, GIB);

    up.set(Behavior {
        mode: Mode::Sink,
        ..Behavior::default()
    });
    let chunk = bytes::Bytes::from(vec![b'u'; 256 << 10]);
    let n = GIB / chunk.len() as u64;
    let body =
        futures_util::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = c
        .post(format!("http://{}/upload", gw.addr))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("{{\"received\":{GIB}}}")
    );

    let peak = gw.peak_rss_kib();
    eprintln!("gateway peak RSS after 1 GiB each way: {peak} KiB");
    assert!(peak < PEAK_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}
