//! The response cache filter's stores and keys: memory (moka), Redis (the `redis` section's
//! connection) or both, one key per resource (`scheme://host/path?query`, plus the configured
//! headers and consumer), each key holding its `Vary` variants. What is fresh, stale or
//! storable is RFC 9111's (`http-cache-semantics`, as a shared cache); the request path that
//! uses all this is `proxy::cache`.

pub mod coalesce;
pub mod entry;
pub mod memory;
pub mod normalize;

use crate::filter::limit::redis_store::RedisStore;
use crate::observe::metrics::{Labels, Metrics};
use bytes::Bytes;
use coalesce::Coalescer;
use entry::Variants;
use gatehouse_config::cache::{CacheFilter, CacheStore};
use http::HeaderMap;
use memory::Memory;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Digest;
use std::sync::Arc;

/// Redis keys are this plus the cache key.
pub const REDIS_PREFIX: &str = "gatehouse:cache:";

/// What a lookup came to, for metrics, `X-Cache` and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache, fresh.
    Hit,
    /// Not in the cache (or not usable): forwarded.
    Miss,
    /// Served stale (`stale-while-revalidate`, or the backend failed).
    Stale,
    /// Stale, revalidated by the backend with a 304, served from the cache.
    Revalidated,
    /// Not a cacheable request (method, `no-store`): forwarded, nothing looked up.
    Bypass,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Stale => "stale",
            Lookup::Revalidated => "revalidated",
            Lookup::Bypass => "bypass",
        }
    }

    /// The `X-Cache` value.
    pub fn x_cache(self) -> &'static str {
        match self {
            Lookup::Hit | Lookup::Revalidated => "HIT",
            Lookup::Miss => "MISS",
            Lookup::Stale => "STALE",
            Lookup::Bypass => "BYPASS",
        }
    }
}

const LOOKUPS: [Lookup; 5] = [
    Lookup::Hit,
    Lookup::Miss,
    Lookup::Stale,
    Lookup::Revalidated,
    Lookup::Bypass,
];

/// One route's cache filter, built per snapshot over stores that outlive snapshots.
pub struct RouteCache {
    pub route: Arc<str>,
    pub cfg: CacheFilter,
    memory: Option<Arc<Memory>>,
    redis: Option<Arc<RedisStore>>,
    pub coalescer: Arc<Coalescer>,
    lookups: [Counter; 5],
    stores: Counter,
    redis_errors: Family<Labels, Counter>,
}

impl RouteCache {
    pub fn new(
        route: &str,
        cfg: &CacheFilter,
        (memory, redis): (Arc<Memory>, Option<Arc<RedisStore>>),
        coalescer: Arc<Coalescer>,
        metrics: &Metrics,
    ) -> Self {
        let lookups = LOOKUPS.map(|l| {
            metrics
                .cache_lookups
                .get_or_create(&vec![
                    ("route", route.to_string()),
                    ("result", l.as_str().to_string()),
                ])
                .clone()
        });
        let stores = metrics
            .cache_stores
            .get_or_create(&vec![("route", route.to_string())])
            .clone();
        RouteCache {
            route: route.into(),
            cfg: cfg.clone(),
            memory: (cfg.store != CacheStore::Redis).then_some(memory),
            redis: if cfg.store == CacheStore::Memory {
                None
            } else {
                redis
            },
            coalescer,
            lookups,
            stores,
            redis_errors: metrics.cache_redis_errors.clone(),
        }
    }

    /// Lookups answered from the cache (fresh, stale or revalidated), and all lookups but
    /// bypasses: the hit ratio's two terms, as running totals.
    pub fn hit_totals(&self) -> (u64, u64) {
        let n = |l: Lookup| self.lookups[LOOKUPS.iter().position(|x| *x == l).unwrap_or(0)].get();
        let served = n(Lookup::Hit) + n(Lookup::Stale) + n(Lookup::Revalidated);
        (served, served + n(Lookup::Miss))
    }

    pub fn count(&self, l: Lookup) {
        self.lookups[LOOKUPS.iter().position(|x| *x == l).unwrap_or(0)].inc();
    }

