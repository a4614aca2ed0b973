//! TLS on listeners: certificates chosen by SNI, ALPN h2 and http/1.1, 421 for a host of
//! another certificate, HSTS and the redirect to https, mTLS, certificate hot reload that
//! keeps open connections, bad pairs refused, and `gatehouse check` reading the files.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::pki::{self, Client, Pki, Trust};
use gatehouse_testkit::{eventually, FakeUpstream, TestGateway};
use std::path::Path;
use std::time::Duration;

/// A TLS listener with `pairs` (cert, key), `extra` TLS keys, in front of `up`.
fn tls_config(up: std::net::SocketAddr, pairs: &[&pki::Leaf], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|l| {
            format!(
                "{{cert: '{}', key: '{}'}}",
                l.cert.display(),
                l.key.display()
            )
        })
        .collect();
    format!(
        "listeners:\n  - name: https\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{}]\n{extra}clusters:\n  - name: backend\n    endpoints: [{{address: '{up}'}}]\nroutes:\n  - name: all\n    cluster: backend\n",
        certs.join(", ")
    )
}

fn names_of(der: &rustls::pki_types::CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_alpn_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let b = ca.leaf("b", &["*.b.test", "b.test"]);
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&a, &b], "")).await;
    let addr = gw.addr();

    // Exact name, wildcard, and no SNI / an unknown name (the first pair, the default).
    assert_eq!(pki::served_cert(addr, "a.test").await, a.der);
    assert_eq!(pki::served_cert(addr, "x.b.test").await, b.der);
    assert_eq!(pki::served_cert(addr, "b.test").await, b.der);
    assert_eq!(pki::served_cert(addr, "127.0.0.1").await, a.der);
    assert_eq!(pki::served_cert(addr, "unknown.test").await, a.der);
    assert_eq!(names_of(&b.der), ["DNSName(*.b.test)", "DNSName(b.test)"]);

    // HTTP/1.1 when the client offers only that; verified against the CA.
    let h1 = Client {
        trust: Trust::Ca(&ca.ca_pem),
        alpn: &[b"http/1.1"],
        ..Client::default()
    };
    let mut s = pki::connect(addr, "x.b.test", &h1).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _) = pki::get(&mut s, "x.b.test", "/one").await;
    assert_eq!(status, 200);
    let seen = up.last_seen();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "x.b.test");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;host=x.b.test;proto=https"
    );

    // HTTP/2 when offered, on the same port and request path.
    let h2 = Client {
        trust: Trust::Ca(&ca.ca_pem),
        alpn: &[b"h2", b"http/1.1"],
        ..Client::default()
    };
    let s = pki::connect(addr, "a.test", &h2).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://a.test/two")
        .header("x-request-id", "over-h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let line = gw.log_line("over-h2").await;
    assert_eq!(line["sni"], "a.test");
    assert_eq!(line["tls_version"], "TLSv1.3");
    assert!(line["tls_cipher"].as_str().unwrap().starts_with("TLS13_"));

    // A request for a host of another certificate on this connection: 421.
    let req = http::Request::get("https://x.b.test/three")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 421);
    // A host no certificate names is not for another certificate: it is routed as usual.
    let mut s = pki::connect(addr, "a.test", &h1).await.unwrap();
    assert_eq!(pki::get(&mut s, "internal", "/four").await.0, 200);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hsts_on_tls_and_a_plain_listener_that_redirects_to_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let up = FakeUpstream::start("up").await;
    let yaml = tls_config(
        up.addr(),
        &[&a],
        "      hsts: {max_age: 3600s, include_subdomains: true}\n",
    )
    .replace(
        "clusters:",
        "  - name: plain\n    address: 127.0.0.1:0\n    redirect_https: true\nclusters:",
    );
    let gw = TestGateway::start(&yaml).await;
    let mut s = pki::connect(gw.addr(), "a.test", &Client::default())
        .await
        .unwrap();
    let (status, text) = pki::get(&mut s, "a.test", "/").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("strict-transport-security: max-age=3600; includeSubDomains"),
        "{text}"
    );
    let plain = gw.gateway().addr("plain").unwrap();
    let got = common::raw(
        plain,
        b"GET /p/a?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 308"), "{got}");
    assert!(
        got.contains("location: https://a.test/p/a?q=1\r\n"),
        "{got}"
    );
    assert!(!got.contains("strict-transport-security"), "{got}");
    // A request that names no host has nowhere to be sent: 400, not `https:///...`.
    let got = common::raw(plain, b"GET /evil.example/x HTTP/1.0\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.0 400"), "{got}");
    assert!(!got.contains("location:"), "{got}");
    // A TLS connection the gateway closes ends with close_notify, not a bare TCP close.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = pki::connect(gw.addr(), "a.test", &Client::default())
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .unwrap();
    assert!(read.is_ok(), "closed without close_notify: {read:?}");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert_eq!(up.hits(), 2, "the redirects never reach the backend");
    gw.shutdown(Duration::from_secs(2)).await;
}

