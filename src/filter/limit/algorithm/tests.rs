//! Each algorithm against a naive reference model, on random request sequences (proptest).

use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;

fn params(algorithm: Algorithm, count: u32, per_ms: u64, burst: u32) -> Params {
    Params::new(
        algorithm,
        Rate {
            count,
            per: Duration::from_millis(per_ms),
        },
        Some(burst),
    )
}

/// A literal token bucket: `capacity` tokens, one token's worth of refill per interval,
/// tracked in microseconds of "stored time" so that it is exact.
fn reference_token(p: &Params, gaps: &[u64]) -> Vec<bool> {
    let cap = p.burst * p.interval_us;
    let (mut stored, mut now, mut last) = (cap, 0u64, 0u64);
    gaps.iter()
        .map(|g| {
            now += g;
            stored = (stored + (now - last)).min(cap);
            last = now;
            if stored >= p.interval_us {
                stored -= p.interval_us;
                true
            } else {
                false
            }
        })
        .collect()
}

/// A literal queue: each accepted request departs one interval after the previous departure
/// (or now); it is refused when more than `burst` requests would be waiting.
fn reference_leaky(p: &Params, gaps: &[u64]) -> Vec<(bool, u64)> {
    let mut departures: VecDeque<u64> = VecDeque::new();
    let mut now = 0;
    gaps.iter()
        .map(|g| {
            now += g;
            while departures.front().is_some_and(|d| *d <= now) {
                departures.pop_front();
            }
            // Requests still waiting to leave (the one being served counts too).
            if departures.len() as u64 > p.burst {
                return (false, 0);
            }
            let depart = departures.back().map_or(now, |d| *d).max(now) + p.interval_us;
            departures.push_back(depart);
            (true, depart - p.interval_us - now)
        })
        .collect()
}

/// Every accepted request's time kept; the estimate counted from them.
fn reference_sliding(p: &Params, gaps: &[u64]) -> Vec<bool> {
    let w = p.window_us;
    let mut accepted: Vec<u64> = Vec::new();
    let mut now = 0;
    gaps.iter()
        .map(|g| {
            now += g;
            let start = now - now % w;
            let cur = accepted.iter().filter(|t| **t >= start).count() as u128;
            let prev = accepted
                .iter()
                .filter(|t| **t + w >= start && **t < start)
                .count() as u128;
            let weighted = prev * u128::from(w - (now - start)) + cur * u128::from(w);
            if weighted + u128::from(w) > u128::from(p.limit) * u128::from(w) {
                false
            } else {
                accepted.push(now);
                true
            }
        })
        .collect()
}

fn run(p: &Params, gaps: &[u64]) -> Vec<Decision> {
    let mut s = State::default();
    let mut now = 0;
    gaps.iter()
        .map(|g| {
            now += g;
            check(p, &mut s, now)
        })
        .collect()
}

proptest! {
    #[test]
    fn token_bucket_matches_reference(count in 1u32..20, per_ms in 10u64..2000, burst in 1u32..10,
                                      gaps in prop::collection::vec(0u64..200_000, 1..200)) {
        let p = params(Algorithm::TokenBucket, count, per_ms, burst);
        let got: Vec<bool> = run(&p, &gaps).iter().map(Decision::allowed).collect();
        prop_assert_eq!(got, reference_token(&p, &gaps));
    }

    #[test]
    fn leaky_bucket_matches_reference(count in 1u32..20, per_ms in 10u64..2000, burst in 1u32..10,
                                      gaps in prop::collection::vec(0u64..200_000, 1..200)) {
        let p = params(Algorithm::LeakyBucket, count, per_ms, burst);
        let got: Vec<(bool, u64)> = run(&p, &gaps)
            .iter()
            .map(|d| match d {
                Decision::Allow { delay_us, .. } => (true, *delay_us),
                Decision::Reject { .. } => (false, 0),
            })
            .collect();
        prop_assert_eq!(got, reference_leaky(&p, &gaps));
    }

    #[test]
    fn sliding_window_matches_reference(count in 1u32..20, per_ms in 10u64..2000,
                                        gaps in prop::collection::vec(0u64..200_000, 1..200)) {
        let p = params(Algorithm::SlidingWindow, count, per_ms, count);
        let got: Vec<bool> = run(&p, &gaps).iter().map(Decision::allowed).collect();
        prop_assert_eq!(got, reference_sliding(&p, &gaps));
    }
}

#[test]
fn token_bucket_burst_then_rate_with_retry_after() {
    let p = params(Algorithm::TokenBucket, 10, 1000, 3); // 10/s, burst 3
    let d = run(&p, &[0, 0, 0, 0]);
    assert!(d[..3].iter().all(Decision::allowed));
    assert_eq!(
        d[3],
        Decision::Reject {
            retry_after_us: 100_000,
            reset_us: 300_000
        }
    );
    assert_eq!(
        d[0],
        Decision::Allow {
            remaining: 2,
            reset_us: 100_000,
            delay_us: 0
        }
    );
}

#[test]
fn leaky_bucket_delays_then_refuses() {
    let p = params(Algorithm::LeakyBucket, 1, 1000, 2); // 1/s, queue 2
    let d = run(&p, &[0, 0, 0, 0]);
    let delays: Vec<u64> = d
        .iter()
        .map(|x| match x {
            Decision::Allow { delay_us, .. } => *delay_us,
            Decision::Reject { .. } => u64::MAX,
        })
        .collect();
    assert_eq!(delays, [0, 1_000_000, 2_000_000, u64::MAX]);
}

#[test]
fn sliding_window_weights_the_previous_window() {
    let p = params(Algorithm::SlidingWindow, 10, 1000, 10);
    let mut s = State::default();
    for _ in 0..10 {
        assert!(check(&p, &mut s, 500_000).allowed());
    }
    assert!(!check(&p, &mut s, 900_000).allowed());
    // At 1.5 s the previous window (10) weighs 50 %: 5 more fit.
    let ok = (0..10)
        .filter(|_| check(&p, &mut s, 1_500_000).allowed())
        .count();
    assert_eq!(ok, 5);
}

#[test]
fn idle_states_can_be_forgotten() {
    let p = params(Algorithm::TokenBucket, 10, 1000, 3);
    let mut s = State::default();
    check(&p, &mut s, 0);
    assert!(!idle(&p, &s, 50_000));
    assert!(idle(&p, &s, 100_000));
}
