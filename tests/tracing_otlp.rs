//! OpenTelemetry tracing end to end: the shipped binary exports spans over OTLP HTTP/protobuf
//! to a receiver this test runs (a hyper server that decodes `ExportTraceServiceRequest`), and
//! the test asserts what the spans say: a server span per request with its route, cluster,
//! endpoint, consumer, status and semantic-convention attributes; a client span per try; the
//! client's trace continued; the backend's `traceparent` naming the try; sampling; the queue's
//! bound and its drop counter; prompt exit with a receiver that never answers.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "common/otlp.rs"]
mod otlp;

use common::binary::Running;
use common::client;
use gatehouse_testkit::{eventually, FakeUpstream};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use otlp::{attr, hex, i, s, status_code, wait, Receiver};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A gateway with tracing to `recv`: routes `keyed` (an API key; the `finance` consumer),
/// `retried` (a 503 endpoint and a good one, one retry) and `down` (nothing listening).
fn config(recv: SocketAddr, good: &FakeUpstream, bad: &FakeUpstream, tracing: &str) -> String {
    let digest = gatehouse::filter::api_key::digest_string("trace-key-1");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:0'}}\n\
         access_log: off\n\
         consumers: [{{name: finance, api_keys: ['{digest}']}}]\n\
         clusters:\n\
         \x20 - name: single\n\
         \x20   health_check: {{enabled: false}}\n\
         \x20   endpoints: [{{address: '{good}'}}]\n\
         \x20 - name: pair\n\
         \x20   health_check: {{enabled: false}}\n\
         \x20   circuit_breaker: {{enabled: false}}\n\
         \x20   retries: {{attempts: 1, backoff: 1ms}}\n\
         \x20   endpoints: [{{address: '{bad}'}}, {{address: '{good}'}}]\n\
         \x20 - name: gone\n\
         \x20   health_check: {{enabled: false}}\n\
         \x20   endpoints: [{{address: '{dead}'}}]\n\
         routes:\n\
         \x20 - {{name: keyed, match: {{path_prefix: /keyed}}, cluster: single, filters: [{{auth: {{api_key: {{}}}}}}]}}\n\
         \x20 - {{name: retried, match: {{path_prefix: /retried}}, cluster: pair}}\n\
         \x20 - {{name: down, match: {{path_prefix: /down}}, cluster: gone}}\n\
         tracing:\n\
         \x20 otlp: {{endpoint: 'http://{recv}', headers: {{x-tenant: t1}}}}\n\
         {tracing}",
        good = good.addr(),
        bad = bad.addr(),
    )
}

