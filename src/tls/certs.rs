//! Certificate/key pairs read from PEM files: the chain and key checked against each other, the
//! names (SAN DNS names, else the subject's CN) and expiry taken from the leaf certificate, and
//! the store a handshake's SNI is looked up in (exact names before one-label wildcards).

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::sync::Arc;

/// One loaded pair.
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// Lowercase DNS names the leaf certificate is for (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// The leaf's `notBefore`.
    pub not_before: i64,
    /// What the pair is called in metrics, events and errors: its first name, else the file.
    pub label: String,
}

/// A pair from the bytes of its files (named for errors): the chain and key checked against
/// each other, the leaf parsed. The error names the file and what is wrong.
pub fn load_pair(
    (cert, cert_pem): (&str, &[u8]),
    (key, key_pem): (&str, &[u8]),
    provider: &CryptoProvider,
) -> Result<Pair, String> {
    let chain = parse_certs(cert, cert_pem)?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        // rustls reads only unencrypted keys; an encrypted one would otherwise be "no key".
        if matches!(e, rustls_pki_types::pem::Error::NoItemsFound)
            && contains(key_pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        {
            format!(
                "{key}: the private key is encrypted (a passphrase); decrypt it, e.g. `openssl pkey -in {key} -out {key}`"
            )
        } else {
            pem_error(key, "private key", e)
        }
    })?;
    let certified = CertifiedKey::from_der(chain, key_der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{key}: this private key does not belong to the certificate in {cert}")
        }
        e => format!("{key}: unusable private key: {e}"),
    })?;
    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| format!("{cert}: no certificate in the file"))?;
    let (names, (not_before, not_after)) = leaf_facts(leaf).map_err(|e| format!("{cert}: {e}"))?;
    if names.is_empty() {
        return Err(format!(
            "{cert}: the certificate names no DNS name (no subjectAltName, no common name)"
        ));
    }
    Ok(Pair {
        label: names[0].clone(),
        key: Arc::new(certified),
        names,
        not_after,
        not_before,
    })
}

/// Every certificate in PEM text (named `path` for errors), in order; at least one.
pub fn parse_certs(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in the file"));
    }
    Ok(certs)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn pem_error(path: &str, what: &str, e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    // The crate's own wording prints marker lines as byte arrays; say them as text.
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match e {
        Error::Io(e) => format!("{path}: cannot read file: {e}"),
        Error::NoItemsFound => format!("{path}: no PEM {what} in the file"),
        Error::MissingSectionEnd { end_marker } => format!(
            "{path}: not a valid PEM {what}: the file ends before its `-----END {}-----` line (half-written?)",
            text(&end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "{path}: not a valid PEM {what}: malformed `{}` line",
            text(&line)
        ),
        e => format!("{path}: not a valid PEM {what}: {e}"),
    }
}

/// The DNS names and validity (`notBefore`, `notAfter`) of a certificate.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, (i64, i64)), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let mut names = Vec::new();
    let san = cert.subject_alternative_name().ok().flatten();
    if let Some(san) = &san {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if san.is_none() {
        // Only for certificates without a SAN extension, as browsers once did.
        if let Some(cn) = cert.subject().iter_common_name().next() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    Ok((names, (v.not_before.timestamp(), v.not_after.timestamp())))
}

/// The pairs of one listener, looked up by SNI.
pub struct Store {
    pub pairs: Vec<Pair>,
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, usize>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.pairs.iter().map(|p| p.label.as_str()).collect();
        f.debug_struct("Store").field("pairs", &labels).finish()
    }
}

impl Store {
    /// The earlier pair wins where two name the same host.
    pub fn new(mut pairs: Vec<Pair>) -> Self {
        // Labels name metric series: two pairs for the same first name stay apart.
        for i in 1..pairs.len() {
            if pairs[..i].iter().any(|p| p.label == pairs[i].label) {
                pairs[i].label = format!("{} #{}", pairs[i].label, i + 1);
            }
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, p) in pairs.iter().enumerate() {
            for n in &p.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        Store {
            pairs,
            exact,
            wildcard,
        }
    }

    /// The pair whose certificate names `host` (case-insensitive; a wildcard covers one label).
    pub fn lookup(&self, host: &str) -> Option<usize> {
        let host = host.trim_end_matches('.');
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        let (label, parent) = host.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> Pair {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let ck = CertifiedKey::from_der(vec![cert.cert.der().clone()], key, &provider).unwrap();
        let (names, (not_before, not_after)) = leaf_facts(&ck.cert[0]).unwrap();
        Pair {
            label: names[0].clone(),
            key: Arc::new(ck),
            names,
            not_after,
            not_before,
        }
    }

    #[test]
    fn exact_names_win_over_wildcards_and_wildcards_cover_one_label() {
        let s = Store::new(vec![
            pair(&["a.example.com"]),
            pair(&["*.example.com", "example.org"]),
            pair(&["b.example.com"]),
        ]);
        assert_eq!(s.lookup("a.example.com"), Some(0));
        assert_eq!(s.lookup("A.Example.COM."), Some(0));
        assert_eq!(s.lookup("b.example.com"), Some(2), "exact beats wildcard");
        assert_eq!(s.lookup("c.example.com"), Some(1));
        assert_eq!(s.lookup("example.org"), Some(1));
        assert_eq!(
            s.lookup("example.com"),
            None,
            "a wildcard is not its parent"
        );
        assert_eq!(s.lookup("x.c.example.com"), None, "one label only");
        assert_eq!(s.lookup(".example.com"), None);
        assert_eq!(s.lookup("other.test"), None);
    }

    #[test]
    fn pem_errors_say_what_is_wrong_in_words() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let cert_pem = cert.cert.pem();
        let half = &cert_pem[..cert_pem.len() / 2];
        let e = parse_certs("c.pem", half.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            "c.pem: not a valid PEM certificate: the file ends before its `-----END CERTIFICATE-----` line (half-written?)"
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = load_pair(
            ("c.pem", cert_pem.as_bytes()),
            ("k.pem", encrypted.as_bytes()),
            &provider,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("k.pem: the private key is encrypted"), "{e}");
        let e = load_pair(
            ("c.pem", cert_pem.as_bytes()),
            ("k.pem", b"nothing"),
            &provider,
        )
        .err()
        .unwrap();
        assert_eq!(e, "k.pem: no PEM private key in the file");
    }
}
