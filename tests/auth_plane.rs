//! Authentication and the admin plane that an attacker cannot walk around, against the shipped
//! binary: `cluster_from_path` reaches only what its route lists; the admin API refuses other
//! Hosts (DNS rebinding), cross-site requests and non-JSON mutations, rate-limits failed tokens
//! and can generate its own token; JWT registered claims are required and typed; short secrets,
//! mixed key families and long leeways are check errors; shadowed routes and identity used
//! before auth are check errors; the backend gets the consumer and never a client's copy.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::FakeUpstream;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
const SECRET: &str = "an-hs256-secret-of-32-bytes-or-more!";

fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `gatehouse check` on `yaml`: (success, stderr).
fn check(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = gatehouse(&["check", path.to_str().unwrap()], env);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Raw request to `addr`; returns (status, head and body).
async fn send(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    let r = common::raw(addr, raw.as_bytes()).await;
    let status = r
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, r)
}

fn base(app: &str, billing: &str, routes: &str, extra: &str) -> String {
    let digest = gatehouse::filter::api_key::digest_string("billing-key-1");
    format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:0'}}\n\
         access_log: off\n\
         consumers: [{{name: finance, api_keys: ['{digest}']}}]\n\
         clusters:\n\
         \x20 - {{name: public-api, endpoints: [{{address: '{app}'}}], health_check: {{enabled: false}}}}\n\
         \x20 - {{name: internal-billing, endpoints: [{{address: '{billing}'}}], health_check: {{enabled: false}}}}\n\
         {extra}\
         routes:\n{routes}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_from_path_reaches_only_what_the_route_lists() {
    let app = FakeUpstream::start("app").await;
    let billing = FakeUpstream::start("billing").await;
    let routes = "  - {name: billing, match: {path_prefix: /billing}, cluster: internal-billing, filters: [{auth: {api_key: {}}}]}\n\
                  \x20 - {name: proxy, match: {path_template: '/v1/proxy/{service}/{*rest}'}, cluster_from_path: {param: service, allow: [public-api]}, strip_prefix: true}\n";
    let yaml = base(
        &app.addr().to_string(),
        &billing.addr().to_string(),
        routes,
        "",
    );
    let gw = Running::start(&yaml, &[]);
    let get = |t: &str| format!("GET {t} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    assert_eq!(send(gw.addr, &get("/billing/invoices")).await.0, 401);
    let (s, body) = send(gw.addr, &get("/v1/proxy/internal-billing/billing/invoices")).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("unknown_cluster"), "{body}");
    assert_eq!(billing.hits(), 0, "the billing backend was never reached");
    assert_eq!(send(gw.addr, &get("/v1/proxy/public-api/x")).await.0, 200);
    assert_eq!(app.last_seen().uri.path(), "/x");

    // The old form, a bare parameter name, is refused with what to write instead; listing the
    // billing cluster on the open route is allowed but `check` warns about it.
    let old = yaml.replace("{param: service, allow: [public-api]}", "service");
    let (ok, err) = check(&old, &[]);
    assert!(!ok);
    assert!(
        err.contains("cluster_from_path must list the clusters it may reach"),
        "{err}"
    );
    let wide = yaml.replace(
        "allow: [public-api]",
        "allow: [public-api, internal-billing]",
    );
    let (ok, err) = check(&wide, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: cluster \"internal-billing\" is reachable through routes with different authentication: billing (api_key(header x-api-key)), proxy (no auth)"),
        "{err}"
    );
    let typo = yaml.replace("allow: [public-api]", "allow: [public-apl]");
    let (ok, err) = check(&typo, &[]);
    assert!(!ok);
    assert!(
        err.contains("allow[0]: no cluster named \"public-apl\" (did you mean \"public-api\"?)"),
        "{err}"
    );
}

