//! A cluster as one snapshot sees it: its endpoints (runtime state shared across snapshots),
//! its balancer, its upstream clients and its timeouts.

pub mod balance;
pub mod breaker;
pub mod endpoint;

use crate::upstream::UpstreamClient;
use balance::Balancer;
use endpoint::EndpointState;
use gatehouse_config::{Protocol, Timeouts};
use std::sync::Arc;

/// An endpoint in this snapshot: shared runtime state plus this snapshot's tunables.
pub struct EndpointRef {
    pub state: Arc<EndpointState>,
    pub weight: u32,
    pub client: UpstreamClient,
}

pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub endpoints: Vec<EndpointRef>,
    pub balancer: Balancer,
    pub timeouts: Timeouts,
}

impl Cluster {
    /// Picks an eligible endpoint, or `None` when none may take a request now.
    pub fn pick(&self) -> Option<&EndpointRef> {
        self.balancer
            .pick(&self.endpoints)
            .and_then(|i| self.endpoints.get(i))
    }
}
