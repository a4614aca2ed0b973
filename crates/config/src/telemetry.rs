//! The `tracing:` section: OpenTelemetry spans exported over OTLP HTTP/protobuf
//! (`docs/observability.md`). Absent: no spans, and the request path does no tracing work.

use crate::units::Dur;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `tracing: {otlp, sampling_ratio, service_name, max_queue}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Where spans go.
    pub otlp: Otlp,
    /// The share of new traces (requests without a `traceparent`) that are recorded, 0.0–1.0
    /// (default 1.0). A request whose `traceparent` says sampled or not sampled follows it.
    #[serde(default = "defaults::sampling_ratio")]
    pub sampling_ratio: f64,
    /// The `service.name` resource attribute (default `gatehouse`).
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Finished spans waiting for export; when it is full, new spans are dropped and counted
    /// (`gatehouse_tracing_spans_dropped_total`), never waited for (default 2048).
    #[serde(default = "defaults::max_queue")]
    pub max_queue: usize,
}

/// `tracing.otlp`: an OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo, ...).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// `http://host:port/v1/traces`; a URL without a path gets `/v1/traces`.
    pub endpoint: String,
    /// How long one export request may take (default 5s).
    #[serde(default = "defaults::timeout")]
    pub timeout: Dur,
    /// Extra request headers (an API key for a hosted backend, a tenant ID).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Otlp {
    /// The URL spans are posted to: `endpoint`, with `/v1/traces` when it names no path.
    pub fn traces_url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        let after_scheme = e.split_once("://").map_or(e, |(_, rest)| rest);
        if after_scheme.contains('/') {
            self.endpoint.clone()
        } else {
            format!("{e}/v1/traces")
        }
    }
}

impl Tracing {
    /// What the export pipeline is built from: a change to any of it builds a new one on
    /// reload; `sampling_ratio` applies to the next request without one.
    pub fn pipeline_key(&self) -> (&Otlp, &str, usize) {
        (&self.otlp, &self.service_name, self.max_queue)
    }
}

/// The largest `max_queue` accepted: a queued span holds its attributes (~1 KiB).
pub const MAX_QUEUE_LIMIT: usize = 1 << 20;

mod defaults {
    use super::*;
    pub fn sampling_ratio() -> f64 {
        1.0
    }
    pub fn service_name() -> String {
        "gatehouse".into()
    }
    pub fn max_queue() -> usize {
        2048
    }
    pub fn timeout() -> Dur {
        Dur::secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(endpoint: &str) -> Otlp {
        Otlp {
            endpoint: endpoint.into(),
            timeout: defaults::timeout(),
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn a_bare_endpoint_gets_the_traces_path() {
        for (given, url) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
            (
                "http://c:4318/otlp/v1/traces",
                "http://c:4318/otlp/v1/traces",
            ),
        ] {
            assert_eq!(otlp(given).traces_url(), url, "{given}");
        }
    }
}
