//! Observability: request IDs and W3C trace context (`ids`), OpenTelemetry spans and their
//! OTLP export (`otel`), the JSON access log (`access_log`), state-transition events
//! (`events`) and the recent ones kept (`history`), metrics (`metrics`), throttled warnings
//! (`throttle`), and the count of operational log lines dropped by the non-blocking writer.

pub mod access_log;
pub mod events;
pub mod history;
pub mod ids;
pub mod metrics;
pub mod otel;
pub mod throttle;

/// Reports how many operational log lines the non-blocking writer dropped (set by the binary,
/// which owns the writer; read at scrape).
pub fn set_log_drops(f: fn() -> usize) {
    let _ = LOG_DROPS.set(f);
}

static LOG_DROPS: std::sync::OnceLock<fn() -> usize> = std::sync::OnceLock::new();

/// Operational log lines dropped so far (0 when no non-blocking writer is installed).
pub fn log_drops() -> u64 {
    LOG_DROPS.get().map_or(0, |f| f() as u64)
}
