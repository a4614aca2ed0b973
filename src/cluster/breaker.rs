//! The circuit breaker state machine: CLOSED → OPEN → HALF-OPEN → CLOSED. Pure: the time is
//! passed in (tokio's `Instant`, so tests drive it with paused time) and it never does I/O.
//!
//! Rules (from resilience4j's and sony/gobreaker's documented behaviour):
//! - CLOSED counts outcomes. It trips on `consecutive_failures` in a row, or — once the sliding
//!   window (last N calls, or last T seconds) holds at least `minimum_calls` — when the failure
//!   share or the slow-call share reaches its threshold. Timeouts are failures.
//! - OPEN rejects every call for `open_duration`, doubled on each consecutive trip up to
//!   `max_open_duration`.
//! - Then HALF-OPEN admits exactly `half_open_calls` probes. All succeed → CLOSED (counts and
//!   backoff reset). Any fails, or one is still unanswered after `probe_timeout` → OPEN again.
//! - Outcomes of calls admitted before a trip that arrive while OPEN/HALF-OPEN are ignored.

use gatehouse_config::{CircuitBreaker as Config, Window};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// What the breaker says about one more call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as a half-open probe: report its outcome with `probe = true`.
    Probe,
    No,
}

/// One finished call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub failed: bool,
    pub slow: bool,
}

/// A state change, for the event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Opened {
        reason: &'static str,
        failures: u32,
        open_for: Duration,
    },
    HalfOpened,
    Closed,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    start: Option<Instant>,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Sliding window of outcomes: the last N calls, or per-second buckets over the last T.
enum Recent {
    Calls {
        cap: usize,
        ring: VecDeque<Call>,
    },
    Time {
        span: Duration,
        buckets: VecDeque<Bucket>,
    },
}

impl Recent {
    fn new(w: Window) -> Self {
        match w {
            Window::Calls(n) => Recent::Calls {
                cap: n as usize,
                ring: VecDeque::with_capacity(n as usize),
            },
            Window::Time(span) => Recent::Time {
                span,
                buckets: VecDeque::new(),
            },
        }
    }

    fn matches(&self, w: Window) -> bool {
        match (self, w) {
            (Recent::Calls { cap, .. }, Window::Calls(n)) => *cap == n as usize,
            (Recent::Time { span, .. }, Window::Time(t)) => *span == t,
            _ => false,
        }
    }

    fn push(&mut self, now: Instant, c: Call) {
        match self {
            Recent::Calls { cap, ring } => {
                if ring.len() == *cap {
                    ring.pop_front();
                }
                ring.push_back(c);
            }
            Recent::Time { buckets, .. } => {
                let fresh = buckets
                    .back()
                    .and_then(|b| b.start)
                    .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1));
                if fresh {
                    buckets.push_back(Bucket {
                        start: Some(now),
                        ..Bucket::default()
                    });
                }
                if let Some(b) = buckets.back_mut() {
                    b.calls += 1;
                    b.failures += u32::from(c.failed);
                    b.slow += u32::from(c.slow);
                }
            }
        }
    }

    /// (calls, failures, slow) in the window as of `now`.
    fn totals(&mut self, now: Instant) -> (u32, u32, u32) {
        match self {
            Recent::Calls { ring, .. } => ring.iter().fold((0, 0, 0), |(n, f, s), c| {
                (n + 1, f + u32::from(c.failed), s + u32::from(c.slow))
            }),
            Recent::Time { span, buckets } => {
                while buckets
                    .front()
                    .and_then(|b| b.start)
                    .is_some_and(|s| now.duration_since(s) >= *span)
                {
                    buckets.pop_front();
                }
                buckets.iter().fold((0, 0, 0), |(n, f, s), b| {
                    (n + b.calls, f + b.failures, s + b.slow)
                })
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Recent::Calls { ring, .. } => ring.clear(),
            Recent::Time { buckets, .. } => buckets.clear(),
        }
    }
}

/// A breaker as a binary upgrade carries it to the new process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carried {
    pub state: State,
    /// How long an OPEN breaker still rejects calls.
    pub open_for: Duration,
    /// Trips since it last closed (the doubling open duration goes on from there).
    pub trips: u32,
}

pub struct Breaker {
    state: State,
    consecutive: u32,
    recent: Recent,
    open_until: Option<Instant>,
    /// Trips since the breaker last closed: drives the doubling open duration.
    trips: u32,
    probes_admitted: u32,
    probes_succeeded: u32,
    /// Start times of probes still out.
    probes_out: VecDeque<Instant>,
}

