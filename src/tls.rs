//! TLS termination on listeners (rustls, aws-lc-rs): a listener's [`Terminator`] holds its
//! current certificates and rustls config, swapped whole when the files or the config change —
//! new handshakes use the new pairs, established connections keep the config they began with.
//! What a handshake settled (version, cipher, SNI, ALPN, client certificate) travels with the
//! connection as [`TlsInfo`]. Certificates from ACME (`acme.rs`) are served through the same
//! resolver, from a slot the renewal task swaps.

pub mod acme;
pub mod certs;
mod registry;

pub use registry::{preflight, prepare, Prepared, Registry};

use crate::observe::access_log::TlsFacts;
use arc_swap::ArcSwap;
use gatehouse_config::tls::{ClientAuthMode, ListenerTls, TlsVersion};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// A listener's TLS: what new handshakes use, swapped by reloads.
pub struct Terminator {
    listener: String,
    state: ArcSwap<State>,
    /// The expiry metric's series for the pairs published last (removed when they change).
    expiry_series: std::sync::Mutex<Vec<crate::observe::metrics::Labels>>,
    /// The errors of the last refused file reload: one save makes several file events, and the
    /// same refusal is announced once.
    last_refusal: std::sync::Mutex<Vec<String>>,
}

/// One version of a listener's TLS settings and certificates.
pub struct State {
    pub cfg: ListenerTls,
    pub server: Arc<rustls::ServerConfig>,
    pub store: Arc<certs::Store>,
    /// `Strict-Transport-Security`, when configured.
    pub hsts: Option<http::HeaderValue>,
    /// A hash of every file's bytes: a reload whose files are unchanged changes nothing.
    fingerprint: u64,
    /// Handshakes past their ClientHello at once (`max_handshakes`).
    handshakes: Arc<tokio::sync::Semaphore>,
    /// The ACME certificate, when `acme` is set (absent in `gatehouse check`).
    pub acme: Option<Arc<acme::Slot>>,
}

/// Chooses the pair for a handshake from its SNI.
#[derive(Debug)]
struct Resolver {
    store: Arc<certs::Store>,
    require_sni: bool,
    acme: Option<Arc<acme::Slot>>,
}

impl std::fmt::Debug for acme::Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("domains", &self.cfg.domains)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    /// An ACME domain gets the slot's certificate (read now, so a renewal reaches the next
    /// handshake); other names the files' pairs; a name neither has gets the first pair, or
    /// the ACME certificate when there are no files.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if name.is_none() && self.require_sni {
            return None;
        }
        if let Some(a) = &self.acme {
            if name.is_some_and(|n| a.covers(n)) || self.store.pairs.is_empty() {
                return Some(a.key());
            }
        }
        let i = name.and_then(|n| self.store.lookup(n)).unwrap_or(0);
        self.store.pairs.get(i).map(|p| p.key.clone())
    }
}

/// What a connection's handshake settled.
pub struct TlsInfo {
    /// Version, cipher, SNI and client subject, as the access log writes them.
    pub facts: Arc<TlsFacts>,
    /// `Strict-Transport-Security` for every response, when the listener sets it.
    pub hsts: Option<http::HeaderValue>,
    /// ALPN chose HTTP/2.
    pub h2: bool,
    /// The verified client certificate (mTLS).
    pub client_cert: Option<ClientCert>,
    /// The certificates the handshake chose from, to tell a misdirected request.
    store: Arc<certs::Store>,
}

pub use crate::filter::PeerCert as ClientCert;

impl TlsInfo {
    /// Whether `host` is for another certificate of this listener than the one the
    /// connection's SNI chose: such a request gets 421 (the client should open a connection
    /// for that host), as NGINX and Traefik answer domain fronting.
    pub fn misdirected(&self, host: &str) -> bool {
        let Some(sni) = &self.facts.sni else {
            return false;
        };
        let chosen = self.store.lookup(sni).unwrap_or(0);
        matches!(self.store.lookup(host), Some(i) if i != chosen)
    }
}

/// A field (relative to the listener, e.g. `tls.certificates[0].key`) and what is wrong there.
pub type TlsProblem = (String, String);

impl State {
    /// Reads every file of `cfg` and builds the rustls config; `acme` serves `cfg.acme`'s
    /// certificate.
    pub fn build(
        cfg: &ListenerTls,
        acme: Option<Arc<acme::Slot>>,
    ) -> Result<State, Vec<TlsProblem>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut problems = Vec::new();
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        let mut read = |field: String, path: &str| match std::fs::read(path) {
            Ok(bytes) => {
                hash.update(path.as_bytes());
                hash.update(&bytes);
                Some(bytes)
            }
            Err(e) => {
                problems.push((field, format!("{path}: cannot read file: {e}")));
                None
            }
        };
        let mut pairs = Vec::new();
        let mut pair_files = Vec::new();
        for (i, p) in cfg.certificates.iter().enumerate() {
            let at = format!("tls.certificates[{i}]");
            let cert = read(format!("{at}.cert"), &p.cert);
            let key = read(format!("{at}.key"), &p.key);
            pair_files.push((at, cert, key));
        }
        let ca = cfg
            .client_auth
            .as_ref()
            .map(|c| read("tls.client_auth.ca".into(), &c.ca));
        for ((at, cert, key), p) in pair_files.into_iter().zip(&cfg.certificates) {
            let (Some(cert), Some(key)) = (cert, key) else {
                continue;
            };
            match certs::load_pair((&p.cert, &cert), (&p.key, &key), &provider) {
                Ok(pair) => pairs.push(pair),
                Err(e) => problems.push((at, e)),
            }
        }
        let verifier = match (&cfg.client_auth, ca) {
            (Some(auth), Some(Some(pem))) => match client_verifier(auth, &pem, &provider) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(("tls.client_auth.ca".into(), e));
                    None
                }
            },
            _ => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let store = Arc::new(certs::Store::new(pairs));
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| vec![("tls.min_version".to_string(), e.to_string())])?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(Resolver {
            store: store.clone(),
            require_sni: cfg.require_sni,
            acme: acme.clone(),
        }));
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        server.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(State {
            hsts: cfg.hsts.as_ref().map(hsts_value),
            cfg: cfg.clone(),
            server: Arc::new(server),
            store,
            fingerprint: hash.digest(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(cfg.max_handshakes)),
            acme,
        })
    }
}

