//! Hostile requests at the edge, sent as raw bytes through the shipped binary against echoing
//! fake backends: path tricks (dot-segments raw and encoded, encoded slashes, `;`, backslashes,
//! repeated slashes, case), Host tricks, absolute-form, framing and smuggling attempts. Each row
//! says what comes back and exactly which backend saw which request line and `Host`. The
//! config has a protected route (`/private`, API key), a route to a blocked cluster (`/admin`,
//! its own backend) and a catch-all to the application: no row may reach the application with
//! a path that the other two routes own.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use gatehouse_testkit::FakeUpstream;
use std::net::SocketAddr;

const KEY: &str = "k-123";

fn config(app: SocketAddr, blocked: SocketAddr, listener_extra: &str) -> String {
    let digest = gatehouse::filter::api_key::digest_string(KEY);
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n{listener_extra}\n\
         access_log: off\n\
         consumers: [{{name: ops, api_keys: ['{digest}']}}]\n\
         clusters:\n\
         \x20 - {{name: app, endpoints: [{{address: '{app}'}}], health_check: {{enabled: false}}, retries: {{attempts: 0}}}}\n\
         \x20 - {{name: blocked, endpoints: [{{address: '{blocked}'}}], health_check: {{enabled: false}}, retries: {{attempts: 0}}}}\n\
         routes:\n\
         \x20 - {{name: admin, match: {{path_prefix: /admin, ignore_case: true}}, cluster: blocked}}\n\
         \x20 - {{name: private, match: {{path_prefix: /private}}, cluster: app, filters: [{{auth: {{api_key: {{}}}}}}]}}\n\
         \x20 - {{name: all, match: {{path_prefix: /}}, cluster: app}}\n"
    )
}

/// `GET {target}` with a Host, closing after the response.
fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
}

