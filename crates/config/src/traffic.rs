//! The traffic-control part of the config: consumers, rate-limit policies, Redis, JWT issuers
//! and the route filters that use them.

use crate::units::Dur;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub name: String,
    /// SHA-256 digests of the consumer's API keys, as `sha256:<64 hex>` (`gatehouse hash-key`).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Verified client certificates (mTLS) that are this consumer: a subject as the access log
    /// writes it (`CN=alice, O=Example`) or one of the certificate's subjectAltNames.
    #[serde(default)]
    pub client_certs: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// `rate` refills, `burst` is the bucket size.
    TokenBucket,
    /// Requests queue up to `burst` deep and leave at `rate` (NGINX `limit_req` with `burst`).
    LeakyBucket,
    /// Sliding-window counter: the previous window weighted by its overlap, plus the current.
    SlidingWindow,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    #[default]
    Local,
    Redis,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Fall back to this instance's local limiter.
    #[default]
    FailOpen,
    /// Refuse with 429.
    FailClosed,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: String,
    #[serde(default = "defaults::algorithm")]
    pub algorithm: Algorithm,
    /// `100/s`, `100/m`, `100/h` (or the seeds' `100-M`).
    pub rate: String,
    /// An environment variable that, when set, overrides `rate` (e.g. `RATE_LIMIT=100-M`).
    #[serde(default)]
    pub rate_env: Option<String>,
    /// Token bucket size / leaky bucket queue depth (default: the rate's count).
    #[serde(default)]
    pub burst: Option<u32>,
    /// `client_ip`, `route`, `consumer`, `header:NAME` or `claim:NAME`.
    #[serde(default = "defaults::key")]
    pub key: String,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// Send the IETF `RateLimit-Policy` / `RateLimit` headers (default true).
    #[serde(default = "defaults::yes")]
    pub headers: bool,
    /// At most this many keys are tracked; see docs/config.md for what happens at the cap.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port/db` (or `${REDIS_URL}`).
    #[serde(default)]
    pub url: String,
    /// A file holding the URL instead (a Docker or Kubernetes secret, when it has a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<String>,
    /// Each check's deadline (default 20ms).
    #[serde(default = "defaults::redis_timeout")]
    pub timeout: Dur,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    pub name: String,
    /// Required `iss` claim.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default)]
    pub audience: Option<String>,
    /// Accepted algorithms: `HS256`, `RS256`, `ES256`.
    pub algorithms: Vec<String>,
    /// A JWKS file (RS256 / ES256 keys by `kid`).
    #[serde(default)]
    pub keys_file: Option<String>,
    /// A PEM public key file (RS256 / ES256).
    #[serde(default)]
    pub key_file: Option<String>,
    /// An environment variable holding the HS256 secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file holding the HS256 secret (a Docker or Kubernetes secret), instead of `secret_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// The secret read from `secret_file` when the config was loaded.
    #[serde(skip)]
    #[schemars(skip)]
    pub secret_value: Option<String>,
    /// The claim naming the consumer (default `sub`).
    #[serde(default = "defaults::consumer_claim")]
    pub consumer_claim: String,
    /// Clock skew allowed on `exp` and `nbf` (default 30s).
    #[serde(default = "defaults::leeway")]
    pub leeway: Dur,
}

/// `identity`: how the authenticated consumer reaches backends.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    /// The header that carries the authenticated consumer to the backend (default
    /// `x-gatehouse-consumer`). A client's own copy is always removed first.
    pub consumer_header: String,
    /// More headers that backends treat as identity (`x-user-id`, `x-consumer`, ...): removed
    /// from every request, so only the gateway can set them.
    pub strip_headers: Vec<String>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            consumer_header: "x-gatehouse-consumer".into(),
            strip_headers: Vec::new(),
        }
    }
}

/// A step of per-request processing on a route, run in order.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    Auth(Auth),
    /// The name of a `rate_limits` policy.
    RateLimit(String),
    /// Fault injection for resilience testing.
    Fault(FaultFilter),
    /// Response caching (runs after the route's auth and rate-limit filters).
    Cache(crate::cache::CacheFilter),
    /// Cross-origin resource sharing (answers preflights before the route's other filters).
    Cors(crate::cors::Cors),
}

