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
        let cap = max_keys.div_ceil(SHARDS).max(1);
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
