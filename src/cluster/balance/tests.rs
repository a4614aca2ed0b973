//! Distribution tests for every policy, on real `EndpointState`s with explicit time.

use super::*;
use crate::cluster::endpoint::EndpointState;
use crate::upstream::UpstreamClient;
use gatehouse_config::{CircuitBreaker, Protocol, Timeouts};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn eps(weights: &[u32]) -> Vec<EndpointRef> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let addr = format!("10.0.0.{i}:80");
            EndpointRef {
                metrics: crate::observe::metrics::EndpointMetrics::new(
                    &crate::observe::metrics::Metrics::default(),
                    "c",
                    &addr,
                ),
                state: Arc::new(EndpointState::new(
                    "c".into(),
                    addr.as_str().into(),
                    &CircuitBreaker::default(),
                )),
                weight: *w,
                client: UpstreamClient::new(
                    &addr,
                    Protocol::Http1,
                    &Timeouts::default(),
                    (Default::default(), 1),
                    None,
                ),
            }
        })
        .collect()
}

fn cands<'a>(e: &'a [EndpointRef], skip: &'a [usize]) -> Candidates<'a> {
    Candidates {
        endpoints: e,
        now: Instant::now(),
        panic: false,
        skip,
        degraded_weight: 0.5,
    }
}

fn counts(b: &Balancer, e: &[EndpointRef], n: usize) -> Vec<usize> {
    let mut out = vec![0; e.len()];
    for _ in 0..n {
        out[b.choose(&cands(e, &[]), None, None).unwrap()] += 1;
    }
    out
}

#[test]
fn smooth_weighted_round_robin_exact_sequences() {
    let e = eps(&[5, 1, 1]);
    let b = Balancer::new(LbPolicy::WeightedRoundRobin, None, &e);
    let seq: Vec<usize> = (0..14)
        .map(|_| b.choose(&cands(&e, &[]), None, None).unwrap())
        .collect();
    // NGINX's documented sequence for 5:1:1 is a a b a c a a, repeating: no burst of five a's.
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    let e = eps(&[2, 1]);
    let b = Balancer::new(LbPolicy::WeightedRoundRobin, None, &e);
    let seq: Vec<usize> = (0..6)
        .map(|_| b.choose(&cands(&e, &[]), None, None).unwrap())
        .collect();
    assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
}

#[test]
fn weighted_round_robin_skips_unusable_endpoints() {
    let e = eps(&[5, 1, 1]);
    let b = Balancer::new(LbPolicy::WeightedRoundRobin, None, &e);
    e[0].state
        .set_drained(true, &crate::observe::events::Events::new(false));
    let c = counts(&b, &e, 100);
    assert_eq!(c[0], 0);
    assert_eq!(c, [0, 50, 50]);
}

#[test]
fn round_robin_ignores_weights_and_rotates() {
    let e = eps(&[5, 1, 1]);
    let b = Balancer::new(LbPolicy::RoundRobin, None, &e);
    assert_eq!(counts(&b, &e, 300), [100, 100, 100]);
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let e = eps(&[1, 1]);
    let b = Balancer::new(LbPolicy::LeastRequest, None, &e);
    let _busy: Vec<_> = (0..5).map(|_| e[0].state.start_request()).collect();
    assert_eq!(
        counts(&b, &e, 200),
        [0, 200],
        "with two endpoints P2C always compares both"
    );
    let e = eps(&[1, 1, 1]);
    let b = Balancer::new(LbPolicy::LeastRequest, None, &e);
    let _busy: Vec<_> = (0..5)
        .flat_map(|_| [e[0].state.start_request(), e[1].state.start_request()])
        .collect();
    let c = counts(&b, &e, 3000);
    // The idle one wins whenever it is one of the two choices: 2/3 of the time.
    assert!(c[2] > 1800, "{c:?}");
}

#[test]
fn least_request_normalises_by_weight() {
    let e = eps(&[4, 1]);
    let b = Balancer::new(LbPolicy::LeastRequest, None, &e);
    // 3 in flight on the weight-4 endpoint costs (3+1)/4 = 1 < (0+1)/1 = 1? equal: first wins; 2 in flight: 0.75 < 1.
    let _busy: Vec<_> = (0..2).map(|_| e[0].state.start_request()).collect();
    assert!(counts(&b, &e, 200)[0] == 200);
}

#[tokio::test(start_paused = true)]
async fn p2c_ewma_avoids_the_slow_endpoint_and_retries_it_later() {
    let e = eps(&[1, 1]);
    let b = Balancer::new(LbPolicy::P2cEwma, None, &e);
    let now = Instant::now();
    e[0].state.observe_latency(Duration::from_millis(50), now);
    e[1].state.observe_latency(Duration::from_millis(1), now);
    assert_eq!(counts(&b, &e, 200), [0, 200]);
    // In-flight requests raise the fast one's cost: 60 pending × 1 ms > 50 ms.
    let _busy: Vec<_> = (0..60).map(|_| e[1].state.start_request()).collect();
    assert_eq!(counts(&b, &e, 10), [10, 0]);
    drop(_busy);
    // Left alone, the slow one's estimate decays and it is tried again.
    tokio::time::advance(Duration::from_secs(60)).await;
    e[1].state
        .observe_latency(Duration::from_millis(1), Instant::now());
    assert!(counts(&b, &e, 10)[0] == 10, "{:?}", counts(&b, &e, 10));
}

