//! A stored response: its head as the backend sent it (every line), its body, its RFC 9111
//! policy (`http-cache-semantics` over the normalized heads: `normalize`), the route that
//! stored it; the variants of one key (different `Vary` values), and their byte encoding for
//! Redis.

use bytes::Bytes;
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// At most this many variants (`Vary` values) per key; the oldest goes first.
pub const MAX_VARIANTS: usize = 8;

pub struct Entry {
    pub policy: CachePolicy,
    pub status: http::StatusCode,
    /// The response's header lines as received (hop-by-hop ones already gone).
    pub head: http::HeaderMap,
    pub body: Bytes,
    pub route: Arc<str>,
    /// How long after `stored` a store keeps it: fresh, then stale but still useful
    /// (`stale-while-revalidate`, `stale-if-error`, `serve_stale_on_error`, revalidation).
    pub keep: Duration,
    pub stored: SystemTime,
    /// Until when it is fresh (as computed when stored or revalidated).
    pub fresh_until: SystemTime,
    /// The response's `stale-while-revalidate` and `stale-if-error` windows (RFC 5861).
    pub swr: Duration,
    pub sie: Duration,
    /// The response forbids serving it stale (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`, `no-cache`: RFC 9111 §5.2.2).
    pub no_stale: bool,
}

/// The stale windows and whether stale use is forbidden, from response `Cache-Control`.
pub fn stale_rules(h: &http::HeaderMap) -> (Duration, Duration, bool) {
    let (mut swr, mut sie, mut no_stale) = (Duration::ZERO, Duration::ZERO, false);
    for (name, value) in super::normalize::directives(h) {
        let secs =
            || Duration::from_secs(value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0));
        match name.as_str() {
            "stale-while-revalidate" => swr = secs(),
            "stale-if-error" => sie = secs(),
            "must-revalidate" | "proxy-revalidate" | "s-maxage" | "no-cache" => no_stale = true,
            _ => {}
        }
    }
    (swr, sie, no_stale)
}

impl Entry {
    /// A response to store: fresh for `ttl` from `now`, kept as long as it may be of use —
    /// stale windows (the response's, and `serve_stale_on_error`), and for revalidation when
    /// it has a validator (as long again as it was fresh, 1 minute to 1 day).
    pub fn new(
        policy: CachePolicy,
        (status, head): (http::StatusCode, http::HeaderMap),
        body: Bytes,
        route: Arc<str>,
        (now, ttl): (SystemTime, Duration),
        serve_stale_on_error: Duration,
    ) -> Self {
        // Bounded so that no lifetime a backend can state overflows a clock (RFC 9111 §1.2.2).
        let ttl = ttl.min(Duration::from_secs(super::normalize::MAX_DELTA));
        let (swr, sie, no_stale) = stale_rules(&head);
        let stale = if no_stale {
            Duration::ZERO
        } else {
            swr.max(sie).max(serve_stale_on_error)
        };
        let validator =
            head.contains_key(http::header::ETAG) || head.contains_key(http::header::LAST_MODIFIED);
        let revalidate = if validator {
            ttl.clamp(Duration::from_secs(60), Duration::from_secs(86_400))
        } else {
            Duration::ZERO
        };
        Entry {
            policy,
            status,
            head,
            body,
            route,
            keep: ttl + stale.max(revalidate),
            stored: now,
            fresh_until: now + ttl,
            swr,
            sie,
            no_stale,
        }
    }

    /// How long past fresh it is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fresh_until).unwrap_or_default()
    }

    /// Bytes it costs a store: the body plus an estimate of the heads.
    pub fn weight(&self) -> u64 {
        self.body.len() as u64 + 1024
    }

    /// Whether a store may still hold it at `now`.
    pub fn kept_at(&self, now: SystemTime) -> bool {
        now.duration_since(self.stored).unwrap_or_default() < self.keep
    }
}

/// Every variant of one key, newest first.
#[derive(Clone, Default)]
pub struct Variants(pub Vec<Arc<Entry>>);

impl Variants {
    pub fn weight(&self) -> u64 {
        self.0.iter().map(|e| e.weight()).sum()
    }

    /// How long the longest-kept variant is still kept after `now`.
    pub fn keep_after(&self, now: SystemTime) -> Duration {
        self.0
            .iter()
            .map(|e| (e.stored + e.keep).duration_since(now).unwrap_or_default())
            .max()
            .unwrap_or_default()
    }

