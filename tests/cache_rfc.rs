//! RFC 9111 corner cases of the response cache, each one a way a shared cache can hand one
//! client's content to another, serve stale content or break a response: found by running
//! the HTTP WG cache suite's scenarios against the gateway, kept here as regressions.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{eventually, Behavior, FakeUpstream, TestGateway};
use std::time::{Duration, SystemTime};

fn config(up: &FakeUpstream) -> String {
    format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
clusters:
  - name: c
    health_check: {{enabled: false}}
    retries: {{attempts: 0}}
    circuit_breaker: {{enabled: false}}
    endpoints: [{{address: "{}"}}]
routes: [{{name: r, cluster: c, filters: [cache: {{}}]}}]
"#,
        up.addr()
    )
}

fn headers(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn serve(up: &FakeUpstream, body: &str, h: &[(&str, &str)]) {
    up.set(Behavior {
        body: body.to_string().into(),
        headers: headers(h),
        ..Behavior::default()
    });
}

async fn get(gw: &TestGateway, path: &str, h: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().get(gw.url(path));
    for (k, v) in h {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Whether the second of two identical GETs is a hit.
async fn reused(gw: &TestGateway, up: &FakeUpstream, path: &str, h: &[(&str, &str)]) -> bool {
    let before = up.hits();
    get(gw, path, &[]).await;
    let hit = x_cache(&get(gw, path, h).await) == "HIT";
    assert_eq!(up.hits() - before, if hit { 1 } else { 2 }, "{path}");
    hit
}

fn http_date(ago: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() - ago)
}

#[tokio::test]
async fn directives_are_case_insensitive_and_parsed_strictly() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    let cases: &[(&str, bool)] = &[
        ("PRIVATE, max-age=3600", false),
        ("Private, Max-Age=3600", false),
        ("NO-STORE, max-age=3600", false),
        ("MaX-aGe=3600", true),
        ("max-age =3600", false),
        ("max-age= 3600", false),
        (r#"extension="a, max-age=3600", max-age=0"#, false),
        ("max-age=18446744073709551615", true),
        ("max-age=99999999999999999999", true),
    ];
    for (i, (cc, stored)) in cases.iter().enumerate() {
        serve(&up, "x", &[("cache-control", cc)]);
        assert_eq!(
            reused(&gw, &up, &format!("/cc{i}"), &[]).await,
            *stored,
            "{cc}"
        );
    }
    // A malformed restriction still restricts (freshness from Expires would otherwise share it).
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    for (i, cc) in [
        "no-store =",
        "private=",
        r#"x="a, no-store"#,
        "private max-age=60",
        "no-cache=",
    ]
    .iter()
    .enumerate()
    {
        serve(&up, "x", &[("cache-control", cc), ("expires", &later)]);
        assert!(!reused(&gw, &up, &format!("/bad{i}"), &[]).await, "{cc}");
    }
    // Request directives too.
    serve(&up, "x", &[("cache-control", "max-age=3600")]);
    assert!(!reused(&gw, &up, "/rq1", &[("cache-control", "NO-CACHE")]).await);
    assert!(!reused(&gw, &up, "/rq2", &[("pragma", "NO-CACHE")]).await);
}

#[tokio::test]
async fn a_client_cannot_make_the_cache_serve_stale_or_fresher_than_asked() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    // no-cache with a validator: revalidated even when the client says max-stale.
    serve(
        &up,
        "v1",
        &[("cache-control", "no-cache"), ("etag", "\"1\"")],
    );
    get(&gw, "/nc", &[]).await;
    get(&gw, "/nc", &[("cache-control", "max-stale")]).await;
    assert_eq!(up.not_modified(), 1, "asked the origin");
    // proxy-revalidate / s-maxage: fresh reuse is fine, stale reuse is not.
    serve(
        &up,
        "v1",
        &[("cache-control", "max-age=3600, proxy-revalidate")],
    );
    assert!(reused(&gw, &up, "/pr", &[]).await);
    serve(&up, "v1", &[("cache-control", "s-maxage=1"), ("age", "5")]);
    get(&gw, "/sm", &[]).await;
    let r = get(&gw, "/sm", &[("cache-control", "max-stale=600")]).await;
    assert_eq!(x_cache(&r), "MISS");
    // A request's max-age=0 on a fresh entry without stale-while-revalidate goes to the origin
    // (not "stale-while-revalidate").
    serve(&up, "v1", &[("cache-control", "max-age=3600")]);
    get(&gw, "/ma", &[]).await;
    serve(&up, "v2", &[("cache-control", "max-age=3600")]);
    let r = get(&gw, "/ma", &[("cache-control", "max-age=0")]).await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(r.text().await.unwrap(), "v2");
    // only-if-cached: a 504 when nothing fresh is stored.
    let r = get(&gw, "/oic", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status(), 504);
    let r = get(&gw, "/ma", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r).as_str()), (200, "HIT"));
}

