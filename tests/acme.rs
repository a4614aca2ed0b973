//! ACME end to end on the shipped binary against Debian's `pebble` (Let's Encrypt's test
//! server) on loopback, validating for real: domains under `.acme.test` resolve to 127.0.0.1
//! through a dnsmasq the test starts, pebble's http-01 checks reach the gateway's plain
//! listener and its tls-alpn-01 checks the TLS listener. Pebble's own HTTPS certificate comes
//! from a CA the test makes (the package ships none); the issued chain is verified against the
//! root pebble serves on its management port.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::pki::{self, Client, Pki, Trust};
use gatehouse_testkit::{eventually, DnsServer, FakeUpstream};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOMAIN: &str = "a.acme.test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pebble on free loopback ports, checking challenges on `http_port` / `tls_port` of the
/// addresses `dns` gives.
struct Pebble {
    child: Child,
    acme_port: u16,
    mgmt_port: u16,
    /// Pebble's HTTPS CA (PEM file) and its text.
    ca_file: std::path::PathBuf,
    ca_pem: String,
}

impl Pebble {
    fn start(
        dir: &Path,
        dns: &DnsServer,
        http_port: u16,
        tls_port: u16,
        validity_s: u64,
    ) -> Pebble {
        let pki = Pki::new(dir, "pebble-ca");
        let leaf = pki.leaf("pebble", &["127.0.0.1", "localhost"]);
        for _ in 0..5 {
            let (acme_port, mgmt_port) = (free_port(), free_port());
            let config = serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": leaf.cert,
                "privateKey": leaf.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_s,
            }});
            let file = dir.join("pebble.json");
            std::fs::write(&file, config.to_string()).unwrap();
            let child = Command::new("pebble")
                .arg("-config")
                .arg(&file)
                .args(["-dnsserver", &dns.address(), "-strict=false"])
                // No random sleeps before validating, no random nonce refusals.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble is not installed: run ./scripts/test.sh, which installs it");
            let ready =
                gatehouse_testkit::process::wait_ready(child, Duration::from_secs(10), || {
                    gatehouse_testkit::process::accepts(acme_port)
                        && gatehouse_testkit::process::accepts(mgmt_port)
                });
            if let Some(child) = ready {
                return Pebble {
                    child,
                    acme_port,
                    mgmt_port,
                    ca_file: pki.ca_file("pebble-ca"),
                    ca_pem: pki.ca_pem.clone(),
                };
            }
        }
        panic!("pebble did not start on any of 5 pairs of free ports");
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The root the issued chains lead to (`GET /roots/0` on the management port).
    async fn root(&self) -> String {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.mgmt_port).parse().unwrap();
        let trust = Client {
            trust: Trust::Ca(&self.ca_pem),
            ..Client::default()
        };
        let mut tls = pki::connect(addr, "127.0.0.1", &trust).await.unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8(out).unwrap();
        let at = text
            .find("-----BEGIN CERTIFICATE-----")
            .expect("a PEM root");
        text[at..].to_string()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one test needs: dnsmasq, pebble, the backend, the gateway's ports and storage.
struct Setup {
    dir: tempfile::TempDir,
    _dns: DnsServer,
    pebble: Pebble,
    backend: FakeUpstream,
    http_port: u16,
    tls_port: u16,
}

impl Setup {
    async fn new(validity_s: u64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsServer::start(&format!("127.0.0.1 {DOMAIN}\n"), &[]);
        let (http_port, tls_port) = (free_port(), free_port());
        let pebble = Pebble::start(dir.path(), &dns, http_port, tls_port, validity_s);
        Setup {
            backend: FakeUpstream::start("backend").await,
            dir,
            _dns: dns,
            pebble,
            http_port,
            tls_port,
        }
    }

    fn yaml(&self, challenge: &str, directory: &str) -> String {
        format!(
            "listeners:\n  - name: http\n    address: 127.0.0.1:{}\n  - name: https\n    address: 127.0.0.1:{}\n    tls:\n      acme:\n        directory: '{directory}'\n        directory_ca: '{}'\n        email: ops@acme.test\n        domains: [{DOMAIN}]\n        challenge: {challenge}\n        storage: '{}'\nadmin: {{address: '127.0.0.1:0'}}\nclusters:\n  - name: backend\n    endpoints: [{{address: '{}'}}]\nroutes:\n  - name: all\n    cluster: backend\n",
            self.http_port,
            self.tls_port,
            self.pebble.ca_file.display(),
            self.dir.path().join("acme").display(),
            self.backend.addr(),
        )
    }

    /// The gateway on this setup, once every listener is bound (the admin listener is last).
    fn gateway(&self, challenge: &str, directory: &str) -> Running {
        let gw = Running::start(&self.yaml(challenge, directory), &[]);
        gw.admin_addr();
        gw
    }

    fn tls_addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.tls_port).parse().unwrap()
    }
}

/// The serial (hex) of the leaf certificate a handshake for [`DOMAIN`] gets, when its chain
/// verifies against `root`.
async fn verified_serial(addr: SocketAddr, root: &str) -> Option<String> {
    let trust = Client {
        trust: Trust::Ca(root),
        ..Client::default()
    };
    let tls = pki::connect(addr, DOMAIN, &trust).await.ok()?;
    Some(serial(&tls.get_ref().1.peer_certificates()?[0]))
}

fn serial(der: &rustls::pki_types::CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.tbs_certificate.raw_serial_as_string().replace(':', "")
}