    /// These variants with `entry` in front, replacing the one it updates (the same `Vary`
    /// values) and any no store should hold any more.
    pub fn with(&self, entry: Arc<Entry>, same: impl Fn(&Entry) -> bool, now: SystemTime) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.push(entry);
        v.extend(
            self.0
                .iter()
                .filter(|e| e.kept_at(now) && !same(e))
                .take(MAX_VARIANTS - 1)
                .cloned(),
        );
        Variants(v)
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    policy: CachePolicy,
    status: u16,
    #[serde(with = "http_serde::header_map")]
    head: http::HeaderMap,
    route: String,
    keep_ms: u64,
    stored_ms: u64,
    fresh_ms: u64,
    swr_ms: u64,
    sie_ms: u64,
    no_stale: bool,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

const MAGIC: &[u8; 4] = b"GHC1";

/// `GHC1`, then per variant: meta length (u32 BE), meta (JSON), body length (u32 BE), body.
pub fn encode(v: &Variants) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.weight() as usize);
    out.extend_from_slice(MAGIC);
    for e in &v.0 {
        let meta = Meta {
            policy: e.policy.clone(),
            status: e.status.as_u16(),
            head: e.head.clone(),
            route: e.route.to_string(),
            keep_ms: e.keep.as_millis() as u64,
            stored_ms: unix_ms(e.stored),
            fresh_ms: unix_ms(e.fresh_until),
            swr_ms: e.swr.as_millis() as u64,
            sie_ms: e.sie.as_millis() as u64,
            no_stale: e.no_stale,
        };
        let Ok(meta) = serde_json::to_vec(&meta) else {
            continue;
        };
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(e.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.body);
    }
    out
}

/// The variants in `bytes`, or `None` for anything that is not what [`encode`] wrote (another
/// version, a truncated value): a miss, never an error.
pub fn decode(bytes: Bytes) -> Option<Variants> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let mut at = bytes.len() - rest.len();
    let mut take = |n: usize| -> Option<Bytes> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len())?;
        let b = bytes.slice(at..end);
        at = end;
        Some(b)
    };
    let mut out = Vec::new();
    loop {
        let Some(len) = take(4) else { break };
        let len = u32::from_be_bytes(len[..].try_into().ok()?) as usize;
        let meta: Meta = serde_json::from_slice(&take(len)?).ok()?;
        let blen = u32::from_be_bytes(take(4)?[..].try_into().ok()?) as usize;
        let body = take(blen)?;
        out.push(Arc::new(Entry {
            policy: meta.policy,
            status: http::StatusCode::from_u16(meta.status).ok()?,
            head: meta.head,
            body,
            route: meta.route.into(),
            keep: Duration::from_millis(meta.keep_ms),
            stored: SystemTime::UNIX_EPOCH + Duration::from_millis(meta.stored_ms),
            fresh_until: SystemTime::UNIX_EPOCH + Duration::from_millis(meta.fresh_ms),
            swr: Duration::from_millis(meta.swr_ms),
            sie: Duration::from_millis(meta.sie_ms),
            no_stale: meta.no_stale,
        }));
    }
    Some(Variants(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str, stored: SystemTime) -> Arc<Entry> {
        let req = http::Request::get("http://a.test/x").body(()).unwrap();
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(())
            .unwrap();
        Arc::new(Entry::new(
            CachePolicy::new_options(&req, &res, stored, Default::default()),
            (res.status(), res.headers().clone()),
            Bytes::from_static(body.as_bytes()),
            "r".into(),
            (stored, Duration::from_secs(60)),
            Duration::ZERO,
        ))
    }

    #[test]
    fn stale_windows_and_what_forbids_them() {
        let h = |cc: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("cache-control", cc.parse().unwrap());
            stale_rules(&m)
        };
        let s = Duration::from_secs;
        assert_eq!(
            h("max-age=60, stale-while-revalidate=30, stale-if-error=\"600\""),
            (s(30), s(600), false)
        );
        assert!(h("max-age=60, Must-Revalidate").2);
        assert!(h("s-maxage=60").2);
        assert!(h("no-cache").2);
        assert!(!h("public, max-age=1").2);
    }

    #[test]
    fn variants_round_trip_and_garbage_is_a_miss() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v = Variants(vec![entry("one", t), entry("", t)]);
        let back = decode(Bytes::from(encode(&v))).unwrap();
        assert_eq!(back.0.len(), 2);
        assert_eq!(back.0[0].body, "one");
        assert_eq!(back.0[0].stored, t);
        assert_eq!(back.0[0].keep, Duration::from_secs(60));
        assert_eq!(back.0[0].fresh_until, t + Duration::from_secs(60));
        assert_eq!(&*back.0[0].route, "r");
        assert_eq!(back.0[1].body, "");
        let whole = encode(&v);
        assert!(decode(Bytes::from(whole[..whole.len() - 1].to_vec())).is_none());
        assert!(decode(Bytes::from_static(b"GHC2")).is_none());
    }

    #[test]
    fn a_new_variant_replaces_its_own_and_drops_the_expired() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v = Variants(vec![
            entry("a", t),
            entry("old", t - Duration::from_secs(61)),
        ]);
        let next = v.with(entry("b", t), |e| e.body == "a", t);
        let bodies: Vec<_> = next.0.iter().map(|e| e.body.clone()).collect();
        assert_eq!(bodies, vec![Bytes::from_static(b"b")]);
        let many = (0..20).fold(Variants::default(), |v, _| {
            v.with(entry("x", t), |_| false, t)
        });
        assert_eq!(many.0.len(), MAX_VARIANTS);
        assert_eq!(
            many.keep_after(t + Duration::from_secs(10)),
            Duration::from_secs(50)
        );
    }
}