impl Breaker {
    pub fn new(cfg: &Config) -> Self {
        Breaker {
            state: State::Closed,
            consecutive: 0,
            recent: Recent::new(cfg.window),
            open_until: None,
            trips: 0,
            probes_admitted: 0,
            probes_succeeded: 0,
            probes_out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Time until an OPEN breaker half-opens.
    pub fn retry_after(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open => self.open_until.map(|u| u.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// Failures in a row so far (for status displays).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// May one more call go through now? May half-open an OPEN breaker whose time is up, or
    /// re-open a HALF-OPEN one whose probe was lost.
    pub fn admit(&mut self, cfg: &Config, now: Instant) -> (Admit, Option<Transition>) {
        if !cfg.enabled {
            return (Admit::Yes, None);
        }
        let mut transition = None;
        if self.state == State::Open {
            if self.open_until.is_some_and(|u| now >= u) {
                self.half_open();
                transition = Some(Transition::HalfOpened);
            } else {
                return (Admit::No, None);
            }
        }
        match self.state {
            State::Closed => (Admit::Yes, transition),
            State::HalfOpen => {
                if self
                    .probes_out
                    .front()
                    .is_some_and(|s| now.duration_since(*s) >= cfg.probe_timeout.0)
                {
                    return (Admit::No, Some(self.trip(cfg, now, "probe_timeout", 1)));
                }
                if self.probes_admitted < cfg.half_open_calls {
                    self.probes_admitted += 1;
                    self.probes_out.push_back(now);
                    (Admit::Probe, transition)
                } else {
                    (Admit::No, transition)
                }
            }
            State::Open => (Admit::No, transition),
        }
    }

    /// Records a finished call. `may_trip` is false when the cluster may not eject another
    /// endpoint right now (`max_ejection_percent`).
    pub fn record(
        &mut self,
        cfg: &Config,
        now: Instant,
        call: Call,
        probe: bool,
        may_trip: bool,
    ) -> Option<Transition> {
        if !cfg.enabled {
            return None;
        }
        if !self.recent.matches(cfg.window) {
            // The window's shape changed in a reload: start counting afresh.
            self.recent = Recent::new(cfg.window);
        }
        match self.state {
            State::HalfOpen if probe => {
                self.probes_out.pop_front();
                if call.failed {
                    return Some(self.trip(cfg, now, "half_open_probe_failed", 1));
                }
                self.probes_succeeded += 1;
                if self.probes_succeeded >= cfg.half_open_calls {
                    self.close();
                    return Some(Transition::Closed);
                }
                None
            }
            State::Closed => {
                self.recent.push(now, call);
                self.consecutive = if call.failed { self.consecutive + 1 } else { 0 };
                if !may_trip {
                    return None;
                }
                if cfg.consecutive_failures > 0 && self.consecutive >= cfg.consecutive_failures {
                    let n = self.consecutive;
                    return Some(self.trip(cfg, now, "consecutive_failures", n));
                }
                let (calls, failures, slow) = self.recent.totals(now);
                if calls >= cfg.minimum_calls {
                    let share = |x: u32| f64::from(x) / f64::from(calls);
                    if cfg.failure_rate.is_some_and(|r| share(failures) >= r.0) {
                        return Some(self.trip(cfg, now, "failure_rate", failures));
                    }
                    if cfg.slow_call_rate.is_some_and(|r| share(slow) >= r.0) {
                        return Some(self.trip(cfg, now, "slow_call_rate", failures));
                    }
                }
                None
            }
            // A call admitted before the trip: its outcome says nothing about now.
            _ => None,
        }
    }

    /// Records `n` successful, fast calls that arrived while CLOSED (batched by the caller so
    /// the common case takes no lock). They cannot trip the breaker; elsewhere they are
    /// outcomes of calls admitted before a trip and say nothing about now.
    pub fn record_successes(&mut self, cfg: &Config, now: Instant, n: u32) {
        if !cfg.enabled || self.state != State::Closed || n == 0 {
            return;
        }
        if !self.recent.matches(cfg.window) {
            self.recent = Recent::new(cfg.window);
        }
        let ok = Call {
            failed: false,
            slow: false,
        };
        let cap = match &self.recent {
            Recent::Calls { cap, .. } => *cap as u32,
            Recent::Time { .. } => u32::MAX,
        };
        for _ in 0..n.min(cap) {
            self.recent.push(now, ok);
        }
        self.consecutive = 0;
    }

    /// A probe ended without an outcome (the client went away): free its slot.
    pub fn cancel_probe(&mut self) {
        if self.state == State::HalfOpen && self.probes_out.pop_front().is_some() {
            self.probes_admitted = self.probes_admitted.saturating_sub(1);
        }
    }

    /// Operator override (fault drills): open for `open_duration`, or close and reset.
    pub fn force(&mut self, cfg: &Config, now: Instant, open: bool) -> Transition {
        if open {
            self.trip(cfg, now, "forced", 0)
        } else {
            self.close();
            Transition::Closed
        }
    }

    /// What a new process takes over from this breaker (a binary upgrade).
    pub fn carry(&self, now: Instant) -> Carried {
        Carried {
            state: self.state,
            open_for: self.retry_after(now).unwrap_or(Duration::ZERO),
            trips: self.trips,
        }
    }

    /// Takes over a breaker from the old process. A HALF-OPEN one comes back OPEN with no
    /// time left, so it half-opens at its next call and sends fresh probes (the old process's
    /// probes are not this one's to answer).
    pub fn adopt(&mut self, c: Carried, now: Instant) {
        match c.state {
            State::Closed => self.close(),
            State::Open | State::HalfOpen => {
                self.close();
                self.state = State::Open;
                self.open_until = Some(now + c.open_for);
                self.trips = c.trips.max(1);
            }
        }
    }

    /// Closes the breaker when it is not CLOSED (active health checks saw the endpoint come
    /// back). Returns whether it changed.
    pub fn reset(&mut self) -> bool {
        if self.state == State::Closed {
            return false;
        }
        self.close();
        true
    }

    fn trip(
        &mut self,
        cfg: &Config,
        now: Instant,
        reason: &'static str,
        failures: u32,
    ) -> Transition {
        self.trips += 1;
        let factor = 1u32 << (self.trips - 1).min(20);
        let open_for = cfg
            .open_duration
            .0
            .saturating_mul(factor)
            .min(cfg.max_open_duration.0);
        self.state = State::Open;
        self.open_until = Some(now + open_for);
        self.consecutive = 0;
        self.recent.clear();
        self.probes_out.clear();
        Transition::Opened {
            reason,
            failures,
            open_for,
        }
    }

    fn half_open(&mut self) {
        self.state = State::HalfOpen;
        self.probes_admitted = 0;
        self.probes_succeeded = 0;
        self.probes_out.clear();
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.trips = 0;
        self.consecutive = 0;
        self.open_until = None;
        self.recent.clear();
        self.probes_out.clear();
    }
}

#[cfg(test)]
mod tests;