/// `fault: { abort: 503, percent: 10 }` or `fault: { delay: 200ms, percent: 5 }`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultFilter {
    /// Answer with this status instead of forwarding.
    #[serde(default)]
    pub abort: Option<u16>,
    /// Hold the request this long before forwarding.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// Share of requests affected (default 100%).
    #[serde(default = "defaults::all")]
    pub percent: crate::units::Percent,
}

#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub api_key: Option<ApiKeyAuth>,
    #[serde(default)]
    pub jwt: Option<JwtAuth>,
    /// The connection's verified client certificate (a TLS listener with `client_auth`).
    #[serde(default)]
    pub client_cert: Option<ClientCertAuth>,
}

/// `auth: {client_cert: {allow: [...]}}`: a request needs a verified client certificate (401
/// without one); with `allow`, one whose subject or a subjectAltName is listed (403 otherwise).
/// The consumer is the one whose `client_certs` names the certificate.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ClientCertAuth {
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default = "defaults::api_key_header")]
    pub header: String,
    /// Query parameter also accepted, if set.
    #[serde(default)]
    pub query: Option<String>,
    /// Forward the key to the backend (default: removed).
    #[serde(default)]
    pub forward: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    pub issuer: String,
    /// Forward the `Authorization` header to the backend (default: removed).
    #[serde(default)]
    pub forward: bool,
}

/// `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

/// Parses `100/s`, `100/m`, `100/h`, `100/d`, or the common `100-S`, `100-M`, `100-H`, `100-D`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim();
    let bad =
        || format!("invalid rate {t:?}: expected N/s, N/m, N/h or N/d (or N-S, N-M, N-H, N-D)");
    let (n, unit) = t
        .split_once('/')
        .or_else(|| t.split_once('-'))
        .ok_or_else(bad)?;
    let n = n.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u32 = n.parse().map_err(|_| bad())?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("invalid rate {t:?}: the count must be at least 1"));
    }
    Ok(Rate { count, per })
}

/// What a rate limit is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    ClientIp,
    Route,
    Consumer,
    Header(String),
    Claim(String),
    /// The verified client certificate's subject (mTLS).
    ClientCert,
}

pub fn parse_limit_key(s: &str) -> Result<LimitKey, String> {
    match s.trim() {
        "client_ip" => Ok(LimitKey::ClientIp),
        "route" => Ok(LimitKey::Route),
        "consumer" => Ok(LimitKey::Consumer),
        "client_cert" => Ok(LimitKey::ClientCert),
        other => match other.split_once(':') {
            Some(("header", n)) if crate::validate::is_token(n) => {
                Ok(LimitKey::Header(n.to_ascii_lowercase()))
            }
            Some(("claim", n)) if !n.is_empty() => Ok(LimitKey::Claim(n.to_string())),
            _ => Err(format!(
                "invalid key {s:?}: expected client_ip, route, consumer, client_cert, header:NAME or claim:NAME"
            )),
        },
    }
}

mod defaults {
    use super::Algorithm;
    pub fn all() -> crate::units::Percent {
        crate::units::Percent(1.0)
    }
    use crate::units::Dur;
    pub fn algorithm() -> Algorithm {
        Algorithm::TokenBucket
    }
    pub fn key() -> String {
        "client_ip".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_keys() -> usize {
        1_000_000
    }
    pub fn redis_timeout() -> Dur {
        Dur::millis(20)
    }
    pub fn consumer_claim() -> String {
        "sub".into()
    }
    pub fn leeway() -> Dur {
        Dur::secs(30)
    }
    pub fn api_key_header() -> String {
        "x-api-key".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_both_forms() {
        assert_eq!(
            parse_rate("100/m"),
            Ok(Rate {
                count: 100,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            parse_rate("100-M"),
            Ok(Rate {
                count: 100,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(parse_rate("5/s").map(|r| r.per_second()), Ok(5.0));
        assert!(parse_rate("0/s").is_err());
        assert_eq!(
            parse_rate("1000-D").map(|r| r.per),
            Ok(Duration::from_secs(86_400))
        );
        assert!(parse_rate("100/w").is_err());
        assert!(parse_rate("lots").is_err());
        assert!(parse_rate("+5/s").is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(
            parse_limit_key("header:X-Tenant"),
            Ok(LimitKey::Header("x-tenant".into()))
        );
        assert_eq!(
            parse_limit_key("claim:sub"),
            Ok(LimitKey::Claim("sub".into()))
        );
        assert!(parse_limit_key("cookie:x").is_err());
        assert!(parse_limit_key("header:bad name").is_err());
    }
}
