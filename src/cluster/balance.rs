//! Load-balancing policies. A balancer only reads eligibility (and, later, effective weights);
//! it never decides health. An enum rather than a trait object: the set is closed and the
//! hot path stays free of dynamic dispatch.

use gatehouse_config::LbPolicy;
use std::sync::atomic::{AtomicUsize, Ordering};

pub enum Balancer {
    RoundRobin(RoundRobin),
}

impl Balancer {
    pub fn new(policy: LbPolicy) -> Self {
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
        }
    }

    /// The order in which to consider `n` endpoints for one pick; the caller takes the first
    /// eligible one, so ineligible endpoints' share passes to the next in order. A retry passes
    /// the index of its first try (`after`) and continues the rotation from there, so retries
    /// don't shift which endpoint the next request starts on.
    pub fn order(&self, n: usize, after: Option<usize>) -> impl Iterator<Item = usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.order(n, after),
        }
    }
}

/// Plain round robin: one atomic add per pick, then the endpoints in rotation from there.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn order(&self, n: usize, after: Option<usize>) -> impl Iterator<Item = usize> {
        let start = match after {
            Some(i) => i.wrapping_add(1),
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (0..n).map(move |k| (start.wrapping_add(k)) % n.max(1))
    }
}
