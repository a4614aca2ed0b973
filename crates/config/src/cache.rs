//! The response cache's config: the route filter `cache: {...}` and the top-level `cache:`
//! section (the memory budget shared by every route), and their validation.

use crate::units::{ByteSize, Dur};
use crate::validate::Problem;
use serde::{Deserialize, Serialize};

/// Where a route's entries live.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    /// This gateway's memory (the top-level `cache.memory.max_bytes` budget).
    #[default]
    Memory,
    /// The `redis` section's server, shared by every gateway that uses it.
    Redis,
    /// Memory in front of Redis: a Redis hit is kept in memory too.
    Tiered,
}

/// `filters: [{cache: {store, max_entry_bytes, serve_stale_on_error, key, coalesce_timeout}}]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheFilter {
    #[serde(default)]
    pub store: CacheStore,
    /// A response body larger than this streams through uncached, never buffered whole
    /// (default 1MiB).
    #[serde(default = "defaults::max_entry_bytes")]
    pub max_entry_bytes: ByteSize,
    /// When the backend fails (5xx, timeout, no eligible endpoint), serve an entry stale by up
    /// to this long instead of the error (default 0s: only what `stale-if-error` allows).
    #[serde(default = "defaults::zero")]
    pub serve_stale_on_error: Dur,
    #[serde(default)]
    pub key: CacheKey,
    /// How long a request waits for another request's in-flight miss of the same key before
    /// going to the backend itself (default 5s).
    #[serde(default = "defaults::coalesce_timeout")]
    pub coalesce_timeout: Dur,
}

/// What the cache key holds besides method, scheme, host, path and query.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKey {
    /// Request headers whose values are part of the key (like a `Vary` the backend forgot).
    pub headers: Vec<String>,
    /// The authenticated consumer is part of the key (per-consumer entries).
    pub consumer: bool,
    /// Leave the query string out of the key.
    pub ignore_query: bool,
    /// Leave these query parameters out of the key (tracking parameters like `utm_source`).
    pub ignore_query_params: Vec<String>,
}

/// The top-level `cache:` section.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub memory: MemorySettings,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Bytes of entries (bodies and headers) every memory-backed route shares (default 256MiB).
    pub max_bytes: ByteSize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            max_bytes: ByteSize(256 << 20),
        }
    }
}

mod defaults {
    use super::*;
    pub fn max_entry_bytes() -> ByteSize {
        ByteSize(1 << 20)
    }
    pub fn zero() -> Dur {
        Dur::secs(0)
    }
    pub fn coalesce_timeout() -> Dur {
        Dur::secs(5)
    }
}

/// Problems with the cache filter at `at` (`routes[i].filters[j]`).
pub fn validate_filter(f: &CacheFilter, at: &str, has_redis: bool, out: &mut Vec<Problem>) {
    if f.store != CacheStore::Memory && !has_redis {
        out.push((
            format!("{at}.cache.store"),
            format!(
                "store {} needs a top-level redis section",
                match f.store {
                    CacheStore::Redis => "redis",
                    _ => "tiered",
                }
            ),
        ));
    }
    if f.max_entry_bytes.0 == 0 {
        out.push((
            format!("{at}.cache.max_entry_bytes"),
            "must be more than 0".into(),
        ));
    }
    if f.coalesce_timeout.0.is_zero() {
        out.push((
            format!("{at}.cache.coalesce_timeout"),
            "must be more than 0s".into(),
        ));
    }
    for (k, h) in f.key.headers.iter().enumerate() {
        if !crate::validate::is_token(h) {
            out.push((
                format!("{at}.cache.key.headers[{k}]"),
                format!("invalid header name {h:?}"),
            ));
        }
    }
    if f.key.ignore_query && !f.key.ignore_query_params.is_empty() {
        out.push((
            format!("{at}.cache.key.ignore_query_params"),
            "has no effect with ignore_query: true".into(),
        ));
    }
}

/// Problems with the top-level `cache:` section.
pub fn validate_settings(s: &CacheSettings, out: &mut Vec<Problem>) {
    if s.memory.max_bytes.0 == 0 {
        out.push((
            "cache.memory.max_bytes".into(),
            "must be more than 0".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cache_settings_are_named_by_field() {
        let f = CacheFilter {
            store: CacheStore::Tiered,
            max_entry_bytes: ByteSize(0),
            serve_stale_on_error: Dur::secs(0),
            key: CacheKey {
                headers: vec!["x ok".into()],
                ignore_query: true,
                ignore_query_params: vec!["utm".into()],
                ..CacheKey::default()
            },
            coalesce_timeout: Dur::secs(0),
        };
        let mut out = Vec::new();
        validate_filter(&f, "routes[0].filters[1]", false, &mut out);
        let paths: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].filters[1].cache.store",
                "routes[0].filters[1].cache.max_entry_bytes",
                "routes[0].filters[1].cache.coalesce_timeout",
                "routes[0].filters[1].cache.key.headers[0]",
                "routes[0].filters[1].cache.key.ignore_query_params",
            ]
        );
        let mut out = Vec::new();
        validate_filter(
            &CacheFilter {
                store: CacheStore::Redis,
                ..default_filter()
            },
            "f",
            true,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    fn default_filter() -> CacheFilter {
        CacheFilter {
            store: CacheStore::Memory,
            max_entry_bytes: defaults::max_entry_bytes(),
            serve_stale_on_error: defaults::zero(),
            key: CacheKey::default(),
            coalesce_timeout: defaults::coalesce_timeout(),
        }
    }
}
