//! The response cache end to end over real sockets: freshness and expiry, the Cache-Control
//! cases a shared cache must honour, Vary, 304 revalidation, the client's own conditionals,
//! HEAD from a GET entry, invalidation by unsafe methods, the body cap, coalescing, stale
//! content while the backend is down or being revalidated, entries kept across a reload, and
//! the admin purge.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{eventually, Behavior, FakeUpstream, TestGateway};
use std::time::Duration;

fn config(up: &FakeUpstream, filter: &str) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
clusters:
  - name: c
    health_check: {{enabled: false}}
    retries: {{attempts: 0}}
    circuit_breaker: {{consecutive_failures: 2}}
    endpoints: [{{address: "{}"}}]
routes: [{{name: r, cluster: c, filters: [cache: {{{filter}}}]}}]
"#,
        up.addr()
    )
}

fn serve(up: &FakeUpstream, body: &str, headers: &[(&str, &str)]) {
    up.set(Behavior {
        body: body.to_string().into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Behavior::default()
    });
}

struct Got {
    status: u16,
    x_cache: String,
    cache_status: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    send(gw, reqwest::Method::GET, path, headers).await
}

async fn send(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut r = client().request(method, gw.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let h = resp.headers().clone();
    let text = |n: &str| {
        h.get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    Got {
        status: resp.status().as_u16(),
        x_cache: text("x-cache"),
        cache_status: text("cache-status"),
        headers: h.clone(),
        body: resp.text().await.unwrap(),
    }
}

#[tokio::test]
async fn a_fresh_entry_is_served_until_it_expires() {
    let up = FakeUpstream::start("up").await;
    // Fresh for one more second: 60 s of life, 59 already used upstream.
    serve(&up, "v1", &[("cache-control", "max-age=60"), ("age", "59")]);
    let gw = TestGateway::start(&config(&up, "")).await;
    let first = get(&gw, "/a", &[]).await;
    assert_eq!((first.status, first.body.as_str()), (200, "v1"));
    assert_eq!(first.x_cache, "MISS");
    assert!(
        first.cache_status.contains("fwd=miss; stored"),
        "{}",
        first.cache_status
    );
    let second = get(&gw, "/a", &[]).await;
    assert_eq!(
        (second.x_cache.as_str(), second.body.as_str()),
        ("HIT", "v1")
    );
    assert!(
        second.cache_status.starts_with("gatehouse; hit"),
        "{}",
        second.cache_status
    );
    assert!(
        second.headers["age"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 59
    );
    assert_eq!(up.hits(), 1);
    // Other paths and queries are other entries.
    assert_eq!(get(&gw, "/a?x=1", &[]).await.x_cache, "MISS");
    assert_eq!(up.hits(), 2);
    serve(&up, "v2", &[("cache-control", "max-age=60")]);
    let after = eventually("the entry expires", Duration::from_secs(5), || async {
        let g = get(&gw, "/a", &[]).await;
        (g.x_cache == "MISS").then_some(g)
    })
    .await;
    assert_eq!(after.body, "v2");
    let log = gw.access_log();
    assert!(log.iter().any(|l| l["cache"] == "hit"), "{log:?}");
    assert!(log.iter().any(|l| l["cache"] == "miss"));
    let m = common::metrics(&gw).await;
    assert!(
        m.contains(r#"gatehouse_cache_lookups_total{route="r",result="hit"}"#),
        "{m}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn what_a_shared_cache_must_not_store_or_reuse() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, "")).await;
    // (response headers, request headers, stored?)
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Headers, Headers, bool)] = &[
        (&[("cache-control", "max-age=60")], &[], true),
        (&[("cache-control", "no-store, max-age=60")], &[], false),
        (&[("cache-control", "private, max-age=60")], &[], false),
        (
            &[("cache-control", "max-age=60")],
            &[("cache-control", "no-store")],
            false,
        ),
        (
            &[("cache-control", "max-age=60")],
            &[("authorization", "Bearer x")],
            false,
        ),
        (
            &[("cache-control", "public, max-age=60")],
            &[("authorization", "Bearer x")],
            true,
        ),
        (&[("cache-control", "s-maxage=60, max-age=0")], &[], true),
        (
            &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
            &[],
            false,
        ),
        (&[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")], &[], false),
        (&[("cache-control", "max-age=0, s-maxage=0")], &[], false),
    ];
    for (i, (resp, req, stored)) in cases.iter().enumerate() {
        serve(&up, "x", resp);
        let path = format!("/case{i}");
        let before = up.hits();
        get(&gw, &path, req).await;
        let again = get(&gw, &path, req).await;
        assert_eq!(
            again.x_cache == "HIT",
            *stored,
            "case {i}: {resp:?} {req:?}: {}",
            again.cache_status
        );
        assert_eq!(up.hits() - before, if *stored { 1 } else { 2 }, "case {i}");
    }
    // A client's no-cache makes the cache ask the backend (here: no validator, so a full GET).
    serve(&up, "x", &[("cache-control", "max-age=60")]);
    get(&gw, "/nc", &[]).await;
    let n = up.hits();
    let g = get(&gw, "/nc", &[("cache-control", "no-cache")]).await;
    assert_eq!(up.hits(), n + 1, "{}", g.cache_status);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn vary_keeps_one_entry_per_value() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, "")).await;
    serve(
        &up,
        "en",
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
    );
    assert_eq!(
        get(&gw, "/v", &[("accept-language", "en")]).await.body,
        "en"
    );
    serve(
        &up,
        "fr",
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
    );
    let fr = get(&gw, "/v", &[("accept-language", "fr")]).await;
    assert_eq!((fr.x_cache.as_str(), fr.body.as_str()), ("MISS", "fr"));
    let en = get(&gw, "/v", &[("accept-language", "en")]).await;
    assert_eq!((en.x_cache.as_str(), en.body.as_str()), ("HIT", "en"));
    let fr = get(&gw, "/v", &[("accept-language", "fr")]).await;
    assert_eq!((fr.x_cache.as_str(), fr.body.as_str()), ("HIT", "fr"));
    assert_eq!(up.hits(), 2);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn validators_revalidate_and_client_conditionals_are_answered() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, "")).await;
    // no-cache: stored, but every use is revalidated with the ETag.
    serve(
        &up,
        "body",
        &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
    );
    assert_eq!(get(&gw, "/r", &[]).await.x_cache, "MISS");
    let g = get(&gw, "/r", &[]).await;
    assert_eq!((g.status, g.body.as_str()), (200, "body"));
    assert_eq!(g.x_cache, "HIT");
    assert!(
        g.cache_status.contains("fwd=stale; fwd-status=304"),
        "{}",
        g.cache_status
    );
    assert_eq!(up.not_modified(), 1);
    assert_eq!(up.last_seen().headers["if-none-match"], "\"v1\"");
    // The client's own If-None-Match gets a 304 from the cache.
    serve(
        &up,
        "body",
        &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
    );
    get(&gw, "/c", &[]).await;
    let hits = up.hits();
    let g = get(&gw, "/c", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((g.status, g.body.as_str()), (304, ""));
    assert_eq!(g.headers["etag"], "\"v2\"");
    let g = get(&gw, "/c", &[("if-none-match", "\"other\"")]).await;
    assert_eq!((g.status, g.body.as_str()), (200, "body"));
    assert_eq!(up.hits(), hits, "both answered by the cache");
    // A client's conditional on a miss still fills the cache (the backend gets a plain GET).
    let g = get(&gw, "/fresh-miss", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(g.status, 304);
    assert!(!up.last_seen().headers.contains_key("if-none-match"));
    assert_eq!(get(&gw, "/fresh-miss", &[]).await.x_cache, "HIT");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn head_uses_the_get_entry_and_unsafe_methods_invalidate() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, "")).await;
    serve(&up, "hello", &[("cache-control", "max-age=60")]);
    get(&gw, "/h", &[]).await;
    let head = send(&gw, reqwest::Method::HEAD, "/h", &[]).await;
    assert_eq!(
        (head.status, head.x_cache.as_str(), head.body.as_str()),
        (200, "HIT", "")
    );
    assert_eq!(head.headers["content-length"], "5");
    assert_eq!(up.hits(), 1);
    // A Range request: a fresh entry answers in full (RFC 9110 lets Range be ignored); a miss
    // goes as sent, If-Range included, and its 206 is not stored.
    let full = get(&gw, "/h", &[("range", "bytes=0-1")]).await;
    assert_eq!((full.status, full.body.as_str()), (200, "hello"));
    let part = get(
        &gw,
        "/part",
        &[("range", "bytes=0-1"), ("if-range", "\"v\"")],
    )
    .await;
    assert_eq!(part.x_cache, "MISS");
    let seen = up.last_seen();
    assert_eq!(seen.headers["range"], "bytes=0-1");
    assert_eq!(seen.headers["if-range"], "\"v\"");
    assert_eq!(
        get(&gw, "/part", &[]).await.x_cache,
        "MISS",
        "nothing stored"
    );
    assert_eq!(get(&gw, "/part", &[]).await.x_cache, "HIT");
    let hits = up.hits();
    let post = send(&gw, reqwest::Method::POST, "/h", &[]).await;
    assert_eq!((post.status, post.x_cache.as_str()), (200, "BYPASS"));
    assert_eq!(
        up.hits(),
        hits + 1,
        "an unsafe method always reaches the backend"
    );
    assert_eq!(
        get(&gw, "/h", &[]).await.x_cache,
        "MISS",
        "the POST invalidated it"
    );
    // A failed unsafe request changes nothing.
    up.update(|b| b.path_status = vec![("/h".into(), 500)]);
    send(&gw, reqwest::Method::DELETE, "/h", &[]).await;
    up.update(|b| b.path_status.clear());
    assert_eq!(get(&gw, "/h", &[]).await.x_cache, "HIT");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_body_over_the_cap_streams_through_uncached() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up, "max_entry_bytes: 1KiB")).await;
    let big = "x".repeat(10_000);
    serve(&up, &big, &[("cache-control", "max-age=60")]);
    for _ in 0..2 {
        let g = get(&gw, "/big", &[]).await;
        assert_eq!(g.body.len(), 10_000);
        assert_eq!(g.x_cache, "MISS");
        assert!(
            g.cache_status.contains("detail=too-large"),
            "{}",
            g.cache_status
        );
    }
    assert_eq!(up.hits(), 2);
    // Without a Content-Length (streamed, 8 MiB): read up to the cap, then passed on.
    up.set(Behavior {
        mode: gatehouse_testkit::Mode::Stream(8 << 20),
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Behavior::default()
    });
    let g = get(&gw, "/stream", &[]).await;
    assert_eq!(g.body.len(), 8 << 20);
    assert!(g.cache_status.contains("too-large"), "{}", g.cache_status);
    let m = common::metrics(&gw).await;
    let bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_cache_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes < 64 << 10, "nothing big was stored: {bytes}");
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn concurrent_misses_reach_the_backend_once() {
    let up = FakeUpstream::start("up").await;
    up.set(Behavior {
        body: "slow".into(),
        delay: Duration::from_millis(300),
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Behavior::default()
    });
    let gw = TestGateway::start(&config(&up, "")).await;
    let gw = std::sync::Arc::new(gw);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { get(&gw, "/same", &[]).await })
        })
        .collect();
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!((g.status, g.body.as_str()), (200, "slow"));
    }
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn stale_content_while_every_breaker_is_open() {
    let mut up = FakeUpstream::start("up").await;
    serve(
        &up,
        "last good",
        &[("cache-control", "max-age=60"), ("age", "59")],
    );
    let gw = TestGateway::start(&config(&up, "serve_stale_on_error: 60s")).await;
    assert_eq!(get(&gw, "/s", &[]).await.x_cache, "MISS");
    up.stop().await;
    // Stale, and the backend refuses connections: served stale every time, also once the
    // breaker has opened (no eligible endpoint).
    let g = eventually("the entry goes stale", Duration::from_secs(5), || async {
        let g = get(&gw, "/s", &[]).await;
        (g.x_cache == "STALE").then_some(g)
    })
    .await;
    assert_eq!((g.status, g.body.as_str()), (200, "last good"));
    assert!(
        g.cache_status.contains("fwd=stale; fwd-status=502"),
        "{}",
        g.cache_status
    );
    for _ in 0..3 {
        get(&gw, "/s", &[]).await;
    }
    let g = get(&gw, "/s", &[]).await;
    assert_eq!((g.status, g.body.as_str()), (200, "last good"));
    assert!(
        g.cache_status.contains("fwd-status=503"),
        "breaker open: {}",
        g.cache_status
    );
    // Something never seen is still an error.
    assert_eq!(get(&gw, "/never", &[]).await.status, 503);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    let mut up = FakeUpstream::start("up").await;
    serve(
        &up,
        "strict",
        &[
            ("cache-control", "max-age=60, must-revalidate"),
            ("age", "59"),
        ],
    );
    let gw = TestGateway::start(&config(&up, "serve_stale_on_error: 60s")).await;
    get(&gw, "/m", &[]).await;
    up.stop().await;
    eventually("an error once stale", Duration::from_secs(5), || async {
        (get(&gw, "/m", &[]).await.status == 502).then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let up = FakeUpstream::start("up").await;
    serve(
        &up,
        "old",
        &[
            ("cache-control", "max-age=60, stale-while-revalidate=30"),
            ("age", "59"),
        ],
    );
    let gw = TestGateway::start(&config(&up, "")).await;
    get(&gw, "/w", &[]).await;
    serve(&up, "new", &[("cache-control", "max-age=60")]);
    let g = eventually("the entry goes stale", Duration::from_secs(5), || async {
        let g = get(&gw, "/w", &[]).await;
        (g.x_cache == "STALE").then_some(g)
    })
    .await;
    assert_eq!(g.body, "old");
    assert!(
        g.cache_status.contains("stale-while-revalidate"),
        "{}",
        g.cache_status
    );
    eventually(
        "the background refresh lands",
        Duration::from_secs(5),
        || async {
            let g = get(&gw, "/w", &[]).await;
            (g.x_cache == "HIT" && g.body == "new").then_some(())
        },
    )
    .await;
    assert_eq!(up.hits(), 2);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn keys_can_ignore_query_parameters_and_add_headers() {
    let up = FakeUpstream::start("up").await;
    serve(&up, "x", &[("cache-control", "max-age=60")]);
    let gw = TestGateway::start(&config(
        &up,
        "key: {ignore_query_params: [utm_source], headers: [x-tenant]}",
    ))
    .await;
    get(&gw, "/k?id=1&utm_source=mail", &[("x-tenant", "a")]).await;
    assert_eq!(
        get(&gw, "/k?id=1&utm_source=web", &[("x-tenant", "a")])
            .await
            .x_cache,
        "HIT"
    );
    assert_eq!(
        get(&gw, "/k?id=1", &[("x-tenant", "a")]).await.x_cache,
        "HIT"
    );
    assert_eq!(
        get(&gw, "/k?id=2", &[("x-tenant", "a")]).await.x_cache,
        "MISS"
    );
    assert_eq!(
        get(&gw, "/k?id=1", &[("x-tenant", "b")]).await.x_cache,
        "MISS"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn entries_survive_a_reload_and_the_admin_purges_them() {
    let up = FakeUpstream::start("up").await;
    serve(&up, "x", &[("cache-control", "max-age=600")]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config(&up, "")).unwrap();
    let gw = TestGateway::start_file(&path).await;
    get(&gw, "/p/1", &[]).await;
    get(&gw, "/p/2", &[]).await;
    get(&gw, "/q", &[]).await;
    std::fs::write(&path, config(&up, "serve_stale_on_error: 10s")).unwrap();
    gw.gateway().reload("test").await.unwrap();
    assert_eq!(
        get(&gw, "/p/1", &[]).await.x_cache,
        "HIT",
        "kept across the reload"
    );

    let c = client();
    let host = gw.addr().to_string();
    let purge = |q: String| {
        let c = c.clone();
        let url = gw.admin_url(&format!("/cache?{q}"));
        async move {
            let r = c.delete(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = purge(format!("key=http://{host}/p/1")).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(get(&gw, "/p/1", &[]).await.x_cache, "MISS");
    assert_eq!(get(&gw, "/p/2", &[]).await.x_cache, "HIT");
    let (_, body) = purge(format!("prefix=http://{host}/p/")).await;
    assert_eq!(body["purged"].as_u64(), Some(2), "{body}");
    assert_eq!(get(&gw, "/p/2", &[]).await.x_cache, "MISS");
    assert_eq!(get(&gw, "/q", &[]).await.x_cache, "HIT");
    let (_, body) = purge("route=r".into()).await;
    assert!(body["purged"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(get(&gw, "/q", &[]).await.x_cache, "MISS");
    let (status, body) = purge("route=nope&key=x&prefix=y".into()).await;
    assert_eq!(status, 400, "{body}");
    // A misspelled parameter is refused, never read as "purge everything".
    get(&gw, "/q", &[]).await;
    let (status, body) = purge("kye=x".into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("key, prefix and route"),
        "{body}"
    );
    assert_eq!(get(&gw, "/q", &[]).await.x_cache, "HIT");
    gw.shutdown(Duration::from_secs(2)).await;
}

/// The shipped binary: a hit, a 256 MiB body over the cap streamed with flat memory, and the
/// last good answer while the backend is gone.
#[tokio::test]
async fn the_binary_caches_streams_big_bodies_flat_and_serves_stale() {
    let mut up = FakeUpstream::start("up").await;
    serve(
        &up,
        "good",
        &[("cache-control", "max-age=60"), ("age", "59")],
    );
    let yaml =
        config(&up, "serve_stale_on_error: 60s").replace("admin: {address: \"127.0.0.1:0\"}\n", "");
    let gw = common::binary::Running::start(&yaml, &[]);
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let c = client();
    let x_cache = |r: &reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_string();
    let r = c.get(url("/g")).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let r = c.get(url("/g")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");

    up.set(Behavior {
        mode: gatehouse_testkit::Mode::Stream(256 << 20),
        headers: vec![("cache-control".into(), "max-age=60".into())],
        ..Behavior::default()
    });
    let before = gw.peak_rss_kib();
    let mut r = c.get(url("/huge")).send().await.unwrap();
    let mut n = 0usize;
    while let Some(chunk) = r.chunk().await.unwrap() {
        n += chunk.len();
    }
    assert_eq!(n, 256 << 20);
    let grew = gw.peak_rss_kib().saturating_sub(before);
    assert!(
        grew < 32 << 10,
        "peak RSS grew {grew} KiB streaming 256 MiB"
    );

    up.stop().await;
    let body = eventually("the stale answer", Duration::from_secs(5), || async {
        let r = c.get(url("/g")).send().await.unwrap();
        (x_cache(&r) == "STALE").then_some(r)
    })
    .await;
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().await.unwrap(), "good");
}
