//! Per-endpoint runtime state, keyed by (cluster, address) in the runtime registry so that it
//! outlives config snapshots. Holds no tunables (weights and thresholds live in the snapshot
//! and are passed in). Health is set by active checks, the breaker by request outcomes, drain
//! by the operator; the balancer only reads `eligible` / `weight_factor` and asks `admit`.

use super::breaker::{Admit, Breaker, Call, Carried, State as BreakerState, Transition};
use crate::observe::events::Events;
use gatehouse_config::CircuitBreaker;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    Healthy,
    Degraded,
    Down,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Degraded,
            2 => Health::Down,
            _ => Health::Healthy,
        }
    }
}

use crate::clock::now_ms as clock_ms;

const NO_RAMP: u64 = 0;

/// Bumped on every health transition anywhere, so clusters can cache what they derive from
/// health (the panic decision) and recompute only after a change.
static HEALTH_EPOCH: AtomicU64 = AtomicU64::new(1);

pub fn health_epoch() -> u64 {
    HEALTH_EPOCH.load(Ordering::Acquire)
}

/// The slow-start weight factor: 10 % at `since`, rising linearly to 100 % at `since + window`.
pub fn slow_start_factor(elapsed: Duration, window: Duration) -> f64 {
    if window.is_zero() || elapsed >= window {
        return 1.0;
    }
    0.1 + 0.9 * elapsed.as_secs_f64() / window.as_secs_f64()
}

pub struct EndpointState {
    pub cluster: Arc<str>,
    pub address: Arc<str>,
    drained: AtomicBool,
    in_flight: AtomicU64,
    health: AtomicU8,
    /// Mirror of the breaker's state, read without the lock on the hot path.
    breaker_state: AtomicU8,
    breaker: Mutex<Breaker>,
    /// When the current slow-start ramp began (`clock_ms`), or `NO_RAMP`.
    ramp_from: AtomicU64,
    ramp_window_ms: AtomicU64,
    /// While OPEN: when it may half-open (`clock_ms`), so policies skip it without the lock.
    open_until: AtomicU64,
    /// Peak-EWMA of response-head latency in ns (f64 bits), and when it was last updated.
    ewma_ns: AtomicU64,
    ewma_at: AtomicU64,
    /// An injected fault (drills); `fault_on` keeps the no-fault path lock-free.
    fault: Mutex<Option<Fault>>,
    fault_on: AtomicBool,
    /// Woken when the breaker opens: tries still waiting on this endpoint may move elsewhere.
    pub opened: tokio::sync::Notify,
    /// Successes seen while CLOSED and not yet handed to the breaker (the no-lock path).
    pending_ok: AtomicU32,
    /// Coarse buckets of every try's time, for the dashboard's per-endpoint p50/p99 (here, not
    /// in the snapshot's metric handles, so a reload does not restart them).
    pub latency: crate::observe::metrics::Latency,
}

/// Successes are handed to the breaker in batches of this many (or before any other outcome).
const OK_BATCH: u32 = 32;

/// A fault drill on one endpoint: its tries fail with `abort` or wait `delay`, until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub abort: Option<u16>,
    pub delay: Option<Duration>,
    pub until: Instant,
}

/// How fast the latency estimate decays (Linkerd's default).
const EWMA_TAU_MS: f64 = 10_000.0;

/// How the endpoint was admitted for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Normal,
    Probe,
}

impl EndpointState {
    pub fn new(cluster: Arc<str>, address: Arc<str>, breaker: &CircuitBreaker) -> Self {
        EndpointState {
            cluster,
            address,
            drained: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            health: AtomicU8::new(0),
            breaker_state: AtomicU8::new(0),
            breaker: Mutex::new(Breaker::new(breaker)),
            ramp_from: AtomicU64::new(NO_RAMP),
            ramp_window_ms: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
            fault: Mutex::new(None),
            fault_on: AtomicBool::new(false),
            opened: tokio::sync::Notify::new(),
            pending_ok: AtomicU32::new(0),
            latency: Default::default(),
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health; returns the previous one. Coming back from DOWN starts slow start and
    /// closes an open breaker: the endpoint was unreachable and active checks now reach it
    /// (as Envoy's `successful_active_health_check_uneject_host`). Only the DOWN → up edge does
    /// this, since a passing TCP check says nothing about the 5xx that may have opened it.
    pub fn set_health(&self, h: Health, slow_start: Duration, events: &Events) -> Health {
        let prev = Health::from_u8(self.health.swap(h as u8, Ordering::Relaxed));
        if prev != h {
            HEALTH_EPOCH.fetch_add(1, Ordering::AcqRel);
        }
        if prev == Health::Down && h != Health::Down {
            self.start_ramp(slow_start);
            let reset = {
                let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
                let changed = b.reset();
                self.mirror(&b);
                changed
            };
            if reset {
                events.emit(
                    "circuit_closed",
                    &self.cluster,
                    Some(&self.address),
                    json!({"reason": "active_health_check"}),
                );
            }
        }
        prev
    }

    /// What a new process takes over (a binary upgrade): health, drain and the breaker.
    pub fn carry(&self, now: Instant) -> (Health, bool, Carried) {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        (self.health(), self.is_drained(), b.carry(now))
    }

    /// Takes over what the old process knew of this endpoint. Not a transition (the old
    /// process announced it), so no event; no slow start either: the endpoint was serving.
    pub fn adopt(&self, health: Health, drained: bool, breaker: Carried) {
        if Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed)) != health {
            HEALTH_EPOCH.fetch_add(1, Ordering::AcqRel);
        }
        self.drained.store(drained, Ordering::Relaxed);
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.adopt(breaker, Instant::now());
        self.mirror(&b);
    }

