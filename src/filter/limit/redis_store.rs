//! Shared limits through Redis: one atomic Lua script per check (GCRA for the token bucket, a
//! two-key sliding-window counter), both reading Redis `TIME`, so the gateways' clocks don't
//! matter. One connection manager per `redis` section reconnects by itself; every check has the
//! section's deadline (default 20 ms). The caller decides what an error means
//! (`on_redis_error`).
//!
//! The response cache uses the same connection ([`RedisStore::run`]).
//!
//! A breaker on the connection itself: after [`TRIP_AFTER`] failures in a row, checks fail at
//! once (no waiting out the deadline on every request) while a background task pings Redis
//! with a doubling backoff (1 s … 30 s) and closes the breaker when it answers.

use super::algorithm::{Decision, Params};
use gatehouse_config::traffic::{Algorithm, Redis as Config};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The URL without its password, for logs.
fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// GCRA: KEYS[1]; ARGV = interval µs, burst. Returns {allowed, remaining | retry µs, reset µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now - tolerance, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((now + tolerance + interval - new_tat) / interval), new_tat - now}
"#;

/// Sliding window: KEYS[1] prefix; ARGV = window µs, limit. Same return shape.
const SLIDING: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local w = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local start = now - (now % w)
local cur_key = KEYS[1] .. ':' .. string.format('%.0f', start)
local prev_key = KEYS[1] .. ':' .. string.format('%.0f', start - w)
local cur = tonumber(redis.call('GET', cur_key) or '0')
local prev = tonumber(redis.call('GET', prev_key) or '0')
local into = now - start
local weighted = prev * (w - into) + cur * w
if weighted + w > limit * w then
  return {0, w - into, w - into}
end
redis.call('INCR', cur_key)
redis.call('PEXPIRE', cur_key, math.ceil(2 * w / 1000) + 1000)
return {1, limit - math.ceil((weighted + w) / w), w - into}
"#;

pub struct RedisStore {
    url: String,
    timeout: Duration,
    conn: OnceCell<ConnectionManager>,
    gcra: redis::Script,
    sliding: redis::Script,
    /// Failures in a row; at [`TRIP_AFTER`] the breaker opens.
    failures: AtomicU32,
    /// While open: checks fail at once and the prober runs.
    open: AtomicBool,
}

/// Failed checks in a row that open the Redis breaker.
pub const TRIP_AFTER: u32 = 3;
const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(30);

impl RedisStore {
    /// Makes the store and starts connecting in the background, so that the first checks don't
    /// spend their short deadline on connecting (and loading the scripts).
    pub fn new(cfg: &Config) -> std::sync::Arc<Self> {
        let store = std::sync::Arc::new(RedisStore {
            url: cfg.url.clone(),
            timeout: cfg.timeout.0,
            conn: OnceCell::new(),
            gcra: redis::Script::new(GCRA),
            sliding: redis::Script::new(SLIDING),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let s = store.clone();
            tokio::spawn(async move {
                if let Err(e) = s.connection().await {
                    tracing::warn!(error = %e, "redis not reachable yet; checks will retry");
                }
            });
        }
        store
    }

    /// The connection manager, made once (Redis may be down when the gateway starts: then each
    /// check tries again within its deadline). The scripts are loaded when it connects.
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let cm = self
            .conn
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let mut cm = ConnectionManager::new_with_config(client, cfg)
                    .await
                    .map_err(|e| e.to_string())?;
                for script in [&self.gcra, &self.sliding] {
                    script
                        .prepare_invoke()
                        .load_async(&mut cm)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(cm)
            })
            .await?;
        Ok(cm.clone())
    }

    /// Whether the breaker is open (checks go straight to the fallback).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failed(self: &Arc<Self>) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TRIP_AFTER && !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(url = %redacted_url(&self.url), "redis unreachable: shared rate limits use on_redis_error and cache lookups miss until it answers again");
            if tokio::runtime::Handle::try_current().is_ok() {
                let s = self.clone();
                tokio::spawn(async move { s.probe().await });
            }
        }
    }

    /// Pings Redis with a doubling backoff until it answers, then closes the breaker.
    async fn probe(self: Arc<Self>) {
        let mut wait = PROBE_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            let ping = async {
                let mut conn = self.connection().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(self.timeout.max(Duration::from_millis(100)), ping).await
            {
                self.failures.store(0, Ordering::Relaxed);
                self.open.store(false, Ordering::Relaxed);
                tracing::info!(url = %redacted_url(&self.url), "redis answers again: shared rate limits and the cache use it");
                return;
            }
            wait = (wait * 2).min(PROBE_MAX);
        }
    }

    /// Runs one command (the response cache's GET, SET, DEL, SCAN) under the same breaker,
    /// with the section's deadline but at least 50 ms (an entry can be a megabyte).
    pub async fn run<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        if self.is_open() {
            return Err("redis breaker open".into());
        }
        let deadline = self.timeout.max(Duration::from_millis(50));
        let work = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let r = tokio::time::timeout(deadline, work)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")));
        match &r {
            Ok(_) => self.succeeded(),
            Err(_) => self.failed(),
        }
        r
    }

    /// One atomic check for `key` under `policy`; fails at once while the breaker is open.
    pub async fn check(
        self: &Arc<Self>,
        policy: &str,
        p: &Params,
        key: &[u8],
    ) -> Result<Decision, String> {
        if self.is_open() {
            return Err("redis breaker open".into());
        }
        let r = self.check_now(policy, p, key).await;
        match &r {
            Ok(_) => self.succeeded(),
            Err(_) => self.failed(),
        }
        r
    }

    async fn check_now(&self, policy: &str, p: &Params, key: &[u8]) -> Result<Decision, String> {
        let mut redis_key = Vec::with_capacity(16 + policy.len() + key.len());
        redis_key.extend_from_slice(b"gatehouse:rl:");
        redis_key.extend_from_slice(policy.as_bytes());
        redis_key.push(b':');
        redis_key.extend_from_slice(key);
        let work = async {
            let mut conn = self.connection().await?;
            let (script, a, b) = match p.algorithm {
                Algorithm::SlidingWindow => (&self.sliding, p.window_us, p.limit),
                _ => (&self.gcra, p.interval_us, p.burst),
            };
            let r: (i64, i64, i64) = script
                .key(redis_key)
                .arg(a)
                .arg(b)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(r)
        };
        let (allowed, x, reset) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        let reset_us = reset.max(0) as u64;
        Ok(if allowed == 1 {
            Decision::Allow {
                remaining: x.max(0) as u64,
                reset_us,
                delay_us: 0,
            }
        } else {
            Decision::Reject {
                retry_after_us: x.max(1) as u64,
                reset_us,
            }
        })
    }
}