#[test]
fn shadowed_routes_and_identity_before_auth_are_check_errors() {
    let routes = "  - {name: open, match: {path_prefix: /admin}, cluster: public-api}\n\
                  \x20 - {name: locked, match: {path_prefix: /admin}, cluster: internal-billing, filters: [{auth: {api_key: {}}}]}\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, ""), &[]);
    assert!(!ok);
    assert!(err.contains("routes[1].match: route \"locked\" can never match: route \"open\" (routes[0]) matches every request it does and always wins"), "{err}");

    let routes = "  - {name: r, cluster: public-api, filters: [{rate_limit: per-consumer}, {auth: {api_key: {}}}]}\n";
    let extra = "rate_limits: [{name: per-consumer, rate: 5/s, key: consumer}]\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, extra), &[]);
    assert!(!ok);
    assert!(err.contains("routes[0].filters[0].rate_limit: \"per-consumer\" is keyed on the consumer, but no auth filter runs before it"), "{err}");
    let fixed = routes.replace(
        "[{rate_limit: per-consumer}, {auth: {api_key: {}}}]",
        "[{auth: {api_key: {}}}, {rate_limit: per-consumer}]",
    );
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", &fixed, extra), &[]);
    assert!(ok, "{err}");

    // An empty query parameter name would accept `?=KEY`.
    let routes = "  - {name: r, cluster: public-api, filters: [{auth: {api_key: {query: ''}}}]}\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, ""), &[]);
    assert!(!ok);
    assert!(
        err.contains("auth.api_key.query: expected a query parameter name"),
        "{err}"
    );
}

