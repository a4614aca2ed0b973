//! The runtime state a binary upgrade carries over: each endpoint's health, drain and circuit
//! breaker, keyed by (cluster, address). Handed over rather than rebuilt by running the health
//! checks once in the new process, because a check cannot rebuild it: a breaker is opened by
//! request outcomes that no probe sees (an endpoint answering its `/healthz` and failing real
//! requests), one failed probe does not make an endpoint DOWN under `unhealthy_threshold` > 1
//! (nor one passing probe bring it back under `healthy_threshold`), an operator's drain is not
//! in any probe, and a probe round would delay the upgrade by a probe timeout.

use crate::cluster::breaker::{Carried, State as BreakerState};
use crate::cluster::endpoint::Health;
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// One endpoint as the old process knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub cluster: String,
    pub address: String,
    pub health: Health,
    pub drained: bool,
    pub breaker: BreakerState,
    /// How long an OPEN breaker still rejects calls.
    #[serde(default)]
    pub open_for_ms: u64,
    /// Trips since the breaker last closed (its open duration doubles with each).
    #[serde(default)]
    pub trips: u32,
}

/// Every endpoint of the current snapshot.
pub fn export(rt: &Runtime) -> Vec<EndpointRecord> {
    let snap = rt.snapshot();
    let now = Instant::now();
    let mut out = Vec::new();
    for c in snap.clusters.values() {
        for e in &c.endpoints {
            let (health, drained, b) = e.state.carry(now);
            out.push(EndpointRecord {
                cluster: e.state.cluster.to_string(),
                address: e.state.address.to_string(),
                health,
                drained,
                breaker: b.state,
                open_for_ms: b.open_for.as_millis() as u64,
                trips: b.trips,
            });
        }
    }
    out
}

/// Seeds the runtime with the old process's endpoint state (before any listener accepts).
/// Endpoints the new config does not have are skipped; those of a discovered cluster are kept
/// for the snapshot that finds them.
pub fn seed(rt: &Runtime, records: &[EndpointRecord]) {
    let (mut taken, mut down, mut open, mut skipped) = (0, 0, 0, 0);
    for r in records {
        let Some(state) = rt.endpoint_or_seed(&r.cluster, &r.address) else {
            skipped += 1;
            continue;
        };
        state.adopt(
            r.health,
            r.drained,
            Carried {
                state: r.breaker,
                open_for: Duration::from_millis(r.open_for_ms),
                trips: r.trips,
            },
        );
        taken += 1;
        down += usize::from(r.health == Health::Down);
        open += usize::from(r.breaker != BreakerState::Closed);
    }
    tracing::info!(
        endpoints = taken,
        down,
        breakers_open = open,
        not_in_config = skipped,
        "endpoint state taken over from the old process"
    );
}
