//! The gateway's monotonic clock in integers, on tokio's clock so paused-time tests work.

use std::sync::OnceLock;
use tokio::time::Instant;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since the first call, plus one (so 0 can mean "never").
pub fn now_ms(now: Instant) -> u64 {
    now.saturating_duration_since(base()).as_millis() as u64 + 1
}

/// Microseconds since the first call, plus one.
pub fn now_us(now: Instant) -> u64 {
    now.saturating_duration_since(base()).as_micros() as u64 + 1
}