/// The next event named `name`, within 10 s.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<serde_json::Value>>,
    name: &str,
) -> std::sync::Arc<serde_json::Value> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.unwrap();
            if e["event"] == name {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
}

#[tokio::test]
async fn a_certificate_swap_keeps_open_connections_and_serves_new_handshakes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let old = ca.leaf("a", &["a.test"]);
    let up = FakeUpstream::start("ws").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&old], "")).await;
    let addr = gw.addr();
    let client = Client {
        trust: Trust::Ca(&ca.ca_pem),
        ..Client::default()
    };
    let mut keep_alive = pki::connect(addr, "a.test", &client).await.unwrap();
    assert_eq!(pki::get(&mut keep_alive, "a.test", "/before").await.0, 200);
    let tls = pki::connect(addr, "a.test", &client).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://a.test/chat", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);

    // A new pair renamed over the old files (key and certificate, as certbot does).
    let new = ca.leaf("a", &["a.test"]);
    assert_ne!(new.der, old.der);
    eventually(
        "new handshakes get the new certificate",
        Duration::from_secs(10),
        || async { (pki::served_cert(addr, "a.test").await == new.der).then_some(()) },
    )
    .await;
    // Both connections made before the swap go on.
    assert_eq!(pki::get(&mut keep_alive, "a.test", "/after").await.0, 200);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );

    // A key that is not the certificate's: refused, the loaded pair keeps serving.
    let mut events = gw.gateway().runtime().events.subscribe();
    let other = ca.leaf("other", &["a.test"]);
    pki::write_atomically(&new.key, &other.key_pem);
    let refusal = next_event(&mut events, "certificate_reload_failed").await;
    assert_eq!(refusal["listener"], "https");
    let why = refusal["errors"][0].as_str().unwrap();
    assert!(
        why.contains("a.key: this private key does not belong"),
        "{why}"
    );
    assert_eq!(pki::served_cert(addr, "a.test").await, new.der);
    let mut s = pki::connect(addr, "a.test", &client).await.unwrap();
    assert_eq!(pki::get(&mut s, "a.test", "/still").await.0, 200);

    // The right key put back: nothing served changes, but the recovery is announced.
    pki::write_atomically(&new.key, &new.key_pem);
    let loaded = next_event(&mut events, "certificate_loaded").await;
    assert_eq!(loaded["listener"], "https");
    assert_eq!(pki::served_cert(addr, "a.test").await, new.der);
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_config_reload_with_a_bad_pair_is_refused_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let b = ca.leaf("b", &["b.test"]);
    let up = FakeUpstream::start("up").await;
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, tls_config(up.addr(), &[&a], "")).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let addr = gw.addr();
    // b's certificate with a's key.
    let mismatched = tls_config(up.addr(), &[&a, &b], "").replace("b.key", "a.key");
    std::fs::write(&path, mismatched).unwrap();
    let errors = gw.gateway().reload("test").await.unwrap_err();
    let text = errors.join("\n");
    assert!(text.contains("listeners[0].tls.certificates[1]"), "{text}");
    assert!(
        text.contains("does not belong to the certificate"),
        "{text}"
    );
    assert!(text.contains("a.key"), "{text}");
    assert_eq!(pki::served_cert(addr, "b.test").await, a.der, "unchanged");
    // Fixed: the reload takes, and b.test gets its own certificate.
    std::fs::write(&path, tls_config(up.addr(), &[&a, &b], "")).unwrap();
    gw.gateway().reload("test").await.unwrap();
    assert_eq!(pki::served_cert(addr, "b.test").await, b.der);
    let (_, leaf) = x509_parser::parse_x509_certificate(&b.der).unwrap();
    let expiry = gw
        .gateway()
        .runtime()
        .metrics
        .tls_certificate_expiry
        .get_or_create(&vec![
            ("listener", "https".into()),
            ("name", "b.test".into()),
        ])
        .get();
    assert_eq!(expiry, leaf.validity().not_after.timestamp());
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn mutual_tls_required_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let stranger = Pki::new(dir.path(), "stranger");
    let a = ca.leaf("a", &["a.test"]);
    // 'static: the client settings borrow them in a closure below.
    let alice: &'static pki::Leaf = Box::leak(Box::new(ca.client("alice", "alice")));
    let mallory: &'static pki::Leaf = Box::leak(Box::new(stranger.client("mallory", "mallory")));
    let up = FakeUpstream::start("up").await;
    for mode in ["required", "optional"] {
        let extra = format!(
            "      client_auth: {{ca: '{}', mode: {mode}}}\n",
            ca.ca_file("ca").display()
        );
        let gw = TestGateway::start(&tls_config(up.addr(), &[&a], &extra)).await;
        let with = |id: &'static pki::Leaf| Client {
            identity: Some((&id.cert_pem, &id.key_pem)),
            ..Client::default()
        };
        let mut s = pki::connect(gw.addr(), "a.test", &with(alice))
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: alice\r\n\r\n")
            .await
            .unwrap();
        let line = gw.log_line("alice").await;
        assert_eq!(line["status"], 200, "{mode}");
        assert_eq!(line["client_cert"], "CN=alice", "{mode}");
        // A certificate from another CA fails in either mode (TLS 1.3: at the first read).
        assert!(
            refused(gw.addr(), &with(mallory)).await,
            "{mode}: a stranger's certificate"
        );
        let without = refused(gw.addr(), &Client::default()).await;
        assert_eq!(without, mode == "required", "{mode}: no certificate");
        gw.shutdown(Duration::from_secs(2)).await;
    }
}

