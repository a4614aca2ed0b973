//! WebSocket passes through after the backend's 101, both directions, until either side closes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::one_cluster;
use futures_util::{SinkExt, StreamExt};
use gatehouse_testkit::{FakeUpstream, TestGateway};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let up = FakeUpstream::start("ws").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let url = format!("ws://{}/chat", gw.addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade through gateway");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));
    for i in 0..50 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let seen = up.last_seen();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers.contains_key("sec-websocket-key"));
    assert!(seen.headers.contains_key("x-request-id"));
    ws.close(None).await.unwrap();
    // The close reaches the backend and the tunnel ends.
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
}

#[tokio::test]
async fn non_websocket_traffic_continues_after_an_upgrade() {
    let up = FakeUpstream::start("ws").await;
    let gw = TestGateway::start(&one_cluster(&[up.addr()], "", "")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/a", gw.addr()))
        .await
        .unwrap();
    let resp = common::client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
}

#[tokio::test]
async fn tunnels_count_against_the_clusters_limits() {
    let up = FakeUpstream::start("ws").await;
    let gw = TestGateway::start(&one_cluster(
        &[up.addr()],
        "",
        "    limits: {max_requests: 2, max_connections: 5}\n",
    ))
    .await;
    let url = format!("ws://{}/chat", gw.addr());
    let (mut a, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    // Two tunnels hold both request slots: a third upgrade is refused, not opened.
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third tunnel: {:?}", other.map(|(_, r)| r.status())),
    }
    // Closing one frees its slot.
    a.close(None).await.unwrap();
    while let Some(Ok(m)) = a.next().await {
        if m.is_close() {
            break;
        }
    }
    drop(a);
    let (mut c, _) =
        gatehouse_testkit::eventually("a slot frees", std::time::Duration::from_secs(5), || {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(url).await.ok() }
        })
        .await;
    c.send(Message::text("hi")).await.unwrap();
    assert_eq!(c.next().await.unwrap().unwrap(), Message::text("hi"));
    b.send(Message::text("b")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap(), Message::text("b"));
}
