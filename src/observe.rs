//! Observability: request IDs and W3C trace context (`ids`), the JSON access log
//! (`access_log`), state-transition events (`events`). Metrics join here later.

pub mod access_log;
pub mod events;
pub mod ids;
pub mod metrics;
pub mod throttle;
