//! Certificates from an ACME server (`listeners[].tls.acme`): per distinct `acme` section a
//! [`Slot`] holding the certificate served for its domains — the stored one, or a self-signed
//! one until the first is issued — swapped whole when a new one is (new handshakes take it;
//! established connections keep theirs), and the background task that orders and renews it
//! (`renew.rs`). The [`Challenges`] being answered now: http-01 tokens for plain listeners,
//! tls-alpn-01 certificates for handshakes offering ALPN `acme-tls/1`.

mod order;
mod renew;
pub mod storage;

use super::certs::{self, Pair};
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use arc_swap::ArcSwap;
use gatehouse_config::tls::Acme;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The ALPN protocol of tls-alpn-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The URL path prefix of http-01 answers (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Every `acme` section in use, by its settings, and the challenges answered now.
#[derive(Default)]
pub struct Manager {
    slots: Mutex<HashMap<Acme, Arc<Slot>>>,
    challenges: Arc<Challenges>,
}

/// Challenge answers, while an order waits for the server to check them.
#[derive(Default)]
pub struct Challenges {
    /// http-01: token → key authorization.
    http: Mutex<HashMap<String, String>>,
    /// tls-alpn-01: domain → (token, the challenge certificate).
    alpn: Mutex<HashMap<String, (String, Arc<CertifiedKey>)>>,
}

/// The certificate one `acme` section serves now.
pub struct Served {
    pub pair: Pair,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// A placeholder made at start, until the first certificate is issued.
    pub self_signed: bool,
}

/// One `acme` section: what it serves, how its orders went, and its task.
pub struct Slot {
    pub cfg: Acme,
    current: ArcSwap<Served>,
    status: Mutex<Status>,
    challenges: Arc<Challenges>,
    /// The listeners serving it (for the expiry metric's series).
    listeners: Mutex<Vec<String>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// How the orders of a slot went, for `GET /tls`.
#[derive(Clone, Default, serde::Serialize)]
pub struct Status {
    pub orders: u64,
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
    pub next_attempt: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Challenges {
    fn answer_http(&self, token: &str, key_auth: &str) {
        lock(&self.http).insert(token.to_string(), key_auth.to_string());
    }

    /// Makes the tls-alpn-01 certificate for `domain`: self-signed, with the `acmeIdentifier`
    /// extension holding the key authorization's SHA-256.
    fn answer_alpn(&self, token: &str, domain: &str, digest: &[u8]) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
            .map_err(|e| format!("a tls-alpn-01 certificate for {domain}: {e}"))?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::new_acme_identifier(digest));
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| e.to_string())?;
        // Not `from_der`: its key check parses the certificate with webpki, which refuses the
        // critical `acmeIdentifier` extension.
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        let ck = CertifiedKey::new(vec![cert.der().clone()], signing);
        lock(&self.alpn).insert(
            domain.to_ascii_lowercase(),
            (token.to_string(), Arc::new(ck)),
        );
        Ok(())
    }

    fn withdraw(&self, token: &str) {
        lock(&self.http).remove(token);
        lock(&self.alpn).retain(|_, (t, _)| t != token);
    }

    /// The key authorization for an http-01 token being checked now.
    pub fn http(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }

    /// The rustls config answering a tls-alpn-01 check of `sni`, when one is under way.
    pub fn alpn_config(&self, sni: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        let key = lock(&self.alpn)
            .get(&sni?.to_ascii_lowercase())
            .map(|(_, k)| k.clone())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .ok()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Some(Arc::new(cfg))
    }
}

