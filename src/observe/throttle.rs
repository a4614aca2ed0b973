//! Rate-limited operational warnings: a failure that happens on every request (a Redis outage,
//! say) logs once per period with how many were suppressed, instead of a line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One call site's throttle; a `static`.
pub struct Throttle {
    every_ms: u64,
    /// When it last let a line through (ms since the process's clock base), plus one.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every_ms: every.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn ready(&self) -> Option<u64> {
        let now = crate::clock::now_ms(tokio::time::Instant::now()) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now < last + self.every_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn once_per_period_with_the_count_of_the_rest() {
        static T: Throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(T.ready(), Some(0));
        for _ in 0..5 {
            assert_eq!(T.ready(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(T.ready(), Some(5));
    }
}