    pub fn breaker_state(&self) -> BreakerState {
        match self.breaker_state.load(Ordering::Relaxed) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Operator drain: no new requests; in-flight ones finish. Announces `endpoint_drained` /
    /// `endpoint_enabled` when it changes; returns whether it changed.
    pub fn set_drained(&self, drained: bool, events: &Events) -> bool {
        let changed = self.drained.swap(drained, Ordering::Relaxed) != drained;
        if changed {
            let name = if drained {
                "endpoint_drained"
            } else {
                "endpoint_enabled"
            };
            events.emit(
                name,
                &self.cluster,
                Some(&self.address),
                json!({"in_flight": self.in_flight()}),
            );
        }
        changed
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Starts (or restarts) the slow-start ramp now.
    pub fn start_ramp(&self, window: Duration) {
        if window.is_zero() {
            return;
        }
        self.ramp_window_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
        self.ramp_from
            .store(clock_ms(Instant::now()), Ordering::Relaxed);
    }

    /// The slow-start factor now (1.0 when not ramping).
    pub fn slow_start_factor(&self, now: Instant) -> f64 {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == NO_RAMP {
            return 1.0;
        }
        let elapsed = Duration::from_millis(clock_ms(now).saturating_sub(from));
        let window = Duration::from_millis(self.ramp_window_ms.load(Ordering::Relaxed));
        slow_start_factor(elapsed, window)
    }

    /// Ends a finished ramp with a `slow_start_done` event (called from the probe loop).
    pub fn check_slow_start_done(&self, events: &Events) {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from != NO_RAMP
            && self.slow_start_factor(Instant::now()) >= 1.0
            && self
                .ramp_from
                .compare_exchange(from, NO_RAMP, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            events.emit(
                "slow_start_done",
                &self.cluster,
                Some(&self.address),
                json!({}),
            );
        }
    }

    /// Feeds one latency sample: a higher one is taken at once (peak), a lower one is blended in
    /// with a weight that grows with the time since the last sample.
    pub fn observe_latency(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let now_ms = clock_ms(now);
        let prev = self.decayed_ewma(now_ms);
        let next = if sample >= prev {
            sample
        } else {
            let elapsed = now_ms.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
            let w = (-elapsed / EWMA_TAU_MS).exp();
            prev * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now_ms, Ordering::Relaxed);
    }

    /// The latency estimate now (ns), decayed towards zero while no sample arrives, so that an
    /// endpoint once slow and then left alone is tried again.
    pub fn latency_ewma(&self, now: Instant) -> f64 {
        self.decayed_ewma(clock_ms(now))
    }

    fn decayed_ewma(&self, now_ms: u64) -> f64 {
        let v = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let elapsed = now_ms.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
        v * (-elapsed / EWMA_TAU_MS).exp()
    }

    /// Starts (or, with `None`, ends) a fault drill. Announces `fault_started` / `fault_ended`.
    pub fn set_fault(&self, fault: Option<Fault>, events: &Events) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
        self.fault_on.store(fault.is_some(), Ordering::Relaxed);
        match fault {
            Some(f) => events.emit(
                "fault_started",
                &self.cluster,
                Some(&self.address),
                json!({
                    "abort": f.abort,
                    "delay_ms": f.delay.map(|d| d.as_millis() as u64),
                    "duration_ms": f.until.saturating_duration_since(Instant::now()).as_millis() as u64,
                }),
            ),
            None => events.emit("fault_ended", &self.cluster, Some(&self.address), json!({})),
        }
    }

    /// The fault in force now, without clearing an expired one (for status views).
    pub fn peek_fault(&self, now: Instant) -> Option<Fault> {
        if !self.fault_on.load(Ordering::Relaxed) {
            return None;
        }
        (*self.fault.lock().unwrap_or_else(|e| e.into_inner())).filter(|f| now < f.until)
    }

    /// The fault in force now, if any (an expired one is cleared and announced).
    pub fn active_fault(&self, now: Instant, events: &Events) -> Option<Fault> {
        if !self.fault_on.load(Ordering::Relaxed) {
            return None;
        }
        let f = (*self.fault.lock().unwrap_or_else(|e| e.into_inner()))?;
        if now >= f.until {
            self.set_fault(None, events);
            return None;
        }
        Some(f)
    }

    /// True while the breaker is OPEN and not yet due to half-open: no point asking it.
    pub fn open_and_waiting(&self, now: Instant) -> bool {
        self.breaker_state() == BreakerState::Open
            && clock_ms(now) < self.open_until.load(Ordering::Relaxed)
    }

    /// Asks the breaker for one call. Cheap when CLOSED (no lock).
    pub fn admit(&self, cfg: &CircuitBreaker, now: Instant, events: &Events) -> Option<Admission> {
        if !cfg.enabled || self.breaker_state() == BreakerState::Closed {
            return Some(Admission::Normal);
        }
        let (admit, transition) = {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let r = b.admit(cfg, now);
            self.mirror(&b);
            r
        };
        if let Some(t) = transition {
            self.announce(&t, events);
        }
        match admit {
            Admit::Yes => Some(Admission::Normal),
            Admit::Probe => Some(Admission::Probe),
            Admit::No => None,
        }
    }

    /// Records a finished call's outcome. Returns the transition, if any, after announcing it.
    pub fn record(
        &self,
        cfg: &CircuitBreaker,
        now: Instant,
        call: Call,
        admission: Admission,
        may_trip: bool,
        events: &Events,
    ) -> Option<Transition> {
        let plain_ok = !call.failed && !call.slow && admission == Admission::Normal;
        if plain_ok && self.breaker_state() == BreakerState::Closed {
            // A success cannot trip a CLOSED breaker: count it without the lock, hand the
            // batch over now and then (and before any other outcome, so rates stay right).
            if self.pending_ok.fetch_add(1, Ordering::Relaxed) + 1 < OK_BATCH {
                return None;
            }
        }
        let t = {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let pending = self.pending_ok.swap(0, Ordering::Relaxed);
            b.record_successes(cfg, now, pending);
            let t = if plain_ok {
                None
            } else {
                b.record(cfg, now, call, admission == Admission::Probe, may_trip)
            };
            self.mirror(&b);
            t
        }?;
        self.announce(&t, events);
        Some(t)
    }

    pub fn cancel_probe(&self) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.cancel_probe();
    }