/// Whether a connection with `c` is refused (in the handshake or at its first request).
async fn refused(addr: std::net::SocketAddr, c: &Client<'_>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = pki::connect(addr, "a.test", c).await else {
        return true;
    };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .is_err()
    {
        return true;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => n == 0,
        Ok(Err(_)) => true,
        Err(_) => panic!("no answer and no refusal"),
    }
}

#[tokio::test]
async fn handshakes_are_counted_by_result_and_tls_1_3_only_refuses_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&tls_config(
        up.addr(),
        &[&a],
        "      min_version: \"1.3\"\n",
    ))
    .await;
    let old = Client {
        tls12_only: true,
        ..Client::default()
    };
    assert!(pki::connect(gw.addr(), "a.test", &old).await.is_err());
    pki::connect(gw.addr(), "a.test", &Client::default())
        .await
        .unwrap();
    let count = |result: &str| {
        gw.gateway()
            .runtime()
            .metrics
            .tls_handshakes
            .get_or_create(&vec![
                ("listener", "https".into()),
                ("result", result.into()),
            ])
            .get()
    };
    eventually("both counted", Duration::from_secs(5), || async {
        (count("ok") == 1 && count("incompatible") == 1).then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn require_sni_refuses_a_handshake_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start(&tls_config(up.addr(), &[&a], "      require_sni: true\n")).await;
    // An IP literal as the server name: the client sends no SNI.
    assert!(pki::connect(gw.addr(), "127.0.0.1", &Client::default())
        .await
        .is_err());
    assert_eq!(pki::served_cert(gw.addr(), "a.test").await, a.der);
    let count = |result: &str| {
        gw.gateway()
            .runtime()
            .metrics
            .tls_handshakes
            .get_or_create(&vec![
                ("listener", "https".into()),
                ("result", result.into()),
            ])
            .get()
    };
    eventually("counted", Duration::from_secs(5), || async {
        (count("no_sni") == 1 && count("ok") == 1).then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(2)).await;
}

fn check(path: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn gatehouse_check_reads_the_files_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let old = ca.expired("old", &["old.test"]);
    let path = dir.path().join("gw.yaml");
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Relative names are the config file's directory's.
    let relative = tls_config(up, &[&a], "").replace(&format!("{}/", dir.path().display()), "");
    std::fs::write(&path, &relative).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    std::fs::write(&path, tls_config(up, &[&a, &old], "")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].tls.certificates[1].cert"),
        "{out}"
    );
    assert!(out.contains("expired"), "{out}");
    assert!(out.contains("gw.yaml:5:"), "the line of the field: {out}");
    // Certificate conditions with no listener verifying client certificates: warned; an empty
    // condition: refused.
    let plain = format!(
        "listeners: [{{name: p, address: '127.0.0.1:0'}}]\nclusters: [{{name: c, endpoints: [{{address: '{up}'}}]}}]\nroutes:\n  - {{name: r, match: {{client_cert: {{present: true}}}}, cluster: c}}\n"
    );
    std::fs::write(&path, &plain).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "routes[0].match.client_cert: warning: no listener verifies client certificates"
        ),
        "{out}"
    );
    std::fs::write(&path, plain.replace("{present: true}", "{}")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    assert!(
        out.contains("give at least one of present, subject and san"),
        "{out}"
    );
    std::fs::write(&path, relative.replace("a.key", "missing.key")).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok);
    assert!(out.contains("missing.key: cannot read file"), "{out}");
}

