//! `endpoints_from: {etcd: {prefix}}`: every key under the prefix is an endpoint whose address
//! is the rest of the key (`/services/shop/10.0.0.1:8080`), with an optional JSON value
//! (`{"weight": 2}`). Read the prefix, wait for a change after that revision (an etcd watch),
//! read again: a change is never missed, since each watch starts just after the revision read.

use super::Reporter;
use gatehouse_config::Endpoint;
use std::time::Duration;

/// A watch is re-made this often even without a change (a half-open connection would
/// otherwise wait forever).
const WATCH_FOR: Duration = Duration::from_secs(60);
/// After a failure, the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub struct Task {
    pub prefix: String,
    pub client: crate::etcd::Client,
    pub report: Reporter,
}

impl Task {
    pub async fn run(self) {
        loop {
            let revision = match self.client.range(&self.prefix, true).await {
                Ok(range) => {
                    let (endpoints, skipped) = endpoints(&self.prefix, &range.kvs);
                    for (key, why) in skipped {
                        tracing::warn!(cluster = %self.report.cluster, key, why, "etcd key is not an endpoint; skipped");
                    }
                    if endpoints.is_empty() {
                        self.report.failed("empty", "no endpoints under the prefix");
                    } else {
                        self.report.succeeded(endpoints);
                    }
                    range.revision
                }
                Err(e) => {
                    self.report.failed("failed", &e);
                    tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                    continue;
                }
            };
            if let Err(e) = self
                .client
                .changed_after(&self.prefix, true, revision, WATCH_FOR)
                .await
                .map(drop)
            {
                self.report.failed("failed", &e);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }
}

/// The endpoints the keys name, sorted by address, and the keys that name none (with why).
fn endpoints(prefix: &str, kvs: &[crate::etcd::Kv]) -> (Vec<Endpoint>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for kv in kvs {
        // etcd sends only keys under the prefix; a key that is not is skipped (slicing it at
        // the prefix's length could cut a character in two).
        let Some(rest) = kv.key.strip_prefix(prefix) else {
            skipped.push((kv.key.clone(), "the key is not under the prefix".into()));
            continue;
        };
        let address = match super::address(rest.trim_start_matches('/')) {
            Ok(a) => a,
            Err(why) => {
                skipped.push((kv.key.clone(), why));
                continue;
            }
        };
        let weight = if kv.value.iter().all(u8::is_ascii_whitespace) {
            1
        } else {
            match serde_json::from_slice::<serde_json::Value>(&kv.value) {
                Ok(v) => match v.get("weight").map(|w| w.as_u64()) {
                    None => 1,
                    Some(Some(w)) if (1..=u64::from(u32::MAX)).contains(&w) => w as u32,
                    Some(_) => {
                        skipped.push((kv.key.clone(), "weight must be a whole number ≥ 1".into()));
                        continue;
                    }
                },
                Err(e) => {
                    skipped.push((kv.key.clone(), format!("the value is not JSON: {e}")));
                    continue;
                }
            }
        };
        out.push(Endpoint { address, weight });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out.dedup_by(|a, b| a.address == b.address);
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use crate::etcd::Kv;

    fn kv(key: &str, value: &str) -> Kv {
        Kv {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 1,
        }
    }

    #[test]
    fn keys_are_addresses_and_values_weights() {
        let (eps, skipped) = super::endpoints(
            "/services/shop/",
            &[
                kv("/services/shop/10.0.0.2:80", r#"{"weight": 3}"#),
                kv("/services/shop/10.0.0.1:80", ""),
                kv("/services/shop/nonsense", ""),
                kv("/services/shop/10.0.0.3:80", "{not json"),
                kv("/services/shop/10.0.0.4:80", r#"{"weight": 0}"#),
                kv("/services/shopé", ""),
                kv("/services/shop/a/b:80", ""),
                kv("/services/shop/0.0.0.0:80", ""),
                kv("/services/shop/[ff02::1]:80", ""),
                kv("/services/shop/10.0.0.5:0", ""),
                kv("/services/shop/shop.internal:8080", ""),
            ],
        );
        let got: Vec<(&str, u32)> = eps.iter().map(|e| (e.address.as_str(), e.weight)).collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1:80", 1),
                ("10.0.0.2:80", 3),
                ("shop.internal:8080", 1)
            ]
        );
        assert_eq!(skipped.len(), 8);
    }
}