fn client_verifier(
    auth: &gatehouse_config::tls::ClientAuth,
    pem: &[u8],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs::parse_certs(&auth.ca, pem)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", auth.ca))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("{}: cannot verify clients with it: {e}", auth.ca))
}

fn hsts_value(h: &gatehouse_config::tls::Hsts) -> http::HeaderValue {
    let mut v = format!("max-age={}", h.max_age.0.as_secs());
    if h.include_subdomains {
        v.push_str("; includeSubDomains");
    }
    if h.preload {
        v.push_str("; preload");
    }
    http::HeaderValue::from_str(&v).unwrap_or_else(|_| http::HeaderValue::from_static("max-age=0"))
}

/// Why a handshake failed, as a bounded metric label.
fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no_client_certificate",
        Some(E::InvalidCertificate(_)) => "bad_client_certificate",
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(E::NoApplicationProtocol) => "no_application_protocol",
        Some(E::General(m)) if m.contains("no server certificate") => "no_sni",
        Some(E::AlertReceived(_)) => "alert_received",
        Some(_) => "protocol_error",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None => "io_error",
    }
}

impl Terminator {
    pub fn new(listener: &str, state: State) -> Self {
        Terminator {
            listener: listener.to_string(),
            expiry_series: std::sync::Mutex::new(Vec::new()),
            last_refusal: std::sync::Mutex::new(Vec::new()),
            state: ArcSwap::from_pointee(state),
        }
    }

    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Publishes `next` unless its files and settings are what is serving now. Returns whether
    /// it is worth announcing: anything changed, or a refused reload is over.
    pub fn publish(&self, next: State) -> bool {
        // Files put back as they were after a refusal change nothing served, but the operator
        // who saw `certificate_reload_failed` needs to hear that they load again.
        let recovered = self.refused(Vec::new());
        let now = self.state.load();
        if now.fingerprint == next.fingerprint && now.cfg == next.cfg {
            return recovered;
        }
        self.state.store(Arc::new(next));
        true
    }

    /// Records the errors of a refused reload; false when they are the last refusal's.
    pub fn refused(&self, errors: Vec<String>) -> bool {
        let mut last = self.last_refusal.lock().unwrap_or_else(|e| e.into_inner());
        if *last == errors {
            return false;
        }
        *last = errors;
        true
    }

    /// Runs the handshake on `stream` within the handshake timeout (waiting for a free
    /// handshake slot counts against it). The error is a metric label.
    pub async fn accept<Io: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: Io,
    ) -> Result<(TlsStream<Io>, Box<TlsInfo>), &'static str> {
        let state = self.state();
        let timeout = state.cfg.handshake_timeout.0;
        let handshake = async {
            // The ClientHello first, with no slot: a socket that sends nothing must not hold
            // one (the cap is for the handshake's CPU, and the timeout bounds the wait).
            let hello =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await
                    .map_err(|e| failure_reason(&e))?;
            let _slot = state.handshakes.acquire().await.map_err(|_| "closed")?;
            if let Some(slot) = &state.acme {
                if offers_acme_alpn(&hello) {
                    // A tls-alpn-01 check: the challenge certificate, then the server hangs up.
                    let name = hello.client_hello().server_name().map(str::to_string);
                    let cfg = slot
                        .challenges()
                        .alpn_config(name.as_deref())
                        .ok_or("no_application_protocol")?;
                    let _ = hello.into_stream(cfg).await;
                    return Err("acme_challenge");
                }
            }
            hello
                .into_stream(state.server.clone())
                .await
                .map_err(|e| failure_reason(&e))
        };
        let tls = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| "timeout")??;
        let info = info(&tls, &state);
        Ok((tls, Box::new(info)))
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }
}

fn offers_acme_alpn<Io: AsyncRead + AsyncWrite + Unpin>(
    hello: &tokio_rustls::StartHandshake<Io>,
) -> bool {
    hello
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == acme::ACME_TLS_ALPN))
}

fn info<Io>(tls: &TlsStream<Io>, state: &State) -> TlsInfo {
    let (_, conn) = tls.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let client_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(client_cert);
    TlsInfo {
        facts: Arc::new(TlsFacts {
            version,
            cipher,
            sni: conn.server_name().map(Into::into),
            client_subject: client_cert.as_ref().map(|c| (*c.subject).into()),
        }),
        hsts: state.hsts.clone(),
        h2: conn.alpn_protocol() == Some(b"h2"),
        client_cert,
        store: state.store.clone(),
    }
}

fn client_cert(der: &rustls_pki_types::CertificateDer<'_>) -> Option<ClientCert> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    sans.push(s.to_string())
                }
                _ => {}
            }
        }
    }
    Some(ClientCert {
        subject: cert.subject().to_string().into(),
        sans,
    })
}
