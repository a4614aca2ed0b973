//! TLS settings as written: a listener's certificates, client-certificate verification and
//! protocol floor. Files are read (and their keys matched, names and expiry taken from them)
//! by the gateway when it builds a listener, not here.

use crate::units::Dur;
use serde::{Deserialize, Serialize};

/// `listeners[].tls`: the listener speaks HTTPS.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate/key pairs (PEM; RSA or ECDSA; full chains). A handshake gets the pair whose
    /// certificate names the client's SNI (exact names before wildcards); the first pair is the
    /// default for clients without SNI or with a name no certificate has. May be empty when
    /// `acme` gets the certificate.
    #[serde(default)]
    pub certificates: Vec<CertificatePair>,
    /// Get (and renew) a certificate for `domains` from an ACME server such as Let's Encrypt.
    #[serde(default)]
    pub acme: Option<Acme>,
    /// Verify client certificates (mTLS) against a CA bundle.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Oldest protocol version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Refuse handshakes without SNI instead of answering them with the default certificate.
    #[serde(default)]
    pub require_sni: bool,
    /// Time a client has to finish its handshake (default 10s).
    #[serde(default = "handshake_timeout")]
    pub handshake_timeout: Dur,
    /// Handshakes in progress at once; beyond it new connections wait for a slot within their
    /// handshake timeout (default 1024).
    #[serde(default = "max_handshakes")]
    pub max_handshakes: usize,
    /// `Strict-Transport-Security` on every response from this listener.
    #[serde(default)]
    pub hsts: Option<Hsts>,
}

/// `listeners[].tls.acme`: one certificate for `domains`, obtained, stored and renewed by the
/// gateway.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The ACME server's directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Contact address given to the ACME server for the account (expiry notices).
    #[serde(default)]
    pub email: Option<String>,
    /// DNS names of the certificate (one certificate for all of them; no wildcards: they need
    /// dns-01).
    pub domains: Vec<String>,
    /// How the server checks that the gateway answers for the domains: `http-01` (default; a
    /// plain-HTTP listener on the port the server connects to, 80) or `tls-alpn-01` (this TLS
    /// listener, on the port the server connects to, 443).
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// Directory for the account key (shared by every certificate and every gateway using this
    /// directory) and the certificates, so a restart does not order again.
    pub storage: String,
    /// PEM bundle trusted for the ACME server's own HTTPS (a private or test CA); default the
    /// system's roots.
    #[serde(default)]
    pub directory_ca: Option<String>,
    /// Renew when this much of the certificate's lifetime is left; default a third of its
    /// lifetime (60 days' renewal at day 60 of 90).
    #[serde(default)]
    pub renew_before: Option<Dur>,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum AcmeChallenge {
    /// `GET /.well-known/acme-challenge/TOKEN` on a plain-HTTP listener.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on this listener.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

fn handshake_timeout() -> Dur {
    Dur::secs(10)
}

fn max_handshakes() -> usize {
    1024
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file: the certificate first, then its chain.
    pub cert: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub ca: String,
    #[serde(default)]
    pub mode: ClientAuthMode,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// A handshake without a valid client certificate fails.
    #[default]
    Required,
    /// A client without a certificate is let in (routes and filters can tell); one with an
    /// invalid certificate still fails the handshake.
    Optional,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// `max-age` (default 365d).
    #[serde(default = "hsts_max_age")]
    pub max_age: Dur,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

fn hsts_max_age() -> Dur {
    Dur::secs(365 * 24 * 3600)
}

impl ListenerTls {
    /// Every file this listener's TLS reads.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.certificates
            .iter()
            .flat_map(|p| [p.cert.as_str(), p.key.as_str()])
            .chain(self.client_auth.iter().map(|c| c.ca.as_str()))
    }

    /// Every file or directory name, relative ones to be resolved (the ACME storage too).
    pub(crate) fn files_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.certificates
            .iter_mut()
            .flat_map(|p| [&mut p.cert, &mut p.key])
            .chain(self.client_auth.iter_mut().map(|c| &mut c.ca))
            .chain(
                self.acme
                    .iter_mut()
                    .flat_map(|a| std::iter::once(&mut a.storage).chain(a.directory_ca.as_mut())),
            )
    }
}

/// `clusters[].tls`: the cluster's endpoints are spoken to over TLS.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The server name sent (SNI) and verified; default the endpoint's host (an IP address is
    /// verified as one, and no SNI is sent for it).
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM bundle of the CAs the endpoints' certificates must chain to; default the system's
    /// roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Accept any certificate (no verification at all). For tests and emergencies only: every
    /// load logs a warning.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// A client certificate for endpoints that require one (mTLS to the backend).
    #[serde(default)]
    pub client_cert: Option<CertificatePair>,
}

impl UpstreamTls {
    pub(crate) fn files_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.ca.iter_mut().chain(
            self.client_cert
                .iter_mut()
                .flat_map(|p| [&mut p.cert, &mut p.key]),
        )
    }
}