#[tokio::test]
async fn a_304_updates_the_stored_head_and_is_never_passed_off_as_the_answer() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    let lm = http_date(Duration::from_secs(86_400));
    // The 304 carries no validator and a new header: the stored body and head, updated.
    up.set(Behavior {
        body: "the-body".into(),
        headers: headers(&[
            ("cache-control", "max-age=0, must-revalidate"),
            ("last-modified", &lm),
            ("content-type", "text/html"),
            ("x-stored", "1"),
        ]),
        not_modified_headers: Some(headers(&[
            ("cache-control", "max-age=0, must-revalidate"),
            ("x-new", "added"),
        ])),
        ..Behavior::default()
    });
    get(&gw, "/u", &[]).await;
    for _ in 0..2 {
        let r = get(&gw, "/u", &[]).await;
        assert_eq!((r.status().as_u16(), x_cache(&r).as_str()), (200, "HIT"));
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["x-stored"], "1");
        assert_eq!(h["x-new"], "added");
        assert_eq!(r.text().await.unwrap(), "the-body");
    }
    assert_eq!(up.not_modified(), 2);
    // A 304 that now says no-store: served once from the entry, then the entry is gone.
    up.set(Behavior {
        body: "body".into(),
        headers: headers(&[("cache-control", "no-cache"), ("etag", "\"e\"")]),
        not_modified_headers: Some(headers(&[("cache-control", "no-store"), ("etag", "\"e\"")])),
        ..Behavior::default()
    });
    get(&gw, "/ns", &[]).await;
    let r = get(&gw, "/ns", &[]).await;
    assert_eq!(r.text().await.unwrap(), "body");
    let before = up.not_modified();
    get(&gw, "/ns", &[]).await;
    assert_eq!(
        up.not_modified(),
        before,
        "nothing left to revalidate: a plain GET"
    );
    // A client's conditional on a response the cache may not store still gets its 304.
    serve(
        &up,
        "private",
        &[("cache-control", "no-store"), ("etag", "\"p\"")],
    );
    let r = get(&gw, "/nsc", &[("if-none-match", "\"p\"")]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r).as_str()), (304, "MISS"));
}

#[tokio::test]
async fn stored_heads_keep_every_line_and_the_origin_date() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    serve(
        &up,
        "x",
        &[
            ("cache-control", "max-age=3600"),
            ("cache-control", "no-transform"),
            ("link", "<a>; rel=preload"),
            ("link", "<b>; rel=preload"),
            ("cache-status", "Origin; hit"),
        ],
    );
    let first = get(&gw, "/lines", &[]).await;
    let date = first.headers()["date"].clone();
    // The miss that stored it says the backend's own age, not 0.
    serve(&up, "x", &[("cache-control", "max-age=600"), ("age", "30")]);
    let aged = get(&gw, "/aged", &[]).await;
    assert_eq!(x_cache(&aged), "MISS");
    assert!(
        aged.headers()["age"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 30
    );
    let r = get(&gw, "/lines", &[]).await;
    assert_eq!(x_cache(&r), "HIT");
    let h = r.headers();
    let all = |n: &str| {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("link"), ["<a>; rel=preload", "<b>; rel=preload"]);
    assert_eq!(all("cache-control"), ["max-age=3600", "no-transform"]);
    assert_eq!(h["date"], date, "the origin's Date, not the cache's");
    assert!(h["cache-status"]
        .to_str()
        .unwrap()
        .starts_with("Origin; hit, gatehouse; hit"));
    assert!(!h.contains_key("warning"));
}

