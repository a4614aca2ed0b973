//! One certificate order with instant-acme: the account (loaded from the storage directory, or
//! created there), the order for the configured domains, their challenges answered through
//! [`Challenges`], the CSR for a fresh ECDSA P-256 key, and the chain. Every error is a
//! sentence naming the step and, where there is one, the ACME server's problem document.

use super::storage;
use super::Challenges;
use bytes::Bytes;
use gatehouse_config::tls::{Acme, AcmeChallenge};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One request to the ACME server may take this long (connect, TLS, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server has to validate the challenges and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// A PEM chain and its private key, as issued.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The HTTP client instant-acme talks through: hyper-rustls trusting `directory_ca` (or the
/// system's roots), each request bounded by [`REQUEST_TIMEOUT`].
struct Http(
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        BodyWrapper<Bytes>,
    >,
);

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(error_chain(&e).into())),
                Err(_) => Err(instant_acme::Error::Str("no answer within 30s")),
            }
        })
    }
}

/// An error and its causes in one line (hyper's own says only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

fn http_client(cfg: &Acme) -> Result<Http, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.directory_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{path}: cannot read file: {e}"))?;
            for c in crate::tls::certs::parse_certs(path, &pem)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{path}: not a usable CA certificate: {e}"))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Http(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    ))
}

/// The account of the storage directory for this server, created (and stored) on first use.
async fn account(cfg: &Acme) -> Result<Account, String> {
    let file = storage::account_file(cfg);
    let builder = Account::builder_with_http(Box::new(http_client(cfg)?));
    if let Some(bytes) = storage::read(&file)? {
        let creds: AccountCredentials = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not ACME account credentials: {e}", file.display()))?;
        return builder
            .from_credentials(creds)
            .await
            .map_err(|e| step("reading the ACME directory", &cfg.directory, &e));
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await
        .map_err(|e| step("creating the ACME account", &cfg.directory, &e))?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
    storage::write_atomic(&file, &json, true)?;
    tracing::info!(directory = %cfg.directory, file = %file.display(), "ACME account created");
    Ok(account)
}

fn step(what: &str, directory: &str, e: &instant_acme::Error) -> String {
    format!("{what} at {directory}: {}", error_chain(e))
}

/// Orders a certificate for `cfg.domains` and answers its challenges; the challenge answers are
/// withdrawn whatever the outcome.
pub async fn issue(cfg: &Acme, challenges: &Challenges) -> Result<Issued, String> {
    let mut answered = Vec::new();
    let result = run(cfg, challenges, &mut answered).await;
    for token in answered {
        challenges.withdraw(&token);
    }
    result
}

async fn run(
    cfg: &Acme,
    challenges: &Challenges,
    answered: &mut Vec<String>,
) -> Result<Issued, String> {
    let account = account(cfg).await?;
    let ids: Vec<Identifier> = cfg.domains.iter().cloned().map(Identifier::Dns).collect();
    let at = &cfg.directory;
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| step("placing the order", at, &e))?;
    let kind = match cfg.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(a) = authorizations.next().await {
        let mut a = a.map_err(|e| step("reading an authorization", at, &e))?;
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("an authorization of the order is {other:?}")),
        }
        let domain = a.identifier().to_string();
        let mut challenge = a
            .challenge(kind.clone())
            .ok_or_else(|| format!("the ACME server offers no {kind:?} challenge for {domain}"))?;
        let key_auth = challenge.key_authorization();
        let token = challenge.token.clone();
        match cfg.challenge {
            AcmeChallenge::Http01 => challenges.answer_http(&token, key_auth.as_str()),
            AcmeChallenge::TlsAlpn01 => {
                challenges.answer_alpn(&token, &domain, key_auth.digest().as_ref())?
            }
        }
        answered.push(token);
        challenge
            .set_ready()
            .await
            .map_err(|e| step(&format!("starting the {kind:?} check of {domain}"), at, &e))?;
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(|e| step("waiting for the challenges to be checked", at, &e))?;
    if status != OrderStatus::Ready {
        return Err(failed_authorizations(&mut order).await);
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(cfg.domains.clone())
        .map_err(|e| format!("a certificate request for {:?}: {e}", cfg.domains))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| step("finalizing the order", at, &e))?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| step("downloading the certificate", at, &e))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Why the order went invalid: each failed challenge's problem, as the server said it.
async fn failed_authorizations(order: &mut instant_acme::Order) -> String {
    let mut why = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut a)) = authorizations.next().await {
        let Ok(state) = a.refresh().await else {
            continue;
        };
        for c in &state.challenges {
            if let Some(e) = &c.error {
                why.push(format!("{}: {e}", state.identifier()));
            }
        }
    }
    if why.is_empty() {
        "the order became invalid (the ACME server gave no reason)".into()
    } else {
        format!("the ACME server refused the challenges: {}", why.join("; "))
    }
}
