//! The three limiter algorithms as pure functions of (state, now): integer microseconds, no
//! I/O, no clock. The token bucket is GCRA (a theoretical arrival time), which is exactly a token
//! bucket and is what the Redis script runs too, so local and shared limits agree.

use gatehouse_config::traffic::{Algorithm, Rate};

/// A policy's numbers, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub algorithm: Algorithm,
    /// Time one request "costs": the rate's period / count.
    pub interval_us: u64,
    /// Bucket size (token), queue depth (leaky).
    pub burst: u64,
    /// Window length and limit (sliding window).
    pub window_us: u64,
    pub limit: u64,
}

impl Params {
    pub fn new(algorithm: Algorithm, rate: Rate, burst: Option<u32>) -> Self {
        let window_us = rate.per.as_micros() as u64;
        Params {
            algorithm,
            interval_us: (window_us / u64::from(rate.count)).max(1),
            burst: u64::from(burst.unwrap_or(rate.count)).max(1),
            window_us,
            limit: u64::from(rate.count),
        }
    }
}

/// Per-key state, 16 bytes whatever the algorithm (a million keys must stay small).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// token: theoretical arrival time; leaky: when the queue empties; sliding: previous count.
    a: u64,
    /// sliding: current count.
    b: u32,
    /// sliding: index of the current window (time / window length).
    t: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead (after waiting `delay_us`, for the leaky bucket's queue).
    Allow {
        remaining: u64,
        reset_us: u64,
        delay_us: u64,
    },
    Reject {
        retry_after_us: u64,
        reset_us: u64,
    },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

pub fn check(p: &Params, s: &mut State, now: u64) -> Decision {
    match p.algorithm {
        Algorithm::TokenBucket => gcra(p, s, now),
        Algorithm::LeakyBucket => leaky(p, s, now),
        Algorithm::SlidingWindow => sliding(p, s, now),
    }
}

/// Would this state behave exactly like a fresh one now? (Then it can be forgotten.)
pub fn idle(p: &Params, s: &State, now: u64) -> bool {
    match p.algorithm {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => s.a <= now,
        Algorithm::SlidingWindow => now / p.window_us >= u64::from(s.t) + 2,
    }
}

fn gcra(p: &Params, s: &mut State, now: u64) -> Decision {
    let tolerance = p.interval_us * (p.burst - 1);
    let tat = s.a.max(now);
    if tat - now > tolerance {
        return Decision::Reject {
            retry_after_us: tat - now - tolerance,
            reset_us: tat - now,
        };
    }
    s.a = tat + p.interval_us;
    Decision::Allow {
        remaining: (now + tolerance + p.interval_us - s.a) / p.interval_us,
        reset_us: s.a - now,
        delay_us: 0,
    }
}

fn leaky(p: &Params, s: &mut State, now: u64) -> Decision {
    // `a` is when the queue empties; a request waits until then and adds one interval.
    let wait = s.a.saturating_sub(now);
    if wait > p.interval_us * p.burst {
        return Decision::Reject {
            retry_after_us: wait - p.interval_us * p.burst,
            reset_us: wait,
        };
    }
    s.a = now + wait + p.interval_us;
    Decision::Allow {
        remaining: (p.interval_us * (p.burst + 1)).saturating_sub(s.a - now) / p.interval_us,
        reset_us: s.a - now,
        delay_us: wait,
    }
}

fn sliding(p: &Params, s: &mut State, now: u64) -> Decision {
    let w = p.window_us;
    let index = (now / w) as u32;
    if index != s.t {
        (s.a, s.b) = if index == s.t.wrapping_add(1) {
            (u64::from(s.b), 0)
        } else {
            (0, 0)
        };
        s.t = index;
    }
    let into = now % w;
    // estimate × w = prev × (w - into) + cur × w; allow when estimate + 1 <= limit.
    let weighted = u128::from(s.a) * u128::from(w - into) + u128::from(s.b) * u128::from(w);
    let needed = u128::from(p.limit) * u128::from(w);
    if weighted + u128::from(w) > needed {
        // When does it drop enough? Either the previous window's weight fades, or (if the
        // current window alone is full) the next window starts.
        let retry = if u64::from(s.b) + 1 > p.limit || s.a == 0 {
            w - into
        } else {
            let excess = weighted + u128::from(w) - needed;
            excess.div_ceil(u128::from(s.a)) as u64
        };
        return Decision::Reject {
            retry_after_us: retry.min(w - into).max(1),
            reset_us: w - into,
        };
    }
    s.b += 1;
    let used = (weighted + u128::from(w)) / u128::from(w);
    Decision::Allow {
        remaining: p.limit.saturating_sub(used as u64),
        reset_us: w - into,
        delay_us: 0,
    }
}

#[cfg(test)]
mod tests;
