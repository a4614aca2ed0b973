//! Load-balancing policies. A policy chooses among *usable* endpoints (not tried yet, not
//! drained, not DOWN unless in panic mode, breaker not waiting in OPEN) using effective weights
//! (weight × slow start × degraded factor); `Cluster::pick` then asks the chosen endpoint's
//! breaker and asks again if it refuses. Policies never decide health. An enum, not trait
//! objects: the set is closed and the hot path stays free of dynamic dispatch.

mod hash;

use super::endpoint::Health;
use super::EndpointRef;
use gatehouse_config::policy::HashOn;
use gatehouse_config::LbPolicy;
pub use hash::{key_hash, Maglev, Ring};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

/// What a policy may see of the endpoints during one pick.
pub struct Candidates<'a> {
    pub endpoints: &'a [EndpointRef],
    pub now: Instant,
    /// Fewer than `panic_threshold` pass health checks: health is ignored.
    pub panic: bool,
    /// Endpoints this request already tried, or whose breaker refused during this pick.
    pub skip: &'a [usize],
    pub degraded_weight: f64,
}

impl Candidates<'_> {
    pub fn usable(&self, i: usize) -> bool {
        let s = &self.endpoints[i].state;
        !self.skip.contains(&i)
            && !s.is_drained()
            && (self.panic || s.health() != Health::Down)
            && !s.open_and_waiting(self.now)
    }

    /// Slow start × degraded weight, in (0, 1].
    pub fn factor(&self, i: usize) -> f64 {
        let s = &self.endpoints[i].state;
        let mut f = s.slow_start_factor(self.now);
        if s.health() == Health::Degraded {
            f *= self.degraded_weight;
        }
        f
    }

    pub fn weight(&self, i: usize) -> f64 {
        f64::from(self.endpoints[i].weight) * self.factor(i)
    }

    /// A random usable endpoint: a few random probes, then a scan from a random start.
    fn random_usable(&self, not: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        for _ in 0..4 {
            let i = fastrand::usize(..n);
            if Some(i) != not && self.usable(i) {
                return Some(i);
            }
        }
        let start = fastrand::usize(..n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != not && self.usable(i))
    }
}

pub enum Policy {
    RoundRobin,
    Weighted(Weighted),
    LeastRequest,
    P2cEwma,
    Ring(Ring, HashOn),
    Maglev(Maglev, HashOn),
    Random { max_weight: f64 },
}

pub struct Balancer {
    policy: Policy,
    /// Round robin's counter; also the fallback of hashing policies for keyless requests.
    next: AtomicUsize,
}

impl Balancer {
    /// Builds the policy for a snapshot's endpoints (hash rings and tables are built here).
    pub fn new(policy: LbPolicy, hash_on: Option<&HashOn>, endpoints: &[EndpointRef]) -> Self {
        let weighted: Vec<(&str, u32)> = endpoints
            .iter()
            .map(|e| (e.state.address.as_ref(), e.weight))
            .collect();
        let hash_on = hash_on.cloned().unwrap_or(HashOn::Path);
        let policy = match policy {
            LbPolicy::RoundRobin => Policy::RoundRobin,
            LbPolicy::WeightedRoundRobin => Policy::Weighted(Weighted::new(endpoints)),
            LbPolicy::LeastRequest => Policy::LeastRequest,
            LbPolicy::P2cEwma => Policy::P2cEwma,
            LbPolicy::RingHash => Policy::Ring(Ring::new(&weighted), hash_on),
            LbPolicy::Maglev => Policy::Maglev(Maglev::new(&weighted), hash_on),
            LbPolicy::Random => Policy::Random {
                max_weight: endpoints
                    .iter()
                    .map(|e| f64::from(e.weight))
                    .fold(1.0, f64::max),
            },
        };
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// What a hashing policy hashes, if it is one.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.policy {
            Policy::Ring(_, h) | Policy::Maglev(_, h) => Some(h),
            _ => None,
        }
    }

    /// Chooses an endpoint among the usable ones. `first_try` is the endpoint this request's
    /// first try went to (retries continue round robin from there); `key` is the request's
    /// hash for hashing policies (none: round robin).
    pub fn choose(
        &self,
        c: &Candidates,
        first_try: Option<usize>,
        key: Option<u64>,
    ) -> Option<usize> {
        let n = c.endpoints.len();
        if n == 0 {
            return None;
        }
        match &self.policy {
            Policy::RoundRobin => self.round_robin(c, first_try),
            Policy::Weighted(w) => w.choose(c),
            Policy::LeastRequest => p2c(c, |i| (c.endpoints[i].state.in_flight() + 1) as f64),
            Policy::P2cEwma => p2c(c, |i| {
                let s = &c.endpoints[i].state;
                s.latency_ewma(c.now).max(1_000.0) * (s.in_flight() + 1) as f64
            }),
            Policy::Ring(ring, _) => match key {
                Some(k) => ring.find(k, |i| c.usable(i)),
                None => self.round_robin(c, first_try),
            },
            Policy::Maglev(table, _) => match key {
                Some(k) => table.find(k, n, |i| c.usable(i)),
                None => self.round_robin(c, first_try),
            },
            Policy::Random { max_weight } => weighted_random(c, *max_weight),
        }
    }

    /// Each endpoint in turn; a candidate ramping up (slow start) or DEGRADED is taken with
    /// probability equal to its factor, else the next one is tried.
    fn round_robin(&self, c: &Candidates, first_try: Option<usize>) -> Option<usize> {
        let n = c.endpoints.len();
        let start = match first_try {
            Some(i) => i.wrapping_add(1),
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let mut fallback = None;
        for k in 0..n {
            let i = start.wrapping_add(k) % n;
            if !c.usable(i) {
                continue;
            }
            let f = c.factor(i);
            if f < 1.0 && fastrand::f64() >= f {
                fallback.get_or_insert(i);
                continue;
            }
            return Some(i);
        }
        fallback
    }
}

