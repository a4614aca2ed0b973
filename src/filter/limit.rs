//! Rate limiting: a policy's algorithm over per-key state. Local state lives in sharded maps
//! keyed by a keyed hash of the client key (SipHash with a per-process key: attacker-chosen
//! keys cannot collide on purpose, and a key costs 8 bytes whatever its length). Memory is
//! bounded by `max_keys`: idle keys (whose state equals a fresh one) are swept every 10 s and
//! when a shard fills; if a shard is still full, new keys share one overflow state with the same
//! limit until room frees up.

pub mod algorithm;

use algorithm::{Decision, Params, State};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Local per-key state of one policy; outlives snapshots (keyed by policy name).
pub struct LocalStore {
    shards: Vec<Mutex<HashMap<u64, State>>>,
    overflow: Mutex<State>,
    hasher: RandomState,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflow: Mutex::new(State::default()),
            hasher: RandomState::new(),
        }
    }
}

impl LocalStore {
    /// Checks one request for `key` at `now_us`.
    pub fn check(&self, p: &Params, max_keys: usize, key: &[u8], now_us: u64) -> Decision {
        let h = self.hasher.hash_one(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&h) {
            return algorithm::check(p, s, now_us);
        }
        // 10 % slack per shard: keys never spread perfectly evenly over the shards.
        let cap = (max_keys.div_ceil(SHARDS) * 11 / 10).max(1);
        if map.len() >= cap {
            map.retain(|_, s| !algorithm::idle(p, s, now_us));
        }
        if map.len() >= cap {
            drop(map);
            let mut o = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
            return algorithm::check(p, &mut o, now_us);
        }
        let mut s = State::default();
        let d = algorithm::check(p, &mut s, now_us);
        map.insert(h, s);
        d
    }

    /// Forgets idle keys; returns how many are still tracked.
    pub fn sweep(&self, p: &Params, now_us: u64) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut m = s.lock().unwrap_or_else(|e| e.into_inner());
                m.retain(|_, st| !algorithm::idle(p, st, now_us));
                m.shrink_to_fit();
                m.len()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

use crate::error::ProxyError;
use gatehouse_config::traffic::{parse_limit_key, parse_rate, LimitKey, OnRedisError, RateLimit};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A rate-limit policy as one snapshot uses it.
pub struct Limiter {
    pub name: Arc<str>,
    pub params: Params,
    key: LimitKey,
    headers: bool,
    max_keys: usize,
    pub local: Arc<LocalStore>,
    pub redis: Option<Arc<redis_store::RedisStore>>,
    on_redis_error: OnRedisError,
    policy_header: Option<HeaderValue>,
}

impl Limiter {
    pub fn new(
        cfg: &RateLimit,
        local: Arc<LocalStore>,
        redis: Option<Arc<redis_store::RedisStore>>,
    ) -> Self {
        let rate = parse_rate(&cfg.rate).unwrap_or(gatehouse_config::traffic::Rate {
            count: 1,
            per: Duration::from_secs(1),
        });
        let params = Params::new(cfg.algorithm, rate, cfg.burst);
        let policy_header = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            cfg.name,
            rate.count,
            rate.per.as_secs().max(1)
        ))
        .ok();
        Limiter {
            name: cfg.name.as_str().into(),
            params,
            key: parse_limit_key(&cfg.key).unwrap_or(LimitKey::ClientIp),
            headers: cfg.headers,
            max_keys: cfg.max_keys,
            local,
            redis: if cfg.store == gatehouse_config::traffic::Store::Redis {
                redis
            } else {
                None
            },
            on_redis_error: cfg.on_redis_error,
            policy_header,
        }
    }

    /// The key this request is counted under. Requests without the configured key (no
    /// consumer, header or claim) are counted per client IP.
    pub fn key_for(
        &self,
        parts: &http::request::Parts,
        client: IpAddr,
        route: &str,
        who: &super::Identity,
    ) -> Vec<u8> {
        let tagged = |tag: u8, v: &[u8]| {
            let mut k = Vec::with_capacity(v.len() + 1);
            k.push(tag);
            k.extend_from_slice(v);
            k
        };
        let by_ip = || tagged(b'i', &ip_key(client));
        match &self.key {
            LimitKey::ClientIp => by_ip(),
            LimitKey::Route => tagged(b'r', route.as_bytes()),
            LimitKey::Consumer => who
                .consumer
                .as_ref()
                .map_or_else(by_ip, |c| tagged(b'c', c.as_bytes())),
            LimitKey::Header(h) => parts
                .headers
                .get(h.as_str())
                .map_or_else(by_ip, |v| tagged(b'h', v.as_bytes())),
            LimitKey::ClientCert => who
                .client_subject
                .as_ref()
                .map_or_else(by_ip, |s| tagged(b'x', s.as_bytes())),
            LimitKey::Claim(c) => who
                .claims
                .as_ref()
                .and_then(|m| m.get(c))
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .map_or_else(by_ip, |v| tagged(b'j', v.as_bytes())),
        }
    }

    /// Checks one request; on success returns how long to hold it (leaky bucket), on refusal a
    /// 429 error. Adds the rate-limit headers to `out`.
    pub async fn check(&self, key: &[u8], out: &mut HeaderMap) -> Result<Duration, ProxyError> {
        let now = crate::clock::now_us(tokio::time::Instant::now());
        let decision = match &self.redis {
            Some(r) => match r.check(&self.name, &self.params, key).await {
                Ok(d) => {
                    if self.on_redis_error == OnRedisError::FailOpen {
                        // Keep the fallback's buckets spent as Redis's are, so switching to it
                        // in an outage grants no fresh burst.
                        let _ = self.local.check(&self.params, self.max_keys, key, now);
                    }
                    d
                }
                Err(e) => {
                    static WARN: crate::observe::throttle::Throttle =
                        crate::observe::throttle::Throttle::new(Duration::from_secs(10));
                    if let Some(suppressed) = WARN.ready() {
                        tracing::warn!(policy = %self.name, error = %e, suppressed, "redis rate limit check failed; using on_redis_error");
                    }
                    match self.on_redis_error {
                        OnRedisError::FailOpen => {
                            self.local.check(&self.params, self.max_keys, key, now)
                        }
                        OnRedisError::FailClosed => Decision::Reject {
                            retry_after_us: 1_000_000,
                            reset_us: 1_000_000,
                        },
                    }
                }
            },
            None => self.local.check(&self.params, self.max_keys, key, now),
        };
        let secs = |us: u64| us.div_ceil(1_000_000);
        let (remaining, reset) = match decision {
            Decision::Allow {
                remaining,
                reset_us,
                ..
            } => (remaining, reset_us),
            Decision::Reject { reset_us, .. } => (0, reset_us),
        };
        if self.headers {
            if let Some(p) = &self.policy_header {
                out.append(RATELIMIT_POLICY, p.clone());
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "\"{}\";r={};t={}",
                self.name,
                remaining,
                secs(reset)
            )) {
                out.append(RATELIMIT, v);
            }
        }
        match decision {
            Decision::Allow { delay_us, .. } => Ok(Duration::from_micros(delay_us)),
            Decision::Reject { retry_after_us, .. } => Err(ProxyError::RateLimited {
                retry_after: Duration::from_secs(secs(retry_after_us).max(1)),
            }),
        }
    }
}

/// The bytes an IP is limited under: IPv4 as is, IPv6 grouped by its /64 (one subscriber).
fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

pub mod redis_store;
