//! Routes that answer themselves, through the shipped binary: `redirect` (location from the
//! route and the request, query kept or not, the request's port only while scheme and host are
//! its own) and `direct_response`, both after the route's filters; `check` names bad settings.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const CONFIG: &str = r#"
listeners: [{name: l, address: "127.0.0.1:0"}]
consumers: [{name: a, api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}]
routes:
  - name: moved
    match: {path_prefix: /old}
    redirect: {status: 301, path: /new}
  - name: secure
    match: {path_prefix: /login}
    redirect: {scheme: https, strip_query: true}
  - name: elsewhere
    match: {path: /docs}
    redirect: {host: docs.example.com, port: 8443, scheme: https, status: 308}
  - name: health
    match: {path: /healthz}
    direct_response: {body: "ok\n"}
  - name: gone
    match: {path: /v0}
    direct_response: {status: 410, body: '{"error": "v0 is gone"}', content_type: application/json}
  - name: private
    match: {path: /private}
    direct_response: {body: secret}
    filters: [auth: {api_key: {}}]
"#;

#[tokio::test]
async fn redirects_and_direct_responses() {
    let gw = Running::start(CONFIG, &[]);
    let c = no_redirects();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let port = gw.addr.port();

    let r = c.get(url("/old/page?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("http://127.0.0.1:{port}/new?x=1").as_str()
    );

    let r = c
        .get(url("/login?next=/me"))
        .header("host", "shop.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://shop.test/login");

    let r = c.get(url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://docs.example.com:8443/docs"
    );

    let r = c.get(url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), "ok\n");

    let r = c.get(url("/v0")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"error": "v0 is gone"}"#);

    // The route's filters run first.
    assert_eq!(c.get(url("/private")).send().await.unwrap().status(), 401);
    let r = c
        .get(url("/private"))
        .header("x-api-key", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap().as_str()),
        (200, "secret")
    );
}

#[test]
fn check_names_bad_reply_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"listeners: [{name: l, address: "127.0.0.1:0"}]
clusters: [{name: c, endpoints: [{address: "127.0.0.1:1"}]}]
routes:
  - {name: a, redirect: {status: 200, scheme: ftp, host: "x/y", path: "nope"}}
  - {name: b, match: {path: /b}, cluster: c, direct_response: {}}
  - {name: d, match: {path: /d}, direct_response: {status: 99}, strip_prefix: true}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "routes[0].redirect.status: 200 is not a redirect",
        "routes[0].redirect.scheme: expected http or https",
        "routes[0].redirect.host: expected a host name",
        "routes[0].redirect.path: expected an absolute path",
        "routes[1].cluster: use one of cluster, cluster_from_path, redirect and direct_response",
        "routes[2].direct_response.status: must be a status from 200 to 599",
        "routes[2].strip_prefix: a redirect or direct_response route forwards nothing to strip",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
