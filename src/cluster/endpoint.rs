//! Per-endpoint runtime state, keyed by (cluster, address) in the runtime registry so that it
//! outlives config snapshots. Holds no tunables (weights live in the snapshot). Health and
//! breaker state join here with the self-healing work; for now: operator state and in-flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub struct EndpointState {
    pub cluster: Arc<str>,
    pub address: Arc<str>,
    drained: AtomicBool,
    in_flight: AtomicU64,
}

impl EndpointState {
    pub fn new(cluster: Arc<str>, address: Arc<str>) -> Self {
        EndpointState {
            cluster,
            address,
            drained: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        }
    }

    /// May this endpoint receive a new request now?
    pub fn eligible(&self) -> bool {
        !self.drained.load(Ordering::Relaxed)
    }

    /// Operator drain: no new requests; in-flight ones finish.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