/// NGINX's smooth weighted round robin. With static weights its sequence is periodic (period =
/// the sum of weights), so it is computed once per snapshot and the common pick is one atomic
/// add. A slot whose endpoint is unusable or ramping up (slow start, DEGRADED) is given by the
/// same algorithm run live over the usable endpoints' effective weights, so shares stay
/// proportional whatever is out.
pub struct Weighted {
    sequence: Vec<u32>,
    next: AtomicUsize,
    live: Mutex<Vec<f64>>,
}

/// Longest precomputed sequence; larger weight sums always use the live algorithm.
const MAX_SEQUENCE: u64 = 1 << 16;

impl Weighted {
    fn new(endpoints: &[EndpointRef]) -> Self {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        let mut sequence = Vec::new();
        if total <= MAX_SEQUENCE {
            let mut cur = vec![0.0; endpoints.len()];
            let weights: Vec<f64> = endpoints.iter().map(|e| f64::from(e.weight)).collect();
            for _ in 0..total {
                if let Some(i) = smooth_step(&mut cur, |i| Some(weights[i])) {
                    sequence.push(i as u32);
                }
            }
        }
        Weighted {
            sequence,
            next: AtomicUsize::new(0),
            live: Mutex::new(vec![0.0; endpoints.len()]),
        }
    }

    fn choose(&self, c: &Candidates) -> Option<usize> {
        if !self.sequence.is_empty() {
            let k = self.next.fetch_add(1, Ordering::Relaxed) % self.sequence.len();
            let i = self.sequence[k] as usize;
            if c.usable(i) && c.factor(i) >= 1.0 {
                return Some(i);
            }
        }
        let mut cur = self.live.lock().unwrap_or_else(|e| e.into_inner());
        smooth_step(&mut cur, |i| c.usable(i).then(|| c.weight(i)))
    }
}

/// One step of NGINX's smooth weighted round robin: every endpoint with a weight adds it to its
/// current weight; the largest wins and pays back the total. No bursts to heavy endpoints.
fn smooth_step(cur: &mut [f64], weight: impl Fn(usize) -> Option<f64>) -> Option<usize> {
    let mut total = 0.0;
    let mut best: Option<usize> = None;
    for i in 0..cur.len() {
        let Some(w) = weight(i) else {
            continue;
        };
        cur[i] += w;
        total += w;
        if best.is_none_or(|b| cur[i] > cur[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    cur[b] -= total;
    Some(b)
}

/// Power of two choices: two distinct random usable endpoints, the lower `cost / weight` wins.
fn p2c(c: &Candidates, cost: impl Fn(usize) -> f64) -> Option<usize> {
    let a = c.random_usable(None)?;
    let Some(b) = c.random_usable(Some(a)) else {
        return Some(a);
    };
    let score = |i: usize| cost(i) / c.weight(i).max(f64::MIN_POSITIVE);
    Some(if score(b) < score(a) { b } else { a })
}

/// Weighted random by rejection: a random usable endpoint is kept with probability
/// weight / max weight (expected O(1) when weights are alike).
fn weighted_random(c: &Candidates, max_weight: f64) -> Option<usize> {
    let mut first = None;
    for _ in 0..(2 * c.endpoints.len()).max(8) {
        let i = c.random_usable(None)?;
        first.get_or_insert(i);
        if fastrand::f64() * max_weight < c.weight(i) {
            return Some(i);
        }
    }
    first
}

#[cfg(test)]
mod tests;
