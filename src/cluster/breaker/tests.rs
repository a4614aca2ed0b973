//! The breaker's transition table, one test per rule, with explicit time.

use super::*;
use gatehouse_config::{Dur, Percent};

const OK: Call = Call {
    failed: false,
    slow: false,
};
const FAIL: Call = Call {
    failed: true,
    slow: false,
};
const SLOW: Call = Call {
    failed: false,
    slow: true,
};

fn cfg() -> Config {
    Config {
        enabled: true,
        consecutive_failures: 3,
        failure_rate: None,
        slow_call_duration: Dur::secs(1),
        slow_call_rate: None,
        window: Window::Calls(10),
        minimum_calls: 5,
        open_duration: Dur::secs(10),
        max_open_duration: Dur::secs(35),
        half_open_calls: 2,
        probe_timeout: Dur::secs(3),
    }
}

fn feed(b: &mut Breaker, c: &Config, now: Instant, calls: &[Call]) -> Option<Transition> {
    let mut last = None;
    for call in calls {
        assert_eq!(b.admit(c, now).0, Admit::Yes);
        if let Some(t) = b.record(c, now, *call, false, true) {
            last = Some(t);
        }
    }
    last
}

/// A breaker that just tripped on three consecutive failures at `t0`.
fn tripped(c: &Config) -> (Breaker, Instant) {
    let mut b = Breaker::new(c);
    let t0 = Instant::now();
    feed(&mut b, c, t0, &[FAIL, FAIL, FAIL]);
    (b, t0)
}

fn opened(reason: &'static str, failures: u32, secs: u64) -> Option<Transition> {
    Some(Transition::Opened {
        reason,
        failures,
        open_for: Duration::from_secs(secs),
    })
}

#[test]
fn consecutive_failures_trip_at_exactly_the_threshold() {
    let c = cfg();
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL]), None);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        feed(&mut b, &c, t0, &[FAIL]),
        opened("consecutive_failures", 3, 10)
    );
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.admit(&c, t0).0, Admit::No);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let c = cfg();
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL, OK, FAIL, FAIL]), None);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn failure_rate_needs_minimum_calls() {
    let mut c = cfg();
    c.consecutive_failures = 0;
    c.failure_rate = Some(Percent(0.5));
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    // 4 calls, all failed: below minimum_calls (5), no trip.
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL, FAIL, FAIL]), None);
    // The fifth call makes 5 calls with 4 failures = 80 % >= 50 %.
    assert_eq!(feed(&mut b, &c, t0, &[OK]), opened("failure_rate", 4, 10));
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let mut c = cfg();
    c.consecutive_failures = 0;
    c.failure_rate = Some(Percent(0.5));
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    let calls = [OK, FAIL, OK, FAIL, OK, OK, FAIL, OK, OK, OK]; // 30 %
    assert_eq!(feed(&mut b, &c, t0, &calls), None);
    // The count window holds the last 10 calls: two more failures only push out an OK and a
    // FAIL (40 %); the third makes it 5 of 10.
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL]), None);
    assert_eq!(feed(&mut b, &c, t0, &[FAIL]), opened("failure_rate", 5, 10));
}

#[test]
fn slow_call_rate_trips() {
    let mut c = cfg();
    c.consecutive_failures = 0;
    c.slow_call_rate = Some(Percent(0.8));
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    assert_eq!(feed(&mut b, &c, t0, &[SLOW, SLOW, SLOW, OK]), None);
    // The fifth call reaches minimum_calls with 4/5 = 80 % slow: trips.
    assert_eq!(
        feed(&mut b, &c, t0, &[SLOW]),
        opened("slow_call_rate", 0, 10)
    );
}

#[test]
fn time_window_forgets_old_calls() {
    let mut c = cfg();
    c.consecutive_failures = 0;
    c.failure_rate = Some(Percent(0.5));
    c.window = Window::Time(Duration::from_secs(10));
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL, FAIL, FAIL]), None);
    // 11 s later the failures are out of the window: 5 successes keep it closed.
    let t1 = t0 + Duration::from_secs(11);
    assert_eq!(feed(&mut b, &c, t1, &[OK, OK, OK, OK, OK]), None);
    assert_eq!(b.state(), State::Closed);
    // Within the window they still count.
    let mut b = Breaker::new(&c);
    assert_eq!(feed(&mut b, &c, t0, &[FAIL, FAIL, FAIL, FAIL]), None);
    let t2 = t0 + Duration::from_secs(5);
    assert_eq!(feed(&mut b, &c, t2, &[OK]), opened("failure_rate", 4, 10));
}

