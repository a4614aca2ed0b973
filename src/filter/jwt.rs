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

/// RFC 7518 §3.2: an HMAC key at least as long as the hash output.
pub const MIN_HS256_SECRET: usize = 32;

pub struct JwtAuth {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    /// One per pinned algorithm: jsonwebtoken refuses a key whose family differs from any
    /// algorithm in the validation's list, so a list of two families would refuse every token.
    validations: Vec<(Algorithm, Validation)>,
    /// Required `iss`: a string equal to this.
    issuer: Option<String>,
    /// Required `aud`: this string, or an array of strings holding it.
    audience: Option<String>,
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

/// The token of an `Authorization: Bearer ...` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
pub fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the token's protected header names critical extensions (`crit`).
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .is_some_and(|h| h.contains_key("crit"))
}

/// The consumer a claim names: a string that can be sent as a header value unchanged (no
/// control characters, no surrounding whitespace a backend might trim), or an integer. Anything
/// else in the consumer claim makes the token unusable rather than anonymous.
fn consumer_of(v: Option<&Value>) -> Result<Option<Arc<str>>, ProxyError> {
    let bad = Err(ProxyError::Unauthorized("invalid_token"));
    match v {
        None => Ok(None),
        Some(Value::String(s)) => {
            let clean = !s.is_empty()
                && s.trim() == s
                && s.bytes().all(|b| (0x20..0x7f).contains(&b) || b >= 0x80)
                && http::HeaderValue::from_str(s).is_ok();
            if clean {
                Ok(Some(Arc::from(s.as_str())))
            } else {
                bad
            }
        }
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(Some(Arc::from(i.to_string().as_str()))),
            (_, Some(u)) => Ok(Some(Arc::from(u.to_string().as_str()))),
            _ => bad,
        },
        Some(_) => bad,
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
                Algorithm::HS256 => match cfg
                    .secret_value
                    .clone()
                    .map(Ok)
                    .or_else(|| cfg.secret_env.as_ref().map(std::env::var))
                {
                    // RFC 7518 §3.2: a key at least as long as the hash (32 bytes for HS256).
                    Some(Ok(secret)) if secret.len() < MIN_HS256_SECRET => problem(format!(
                        "the HS256 secret in {} is {} bytes; it must be at least {MIN_HS256_SECRET}",
                        cfg.secret_env.as_deref().or(cfg.secret_file.as_deref()).unwrap_or_default(),
                        secret.len()
                    )),
                    Some(Ok(secret)) => {
                        keys.push((None, *alg, DecodingKey::from_secret(secret.as_bytes())))
                    }
                    _ => problem(format!(
                        "the HS256 secret variable {} is not set",
                        cfg.secret_env.as_deref().unwrap_or_default()
                    )),
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
                        // A key meant for encryption never verifies a signature.
                        if matches!(
                            jwk.common.public_key_use,
                            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                                | Some(jsonwebtoken::jwk::PublicKeyUse::Other(_))
                        ) {
                            continue;
                        }
                        if let Some(ops) = &jwk.common.key_operations {
                            if !ops
                                .iter()
                                .any(|o| matches!(o, jsonwebtoken::jwk::KeyOperations::Verify))
                            {
                                continue;
                            }
                        }
                        // `alg` on a key pins it: RS384 means not RS256. Without `alg`, the key
                        // may serve any of the issuer's algorithms of its own family.
                        let pinned = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
                        let key = match DecodingKey::from_jwk(jwk) {
                            Ok(k) => k,
                            Err(e) => {
                                // Usually a key type this issuer does not use; say so once,
                                // at load, rather than refusing its tokens without a word.
                                tracing::warn!(issuer = %cfg.name, file = %path, kid = ?jwk.common.key_id, error = %e, "a JWKS key cannot be used and is skipped");
                                continue;
                            }
                        };
                        let family = match &jwk.algorithm {
                            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {
                                Some(Algorithm::RS256)
                            }
                            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                                Some(Algorithm::ES256)
                            }
                            _ => None,
                        };
                        for a in algs.iter().filter(|a| **a != Algorithm::HS256) {
                            let allowed = match &pinned {
                                Some(p) => algorithm(p) == Some(*a),
                                None => family == Some(*a),
                            };
                            if allowed {
                                keys.push((jwk.common.key_id.clone(), *a, key.clone()));
                            }
                        }
                    }
                }
                Err(e) => problem(format!("{path}: {e}")),
            }
        }
        let validations = algs
            .iter()
            .map(|a| {
                let mut v = Validation::new(*a);
                v.leeway = cfg.leeway.0.as_secs();
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp"]);
                // `iss` and `aud` are checked in `check_claims`, strictly: jsonwebtoken skips a
                // claim that is missing or not a string unless required, and accepts an `iss` list.
                v.iss = None;
                v.validate_aud = false;
                (*a, v)
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if algs.is_empty() || keys.is_empty() {
            return Err("no usable key for any of its algorithms".into());
        }
        Ok(JwtAuth {
            keys,
            validations,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            consumer_claim: cfg.consumer_claim.clone(),
            forward,
        })
    }

    /// The registered claims the signature check leaves to us, by type as well as value.
    fn check_claims(&self, c: &Map<String, Value>) -> Result<(), ProxyError> {
        if !c.get("exp").is_some_and(Value::is_number) {
            return Err(ProxyError::Unauthorized("invalid_token"));
        }
        if c.get("nbf").is_some_and(|v| !v.is_number()) {
            return Err(ProxyError::Unauthorized("invalid_token"));
        }
        if let Some(want) = &self.issuer {
            if c.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(ProxyError::Unauthorized("invalid_issuer"));
            }
        }
        if let Some(want) = &self.audience {
            let ok = match c.get("aud") {
                Some(Value::String(a)) => a == want,
                Some(Value::Array(list)) => {
                    list.iter().all(Value::is_string)
                        && list.iter().any(|a| a.as_str() == Some(want.as_str()))
                }
                _ => false,
            };
            if !ok {
                return Err(ProxyError::Unauthorized("invalid_audience"));
            }
        }
        Ok(())
    }

    /// Verifies the bearer token; removes `Authorization` unless forwarding it.
    pub fn authenticate(&self, parts: &mut http::request::Parts) -> Result<Verified, ProxyError> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            // Two credentials: one would be checked and a backend might read the other.
            return Err(ProxyError::Unauthorized("ambiguous_credentials"));
        }
        let token = first
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ProxyError::Unauthorized("missing_token"))?;
        if has_crit(token) {
            // RFC 7515 §4.1.11: extensions we do not implement must be refused.
            return Err(ProxyError::Unauthorized("invalid_token"));
        }
        let head = decode_header(token).map_err(|_| ProxyError::Unauthorized("invalid_token"))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == head.alg) else {
            return Err(ProxyError::Unauthorized("algorithm_not_allowed"));
        };
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == head.alg && (kid.is_none() || head.kid.is_none() || *kid == head.kid)
        });
        let mut last = ProxyError::Unauthorized("no_matching_key");
        for (_, _, key) in candidates {
            match decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    self.check_claims(&data.claims)?;
                    if !self.forward {
                        parts.headers.remove(header::AUTHORIZATION);
                    }
                    let consumer = consumer_of(data.claims.get(&self.consumer_claim))?;
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
