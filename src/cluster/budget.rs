//! The retry budget: retries allowed as a share of the requests of the last 10 seconds, with a
//! floor of a few per second, so that retries can never multiply an outage. Time passed in;
//! lock-free (one atomic per second slot), since every request counts itself here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const SLOTS: usize = 10;

/// One second's counts, packed as `second << 32 | count` so a slot moves to a new second and
/// counts in one compare-and-swap: no lock on the per-request path.
#[derive(Default)]
struct Slot(AtomicU64);

impl Slot {
    fn add(&self, second: u64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == second {
                cur + 1
            } else {
                (second << 32) | 1
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The count, if the slot belongs to a second in `(now - SLOTS, now]`.
    fn count(&self, now: u64) -> u64 {
        let v = self.0.load(Ordering::Relaxed);
        let second = v >> 32;
        if second + SLOTS as u64 > now && second <= now {
            v & 0xffff_ffff
        } else {
            0
        }
    }
}

pub struct RetryBudget {
    base: Instant,
    requests: [Slot; SLOTS],
    retries: [Slot; SLOTS],
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            base: now,
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_secs() + 1
    }

    /// Counts one client request (not its retries).
    pub fn record_request(&self, now: Instant) {
        let s = self.second(now);
        self.requests[(s % SLOTS as u64) as usize].add(s);
    }

    /// Spends one retry if the budget allows: retries in the window stay under
    /// `max(share × requests, min_per_second × 10 s)`. Concurrent spenders may overshoot by
    /// their number, never more.
    pub fn try_spend(&self, now: Instant, share: f64, min_per_second: u32) -> bool {
        let s = self.second(now);
        let requests: u64 = self.requests.iter().map(|x| x.count(s)).sum();
        let retries: u64 = self.retries.iter().map(|x| x.count(s)).sum();
        let allowed = (share * requests as f64)
            .max(f64::from(min_per_second) * Duration::from_secs(SLOTS as u64).as_secs_f64());
        if retries as f64 + 1.0 > allowed {
            return false;
        }
        self.retries[(s % SLOTS as u64) as usize].add(s);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_requests_with_a_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        // No traffic: the floor allows 3/s × 10 s = 30 retries in the window.
        let spent = (0..100).filter(|_| b.try_spend(t0, 0.2, 3)).count();
        assert_eq!(spent, 30);
        // 1000 requests: 20 % = 200 retries allowed in the window, 30 already spent.
        let b = RetryBudget::new(t0);
        for _ in 0..1000 {
            b.record_request(t0);
        }
        let spent = (0..500).filter(|_| b.try_spend(t0, 0.2, 3)).count();
        assert_eq!(spent, 200);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        let spent = (0..100).filter(|_| b.try_spend(t0, 0.2, 1)).count();
        assert_eq!(spent, 10);
        assert!(!b.try_spend(t0 + Duration::from_secs(9), 0.2, 1));
        assert!(
            b.try_spend(t0 + Duration::from_secs(10), 0.2, 1),
            "the first second left the window"
        );
    }
}