async fn admin_tls(gw: &Running) -> Value {
    reqwest::get(format!("http://{}/tls", gw.admin_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A kept-alive HTTP/1.1 connection over TLS that trusts `root`.
async fn open(addr: SocketAddr, root: &str) -> hyper::client::conn::http1::SendRequest<String> {
    let trust = Client {
        trust: Trust::Ca(root),
        ..Client::default()
    };
    let tls = pki::connect(addr, DOMAIN, &trust).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(send: &mut hyper::client::conn::http1::SendRequest<String>) -> (u16, String) {
    let req = http::Request::get("/")
        .header("host", DOMAIN)
        .body(String::new())
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .expect("the connection is still open");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_issues_serves_a_verified_chain_and_a_restart_reuses_the_storage() {
    let s = Setup::new(3600).await;
    let root = s.pebble.root().await;
    let gw = s.gateway("http-01", &s.pebble.directory());

    // Until the certificate is issued the domain gets a self-signed one: no failed handshake.
    let shown = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = Client {
        trust: Trust::Record(shown.clone()),
        ..Client::default()
    };
    pki::connect(s.tls_addr(), DOMAIN, &record)
        .await
        .expect("a handshake at start succeeds");

    let first = eventually(
        "the ACME certificate is served",
        Duration::from_secs(60),
        || verified_serial(s.tls_addr(), &root),
    )
    .await;
    let mut conn = open(s.tls_addr(), &root).await;
    assert_eq!(
        get(&mut conn).await,
        (200, r#"{"upstream":"backend"}"#.to_string())
    );

    let view = admin_tls(&gw).await;
    let acme = &view["acme"][0];
    assert_eq!(acme["serving"], "issued", "{view}");
    assert_eq!(acme["serial"], first.as_str(), "{view}");
    assert_eq!(acme["status"]["orders"], 1, "{view}");
    assert_eq!(
        view["listeners"][0]["certificates"][0]["source"], "acme",
        "{view}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", gw.admin_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gatehouse_acme_orders_total{result=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("gatehouse_tls_certificate_expiry_timestamp_seconds{{listener=\"https\",name=\"{DOMAIN}\"}}")),
        "{metrics}"
    );
    let storage = s.dir.path().join("acme");
    let files: Vec<String> = std::fs::read_dir(&storage)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("account-127.0.0.1_")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(DOMAIN) && f.ends_with(".key")),
        "{files:?}"
    );

    // A reload with the same acme section keeps the certificate: no new order.
    gw.signal("HUP");
    eventually("the reload is applied", Duration::from_secs(10), || async {
        let c: Value = reqwest::get(format!("http://{}/config", gw.admin_addr()))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (c["generation"] == 2).then_some(())
    })
    .await;
    assert_eq!(
        verified_serial(s.tls_addr(), &root).await.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(admin_tls(&gw).await["acme"][0]["status"]["orders"], 1);

    // A restart serves the stored certificate from its first handshake and orders nothing.
    drop(conn);
    drop(gw);
    let gw = s.gateway("http-01", &s.pebble.directory());
    let again = verified_serial(s.tls_addr(), &root)
        .await
        .expect("the stored certificate is served at once");
    assert_eq!(again, first, "the same certificate, not a new order");
    let view = admin_tls(&gw).await;
    assert_eq!(view["acme"][0]["status"]["orders"], 0, "{view}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_renewal_swaps_the_certificate_without_dropping_a_connection() {
    // 10 s certificates: renewal is due at two thirds of that.
    let s = Setup::new(10).await;
    let root = s.pebble.root().await;
    let gw = s.gateway("tls-alpn-01", &s.pebble.directory());
    let first = eventually(
        "the ACME certificate is served",
        Duration::from_secs(60),
        || verified_serial(s.tls_addr(), &root),
    )
    .await;
    let mut conn = open(s.tls_addr(), &root).await;
    assert_eq!(
        get(&mut conn).await,
        (200, r#"{"upstream":"backend"}"#.to_string())
    );

    let renewed = eventually(
        "a renewed certificate is served",
        Duration::from_secs(60),
        || async {
            verified_serial(s.tls_addr(), &root)
                .await
                .filter(|s| *s != first)
        },
    )
    .await;
    assert_ne!(renewed, first);
    assert_eq!(
        get(&mut conn).await,
        (200, r#"{"upstream":"backend"}"#.to_string()),
        "the connection opened before the renewal still works"
    );
    let view = admin_tls(&gw).await;
    assert!(
        view["acme"][0]["status"]["orders"].as_u64().unwrap() >= 2,
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_directory_is_reported_and_the_self_signed_certificate_served() {
    let s = Setup::new(3600).await;
    let closed = format!("https://127.0.0.1:{}/dir", free_port());
    let gw = s.gateway("http-01", &closed);
    let view = eventually(
        "the failure is reported",
        Duration::from_secs(20),
        || async {
            let v = admin_tls(&gw).await;
            v["acme"][0]["status"]["last_error"]
                .is_string()
                .then_some(v)
        },
    )
    .await;
    let error = view["acme"][0]["status"]["last_error"].as_str().unwrap();
    assert!(
        error.contains(&closed) && error.contains("onnect"),
        "{error}"
    );
    assert_eq!(view["acme"][0]["serving"], "self_signed", "{view}");
    pki::connect(s.tls_addr(), DOMAIN, &Client::default())
        .await
        .expect("handshakes still succeed");
}