#[tokio::test]
async fn age_and_date_count_against_freshness_and_dates_are_parsed_strictly() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    let two_hours = http_date(Duration::from_secs(7200));
    let cases: &[(&[(&str, &str)], bool)] = &[
        (
            &[("cache-control", "max-age=3600"), ("age", "7200,0")],
            false,
        ),
        (
            &[
                ("cache-control", "max-age=3600"),
                ("age", "99999999999999999999"),
            ],
            false,
        ),
        (
            &[("cache-control", "max-age=3600"), ("date", &two_hours)],
            false,
        ),
        (&[("cache-control", "max-age=3600"), ("age", "30")], true),
        (&[("expires", "Thu, 18  Aug  2050 02:01:18 GMT")], false),
        (&[("expires", "Thu, 18 Aug 2050 02:01:18 +0000")], false),
        (&[("expires", "Thursday, 18-Aug-50 02:01:18 GMT")], true),
        (&[("expires", "Thu Aug 18 02:01:18 2050")], true),
        (
            &[("cache-control", "immutable"), ("expires", &two_hours)],
            false,
        ),
    ];
    for (i, (h, stored)) in cases.iter().enumerate() {
        serve(&up, "x", h);
        assert_eq!(
            reused(&gw, &up, &format!("/age{i}"), &[]).await,
            *stored,
            "{h:?}"
        );
    }
}

#[tokio::test]
async fn vary_compares_whole_values() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    serve(
        &up,
        "v0",
        &[("cache-control", "max-age=3600"), ("vary", "Foo")],
    );
    let mut r = client().get(gw.url("/v"));
    r = r.header("foo", "1").header("foo", "2");
    r.send().await.unwrap();
    serve(
        &up,
        "v1",
        &[("cache-control", "max-age=3600"), ("vary", "Foo")],
    );
    let r = client()
        .get(gw.url("/v"))
        .header("foo", "1")
        .header("foo", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(r.text().await.unwrap(), "v1");
    let r = get(&gw, "/v", &[("foo", "1, 2")]).await;
    assert_eq!(
        (x_cache(&r).as_str(), r.text().await.unwrap().as_str()),
        ("HIT", "v0")
    );
}

#[tokio::test]
async fn unsafe_and_unknown_methods_invalidate_the_target_and_same_origin_locations() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&config(&up)).await;
    serve(&up, "x", &[("cache-control", "max-age=3600")]);
    for p in ["/a", "/b", "/c"] {
        get(&gw, p, &[]).await;
    }
    let m = reqwest::Method::from_bytes(b"M-SEARCH").unwrap();
    client().request(m, gw.url("/a")).send().await.unwrap();
    assert_eq!(
        x_cache(&get(&gw, "/a", &[]).await),
        "MISS",
        "unknown method"
    );
    let host = gw.addr().to_string();
    up.set(Behavior {
        headers: headers(&[
            ("location", "/b"),
            ("content-location", &format!("http://{host}/c")),
        ]),
        ..Behavior::default()
    });
    client().post(gw.url("/other")).send().await.unwrap();
    serve(&up, "x", &[("cache-control", "max-age=3600")]);
    assert_eq!(x_cache(&get(&gw, "/b", &[]).await), "MISS", "Location");
    assert_eq!(
        x_cache(&get(&gw, "/c", &[]).await),
        "MISS",
        "Content-Location"
    );
    // OPTIONS is safe: nothing is forgotten.
    client()
        .request(reqwest::Method::OPTIONS, gw.url("/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&get(&gw, "/a", &[]).await), "HIT");
}

#[tokio::test]
async fn stale_windows_apply_without_a_lifetime_or_validator() {
    let mut up = FakeUpstream::start("up").await;
    serve(
        &up,
        "kept",
        &[("cache-control", "max-age=0, stale-if-error=60")],
    );
    let gw = TestGateway::start(&config(&up)).await;
    get(&gw, "/sie", &[]).await;
    up.stop().await;
    let r = eventually("served stale", Duration::from_secs(5), || async {
        let r = get(&gw, "/sie", &[]).await;
        (x_cache(&r) == "STALE").then_some(r)
    })
    .await;
    assert_eq!(r.text().await.unwrap(), "kept");
}