async fn metrics(gw: &Running) -> String {
    client()
        .get(format!("http://{}/metrics", gw.admin_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the metric line that starts with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_request_is_a_server_span_with_its_route_cluster_consumer_and_status() {
    let recv = Receiver::start(false).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    let yaml = config(recv.addr, &good, &bad, "  service_name: gatehouse-test\n");
    let gw = Running::start(&yaml, &[]);
    let r = client()
        .get(format!("http://{}/keyed/x?q=1", gw.addr))
        .header("x-api-key", "trace-key-1")
        .header("x-request-id", "span-1")
        .header("user-agent", "tracing-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let got = recv.server_span("span-1").await;
    assert_eq!(got.service, "gatehouse-test");
    assert_eq!(got.scope, "gatehouse");
    let sp = &got.span;
    assert_eq!(sp.name, "GET keyed");
    assert!(
        sp.parent_span_id.is_empty(),
        "a new trace: the server span is its root"
    );
    let port = i64::from(gw.addr.port());
    for (key, want) in [
        ("http.request.method", s("GET")),
        ("url.path", s("/keyed/x")),
        ("url.scheme", s("http")),
        ("server.address", s("127.0.0.1")),
        ("server.port", i(port)),
        ("client.address", s("127.0.0.1")),
        ("network.protocol.version", s("1.1")),
        ("user_agent.original", s("tracing-test/1")),
        ("http.response.status_code", i(200)),
        ("gatehouse.route", s("keyed")),
        ("gatehouse.cluster", s("single")),
        ("gatehouse.endpoint", s(&good.addr().to_string())),
        ("gatehouse.consumer", s("finance")),
        ("gatehouse.retries", i(0)),
        ("gatehouse.request_id", s("span-1")),
    ] {
        assert_eq!(attr(sp, key), Some(want), "{key} in {sp:#?}");
    }
    assert_eq!(
        attr(sp, "url.query"),
        None,
        "a query may hold secrets: not recorded"
    );
    assert_eq!(status_code(sp), StatusCode::Unset as i32);

    // Its one try, and the traceparent the backend got names that try.
    let tries = recv.tries(sp, 1).await;
    assert_eq!(tries.len(), 1);
    let t = &tries[0];
    assert_eq!(t.trace_id, sp.trace_id);
    assert_eq!(t.name, "GET");
    for (key, want) in [
        ("http.request.method", s("GET")),
        ("server.address", s("127.0.0.1")),
        ("server.port", i(i64::from(good.addr().port()))),
        ("http.response.status_code", i(200)),
        ("gatehouse.outcome", s("ok")),
        ("gatehouse.retried", Value::BoolValue(false)),
    ] {
        assert_eq!(attr(t, key), Some(want), "{key} in {t:#?}");
    }
    let seen = good.last_seen().headers;
    assert_eq!(
        seen["traceparent"].to_str().unwrap(),
        format!("00-{}-{}-01", hex(&sp.trace_id), hex(&t.span_id)),
        "the backend's parent is the try's span"
    );

    // A 5xx local reply is an error on both spans.
    let r = client()
        .get(format!("http://{}/down", gw.addr))
        .header("x-request-id", "span-down")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let down = recv.server_span("span-down").await.span;
    assert_eq!(status_code(&down), StatusCode::Error as i32, "{down:#?}");
    assert_eq!(attr(&down, "error.type"), Some(s("connect_refused")));
    assert_eq!(attr(&down, "http.response.status_code"), Some(i(502)));
    let failed = recv.tries(&down, 1).await;
    assert_eq!(status_code(&failed[0]), StatusCode::Error as i32);
    assert_eq!(
        attr(&failed[0], "gatehouse.outcome"),
        Some(s("connect_refused"))
    );
    assert_eq!(attr(&failed[0], "http.response.status_code"), None);

    // Export requests are OTLP/HTTP protobuf with the configured headers.
    let reqs = recv.requests.lock().unwrap().clone();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|(ct, tenant)| ct == "application/x-protobuf" && tenant == "t1"),
        "{reqs:?}"
    );
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "gatehouse_tracing_spans_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0),
        "{m}"
    );
    assert!(metric(&m, "gatehouse_tracing_spans_exported_total").unwrap() >= 2.0);
}

#[tokio::test]
async fn each_try_is_a_child_span_and_a_client_trace_is_continued() {
    let recv = Receiver::start(false).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    bad.update(|b| b.status = 503);
    let gw = Running::start(&config(recv.addr, &good, &bad, ""), &[]);
    // Round robin: one of two requests goes to the 503 endpoint first and is retried.
    let traces = [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ];
    for (n, (trace, parent)) in traces.iter().enumerate() {
        let r = client()
            .get(format!("http://{}/retried", gw.addr))
            .header("x-request-id", format!("retry-{n}"))
            .header("traceparent", format!("00-{trace}-{parent}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut retried = None;
    for (n, (trace, parent)) in traces.iter().enumerate() {
        let sp = recv.server_span(&format!("retry-{n}")).await.span;
        assert_eq!(hex(&sp.trace_id), *trace, "the client's trace goes on");
        assert_eq!(hex(&sp.parent_span_id), *parent, "under the client's span");
        if attr(&sp, "gatehouse.retries") == Some(i(1)) {
            retried = Some((sp, *trace));
        }
    }
    let (sp, trace) = retried.expect("one request was retried");
    let tries = recv.tries(&sp, 2).await;
    assert_eq!(tries.len(), 2, "{tries:#?}");
    let (first, second) = (&tries[0], &tries[1]);
    assert_eq!(
        attr(first, "server.port"),
        Some(i(i64::from(bad.addr().port())))
    );
    assert_eq!(attr(first, "http.response.status_code"), Some(i(503)));
    assert_eq!(attr(first, "gatehouse.outcome"), Some(s("server_error")));
    assert_eq!(
        attr(first, "gatehouse.retried"),
        Some(Value::BoolValue(true))
    );
    assert_eq!(status_code(first), StatusCode::Error as i32);
    assert_eq!(
        attr(second, "server.port"),
        Some(i(i64::from(good.addr().port())))
    );
    assert_eq!(attr(second, "http.response.status_code"), Some(i(200)));
    assert_eq!(attr(second, "http.request.resend_count"), Some(i(1)));
    assert_eq!(status_code(second), StatusCode::Unset as i32);
    assert_eq!(
        attr(&sp, "gatehouse.endpoint"),
        Some(s(&good.addr().to_string()))
    );
    // The good backend got the retry: its parent is the second try's span, same trace.
    let seen = good
        .seen()
        .into_iter()
        .find(|s| s.headers["traceparent"].to_str().unwrap().contains(trace))
        .expect("the good backend saw the retried request");
    assert_eq!(
        seen.headers["traceparent"].to_str().unwrap(),
        format!("00-{trace}-{}-01", hex(&second.span_id))
    );
    let bad_seen = bad.last_seen().headers;
    assert_eq!(
        bad_seen["traceparent"].to_str().unwrap(),
        format!("00-{trace}-{}-01", hex(&first.span_id))
    );
}

#[tokio::test]
async fn sampling_follows_the_ratio_for_new_traces_and_the_flag_of_continued_ones() {
    let recv = Receiver::start(false).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    let gw = Running::start(
        &config(recv.addr, &good, &bad, "  sampling_ratio: 0\n"),
        &[],
    );
    let c = client();
    let url = format!("http://{}/keyed/s", gw.addr);
    for n in 0..5 {
        let r = c
            .get(&url)
            .header("x-api-key", "trace-key-1")
            .header("x-request-id", format!("unsampled-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A client that did not sample: not recorded, and the backend hears so.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    c.get(&url)
        .header("x-api-key", "trace-key-1")
        .header("traceparent", unsampled)
        .send()
        .await
        .unwrap();
    let tp = good.last_seen().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        tp.starts_with("00-11111111111111111111111111111111-"),
        "{tp}"
    );
    assert!(tp.ends_with("-00"), "{tp}");
    // A client that sampled: recorded whatever the ratio. Its spans arriving means anything
    // recorded before it would have arrived too.
    let sampled = "00-33333333333333333333333333333333-4444444444444444-01";
    c.get(&url)
        .header("x-api-key", "trace-key-1")
        .header("x-request-id", "marker")
        .header("traceparent", sampled)
        .send()
        .await
        .unwrap();
    let marker = recv.server_span("marker").await.span;
    recv.tries(&marker, 1).await;
    let all = recv.spans();
    assert_eq!(
        all.len(),
        2,
        "only the sampled request's two spans: {all:#?}"
    );
    assert!(all
        .iter()
        .all(|g| hex(&g.span.trace_id) == "33333333333333333333333333333333"));
}

#[tokio::test]
async fn a_receiver_that_never_answers_neither_holds_requests_nor_exit() {
    let recv = Receiver::start(true).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    let yaml = config(recv.addr, &good, &bad, "  max_queue: 4\n");
    let yaml = yaml.replace(
        "headers: {x-tenant: t1}",
        "headers: {x-tenant: t1}, timeout: 30s",
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let url = format!("http://{}/keyed/q", gw.addr);
    let get = |id: String| {
        c.get(&url)
            .header("x-api-key", "trace-key-1")
            .header("x-request-id", id)
            .send()
    };
    assert_eq!(get("first".into()).await.unwrap().status(), 200);
    // The first batch is on its way and will never be answered: the queue fills, and what
    // does not fit is dropped, while requests go on as fast as ever.
    eventually("the first export", wait(), || async {
        (recv.hung.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let started = Instant::now();
    for n in 0..20 {
        assert_eq!(get(format!("r{n}")).await.unwrap().status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests did not wait on export"
    );
    let dropped = eventually("spans dropped at the full queue", wait(), || async {
        let m = metrics(&gw).await;
        metric(
            &m,
            "gatehouse_tracing_spans_dropped_total{reason=\"queue_full\"}",
        )
        .filter(|n| *n >= 36.0)
    })
    .await;
    assert!(dropped <= 40.0, "{dropped}");
    let mut gw = gw;
    let stop = Instant::now();
    gw.signal("TERM");
    let deadline = Instant::now() + wait();
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        stop.elapsed() < Duration::from_secs(4),
        "exit took {:?} (the flush is bounded at 1 s)",
        stop.elapsed()
    );
}

#[tokio::test]
async fn tracing_changes_apply_on_reload() {
    let first = Receiver::start(false).await;
    let second = Receiver::start(false).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    let yaml = config(first.addr, &good, &bad, "  sampling_ratio: 0\n");
    let gw = Running::start(&yaml, &[]);
    let url = format!("http://{}/keyed/r", gw.addr);
    let get = |id: String| {
        client()
            .get(&url)
            .header("x-api-key", "trace-key-1")
            .header("x-request-id", id)
            .send()
    };
    assert_eq!(get("before".into()).await.unwrap().status(), 200);
    // Another receiver and every new trace: a new pipeline, and the ratio, after SIGHUP.
    let changed = yaml
        .replace(&first.addr.to_string(), &second.addr.to_string())
        .replace("sampling_ratio: 0", "sampling_ratio: 1");
    std::fs::write(gw._dir.path().join("gatehouse.yaml"), changed).unwrap();
    gw.signal("HUP");
    let mut n = 0;
    eventually("spans at the new receiver", wait(), || {
        n += 1;
        let id = format!("after-{n}");
        let get = &get;
        let second = &second;
        async move {
            assert_eq!(get(id.clone()).await.unwrap().status(), 200);
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let found = second
                    .spans()
                    .into_iter()
                    .any(|g| attr(&g.span, "gatehouse.request_id") == Some(s(&id)));
                if found {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
    })
    .await;
    assert!(
        first.spans().is_empty(),
        "nothing was sampled before the reload"
    );
    let m = metrics(&gw).await;
    assert!(metric(&m, "gatehouse_tracing_spans_exported_total").unwrap() >= 1.0);
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let recv = Receiver::start(false).await;
    let good = FakeUpstream::start("good").await;
    let bad = FakeUpstream::start("bad").await;
    let mut gw = Running::start(&config(recv.addr, &good, &bad, ""), &[]);
    let r = client()
        .get(format!("http://{}/keyed/last", gw.addr))
        .header("x-api-key", "trace-key-1")
        .header("x-request-id", "last")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // At once: the batch is still waiting for more spans when the signal comes.
    gw.signal("TERM");
    let deadline = Instant::now() + wait();
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
    // Exported before the exit, not after: nothing to wait for now.
    let spans = recv.spans();
    assert!(
        spans
            .iter()
            .any(|g| attr(&g.span, "gatehouse.request_id") == Some(s("last"))),
        "{spans:#?}"
    );
    assert_eq!(spans.len(), 2, "the server span and its try");
}
