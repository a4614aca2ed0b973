//! Consistent hashing: a ring with virtual nodes (Ketama-style, 160 points per unit of weight)
//! and Maglev's lookup table. Both are built once per snapshot from endpoint *addresses*, so
//! the same endpoints map the same keys on every instance and across reloads; when an
//! endpoint leaves, only the keys it owned move.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

const POINTS_PER_WEIGHT: u32 = 160;
const MAGLEV_SIZE: usize = 65_537; // prime; Maglev wants > 100 × endpoints

/// The hash of a request's key (header value, cookie, client IP or path).
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(endpoints: &[(&str, u32)]) -> Self {
        let mut points = Vec::new();
        for (i, (addr, weight)) in endpoints.iter().enumerate() {
            for v in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                points.push((xxh3_64(format!("{addr}#{v}").as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The owner of `key`: the first usable endpoint clockwise from it.
    pub fn find(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < key);
        let len = self.points.len();
        let mut last_refused = usize::MAX;
        for k in 0..len {
            let i = self.points[(start + k) % len].1 as usize;
            if i == last_refused {
                continue;
            }
            if usable(i) {
                return Some(i);
            }
            last_refused = i;
        }
        None
    }
}

pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Fills the table by letting endpoints take turns claiming their next preferred slot
    /// (their permutation); an endpoint of weight w takes w turns per round.
    pub fn new(endpoints: &[(&str, u32)]) -> Self {
        let m = MAGLEV_SIZE;
        let mut table = vec![u32::MAX; m];
        if endpoints.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let perms: Vec<(usize, usize)> = endpoints
            .iter()
            .map(|(addr, _)| {
                let offset = (xxh3_64_with_seed(addr.as_bytes(), 0xA5A5) % m as u64) as usize;
                let skip =
                    (xxh3_64_with_seed(addr.as_bytes(), 0x5A5A) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; endpoints.len()];
        let mut filled = 0;
        'fill: loop {
            for (i, (_, weight)) in endpoints.iter().enumerate() {
                for _ in 0..(*weight).max(1) {
                    let (offset, skip) = perms[i];
                    let mut slot = (offset + next[i] * skip) % m;
                    while table[slot] != u32::MAX {
                        next[i] += 1;
                        slot = (offset + next[i] * skip) % m;
                    }
                    table[slot] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { table }
    }

    /// The owner of `key`; when it is not usable, the key is rehashed a few times (keys of
    /// usable endpoints never move), then the table is scanned.
    pub fn find(&self, key: u64, n: usize, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let m = self.table.len() as u64;
        let mut h = key;
        for attempt in 0..(2 * n).max(4) as u64 {
            let i = self.table[(h % m) as usize] as usize;
            if usable(i) {
                return Some(i);
            }
            h = xxh3_64_with_seed(&key.to_le_bytes(), attempt + 1);
        }
        (0..n).find(|&i| usable(i))
    }
}