    /// Operator override.
    pub fn force_breaker(&self, cfg: &CircuitBreaker, open: bool, events: &Events) {
        let t = {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let t = b.force(cfg, Instant::now(), open);
            self.mirror(&b);
            t
        };
        self.announce(&t, events);
    }

    /// Time until the breaker half-opens, when OPEN.
    pub fn retry_after(&self, now: Instant) -> Option<Duration> {
        if self.breaker_state() != BreakerState::Open {
            return None;
        }
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retry_after(now)
    }

    fn mirror(&self, b: &Breaker) {
        if let Some(wait) = b.retry_after(Instant::now()) {
            self.open_until
                .store(clock_ms(Instant::now() + wait), Ordering::Relaxed);
        }
        let v = match b.state() {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.breaker_state.store(v, Ordering::Relaxed);
    }

    fn announce(&self, t: &Transition, events: &Events) {
        let (name, fields) = match t {
            Transition::Opened {
                reason,
                failures,
                open_for,
            } => (
                "circuit_opened",
                json!({"reason": reason, "failures": failures, "open_for_ms": open_for.as_millis() as u64}),
            ),
            Transition::HalfOpened => ("circuit_half_opened", json!({})),
            Transition::Closed => ("circuit_closed", json!({})),
        };
        if matches!(t, Transition::Opened { .. }) {
            self.opened.notify_waiters();
        }
        events.emit(name, &self.cluster, Some(&self.address), fields);
    }
}

pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_from_ten_to_hundred_percent() {
        let w = Duration::from_secs(30);
        let f = |s: u64| slow_start_factor(Duration::from_secs(s), w);
        assert!((f(0) - 0.1).abs() < 1e-9);
        assert!((f(15) - 0.55).abs() < 1e-9);
        assert!((f(30) - 1.0).abs() < 1e-9);
        assert!((f(60) - 1.0).abs() < 1e-9);
        assert!((slow_start_factor(Duration::ZERO, Duration::ZERO) - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn ramp_follows_the_clock() {
        let s = EndpointState::new("c".into(), "a".into(), &CircuitBreaker::default());
        assert!((s.slow_start_factor(Instant::now()) - 1.0).abs() < 1e-9);
        let events = Events::new(false);
        s.set_health(Health::Down, Duration::from_secs(10), &events);
        s.set_health(Health::Healthy, Duration::from_secs(10), &events);
        assert!((s.slow_start_factor(Instant::now()) - 0.1).abs() < 0.01);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((s.slow_start_factor(Instant::now()) - 0.55).abs() < 0.01);
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut rx = events.subscribe();
        s.check_slow_start_done(&events);
        assert_eq!(rx.try_recv().unwrap()["event"], "slow_start_done");
        assert!((s.slow_start_factor(Instant::now()) - 1.0).abs() < 1e-9);
    }
}