    /// The key of a request: `scheme://host/path?query` (the query as configured), then, when
    /// the key names headers or the consumer, `#` and a digest of their values.
    pub fn key(
        &self,
        (scheme, host): (&str, &str),
        uri: &http::Uri,
        headers: &HeaderMap,
        consumer: Option<&str>,
    ) -> String {
        let k = &self.cfg.key;
        let mut key = format!("{scheme}://{host}{}", uri.path());
        if let Some(q) = uri.query().filter(|_| !k.ignore_query) {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !k.ignore_query_params.iter().any(|i| i == name)
                })
                .collect();
            if !kept.is_empty() {
                key.push('?');
                key.push_str(&kept.join("&"));
            }
        }
        if !k.headers.is_empty() || k.consumer {
            let mut d = sha2::Sha256::new();
            for h in &k.headers {
                d.update(h.as_bytes());
                for v in headers.get_all(h.as_str()) {
                    d.update(b"\0");
                    d.update(v.as_bytes());
                }
                d.update(b"\n");
            }
            if k.consumer {
                d.update(b"consumer\0");
                d.update(consumer.unwrap_or("").as_bytes());
            }
            key.push('#');
            key.push_str(&hex::encode(&d.finalize()[..16]));
        }
        key
    }

    /// The key's variants: memory first, then Redis (a Redis hit is kept in memory too). A
    /// Redis failure is a miss.
    pub async fn get(&self, key: &str) -> Option<Arc<Variants>> {
        if let Some(m) = &self.memory {
            if let Some(v) = m.get(key).await {
                return Some(v);
            }
        }
        let r = self.redis.as_ref()?;
        let cmd = redis::cmd("GET")
            .arg(format!("{REDIS_PREFIX}{key}"))
            .clone();
        let got = match r.run::<Option<Vec<u8>>>(&cmd).await {
            Ok(got) => got?,
            Err(e) => {
                self.redis_failed("get", &e);
                return None;
            }
        };
        let v = entry::decode(Bytes::from(got))?;
        if let Some(m) = &self.memory {
            m.put(key.to_string(), v.clone()).await;
        }
        Some(Arc::new(v))
    }

    /// Stores the key's variants in every store of the route.
    pub async fn put(&self, key: String, v: Variants) {
        self.stores.inc();
        if let Some(r) = &self.redis {
            let ms = v
                .keep_after(std::time::SystemTime::now())
                .as_millis()
                .max(1) as u64;
            let cmd = redis::cmd("SET")
                .arg(format!("{REDIS_PREFIX}{key}"))
                .arg(entry::encode(&v))
                .arg("PX")
                .arg(ms)
                .clone();
            if let Err(e) = r.run::<()>(&cmd).await {
                self.redis_failed("set", &e);
            }
        }
        if let Some(m) = &self.memory {
            m.put(key, v).await;
        }
    }

    /// Forgets the key everywhere (an unsafe method succeeded on it).
    pub async fn remove(&self, key: &str) {
        if let Some(m) = &self.memory {
            m.remove(key).await;
        }
        if let Some(r) = &self.redis {
            let cmd = redis::cmd("DEL")
                .arg(format!("{REDIS_PREFIX}{key}"))
                .clone();
            if let Err(e) = r.run::<()>(&cmd).await {
                self.redis_failed("del", &e);
            }
        }
    }

    fn redis_failed(&self, op: &str, e: &str) {
        self.redis_errors
            .get_or_create(&vec![("op", op.to_string())])
            .inc();
        tracing::debug!(route = %self.route, op, error = %e, "redis cache operation failed; treated as a miss");
    }
}

/// What an admin purge removes: one key, or every key starting with a prefix; optionally only
/// entries stored by one route.
pub struct Purge<'a> {
    pub key: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub route: Option<&'a str>,
}

impl Purge<'_> {
    fn picks(&self, key: &str, v: &Variants) -> bool {
        let by_key = match (self.key, self.prefix) {
            (Some(k), _) => key == k || key.strip_prefix(k).is_some_and(|r| r.starts_with('#')),
            (None, Some(p)) => key.starts_with(p),
            (None, None) => true,
        };
        by_key
            && self
                .route
                .is_none_or(|r| v.0.iter().any(|e| &*e.route == r))
    }
}

/// Removes what `p` picks from the memory store and Redis; returns how many keys went (a key
/// in both counts twice).
pub async fn purge(
    memory: &Memory,
    redis: Option<&Arc<RedisStore>>,
    p: &Purge<'_>,
) -> Result<usize, String> {
    let mut n = memory.purge(|k, v| p.picks(k, v)).await;
    let Some(r) = redis else { return Ok(n) };
    // SCAN with a glob of the escaped prefix (or key), then a check of each value.
    let glob = |s: &str| {
        s.chars().fold(String::new(), |mut g, c| {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                g.push('\\');
            }
            g.push(c);
            g
        })
    };
    let pattern = format!(
        "{}{}*",
        glob(REDIS_PREFIX),
        glob(p.key.or(p.prefix).unwrap_or(""))
    );
    let mut cursor = 0u64;
    loop {
        let cmd = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .clone();
        let (next, keys): (u64, Vec<String>) = r.run(&cmd).await?;
        for k in keys {
            let key = &k[REDIS_PREFIX.len()..];
            let v = match p.route {
                None => Variants::default(),
                Some(_) => {
                    let got: Option<Vec<u8>> = r.run(redis::cmd("GET").arg(&k)).await?;
                    match got.and_then(|b| entry::decode(Bytes::from(b))) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            if p.picks(key, &v) {
                let _: () = r.run(redis::cmd("DEL").arg(&k)).await?;
                n += 1;
            }
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}