#[test]
fn curl_gets_through_the_shipped_binary_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(FakeUpstream::start("up"));
    let gw = common::binary::Running::start(&tls_config(up.addr(), &[&a], ""), &[]);
    for http in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-f", http, "-w", "\n%{http_version}", "--cacert"])
            .arg(ca.ca_file("ca"))
            .arg("--resolve")
            .arg(format!("a.test:{}:127.0.0.1", gw.addr.port()))
            .arg(format!("https://a.test:{}/curl", gw.addr.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{http}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = if http == "--http2" { "2" } else { "1.1" };
        assert!(text.ends_with(&format!("\n{want}")), "{http}: {text}");
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn client_certificates_authenticate_consumers_and_key_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let alice = ca.client("alice", "alice");
    let bob = ca.client("bob", "bob");
    let up = FakeUpstream::start("up").await;
    let extra = format!(
        "      client_auth: {{ca: '{}', mode: optional}}\n",
        ca.ca_file("ca").display()
    );
    let yaml = tls_config(up.addr(), &[&a], &extra)
        .replace(
            "routes:\n",
            "consumers:\n  - {name: alice-team, client_certs: ['CN=alice']}\nrate_limits:\n  - {name: per-cert, rate: 1/m, key: client_cert}\nroutes:\n  - name: limited\n    match: {path_prefix: /limited}\n    cluster: backend\n    filters: [{rate_limit: per-cert}]\n  - name: admin\n    match: {path_prefix: /admin}\n    cluster: backend\n    filters: [{auth: {client_cert: {allow: ['CN=alice']}}}]\n",
        );
    let gw = TestGateway::start(&yaml).await;
    let as_alice = Client {
        identity: Some((&alice.cert_pem, &alice.key_pem)),
        ..Client::default()
    };
    let as_bob = Client {
        identity: Some((&bob.cert_pem, &bob.key_pem)),
        ..Client::default()
    };
    let anonymous = Client::default();
    let addr = gw.addr();
    let get = |c, path| fetch(addr, c, path);
    // The route that needs a certificate: none is 401, one not allowed is 403.
    let (status, text) = get(&anonymous, "/admin").await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing_client_certificate"), "{text}");
    assert!(
        text.contains("www-authenticate: ClientCertificate"),
        "{text}"
    );
    let (status, text) = get(&as_bob, "/admin").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("client_certificate_not_allowed"), "{text}");
    assert_eq!(up.hits(), 0);
    let (status, _) = get(&as_alice, "/admin").await;
    assert_eq!(status, 200);
    assert_eq!(up.last_seen().headers["x-gatehouse-consumer"], "alice-team");
    // A limit keyed by the certificate: alice's second request is refused, bob's first is not.
    assert_eq!(get(&as_alice, "/limited").await.0, 200);
    assert_eq!(get(&as_alice, "/limited").await.0, 429);
    assert_eq!(get(&as_bob, "/limited").await.0, 200);
    gw.shutdown(Duration::from_secs(2)).await;
}

async fn fetch(addr: std::net::SocketAddr, c: &Client<'_>, path: &str) -> (u16, String) {
    let mut s = pki::connect(addr, "a.test", c).await.unwrap();
    pki::get(&mut s, "a.test", path).await
}

#[tokio::test]
async fn routes_match_on_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "ca");
    let a = ca.leaf("a", &["a.test"]);
    let alice = ca.client("alice", "alice");
    let bob = ca.client("bob", "bob");
    let (anyone, certified, alices) = (
        FakeUpstream::start("anyone").await,
        FakeUpstream::start("certified").await,
        FakeUpstream::start("alice").await,
    );
    let yaml = format!(
        "listeners:\n  - name: https\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\n      client_auth: {{ca: '{}', mode: optional}}\nclusters:\n  - {{name: anyone, endpoints: [{{address: '{}'}}]}}\n  - {{name: certified, endpoints: [{{address: '{}'}}]}}\n  - {{name: alice, endpoints: [{{address: '{}'}}]}}\nroutes:\n  - {{name: public, cluster: anyone}}\n  - {{name: partners, match: {{client_cert: {{present: true}}}}, cluster: certified}}\n  - {{name: alice, match: {{client_cert: {{subject: 'CN=alice'}}}}, cluster: alice}}\n",
        a.cert.display(),
        a.key.display(),
        ca.ca_file("ca").display(),
        anyone.addr(),
        certified.addr(),
        alices.addr()
    );
    let gw = TestGateway::start(&yaml).await;
    let anonymous = Client::default();
    let as_alice = Client {
        identity: Some((&alice.cert_pem, &alice.key_pem)),
        ..Client::default()
    };
    let as_bob = Client {
        identity: Some((&bob.cert_pem, &bob.key_pem)),
        ..Client::default()
    };
    for (c, backend) in [
        (&anonymous, &anyone),
        (&as_bob, &certified),
        (&as_alice, &alices),
    ] {
        let before = backend.hits();
        let (status, text) = fetch(gw.addr(), c, "/x").await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(backend.hits(), before + 1, "{}", backend.name());
    }
    gw.shutdown(Duration::from_secs(2)).await;
}
