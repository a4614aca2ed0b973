//! TLS to endpoints (`clusters[].tls`): the cluster's rustls client config (its CAs or the
//! system's roots, an optional client certificate, ALPN for the cluster's protocol), the server
//! name each endpoint is verified as, and the stream a pooled connection runs over — plain TCP
//! or TLS over it — as hyper sees it.

use crate::error::ProxyError;
use gatehouse_config::tls::UpstreamTls;
use gatehouse_config::Protocol;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A cluster's TLS client.
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
    sni: Option<ServerName<'static>>,
    /// Settings and file contents: pools are rebuilt when it changes.
    pub fingerprint: u64,
}

impl Connector {
    /// Reads the files `cfg` names and builds the client config. Problems are `(field, message)`
    /// with fields relative to the cluster (`tls.ca`).
    pub fn build(
        cfg: &UpstreamTls,
        protocol: Protocol,
    ) -> Result<Connector, Vec<(String, String)>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        hash.update(format!("{cfg:?}{protocol:?}").as_bytes());
        let mut problems = Vec::new();
        let mut read = |field: &str, path: &str| match std::fs::read(path) {
            Ok(b) => {
                hash.update(&b);
                Some(b)
            }
            Err(e) => {
                problems.push((field.to_string(), format!("{path}: cannot read file: {e}")));
                None
            }
        };
        let ca = cfg.ca.as_ref().map(|p| (p, read("tls.ca", p)));
        let identity = cfg.client_cert.as_ref().map(|p| {
            (
                p,
                read("tls.client_cert.cert", &p.cert),
                read("tls.client_cert.key", &p.key),
            )
        });
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some((path, Some(pem))) => {
                for c in CertificateDer::pem_slice_iter(&pem) {
                    match c
                        .map_err(|e| e.to_string())
                        .and_then(|c| roots.add(c).map_err(|e| e.to_string()))
                    {
                        Ok(()) => {}
                        Err(e) => problems.push(("tls.ca".into(), format!("{path}: {e}"))),
                    }
                }
                if roots.is_empty() {
                    problems.push((
                        "tls.ca".into(),
                        format!("{path}: no PEM certificate in the file"),
                    ));
                }
            }
            Some((_, None)) => {}
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![("tls".to_string(), e.to_string())])?;
        let builder = if cfg.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match identity {
            Some((pair, Some(cert), Some(key))) => {
                let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&cert).collect();
                let key = PrivateKeyDer::from_pem_slice(&key);
                match (chain, key) {
                    (Ok(chain), Ok(key)) if !chain.is_empty() => {
                        match builder.with_client_auth_cert(chain, key) {
                            Ok(c) => c,
                            Err(rustls::Error::InconsistentKeys(_)) => {
                                return Err(vec![(
                                    "tls.client_cert".into(),
                                    format!(
                                    "{}: this private key does not belong to the certificate in {}",
                                    pair.key, pair.cert
                                ),
                                )])
                            }
                            Err(e) => {
                                return Err(vec![(
                                    "tls.client_cert".into(),
                                    format!("{}: {e}", pair.key),
                                )])
                            }
                        }
                    }
                    (Ok(_), Ok(_)) | (Err(_), _) => {
                        problems.push((
                            "tls.client_cert.cert".into(),
                            format!("{}: no valid PEM certificate", pair.cert),
                        ));
                        return Err(problems);
                    }
                    (_, Err(_)) => {
                        problems.push((
                            "tls.client_cert.key".into(),
                            format!("{}: no valid PEM private key", pair.key),
                        ));
                        return Err(problems);
                    }
                }
            }
            _ => builder.with_no_client_auth(),
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        config.alpn_protocols = match protocol {
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
        };
        let sni = match &cfg.sni {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                vec![(
                    "tls.sni".to_string(),
                    format!("invalid server name {name:?}"),
                )]
            })?),
            None => None,
        };
        Ok(Connector {
            config: Arc::new(config),
            sni,
            fingerprint: hash.digest(),
        })
    }

    /// The TLS handshake with the endpoint at `address` over `tcp`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        address: &str,
        timeout: std::time::Duration,
    ) -> Result<TlsStream<TcpStream>, ProxyError> {
        let name = match &self.sni {
            Some(n) => n.clone(),
            None => server_name(address).ok_or(ProxyError::UpstreamTls)?,
        };
        let connect = tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, tcp);
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(ProxyError::ConnectTimeout),
            Ok(Err(e)) => {
                // The reason is only here (the client gets a bare 502): a wrong CA or SNI must
                // be findable. The endpoint's breaker stops the flood when it keeps failing.
                tracing::warn!(endpoint = %address, error = %e, "TLS handshake with the endpoint failed");
                Err(ProxyError::UpstreamTls)
            }
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// The endpoint's host as a server name: `10.0.0.1:443` → the IP, `api.internal:443` → the name.
fn server_name(address: &str) -> Option<ServerName<'static>> {
    let host = match address.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    };
    ServerName::try_from(host.to_string()).ok()
}

/// `insecure_skip_verify`: signatures are still checked (the handshake is real), names and
/// chains are not.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An upstream connection's stream as hyper drives it.
pub enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

macro_rules! both {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamIo::Plain($io) => $e,
            UpstreamIo::Tls($io) => $e,
        }
    };
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        both!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, io => Pin::new(io).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, io => Pin::new(io).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, io => Pin::new(io).poll_shutdown(cx))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(io) => hyper::rt::Write::is_write_vectored(io),
            UpstreamIo::Tls(io) => hyper::rt::Write::is_write_vectored(&**io),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}
