//! JWT bearer authentication: HS256 (secret from an environment variable), RS256 and ES256
//! (PEM key file or JWKS file, keys chosen by `kid`). Algorithms are pinned per issuer (a token
//! cannot pick its own); `exp` and `nbf` are checked with a small leeway, `iss` and `aud` when
//! configured. A claim (default `sub`) names the consumer. Keys are read when the snapshot is
//! built; a key that cannot be read makes the snapshot fail to build (check, run and reload
//! alike), so an issuer never runs with fewer keys than its config names.

use crate::error::ProxyError;
use gatehouse_config::traffic::JwtIssuer;
use http::header;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct JwtAuth {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    validation: Validation,
    consumer_claim: String,
    pub forward: bool,
}

/// What a valid token says.
pub struct Verified {
    pub consumer: Option<Arc<str>>,
    pub claims: Map<String, Value>,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "HS256" => Some(Algorithm::HS256),
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

impl JwtAuth {
    pub fn new(cfg: &JwtIssuer, forward: bool) -> Result<Self, String> {
        let algs: Vec<Algorithm> = cfg
            .algorithms
            .iter()
            .map(|a| algorithm(a).ok_or_else(|| format!("unsupported algorithm {a:?}")))
            .collect::<Result<_, _>>()?;
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        let mut problem = |what: String| problems.push(what);
        for alg in &algs {
            match alg {
                Algorithm::HS256 => match cfg.secret_env.as_ref().map(std::env::var) {
                    Some(Ok(secret)) => {
                        keys.push((None, *alg, DecodingKey::from_secret(secret.as_bytes())))
                    }
                    _ => problem("the HS256 secret variable is not set".into()),
                },
                Algorithm::RS256 | Algorithm::ES256 => {
                    if let Some(path) = &cfg.key_file {
                        let pem = std::fs::read(path);
                        let key = pem.map_err(|e| e.to_string()).and_then(|pem| {
                            if *alg == Algorithm::RS256 {
                                DecodingKey::from_rsa_pem(&pem)
                            } else {
                                DecodingKey::from_ec_pem(&pem)
                            }
                            .map_err(|e| e.to_string())
                        });
                        match key {
                            Ok(k) => keys.push((None, *alg, k)),
                            Err(e) => problem(format!("{path}: {e}")),
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(path) = &cfg.keys_file {
            let set = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JwkSet>(&b).map_err(|e| e.to_string()));
            match set {
                Ok(set) => {
                    for jwk in &set.keys {
                        let alg = match jwk.common.key_algorithm.map(|a| format!("{a:?}")) {
                            Some(a) => algorithm(&a),
                            None => None,
                        };
                        let Ok(key) = DecodingKey::from_jwk(jwk) else {
                            continue;
                        };
                        // A JWK without `alg` may be used for any of the issuer's RS/ES algorithms.
                        for a in algs.iter().filter(|a| **a != Algorithm::HS256) {
                            if alg.is_none() || alg == Some(*a) {
                                keys.push((jwk.common.key_id.clone(), *a, key.clone()));
                            }
                        }
                    }
                }
                Err(e) => problem(format!("{path}: {e}")),
            }
        }
        let mut validation = Validation::new(algs.first().copied().unwrap_or(Algorithm::RS256));
        validation.algorithms = algs.clone();
        validation.leeway = cfg.leeway.0.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &cfg.issuer {
            Some(i) => validation.set_issuer(&[i]),
            None => validation.iss = None,
        }
        match &cfg.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if algs.is_empty() || keys.is_empty() {
            return Err("no usable key for any of its algorithms".into());
        }
        Ok(JwtAuth {
            keys,
            validation,
            consumer_claim: cfg.consumer_claim.clone(),
            forward,
        })
    }

    /// Verifies the bearer token; removes `Authorization` unless forwarding it.
    pub fn authenticate(&self, parts: &mut http::request::Parts) -> Result<Verified, ProxyError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ProxyError::Unauthorized("missing_token"))?;
        let head = decode_header(token).map_err(|_| ProxyError::Unauthorized("invalid_token"))?;
        if !self.validation.algorithms.contains(&head.alg) {
            return Err(ProxyError::Unauthorized("algorithm_not_allowed"));
        }
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == head.alg && (kid.is_none() || head.kid.is_none() || *kid == head.kid)
        });
        let mut last = ProxyError::Unauthorized("no_matching_key");
        for (_, _, key) in candidates {
            match decode::<Map<String, Value>>(token, key, &self.validation) {
                Ok(data) => {
                    if !self.forward {
                        parts.headers.remove(header::AUTHORIZATION);
                    }
                    let consumer = data
                        .claims
                        .get(&self.consumer_claim)
                        .and_then(Value::as_str)
                        .map(Arc::from);
                    return Ok(Verified {
                        consumer,
                        claims: data.claims,
                    });
                }
                Err(e) => {
                    last = ProxyError::Unauthorized(match e.kind() {
                        ErrorKind::ExpiredSignature => "token_expired",
                        ErrorKind::ImmatureSignature => "token_not_yet_valid",
                        ErrorKind::InvalidIssuer => "invalid_issuer",
                        ErrorKind::InvalidAudience => "invalid_audience",
                        ErrorKind::InvalidSignature => "invalid_signature",
                        _ => "invalid_token",
                    })
                }
            }
        }
        Err(last)
    }
}