#[test]
fn random_follows_weights() {
    let e = eps(&[3, 1]);
    let b = Balancer::new(LbPolicy::Random, None, &e);
    let c = counts(&b, &e, 20_000);
    let share = c[0] as f64 / 20_000.0;
    assert!((0.72..0.78).contains(&share), "{c:?}");
}

fn owners(b: &Balancer, e: &[EndpointRef], keys: u64, skip: &[usize]) -> Vec<usize> {
    (0..keys)
        .map(|k| {
            b.choose(&cands(e, skip), None, Some(key_hash(&k.to_le_bytes())))
                .unwrap()
        })
        .collect()
}

/// Keys that move when endpoint `gone` of `n` leaves the config (the table is rebuilt without it).
fn moved_on_removal(policy: LbPolicy, n: usize, gone: usize) -> (f64, usize) {
    let e = eps(&vec![1; n]);
    let b = Balancer::new(policy, Some(&HashOn::Path), &e);
    let before: Vec<String> = owners(&b, &e, 20_000, &[])
        .into_iter()
        .map(|i| e[i].state.address.to_string())
        .collect();
    let e2: Vec<EndpointRef> = e
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, x)| x)
        .collect();
    let b2 = Balancer::new(policy, Some(&HashOn::Path), &e2);
    let after: Vec<String> = owners(&b2, &e2, 20_000, &[])
        .into_iter()
        .map(|i| e2[i].state.address.to_string())
        .collect();
    let gone_addr = format!("10.0.0.{gone}:80");
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let moved_not_owned = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b && **a != gone_addr)
        .count();
    (moved as f64 / 20_000.0, moved_not_owned)
}

#[test]
fn consistent_hashing_remaps_about_one_nth_when_an_endpoint_leaves() {
    // (policy, keys of staying endpoints allowed to move): the ring moves none of them;
    // Maglev's table rebuild moves a few.
    for (policy, others_allowed) in [(LbPolicy::RingHash, 0), (LbPolicy::Maglev, 400)] {
        for n in [5, 10] {
            let (moved, others) = moved_on_removal(policy, n, 3);
            eprintln!(
                "{policy:?}: {n} endpoints, one removed: {:.1} % of keys moved (ideal {:.1} %)",
                moved * 100.0,
                100.0 / n as f64
            );
            assert!(moved <= 1.5 / n as f64, "{policy:?}: {moved}");
            assert!(others <= others_allowed, "{policy:?}: {others}");
        }
    }
}

#[test]
fn hashing_is_sticky_spread_and_routes_around_unusable_endpoints() {
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let e = eps(&[1, 1, 1, 1]);
        let b = Balancer::new(policy, Some(&HashOn::Path), &e);
        let first = owners(&b, &e, 4000, &[]);
        assert_eq!(first, owners(&b, &e, 4000, &[]), "sticky");
        let mut spread = HashMap::new();
        for i in &first {
            *spread.entry(*i).or_insert(0) += 1;
        }
        assert!(
            spread.values().all(|c| (700..1300).contains(c)),
            "{policy:?}: {spread:?}"
        );
        // Endpoint 1 unusable (tried, open...): its keys go elsewhere, nobody else's move.
        let without = owners(&b, &e, 4000, &[1]);
        for (a, b2) in first.iter().zip(&without) {
            if *a != 1 {
                assert_eq!(a, b2);
            } else {
                assert_ne!(*b2, 1);
            }
        }
        // No key: round robin.
        let rr: Vec<usize> = (0..4)
            .map(|_| b.choose(&cands(&e, &[]), None, None).unwrap())
            .collect();
        let mut sorted = rr.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3], "{policy:?}: {rr:?}");
    }
}

#[test]
fn every_policy_skips_tried_endpoints() {
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::WeightedRoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::P2cEwma,
        LbPolicy::RingHash,
        LbPolicy::Maglev,
        LbPolicy::Random,
    ] {
        let e = eps(&[1, 2, 3]);
        let b = Balancer::new(policy, Some(&HashOn::Path), &e);
        for k in 0..50u64 {
            let i = b
                .choose(
                    &cands(&e, &[0, 2]),
                    Some(0),
                    Some(key_hash(&k.to_le_bytes())),
                )
                .unwrap();
            assert_eq!(i, 1, "{policy:?}");
        }
        assert_eq!(
            b.choose(&cands(&e, &[0, 1, 2]), Some(0), Some(1)),
            None,
            "{policy:?}"
        );
    }
}