/// A gateway whose admin listener we attack, with one endpoint to drain.
async fn admin_gateway(admin_extra: &str) -> (Running, FakeUpstream, std::net::SocketAddr) {
    let app = FakeUpstream::start("app").await;
    let admin_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         admin: {{address: '127.0.0.1:{admin_port}'{admin_extra}}}\n\
         access_log: off\n\
         clusters: [{{name: app, endpoints: [{{address: '{}'}}], health_check: {{enabled: false}}}}]\n\
         routes: [{{name: all, cluster: app}}]\n",
        app.addr()
    );
    let gw = Running::start(&yaml, &[]);
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    gatehouse_testkit::eventually("admin up", std::time::Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(admin).await.ok().map(|_| ())
    })
    .await;
    (gw, app, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_web_page_can_drive_the_admin_api() {
    let (_gw, app, admin) = admin_gateway("").await;
    let host = format!("127.0.0.1:{}", admin.port());
    let drain = format!("/clusters/app/endpoints/{}/drain", app.addr());
    let post = |headers: &str, body: &str| {
        format!(
            "POST {drain} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // What a page on another site can send without a preflight: refused, nothing changes.
    let attacks = [
        (
            "text/plain form",
            post(
                "Content-Type: text/plain\r\nOrigin: http://evil.example\r\n",
                "x",
            ),
        ),
        (
            "urlencoded form",
            post("Content-Type: application/x-www-form-urlencoded\r\n", "a=b"),
        ),
        (
            "empty no-cors POST",
            post("Origin: http://evil.example\r\n", ""),
        ),
        (
            "empty POST, no type, from a browser",
            post(
                "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: no-cors\r\n",
                "",
            ),
        ),
        (
            "JSON from another origin",
            post(
                "Content-Type: application/json\r\nOrigin: http://evil.example\r\n",
                "{}",
            ),
        ),
        (
            "JSON, other port of localhost",
            post(
                &format!(
                    "Content-Type: application/json\r\nOrigin: http://localhost:{}\r\n",
                    admin.port() + 1
                ),
                "{}",
            ),
        ),
        (
            "JSON, Sec-Fetch-Site cross-site",
            post(
                "Content-Type: application/json\r\nSec-Fetch-Site: cross-site\r\n",
                "{}",
            ),
        ),
        (
            "Origin null",
            post("Content-Type: application/json\r\nOrigin: null\r\n", "{}"),
        ),
    ];
    for (name, raw) in &attacks {
        let (s, r) = send(admin, raw).await;
        assert!(s == 403 || s == 415, "{name}: {s} {r}");
    }
    // DNS rebinding: the page's own name now points at 127.0.0.1; it may not read or write.
    for raw in [
        format!("GET /config HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n", admin.port()),
        format!("POST {drain} HTTP/1.1\r\nHost: evil.example:{}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}", admin.port()),
        "GET /config HTTP/1.1\r\nHost: localhost:1\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let (s, r) = send(admin, &raw).await;
        assert_eq!(s, 403, "{r}");
    }
    let view = reqwest::get(format!("http://{admin}/clusters/app"))
        .await
        .unwrap();
    let v: Value = view.json().await.unwrap();
    assert_eq!(
        v["endpoints"][0]["drained"], false,
        "no attack drained the endpoint"
    );

    // Local tools keep working without a token: curl-style JSON, and the dashboard's own origin.
    let (s, r) = send(admin, &post("Content-Type: application/json\r\n", "{}")).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = send(
        admin,
        &post(&format!("Content-Type: application/json\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n"), "{}"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    // curl -X POST without a body or a type (no Origin, no Sec-Fetch-*: not a browser).
    let (s, r) = send(admin, &post("", "")).await;
    assert_eq!(s, 200, "{r}");
    // Every refusal is JSON: a wrong type, a bad body, an unknown path, a wrong method.
    let breaker = format!("/clusters/app/endpoints/{}/breaker", app.addr());
    let raw = |method: &str, path: &str, headers: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (want, req) in [
        (
            415,
            raw("POST", &drain, "Content-Type: text/plain\r\n", "x"),
        ),
        (400, raw("POST", &breaker, "", "{not json")),
        (404, raw("GET", "/nothing/here", "", "")),
        (405, raw("DELETE", "/status", "", "")),
    ] {
        let (s, r) = send(admin, &req).await;
        assert_eq!(s, want, "{r}");
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {r}"));
        assert_eq!(v["status"], want, "{r}");
        assert!(v["error"].is_string(), "{r}");
    }
    let (s, r) = send(admin, &raw("POST", &breaker, "", "{\"state\":\"closed\"}")).await;
    assert_eq!(s, 200, "JSON without a Content-Type: {r}");
    // No page may frame the dashboard to click its buttons (clickjacking) ...
    let (s, r) = send(admin, &raw("GET", "/dashboard", "", "")).await;
    assert_eq!(s, 200, "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("x-frame-options: deny"), "{r}");
    assert!(
        lower.contains("content-security-policy: frame-ancestors 'none'"),
        "{r}"
    );
    // ... nor reach it as the unspecified address, to which Chromium sends no Sec-Fetch-*.
    for unspecified in ["0.0.0.0", "[::]"] {
        let req = format!(
            "GET /dashboard HTTP/1.1\r\nHost: {unspecified}:{}\r\nConnection: close\r\n\r\n",
            admin.port()
        );
        let (s, r) = send(admin, &req).await;
        assert_eq!(s, 403, "{unspecified}: {r}");
    }
    let (s, _) = send(
        admin,
        &format!(
            "GET /status HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            admin.port()
        ),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_and_failed_tokens_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state").join("admin-token");
    let (gw, _app, admin) =
        admin_gateway(&format!(", token: auto, token_file: '{}'", file.display())).await;
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(token.len(), 48);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable only by its owner");
    }
    drop(gw);
    // Started again, a new token replaces the file.
    let (_gw, _app, admin2) =
        admin_gateway(&format!(", token: auto, token_file: '{}'", file.display())).await;
    let token2 = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_ne!(token, token2);
    let _ = admin;
    let c = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            c.get(format!("http://{admin2}/status"))
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            c.get(format!("http://{admin2}/status"))
                .bearer_auth(&token2)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    // EventSource's ?access_token=, percent-encoded like the dashboard sends it.
    let r = c
        .get(format!("http://{admin2}/events?access_token={}", token2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    // Ten wrong tokens, then even the right one waits out the minute.
    for _ in 0..10 {
        let r = c
            .get(format!("http://{admin2}/status"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 401);
    }
    let r = c
        .get(format!("http://{admin2}/status"))
        .bearer_auth(&token2)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 429);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn jwt_config(app: &str, issuer_extra: &str, strip: &str) -> String {
    let digest = gatehouse::filter::api_key::digest_string("k-1");
    format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\n\
         access_log: off\n\
         identity: {{strip_headers: [{strip}]}}\n\
         consumers: [{{name: svc-a, api_keys: ['{digest}']}}]\n\
         jwt_issuers:\n\
         \x20 - {{name: main, issuer: 'https://auth.example', audience: api, algorithms: [HS256], secret_env: GH_JWT_SECRET{issuer_extra}}}\n\
         clusters: [{{name: app, endpoints: [{{address: '{app}'}}], health_check: {{enabled: false}}}}]\n\
         routes:\n\
         \x20 - {{name: jwt, match: {{path_prefix: /jwt}}, cluster: app, filters: [{{auth: {{jwt: {{issuer: main}}}}}}]}}\n\
         \x20 - {{name: both, match: {{path_prefix: /both}}, cluster: app, filters: [{{auth: {{api_key: {{}}}}}}, {{auth: {{jwt: {{issuer: main}}}}}}]}}\n\
         \x20 - {{name: key, match: {{path_prefix: /key}}, cluster: app, filters: [{{auth: {{api_key: {{}}}}}}]}}\n\
         \x20 - {{name: open, cluster: app}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_registered_claims_are_required_and_typed() {
    let app = FakeUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, jwt_config(&app.addr().to_string(), "", "")).unwrap();
    let gw = Running::start_with_env(&path, &[("GH_JWT_SECRET", SECRET)]);
    let exp = now() + 600;
    let good = json!({"sub": "alice", "iss": "https://auth.example", "aud": "api", "exp": exp});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("good", good.clone(), 200, ""),
        (
            "aud list holding ours",
            with("aud", json!(["other", "api"])),
            200,
            "",
        ),
        ("no iss", without("iss"), 401, "invalid_issuer"),
        (
            "numeric iss",
            with("iss", json!(123)),
            401,
            "invalid_issuer",
        ),
        (
            "iss list",
            with("iss", json!(["evil", "https://auth.example"])),
            401,
            "invalid_issuer",
        ),
        (
            "wrong iss",
            with("iss", json!("https://evil.example")),
            401,
            "invalid_issuer",
        ),
        ("no aud", without("aud"), 401, "invalid_audience"),
        (
            "numeric aud",
            with("aud", json!(7)),
            401,
            "invalid_audience",
        ),
        (
            "aud list with a number",
            with("aud", json!([7, "api"])),
            401,
            "invalid_audience",
        ),
        (
            "wrong aud",
            with("aud", json!("web")),
            401,
            "invalid_audience",
        ),
        ("no exp", without("exp"), 401, ""),
        ("string exp", with("exp", json!(exp.to_string())), 401, ""),
        (
            "expired past the leeway",
            with("exp", json!(now() - 120)),
            401,
            "token_expired",
        ),
    ];
    let c = reqwest::Client::new();
    for (name, claims, want, reason) in cases {
        let r = c
            .get(format!("http://{}/jwt", gw.addr))
            .bearer_auth(hs(claims))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = if status == 200 {
            json!({})
        } else {
            r.json().await.unwrap()
        };
        assert_eq!(status, want, "{name}: {body}");
        if want == 401 {
            assert_eq!(
                www.as_deref(),
                Some("Bearer realm=\"gatehouse\", error=\"invalid_token\""),
                "{name}"
            );
            if !reason.is_empty() {
                assert_eq!(body["reason"], reason, "{name}");
            }
        }
    }
    // No token at all: a challenge without an error code (RFC 6750 §3.1); API keys say so too.
    let r = c
        .get(format!("http://{}/jwt", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"gatehouse\""
    );
    let r = c
        .get(format!("http://{}/key", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "ApiKey realm=\"gatehouse\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_the_consumer_and_never_a_clients_copy() {
    let app = FakeUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(
        &path,
        jwt_config(
            &app.addr().to_string(),
            ", consumer_claim: uid",
            "x-user-id",
        ),
    )
    .unwrap();
    let gw = Running::start_with_env(&path, &[("GH_JWT_SECRET", SECRET)]);
    let c = reqwest::Client::new();
    let spoof = |r: reqwest::RequestBuilder| {
        r.header("x-gatehouse-consumer", "admin")
            .header("x-user-id", "0")
    };
    // An open route: the client's identity headers are removed, none is added.
    let r = spoof(c.get(format!("http://{}/open", gw.addr)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.last_seen();
    assert!(
        seen.headers.get("x-gatehouse-consumer").is_none(),
        "{:?}",
        seen.headers
    );
    assert!(seen.headers.get("x-user-id").is_none());
    // An API key: the consumer it maps to.
    let r = spoof(c.get(format!("http://{}/key", gw.addr)))
        .header("x-api-key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.last_seen().headers["x-gatehouse-consumer"], "svc-a");
    // A numeric consumer claim is a consumer too.
    let claims =
        json!({"uid": 4242, "iss": "https://auth.example", "aud": "api", "exp": now() + 600});
    let r = spoof(c.get(format!("http://{}/jwt", gw.addr)))
        .bearer_auth(hs(claims))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.last_seen().headers["x-gatehouse-consumer"], "4242");
    // An API key, then a token that names no consumer: the key's consumer stays.
    let claims = json!({"iss": "https://auth.example", "aud": "api", "exp": now() + 600});
    let r = c
        .get(format!("http://{}/both", gw.addr))
        .header("x-api-key", "k-1")
        .bearer_auth(hs(claims))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.last_seen().headers["x-gatehouse-consumer"], "svc-a");
}

#[test]
fn weak_secrets_mixed_families_and_long_leeways_are_refused() {
    let app = "127.0.0.1:9";
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "empty secret",
            "",
            &[("GH_JWT_SECRET", "")],
            "the HS256 secret in GH_JWT_SECRET is 0 bytes; it must be at least 32",
        ),
        (
            "one-byte secret",
            "",
            &[("GH_JWT_SECRET", "x")],
            "is 1 bytes; it must be at least 32",
        ),
        (
            "HS and RS together",
            ", keys_file: /dev/null",
            &[("GH_JWT_SECRET", SECRET)],
            "",
        ),
        (
            "year-long leeway",
            ", leeway: 87600h",
            &[("GH_JWT_SECRET", SECRET)],
            "is too long: at most 5m of clock skew",
        ),
    ];
    for (name, extra, env, wanted) in cases {
        let mut yaml = jwt_config(app, extra, "");
        if *name == "HS and RS together" {
            yaml = yaml.replace("algorithms: [HS256]", "algorithms: [RS256, HS256]");
        }
        let (ok, err) = check(&yaml, env);
        assert!(!ok, "{name}: accepted");
        let wanted = if wanted.is_empty() && *name == "HS and RS together" {
            "HS256 (a shared secret) cannot be mixed with RS256/ES256"
        } else if wanted.is_empty() {
            "jwt"
        } else {
            wanted
        };
        assert!(err.contains(wanted), "{name}: {err}");
    }
    // RS256 and ES256 from one PEM file cannot both work.
    let yaml = jwt_config(app, "", "").replace(
        "algorithms: [HS256], secret_env: GH_JWT_SECRET",
        &format!("algorithms: [RS256, ES256], key_file: '{DIR}/rsa-public.pem'"),
    );
    let (ok, err) = check(&yaml, &[]);
    assert!(!ok);
    assert!(
        err.contains("RS256 and ES256 need keys of two families"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_for_encryption_or_another_algorithm_do_not_verify() {
    let app = FakeUpstream::start("app").await;
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/jwks.json")).unwrap())
            .unwrap();
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(format!("{DIR}/rsa-private.pem")).unwrap())
        .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let token = encode(
        &header,
        &json!({"sub": "a", "iss": "https://auth.example", "aud": "api", "exp": now() + 600}),
        &rsa,
    )
    .unwrap();
    let c = reqwest::Client::new();
    for (name, change, want) in [
        ("as published", None, 200),
        ("use: enc", Some(("use", json!("enc"))), 401),
        ("alg: RS384", Some(("alg", json!("RS384"))), 401),
    ] {
        let mut set = jwks.clone();
        if let Some((k, v)) = change {
            // A second key keeps the issuer buildable (an issuer with no usable key at all is a
            // config error); its `kid` does not match the token's.
            let mut other = set["keys"][0].clone();
            other["kid"] = json!("rsa-2");
            set["keys"][0][k] = v;
            set["keys"].as_array_mut().unwrap().push(other);
        }
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("jwks.json");
        std::fs::write(&keys, set.to_string()).unwrap();
        let yaml = jwt_config(&app.addr().to_string(), "", "").replace(
            "algorithms: [HS256], secret_env: GH_JWT_SECRET",
            &format!("algorithms: [RS256], keys_file: '{}'", keys.display()),
        );
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, yaml).unwrap();
        let gw = Running::start_with_env(&path, &[]);
        let r = c
            .get(format!("http://{}/jwt", gw.addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issuer_with_rsa_and_ec_keys_accepts_both() {
    let app = FakeUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = jwt_config(&app.addr().to_string(), "", "").replace(
        "algorithms: [HS256], secret_env: GH_JWT_SECRET",
        &format!("algorithms: [RS256, ES256], keys_file: '{DIR}/jwks-mixed.json'"),
    );
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let gw = Running::start_with_env(&path, &[]);
    let claims =
        json!({"sub": "a", "iss": "https://auth.example", "aud": "api", "exp": now() + 600});
    let c = reqwest::Client::new();
    for (alg, kid, key) in [
        (
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(&std::fs::read(format!("{DIR}/rsa-private.pem")).unwrap())
                .unwrap(),
        ),
        (
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_pem(&std::fs::read(format!("{DIR}/ec-private.pem")).unwrap())
                .unwrap(),
        ),
    ] {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        let t = encode(&h, &claims, &key).unwrap();
        let r = c
            .get(format!("http://{}/jwt", gw.addr))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{alg:?}");
    }
}

/// Signs `header` and `claims` exactly as given with HS256 (for headers jsonwebtoken will not
/// write, like `crit`).
fn hs_raw(header: Value, claims: Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_cannot_be_smuggled_or_lost() {
    let app = FakeUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let yaml = jwt_config(&app.addr().to_string(), "", "x-user-id").replace(
        "address: '127.0.0.1:0'}]",
        "address: '127.0.0.1:0', headers_with_underscores: allow}]",
    );
    std::fs::write(&path, yaml).unwrap();
    let gw = Running::start_with_env(&path, &[("GH_JWT_SECRET", SECRET)]);
    let c = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    // `Connection` cannot take away the header the gateway sets.
    let r = c
        .get(url("/key"))
        .header("x-api-key", "k-1")
        .header("connection", "x-gatehouse-consumer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.last_seen().headers["x-gatehouse-consumer"], "svc-a");
    // `_` spellings of identity headers never pass, even where underscores are allowed.
    let r = c
        .get(url("/open"))
        .header("x_gatehouse_consumer", "admin")
        .header("X_User_Id", "1")
        .header("x_other", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.last_seen();
    assert!(
        seen.headers.get("x_gatehouse_consumer").is_none()
            && seen.headers.get("x_user_id").is_none(),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["x_other"], "kept");
    // Two credentials: one would be checked, a backend might read the other.
    let r = c
        .get(url("/key"))
        .header("x-api-key", "k-1")
        .header("x-api-key", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let good =
        json!({"sub": "alice", "iss": "https://auth.example", "aud": "api", "exp": now() + 600});
    let r = c
        .get(url("/jwt"))
        .bearer_auth(hs(good.clone()))
        .header("authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The scheme is case-insensitive.
    let r = c
        .get(url("/jwt"))
        .header("authorization", format!("BEARER {}", hs(good.clone())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // `crit` names extensions we do not implement: refused.
    let crit = hs_raw(
        json!({"alg": "HS256", "typ": "JWT", "crit": ["foo"], "foo": 1}),
        good.clone(),
    );
    let r = c.get(url("/jwt")).bearer_auth(crit).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A consumer a header cannot carry unchanged is not a consumer: the token is refused.
    for sub in [
        json!("x\u{0}"),
        json!(" admin "),
        json!("a\u{7f}"),
        json!(1e2),
        json!({"id": 1}),
    ] {
        let mut claims = good.clone();
        claims["sub"] = sub.clone();
        let r = c
            .get(url("/jwt"))
            .bearer_auth(hs(claims))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "sub {sub}");
    }
}

/// An HTTP/2 backend that answers with the names of the request trailers it received.
async fn h2_trailer_backend() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let collected = req.into_body().collect().await.unwrap();
                        let names: Vec<String> = collected
                            .trailers()
                            .map(|t| t.keys().map(|k| k.to_string()).collect())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!(
                                "trailers:{}",
                                names.join(",")
                            ))),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_a_backend() {
    let h2 = h2_trailer_backend().await;
    let yaml = format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\naccess_log: off\n\
         clusters: [{{name: h2app, protocol: http2, endpoints: [{{address: '{h2}'}}], health_check: {{enabled: false}}}}]\n\
         routes: [{{name: all, cluster: h2app}}]\n"
    );
    let gw = Running::start(&yaml, &[]);
    let (s, r) = send(
        gw.addr,
        "POST /t HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Gatehouse-Consumer: admin\r\nX-User-Id: 7\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(r.ends_with("trailers:"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_guard_reads_every_host_and_origin() {
    let (_gw, app, admin) = admin_gateway("").await;
    let port = admin.port();
    let drain = format!("/clusters/app/endpoints/{}/drain", app.addr());
    for (name, raw) in [
        ("an IP origin on the same port", format!("POST {drain} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://203.0.113.9:{port}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")),
        ("two Hosts", format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n")),
        ("absolute form naming another host", format!("GET http://evil.example:{port}/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")),
        ("two Origins", format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n")),
        ("two Sec-Fetch-Site", format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n")),
    ] {
        let (s, r) = send(admin, &raw).await;
        assert_eq!(s, 403, "{name}: {r}");
    }
    let v: Value = reqwest::get(format!("http://{admin}/clusters/app"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["endpoints"][0]["drained"], false);
}

#[test]
fn config_holes_found_by_attack_are_check_errors() {
    let routes = "  - {name: proxy, match: {path_template: '/v1/{*service}'}, cluster_from_path: {param: service, allow: [public-api]}}\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, ""), &[]);
    assert!(!ok);
    assert!(
        err.contains("cluster_from_path.param: {*service} is the rest of the path"),
        "{err}"
    );
    let routes =
        "  - {name: r, cluster: public-api, filters: [{auth: {api_key: {}}}, {rate_limit: hdr}]}\n";
    let extra = "rate_limits: [{name: hdr, rate: 2/m, key: 'header:x-gatehouse-consumer'}]\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, extra), &[]);
    assert!(!ok);
    assert!(
        err.contains("rate_limits[0].key: \"x-gatehouse-consumer\" is an identity header"),
        "{err}"
    );
    // A template with different parameter names shadows as surely as the same match.
    let routes = "  - {name: open, match: {path_template: '/users/{id}'}, cluster: public-api}\n\
                  \x20 - {name: locked, match: {path_template: '/users/{uid}'}, cluster: internal-billing, filters: [{auth: {api_key: {}}}]}\n";
    let (ok, err) = check(&base("127.0.0.1:9", "127.0.0.1:9", routes, ""), &[]);
    assert!(!ok);
    assert!(err.contains("route \"locked\" can never match"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_key_without_verify_in_key_ops_does_not_verify() {
    let app = FakeUpstream::start("app").await;
    let mut jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/jwks.json")).unwrap())
            .unwrap();
    let mut ops = jwks["keys"][0].clone();
    ops["kid"] = json!("ops");
    ops["key_ops"] = json!(["encrypt"]);
    ops.as_object_mut().unwrap().remove("use");
    jwks["keys"].as_array_mut().unwrap().push(ops);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, jwks.to_string()).unwrap();
    let yaml = jwt_config(&app.addr().to_string(), "", "").replace(
        "algorithms: [HS256], secret_env: GH_JWT_SECRET",
        &format!("algorithms: [RS256], keys_file: '{}'", keys.display()),
    );
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let gw = Running::start_with_env(&path, &[]);
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(format!("{DIR}/rsa-private.pem")).unwrap())
        .unwrap();
    let claims =
        json!({"sub": "a", "iss": "https://auth.example", "aud": "api", "exp": now() + 600});
    let c = reqwest::Client::new();
    for (kid, want) in [("rsa-1", 200), ("ops", 401)] {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        let t = encode(&h, &claims, &rsa).unwrap();
        let r = c
            .get(format!("http://{}/jwt", gw.addr))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "kid {kid}");
    }
}
