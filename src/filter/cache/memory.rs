//! The memory store: one moka cache for every route, bounded by the bytes of its entries
//! (`cache.memory.max_bytes`), each key kept as long as its longest-kept variant.

use super::entry::Variants;
use crate::observe::metrics::Metrics;
use moka::notification::RemovalCause;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct Memory {
    cache: moka::future::Cache<String, Arc<Variants>>,
    bytes: Gauge,
    entries: Gauge,
}

struct KeepFor;

impl moka::Expiry<String, Arc<Variants>> for KeepFor {
    fn expire_after_create(&self, _: &String, v: &Arc<Variants>, _: Instant) -> Option<Duration> {
        Some(v.keep_after(SystemTime::now()))
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<Variants>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep_after(SystemTime::now()))
    }
}

impl Memory {
    pub fn new(max_bytes: u64, metrics: &Metrics) -> Self {
        let size = metrics
            .cache_evictions
            .get_or_create(&vec![("cause", "size".into())])
            .clone();
        let expired = metrics
            .cache_evictions
            .get_or_create(&vec![("cause", "expired".into())])
            .clone();
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Variants>| {
                (k.len() as u64 + v.weight()).min(u64::from(u32::MAX)) as u32
            })
            .expire_after(KeepFor)
            .eviction_listener(move |_, _, cause| {
                let counter = match cause {
                    RemovalCause::Size => &size,
                    RemovalCause::Expired => &expired,
                    _ => return,
                };
                counter.inc();
            })
            .build();
        Memory {
            cache,
            bytes: metrics.cache_memory_bytes.clone(),
            entries: metrics.cache_memory_entries.clone(),
        }
    }

    pub async fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.cache.get(key).await
    }

    pub async fn put(&self, key: String, v: Variants) {
        self.cache.insert(key, Arc::new(v)).await;
        self.gauges().await;
    }

    pub async fn remove(&self, key: &str) {
        self.cache.invalidate(key).await;
        self.gauges().await;
    }

    /// Removes every key `doomed` picks; returns how many.
    pub async fn purge(&self, doomed: impl Fn(&str, &Variants) -> bool) -> usize {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(k, v)| doomed(k, v))
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.cache.invalidate(k.as_str()).await;
        }
        self.gauges().await;
        keys.len()
    }

    async fn gauges(&self) {
        self.cache.run_pending_tasks().await;
        self.bytes.set(self.cache.weighted_size() as i64);
        self.entries.set(self.cache.entry_count() as i64);
    }
}
