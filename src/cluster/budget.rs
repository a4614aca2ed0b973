//! The retry budget: retries allowed as a share of the requests of the last 10 seconds, with a
//! floor of a few per second, so that retries can never multiply an outage. Pure; time passed in.

use std::time::Duration;
use tokio::time::Instant;

const SLOTS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Slot {
    second: u64,
    requests: u32,
    retries: u32,
}

pub struct RetryBudget {
    base: Instant,
    slots: [Slot; SLOTS],
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            base: now,
            slots: [Slot::default(); SLOTS],
        }
    }

    fn slot(&mut self, now: Instant) -> &mut Slot {
        let second = now.saturating_duration_since(self.base).as_secs() + 1;
        let s = &mut self.slots[(second % SLOTS as u64) as usize];
        if s.second != second {
            *s = Slot {
                second,
                ..Slot::default()
            };
        }
        s
    }

    fn totals(&self, now: Instant) -> (u32, u32) {
        let second = now.saturating_duration_since(self.base).as_secs() + 1;
        self.slots
            .iter()
            .filter(|s| s.second + (SLOTS as u64) > second && s.second <= second)
            .fold((0, 0), |(r, t), s| (r + s.requests, t + s.retries))
    }

    /// Counts one client request (not its retries).
    pub fn record_request(&mut self, now: Instant) {
        self.slot(now).requests += 1;
    }

    /// Spends one retry if the budget allows: retries in the window stay under
    /// `max(share × requests, min_per_second × 10 s)`.
    pub fn try_spend(&mut self, now: Instant, share: f64, min_per_second: u32) -> bool {
        let (requests, retries) = self.totals(now);
        let allowed = (share * f64::from(requests))
            .max(f64::from(min_per_second) * Duration::from_secs(SLOTS as u64).as_secs_f64());
        if f64::from(retries) + 1.0 > allowed {
            return false;
        }
        self.slot(now).retries += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_requests_with_a_floor() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(t0);
        // No traffic: the floor allows 3/s × 10 s = 30 retries in the window.
        let spent = (0..100).filter(|_| b.try_spend(t0, 0.2, 3)).count();
        assert_eq!(spent, 30);
        // 1000 requests: 20 % = 200 retries allowed in the window, 30 already spent.
        let mut b = RetryBudget::new(t0);
        for _ in 0..1000 {
            b.record_request(t0);
        }
        let spent = (0..500).filter(|_| b.try_spend(t0, 0.2, 3)).count();
        assert_eq!(spent, 200);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(t0);
        let spent = (0..100).filter(|_| b.try_spend(t0, 0.2, 1)).count();
        assert_eq!(spent, 10);
        assert!(!b.try_spend(t0 + Duration::from_secs(9), 0.2, 1));
        assert!(
            b.try_spend(t0 + Duration::from_secs(10), 0.2, 1),
            "the first second left the window"
        );
    }
}