/// One row: what is sent, the status that comes back, and which backend (if any) saw which
/// request target and Host.
struct Row {
    name: &'static str,
    raw: String,
    status: u16,
    reaches: Option<(&'static str, &'static str, &'static str)>,
}

fn row(
    name: &'static str,
    raw: String,
    status: u16,
    reaches: Option<(&'static str, &'static str, &'static str)>,
) -> Row {
    Row {
        name,
        raw,
        status,
        reaches,
    }
}

fn default_rows() -> Vec<Row> {
    let app = |t| Some(("app", t, "gw.test"));
    let blocked = |t| Some(("blocked", t, "gw.test"));
    let with_key = |t: &str| {
        format!(
            "GET {t} HTTP/1.1\r\nHost: gw.test\r\nX-Api-Key: {KEY}\r\nConnection: close\r\n\r\n"
        )
    };
    vec![
        // Dot-segments, raw and encoded: routed (and forwarded) as the path they resolve to.
        row("dot-dot", get("/x/../admin"), 200, blocked("/admin")),
        row("encoded dot-dot", get("/x/%2e%2e/admin"), 200, blocked("/admin")),
        row("upper-case encoded dot-dot", get("/x/%2E%2E/admin"), 200, blocked("/admin")),
        row("mixed dot-dot", get("/x/.%2e/admin"), 200, blocked("/admin")),
        row("dot", get("/./admin"), 200, blocked("/admin")),
        row("dot-dot above the root", get("/../../admin"), 200, blocked("/admin")),
        row("dot-dot keeps the query", get("/x/y/../../admin?q=1"), 200, blocked("/admin?q=1")),
        row("dot-dot out of admin", get("/admin/../x"), 200, app("/x")),
        // Percent-encoded unreserved characters are decoded; the rest kept, hex upper-cased.
        row("encoded letter", get("/%61dmin"), 200, blocked("/admin")),
        row("encoded letters", get("/%41%44%4d%49%4e"), 200, blocked("/ADMIN")),
        row("encoded non-ASCII", get("/caf%c3%a9"), 200, app("/caf%C3%A9")),
        row("raw non-ASCII is encoded", get("/caf\u{e9}"), 200, app("/caf%C3%A9")),
        row("brackets are encoded", get("/a[b]"), 200, app("/a%5Bb%5D")),
        row("double encoding is data", get("/%252e%252e/admin"), 200, app("/%252e%252e/admin")),
        // Repeated slashes (Istio CVE-2021-31920).
        row("double slash", get("//admin"), 200, blocked("/admin")),
        row("many slashes", get("///admin///x"), 200, blocked("/admin/x")),
        // Case: the admin route has ignore_case for a case-insensitive backend.
        row("upper case", get("/ADMIN"), 200, blocked("/ADMIN")),
        // Encoded slashes and backslashes (Traefik CVE-2025-32431 / -66490, APISIX CVE-2021-43557).
        row("encoded slash first", get("/%2fadmin"), 400, None),
        row("encoded slash last", get("/admin%2f"), 400, None),
        row("encoded slash dot-dot", get("/x%2f..%2fadmin"), 400, None),
        row("encoded dot-dot-slash", get("/%2e%2e%2fadmin"), 400, None),
        row("encoded backslash", get("/x/..%5cadmin"), 400, None),
        row("raw backslash", get("/x\\..\\admin"), 400, None),
        // Encoded delimiters (Traefik CVE-2025-66490): a decoding backend would see `/admin?`.
        row("encoded question mark", get("/admin%3F"), 400, None),
        row("encoded hash", get("/admin%23"), 400, None),
        row("encoded semicolon", get("/admin%3b"), 400, None),
        // Path parameters (Tomcat's `..;/`).
        row("path parameter", get("/admin;x=1"), 400, None),
        row("tomcat dot-dot-semicolon", get("/x/..;/admin"), 400, None),
        // Control characters and broken escapes.
        row("encoded NUL", get("/a%00b"), 400, None),
        row("encoded LF", get("/a%0a"), 400, None),
        row("bad escape", get("/%zz"), 400, None),
        row("truncated escape", get("/a%2"), 400, None),
        row("asterisk form", "OPTIONS * HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".into(), 400, None),
        // The protected route cannot be walked around.
        row("protected, no key", get("/private/data"), 401, None),
        row("protected via dot-dot", get("/x/../private/data"), 401, None),
        row("protected via encoding", get("/%70rivate/data"), 401, None),
        row("protected via double slash", get("//private//data"), 401, None),
        row("protected with key", with_key("/x/../private/data"), 200, app("/private/data")),
        // Host.
        row("no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host with a path", "GET / HTTP/1.1\r\nHost: evil.com/@a\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host with user info", "GET / HTTP/1.1\r\nHost: u@gw.test\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("empty Host", "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host with a bad port", "GET / HTTP/1.1\r\nHost: gw.test:99999\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host with a space", "GET / HTTP/1.1\r\nHost: gw test\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host, short IPv4", "GET / HTTP/1.1\r\nHost: 127.1\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host, hex IPv4", "GET / HTTP/1.1\r\nHost: 0x7f.0.0.1\r\nConnection: close\r\n\r\n".into(), 400, None),
        row("Host, port with a leading zero", "GET / HTTP/1.1\r\nHost: gw.test:00080\r\nConnection: close\r\n\r\n".into(), 400, None),
        row(
            "Host case and trailing dot",
            "GET /x HTTP/1.1\r\nHost: GW.Test.\r\nConnection: close\r\n\r\n".into(),
            200,
            app("/x"),
        ),
        row(
            "HTTP/1.0 without Host",
            "GET /x HTTP/1.0\r\n\r\n".into(),
            200,
            Some(("app", "/x", "gatehouse.invalid")),
        ),
        // Absolute-form: the target's authority wins and is what the backend gets as Host.
        row(
            "absolute form",
            "GET http://b.example/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".into(),
            200,
            Some(("app", "/x", "b.example")),
        ),
        row(
            "absolute form with dot-dot",
            "GET http://b.example/x/../admin HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".into(),
            200,
            Some(("blocked", "/admin", "b.example")),
        ),
        row(
            "absolute form, other scheme",
            "GET ftp://b.example/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".into(),
            400,
            None,
        ),
        row(
            "absolute form with user info",
            "GET http://u@b.example/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".into(),
            400,
            None,
        ),
        // Framing (RFC 9112 §6).
        row("identity, chunked", post_te("identity, chunked"), 501, None),
        row("gzip, chunked", post_te("gzip, chunked"), 501, None),
        row("chunked twice", post_te("chunked, chunked"), 400, None),
        row("empty coding", post_te(", chunked"), 400, None),
        row("gzip alone (hyper)", post_te("gzip"), 400, None),
        row("chunked not last (hyper)", post_te("chunked, gzip"), 400, None),
        row(
            "TE on HTTP/1.0 (hyper)",
            "POST / HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
            None,
        ),
        row(
            "two Content-Lengths (hyper)",
            "POST / HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxx".into(),
            400,
            None,
        ),
        row(
            "Content-Length list (hyper)",
            "POST / HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1, 2\r\nConnection: close\r\n\r\nxx".into(),
            400,
            None,
        ),
        row(
            "obs-fold (hyper)",
            "GET / HTTP/1.1\r\nHost: gw.test\r\nX: a\r\n b\r\nConnection: close\r\n\r\n".into(),
            400,
            None,
        ),
        row(
            "space before colon (hyper)",
            "GET / HTTP/1.1\r\nHost : gw.test\r\nConnection: close\r\n\r\n".into(),
            400,
            None,
        ),
        row("bad method (hyper)", "G@T / HTTP/1.1\r\nHost: gw.test\r\n\r\n".into(), 400, None),
        row("two spaces (hyper)", "GET  / HTTP/1.1\r\nHost: gw.test\r\n\r\n".into(), 400, None),
        row("backtick (hyper)", get("/a`b"), 400, None),
    ]
}

fn post_te(te: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n0\r\n\r\n"
    )
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends every row to a gateway in front of `app` and `blocked` and checks it.
async fn run_rows(gw: &Running, app: &FakeUpstream, blocked: &FakeUpstream, rows: &[Row]) {
    let mut failures = Vec::new();
    for r in rows {
        let before = (app.seen().len(), blocked.seen().len());
        let response = common::raw(gw.addr, r.raw.as_bytes()).await;
        let status = status_of(&response);
        let after = (app.seen().len(), blocked.seen().len());
        let reached = match (after.0 - before.0, after.1 - before.1) {
            (0, 0) => None,
            (1, 0) => Some(("app", app.last_seen())),
            (0, 1) => Some(("blocked", blocked.last_seen())),
            other => {
                failures.push(format!("{}: backends saw {other:?} requests", r.name));
                continue;
            }
        };
        let got = reached.as_ref().map(|(name, seen)| {
            (
                *name,
                seen.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
                seen.headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(""),
            )
        });
        if status != r.status || got != r.reaches {
            failures.push(format!(
                "{}: got {status} reaching {got:?}, want {} reaching {:?}\n  response: {}",
                r.name,
                r.status,
                r.reaches,
                response.lines().next().unwrap_or("")
            ));
        }
        if let Some((_, seen)) = &reached {
            // Whatever reached a backend was a valid, normal request from the gateway.
            assert_eq!(seen.method, "GET", "{}", r.name);
        }
        if r.status >= 400 && r.status != 401 && response.contains("application/json") {
            assert!(
                response.contains("\"request_id\""),
                "{}: {response}",
                r.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_with_the_default_settings() {
    let app = FakeUpstream::start("app").await;
    let blocked = FakeUpstream::start("blocked").await;
    let gw = Running::start(&config(app.addr(), blocked.addr(), ""), &[]);
    let rows = default_rows();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    run_rows(&gw, &app, &blocked, &rows).await;

    // A JSON local reply names the reason and the request ID.
    let r = common::raw(gw.addr, get("/%2fadmin").as_bytes()).await;
    assert!(r.contains("\"reason\":\"invalid_path\""), "{r}");
    assert!(r.contains("x-request-id: "), "{r}");
    let r = common::raw(gw.addr, post_te("identity, chunked").as_bytes()).await;
    assert!(
        r.contains("\"reason\":\"unsupported_transfer_coding\""),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_request_never_reaches_a_backend() {
    let app = FakeUpstream::start("app").await;
    let blocked = FakeUpstream::start("blocked").await;
    let gw = Running::start(&config(app.addr(), blocked.addr(), ""), &[]);
    // Content-Length says the body is the smuggled request; chunked says the body is empty.
    // hyper reads it chunked, drops the Content-Length and closes after answering, so the
    // bytes after the empty chunk are never read as a second request.
    let smuggle = "POST /x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let r = common::raw(gw.addr, smuggle.as_bytes()).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "one response: {r}");
    assert_eq!(blocked.seen().len(), 0);
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/x");
    assert!(seen[0]
        .headers
        .get("content-length")
        .is_none_or(|v| v == "0"));

    // Header names with `_` are dropped by default; X-Forwarded-For from an untrusted peer is
    // replaced by the peer.
    let r = common::raw(
        gw.addr,
        b"GET /h HTTP/1.1\r\nHost: gw.test\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX_Api_Key: k\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    let seen = app.last_seen();
    assert!(
        seen.headers.keys().all(|k| !k.as_str().contains('_')),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_with_the_permissive_settings() {
    let app = FakeUpstream::start("app").await;
    let blocked = FakeUpstream::start("blocked").await;
    let listener = "    headers_with_underscores: reject\n    path_normalization: {escaped_slashes: decode, escaped_delimiters: keep, backslash: separator, path_parameters: segment, merge_slashes: false}";
    let gw = Running::start(&config(app.addr(), blocked.addr(), listener), &[]);
    let app_ = |t| Some(("app", t, "gw.test"));
    let blocked_ = |t| Some(("blocked", t, "gw.test"));
    let rows = vec![
        // Decoded before dot-segments are removed, so `%2f..%2f` cannot hide a `..`.
        row(
            "encoded slash decoded",
            get("/x%2f..%2fadmin"),
            200,
            blocked_("/admin"),
        ),
        row(
            "encoded slash first",
            get("/%2fadmin"),
            200,
            app_("//admin"),
        ),
        row(
            "encoded backslash decoded",
            get("/x/..%5cadmin"),
            200,
            blocked_("/admin"),
        ),
        row(
            "backslash as separator",
            get("/x\\..\\admin"),
            200,
            blocked_("/admin"),
        ),
        // Segment-aware parameters: `/admin;x=1` is the admin route, forwarded as sent.
        row(
            "parameter on the admin route",
            get("/admin;x=1"),
            200,
            blocked_("/admin;x=1"),
        ),
        row(
            "parameter deeper",
            get("/admin;x=1/y;z=2"),
            200,
            blocked_("/admin;x=1/y;z=2"),
        ),
        row(
            "tomcat dot-dot-semicolon",
            get("/x/..;/admin"),
            200,
            blocked_("/admin"),
        ),
        row("a segment of only parameters", get("/;x/admin"), 400, None),
        row(
            "encoded delimiter kept",
            get("/q/what%3f"),
            200,
            app_("/q/what%3F"),
        ),
        // Slashes kept when merging is off.
        row("double slash kept", get("//admin"), 200, app_("//admin")),
        row(
            "underscore header rejected",
            "GET / HTTP/1.1\r\nHost: gw.test\r\nX_Y: 1\r\nConnection: close\r\n\r\n".into(),
            400,
            None,
        ),
    ];
    run_rows(&gw, &app, &blocked, &rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_the_normal_form() {
    let app = FakeUpstream::start("app").await;
    let blocked = FakeUpstream::start("blocked").await;
    let listener =
        "    path_normalization: {redirect: true, escaped_slashes: redirect, merge_slashes: false}";
    let gw = Running::start(&config(app.addr(), blocked.addr(), listener), &[]);
    // Never a Location a browser reads as another host.
    let r = common::raw(gw.addr, get("/%2e//evil.example/x").as_bytes()).await;
    assert!(!r.contains("location: //"), "{r}");
    for (target, location) in [
        ("/x/../admin?a=1", "/admin?a=1"),
        ("/%61dmin", "/admin"),
        ("/x%2f..%2fadmin", "/admin"),
        ("/./x", "/x"),
    ] {
        let r = common::raw(gw.addr, get(target).as_bytes()).await;
        assert_eq!(status_of(&r), 308, "{target}: {r}");
        assert!(
            r.contains(&format!("location: {location}\r\n")),
            "{target}: {r}"
        );
    }
    assert_eq!(app.seen().len() + blocked.seen().len(), 0);
    let r = common::raw(gw.addr, get("/admin").as_bytes()).await;
    assert_eq!(status_of(&r), 200, "{r}");
}
