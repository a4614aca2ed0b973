//! Load-balancing policies. A balancer only reads eligibility (and, later, effective weights);
//! it never decides health. An enum rather than a trait object: the set is closed and the
//! hot path stays free of dynamic dispatch.

use super::EndpointRef;
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

    /// Index of the endpoint to use, among the eligible ones.
    pub fn pick(&self, endpoints: &[EndpointRef]) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(endpoints),
        }
    }
}

/// Plain round robin over eligible endpoints: one atomic add per pick; ineligible endpoints
/// are skipped by probing forward, so their share goes to the next eligible one.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick(&self, endpoints: &[EndpointRef]) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| endpoints[i].state.eligible())
    }
}