#[test]
fn open_half_opens_after_its_duration_and_admits_only_the_probes() {
    let c = cfg();
    let (mut b, t0) = tripped(&c);
    assert_eq!(
        b.retry_after(t0 + Duration::from_secs(4)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(b.admit(&c, t0 + Duration::from_millis(9_999)).0, Admit::No);
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(
        b.admit(&c, t1),
        (Admit::Probe, Some(Transition::HalfOpened))
    );
    assert_eq!(b.admit(&c, t1), (Admit::Probe, None));
    assert_eq!(b.admit(&c, t1), (Admit::No, None), "half_open_calls = 2");
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn all_probes_succeeding_closes_and_resets() {
    let c = cfg();
    let (mut b, t0) = tripped(&c);
    let t1 = t0 + Duration::from_secs(10);
    b.admit(&c, t1);
    b.admit(&c, t1);
    assert_eq!(b.record(&c, t1, OK, true, true), None, "one of two probes");
    assert_eq!(b.record(&c, t1, OK, true, true), Some(Transition::Closed));
    assert_eq!(b.state(), State::Closed);
    // The backoff reset too: the next trip opens for the base duration again.
    assert_eq!(
        feed(&mut b, &c, t1, &[FAIL, FAIL, FAIL]),
        opened("consecutive_failures", 3, 10)
    );
}

#[test]
fn a_failed_probe_reopens_with_doubled_duration_up_to_the_cap() {
    let c = cfg();
    let mut b = Breaker::new(&c);
    let mut now = Instant::now();
    feed(&mut b, &c, now, &[FAIL, FAIL, FAIL]);
    for expected in [20, 35, 35] {
        now += b.retry_after(now).unwrap();
        assert_eq!(b.admit(&c, now).0, Admit::Probe);
        assert_eq!(
            b.record(&c, now, FAIL, true, true),
            opened("half_open_probe_failed", 1, expected)
        );
    }
}

#[test]
fn a_lost_probe_reopens_after_the_probe_timeout() {
    let c = cfg();
    let (mut b, t0) = tripped(&c);
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(b.admit(&c, t1).0, Admit::Probe);
    assert_eq!(b.admit(&c, t1).0, Admit::Probe);
    assert_eq!(b.admit(&c, t1 + Duration::from_secs(2)).0, Admit::No);
    let (admit, t) = b.admit(&c, t1 + Duration::from_secs(3));
    assert_eq!(admit, Admit::No);
    assert_eq!(t, opened("probe_timeout", 1, 20));
}

#[test]
fn a_cancelled_probe_frees_its_slot() {
    let c = cfg();
    let (mut b, t0) = tripped(&c);
    let t1 = t0 + Duration::from_secs(10);
    b.admit(&c, t1);
    b.admit(&c, t1);
    b.cancel_probe();
    assert_eq!(b.admit(&c, t1).0, Admit::Probe);
}

#[test]
fn late_outcomes_while_open_are_ignored() {
    let c = cfg();
    let (mut b, t0) = tripped(&c);
    assert_eq!(b.record(&c, t0, OK, false, true), None);
    assert_eq!(b.record(&c, t0, FAIL, false, true), None);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn no_trip_when_the_cluster_may_not_eject() {
    let c = cfg();
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    for _ in 0..5 {
        assert_eq!(b.record(&c, t0, FAIL, false, false), None);
    }
    assert_eq!(b.state(), State::Closed);
    // Allowed again: the next failure trips (the count kept going).
    assert_eq!(
        b.record(&c, t0, FAIL, false, true),
        opened("consecutive_failures", 6, 10)
    );
}

#[test]
fn disabled_breaker_admits_everything() {
    let mut c = cfg();
    c.enabled = false;
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    for _ in 0..10 {
        assert_eq!(b.admit(&c, t0).0, Admit::Yes);
        assert_eq!(b.record(&c, t0, FAIL, false, true), None);
    }
}

#[test]
fn forced_open_and_closed() {
    let c = cfg();
    let mut b = Breaker::new(&c);
    let t0 = Instant::now();
    assert_eq!(
        b.force(&c, t0, true),
        Transition::Opened {
            reason: "forced",
            failures: 0,
            open_for: Duration::from_secs(10)
        }
    );
    assert_eq!(b.admit(&c, t0).0, Admit::No);
    assert_eq!(b.force(&c, t0, false), Transition::Closed);
    assert_eq!(b.admit(&c, t0).0, Admit::Yes);
}

#[test]
fn batched_successes_count_like_single_ones() {
    let c = Config {
        consecutive_failures: 0,
        failure_rate: Some(Percent(0.5)),
        ..cfg()
    };
    let now = Instant::now();
    // Eight successes handed over as one batch, then failures: the window holds the last ten
    // calls, so the rate reaches 50 % at the fifth failure (5 of 10), not before.
    let mut b = Breaker::new(&c);
    b.record_successes(&c, now, 8);
    assert_eq!(feed(&mut b, &c, now, &[FAIL, FAIL, FAIL, FAIL]), None);
    assert!(matches!(
        feed(&mut b, &c, now, &[FAIL]),
        Some(Transition::Opened { .. })
    ));
    // A batch resets the consecutive count, as single successes do.
    let mut b = Breaker::new(&cfg());
    feed(&mut b, &cfg(), now, &[FAIL, FAIL]);
    b.record_successes(&cfg(), now, 1);
    assert_eq!(feed(&mut b, &cfg(), now, &[FAIL, FAIL]), None);
}