/// Every handshake gets one certificate (a tls-alpn-01 answer).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl Manager {
    /// The slot for `cfg`: the running one while the section is unchanged (its certificate is
    /// kept), else a new one, not started, serving what the storage holds or a self-signed
    /// certificate. Fails only when the storage directory cannot be made or read.
    pub fn slot(&self, cfg: &Acme) -> Result<Arc<Slot>, String> {
        if let Some(s) = lock(&self.slots).get(cfg) {
            return Ok(s.clone());
        }
        storage::ensure_dir(&cfg.storage)?;
        let served = match load_stored(cfg)? {
            Some(s) => s,
            None => self_signed(cfg)?,
        };
        Ok(Arc::new(Slot {
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(served),
            status: Mutex::default(),
            challenges: self.challenges.clone(),
            listeners: Mutex::default(),
            task: Mutex::default(),
        }))
    }

    /// Makes `wanted` (listener, slot) the slots in use: new ones start their task, ones no
    /// listener uses any more stop theirs.
    pub fn reconcile(
        &self,
        wanted: &[(String, Arc<Slot>)],
        events: &Events,
        metrics: &Arc<Metrics>,
    ) {
        let mut slots = lock(&self.slots);
        slots.retain(|cfg, slot| {
            let keep = wanted.iter().any(|(_, s)| &s.cfg == cfg);
            if !keep {
                slot.stop();
            }
            keep
        });
        for (_, slot) in wanted {
            let listeners: Vec<String> = wanted
                .iter()
                .filter(|(_, s)| Arc::ptr_eq(s, slot))
                .map(|(l, _)| l.clone())
                .collect();
            *lock(&slot.listeners) = listeners;
            if !slots.contains_key(&slot.cfg) {
                slots.insert(slot.cfg.clone(), slot.clone());
                let task = tokio::spawn(renew::run(
                    Arc::downgrade(slot),
                    events.clone(),
                    metrics.clone(),
                ));
                *lock(&slot.task) = Some(task.abort_handle());
            }
        }
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// What `GET /tls` shows of each section.
    pub fn views(&self) -> Vec<serde_json::Value> {
        let mut slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        slots.sort_by(|a, b| a.cfg.domains.cmp(&b.cfg.domains));
        slots.iter().map(|s| s.view()).collect()
    }
}

impl Slot {
    /// The certificate handshakes for its domains get now.
    pub fn key(&self) -> Arc<CertifiedKey> {
        self.current.load().pair.key.clone()
    }

    pub fn served(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// Whether `name` is one of its domains.
    pub fn covers(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.cfg
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }

    fn view(&self) -> serde_json::Value {
        let s = self.served();
        let status = lock(&self.status).clone();
        serde_json::json!({
            "domains": self.cfg.domains,
            "directory": self.cfg.directory,
            "challenge": self.cfg.challenge,
            "listeners": *lock(&self.listeners),
            "serving": if s.self_signed { "self_signed" } else { "issued" },
            "serial": s.serial,
            "not_before": super::registry::rfc3339(s.pair.not_before),
            "not_after": super::registry::rfc3339(s.pair.not_after),
            "renew_at": if s.self_signed { None } else { Some(super::registry::rfc3339(renew::due_at(&self.cfg, &s))) },
            "status": status,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A served certificate from PEM text; its label is the first configured domain.
fn served(cfg: &Acme, chain: &[u8], key: &[u8], self_signed: bool) -> Result<Served, String> {
    let (crt, key_file) = storage::cert_files(cfg);
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut pair = certs::load_pair(
        (&crt.display().to_string(), chain),
        (&key_file.display().to_string(), key),
        &provider,
    )?;
    if let Some(first) = cfg.domains.first() {
        pair.label = first.to_ascii_lowercase();
    }
    let serial = pair
        .key
        .cert
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.tbs_certificate.raw_serial_as_string().replace(':', ""))
        .unwrap_or_default();
    Ok(Served {
        pair,
        serial,
        self_signed,
    })
}

/// The stored certificate, when there is one for these domains that has not expired.
fn load_stored(cfg: &Acme) -> Result<Option<Served>, String> {
    let (crt, key) = storage::cert_files(cfg);
    let (Some(chain), Some(key_pem)) = (storage::read(&crt)?, storage::read(&key)?) else {
        return Ok(None);
    };
    match served(cfg, &chain, &key_pem, false) {
        Ok(s) if s.pair.not_after > super::registry::unix_now() && names_cover(&s.pair, cfg) => {
            Ok(Some(s))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            // A damaged file is replaced by the next order, not a reason to refuse the config.
            tracing::warn!(error = %e, "stored ACME certificate unusable; ordering a new one");
            Ok(None)
        }
    }
}

fn names_cover(pair: &Pair, cfg: &Acme) -> bool {
    cfg.domains
        .iter()
        .all(|d| pair.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
}

/// The placeholder served until the first certificate is issued, so handshakes do not fail.
fn self_signed(cfg: &Acme) -> Result<Served, String> {
    let c = rcgen::generate_simple_self_signed(cfg.domains.clone())
        .map_err(|e| format!("a self-signed certificate for {:?}: {e}", cfg.domains))?;
    served(
        cfg,
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
        true,
    )
}
