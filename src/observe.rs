//! Observability: request IDs and W3C trace context (`ids`), the JSON access log
//! (`access_log`). Metrics and the event stream join here in later work.

pub mod access_log;
pub mod ids;
