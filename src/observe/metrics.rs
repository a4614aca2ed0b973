//! Prometheus metrics: every name in this one file (docs/metrics.md lists them). Labels are
//! bounded — route, cluster, endpoint, status class, policy, outcome — never client or path.
//! Hot-path handles (per route, per endpoint) are resolved when a snapshot is built; state
//! gauges are read from the runtime at scrape time; transition counters are fed by the event bus.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<Labels, Counter>,
    pub request_duration: HistogramFamily,
    pub upstream_requests: Family<Labels, Counter>,
    pub upstream_duration: HistogramFamily,
    pub in_flight: Gauge,
    pub connections: Gauge,
    /// Idle HTTP/1.1 keep-alive connections parked outside hyper (no buffers held).
    pub connections_parked: Gauge,
    pub endpoint_health: Family<Labels, Gauge>,
    pub endpoint_breaker: Family<Labels, Gauge>,
    pub endpoint_in_flight: Family<Labels, Gauge>,
    pub breaker_transitions: Family<Labels, Counter>,
    pub health_transitions: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub retry_budget_exhausted: Family<Labels, Counter>,
    pub cluster_overflow: Family<Labels, Counter>,
    pub rate_limit_decisions: Family<Labels, Counter>,
    pub mirror_requests: Family<Labels, Counter>,
    pub auth_failures: Family<Labels, Counter>,
    pub requests_rejected: Family<Labels, Counter>,
    /// The handles requests use: `rejected.count(reason)`.
    pub rejected: Rejections,
    pub connections_rejected: Family<Labels, Counter>,
    pub admin_auth_failures: Counter,
    pub reloads: Family<Labels, Counter>,
    pub generation: Gauge,
    pub access_log_dropped: Counter,
    /// Event and operational log lines dropped because their writers fell behind.
    pub log_dropped: Family<Labels, Counter>,
    /// `notAfter` of each listener certificate, by listener and name.
    pub tls_certificate_expiry: Family<Labels, Gauge>,
    /// TLS handshakes, by listener and result (`ok` or why it failed).
    pub tls_handshakes: Family<Labels, Counter>,
    /// ACME certificate orders, by result (`issued`, `failed`).
    pub acme_orders: Family<Labels, Counter>,
    /// Cache lookups, by route and result (`hit`, `miss`, `stale`, `revalidated`, `bypass`).
    pub cache_lookups: Family<Labels, Counter>,
    /// Responses stored, by route.
    pub cache_stores: Family<Labels, Counter>,
    /// Bytes and entries held by the memory store.
    pub cache_memory_bytes: Gauge,
    pub cache_memory_entries: Gauge,
    /// Memory entries dropped, by cause (`size`: the budget; `expired`).
    pub cache_evictions: Family<Labels, Counter>,
    /// Redis cache operations that failed or timed out, by operation.
    pub cache_redis_errors: Family<Labels, Counter>,
    /// OpenTelemetry spans: dropped (by reason: `queue_full`, `export_failed`, `shutdown`),
    /// exported, and export requests that failed.
    pub tracing_spans_dropped: Family<Labels, Counter>,
    pub tracing_spans_exported: Counter,
    pub tracing_export_failures: Counter,
    /// Resolutions of `endpoints_from` sources, by cluster, source and outcome (`ok`,
    /// `unchanged`, `failed`, `empty`).
    pub discovery_resolutions: Family<Labels, Counter>,
    /// Endpoints the last good resolution gave, by cluster.
    pub discovery_endpoints: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("gatehouse");
        let hist = || HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        let requests_rejected = Family::default();
        let m = Metrics {
            rejected: Rejections::new(&requests_rejected),
            requests: Family::default(),
            request_duration: hist(),
            upstream_requests: Family::default(),
            upstream_duration: hist(),
            in_flight: Gauge::default(),
            connections: Gauge::default(),
            connections_parked: Gauge::default(),
            endpoint_health: Family::default(),
            endpoint_breaker: Family::default(),
            endpoint_in_flight: Family::default(),
            breaker_transitions: Family::default(),
            health_transitions: Family::default(),
            retries: Family::default(),
            retry_budget_exhausted: Family::default(),
            cluster_overflow: Family::default(),
            rate_limit_decisions: Family::default(),
            mirror_requests: Family::default(),
            auth_failures: Family::default(),
            requests_rejected,
            connections_rejected: Family::default(),
            admin_auth_failures: Counter::default(),
            reloads: Family::default(),
            generation: Gauge::default(),
            access_log_dropped: Counter::default(),
            log_dropped: Family::default(),
            tls_certificate_expiry: Family::default(),
            tls_handshakes: Family::default(),
            acme_orders: Family::default(),
            cache_lookups: Family::default(),
            cache_stores: Family::default(),
            cache_memory_bytes: Gauge::default(),
            cache_memory_entries: Gauge::default(),
            cache_evictions: Family::default(),
            cache_redis_errors: Family::default(),
            tracing_spans_dropped: Family::default(),
            tracing_spans_exported: Counter::default(),
            tracing_export_failures: Counter::default(),
            discovery_resolutions: Family::default(),
            discovery_endpoints: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "requests",
            "Downstream requests answered, by route and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request to response head, by route",
            m.request_duration.clone(),
        );
        r.register(
            "upstream_requests",
            "Tries at endpoints (counted once the endpoint is picked), by cluster, endpoint and outcome (success, failure, cancelled: neither an answer nor a failure charged to the endpoint)",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time from sending a try to its response head, by cluster",
            m.upstream_duration.clone(),
        );
        r.register(
            "cache_lookups",
            "Response cache lookups, by route and result",
            m.cache_lookups.clone(),
        );
        r.register(
            "cache_stores",
            "Responses stored in the cache, by route",
            m.cache_stores.clone(),
        );
        r.register(
            "cache_memory_bytes",
            "Bytes of entries in the memory cache",
            m.cache_memory_bytes.clone(),
        );
        r.register(
            "cache_memory_entries",
            "Keys in the memory cache",
            m.cache_memory_entries.clone(),
        );
        r.register(
            "cache_evictions",
            "Memory cache entries dropped, by cause (size, expired)",
            m.cache_evictions.clone(),
        );
        r.register(
            "cache_redis_errors",
            "Redis cache operations that failed or timed out, by operation",
            m.cache_redis_errors.clone(),
        );
        r.register(
            "requests_in_flight",
            "Downstream requests in progress (until the response body ends)",
            m.in_flight.clone(),
        );
        r.register(
            "downstream_connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "downstream_connections_parked",
            "Idle keep-alive client connections parked with no buffers (part of downstream_connections)",
            m.connections_parked.clone(),
        );
        r.register(
            "endpoint_health",
            "Endpoint health: 0 HEALTHY, 1 DEGRADED, 2 DOWN",
            m.endpoint_health.clone(),
        );
        r.register(
            "endpoint_breaker_state",
            "Endpoint circuit breaker: 0 CLOSED, 1 OPEN, 2 HALF_OPEN",
            m.endpoint_breaker.clone(),
        );
        r.register(
            "endpoint_requests_in_flight",
            "Requests in flight per endpoint",
            m.endpoint_in_flight.clone(),
        );
        r.register(
            "circuit_breaker_transitions",
            "Circuit breaker transitions, by cluster, endpoint and new state",
            m.breaker_transitions.clone(),
        );
        r.register(
            "health_transitions",
            "Active health state changes, by cluster, endpoint and new state",
            m.health_transitions.clone(),
        );
        r.register("retries", "Retries sent, by cluster", m.retries.clone());
        r.register(
            "retry_budget_exhausted",
            "Retries refused by the retry budget, by cluster",
            m.retry_budget_exhausted.clone(),
        );
        r.register(
            "cluster_overflow",
            "Requests or retries refused at a cluster limit, by cluster and limit",
            m.cluster_overflow.clone(),
        );
        r.register(
            "rate_limit_decisions",
            "Rate-limit decisions, by route, policy and decision",
            m.rate_limit_decisions.clone(),
        );
        r.register(
            "mirror_requests",
            "Copies of requests for routes' mirrors, by route, cluster and outcome (sent; dropped: max_in_flight reached; skipped_body: body over max_body_bytes or streamed)",
            m.mirror_requests.clone(),
        );
        r.register(
            "requests_rejected",
            "Requests refused before routing (path, host, framing, headers), by reason",
            m.requests_rejected.clone(),
        );
        r.register(
            "downstream_connections_rejected",
            "Connections closed at accept because the listener was at max_connections, by listener",
            m.connections_rejected.clone(),
        );
        r.register(
            "admin_auth_failures",
            "Admin API requests refused for a missing or wrong token",
            m.admin_auth_failures.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused by authentication, by route and reason",
            m.auth_failures.clone(),
        );
        // Both results exist from the start, at 0: `increase()` only sees a series' first
        // failure when the series was there before it (deploy/prometheus/alerts.yaml).
        for result in ["success", "failure"] {
            drop(
                m.reloads
                    .get_or_create(&vec![("result", result.to_string())]),
            );
        }
        r.register(
            "config_reloads",
            "Config reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "config_generation",
            "Generation of the running config snapshot",
            m.generation.clone(),
        );
        r.register(
            "log_dropped_lines",
            "Event and operational log lines dropped because their writer fell behind, by log",
            m.log_dropped.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of each listener certificate, by listener and name",
            m.tls_certificate_expiry.clone(),
        );
        r.register(
            "discovery_resolutions",
            "Resolutions of clusters' endpoints_from sources, by cluster, source and outcome (ok, unchanged, failed, empty)",
            m.discovery_resolutions.clone(),
        );
        r.register(
            "discovery_endpoints",
            "Endpoints of a cluster from its endpoints_from source's last good answer",
            m.discovery_endpoints.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes on listeners, by listener and result (ok or the failure reason)",
            m.tls_handshakes.clone(),
        );
        r.register(
            "acme_orders",
            "ACME certificate orders (first certificates and renewals), by result (issued, failed)",
            m.acme_orders.clone(),
        );
        r.register(
            "access_log_dropped_lines",
            "Access-log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        r.register(
            "tracing_spans_dropped",
            "Spans dropped instead of exported, by reason (queue_full, export_failed, shutdown)",
            m.tracing_spans_dropped.clone(),
        );
        r.register(
            "tracing_spans_exported",
            "Spans accepted by the OTLP receiver",
            m.tracing_spans_exported.clone(),
        );
        r.register(
            "tracing_export_failures",
            "OTLP export requests that failed (their spans are counted as dropped)",
            m.tracing_export_failures.clone(),
        );
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        r.register("build_info", "Build information", info);
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), what `promtool check metrics` and most
    /// scrapers expect: counters' HELP/TYPE name the `_total` series, no `# EOF`.
    pub fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }
}

/// Rewrites OpenMetrics text as classic Prometheus text.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 256);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The status class label of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Coarse latency buckets (100 µs × 1.5^i) kept per route for the live p50/p99 of the
/// dashboard; Prometheus gets the proper histogram.
pub struct Latency {
    buckets: [std::sync::atomic::AtomicU64; 40],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

/// The buckets' upper bounds, computed once: an observation is a binary search and one add
/// (it runs for every request and every try).
static BOUNDS: std::sync::LazyLock<[f64; 40]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|i| 0.0001 * 1.5f64.powi(i as i32)));

impl Latency {
    fn bound(i: usize) -> f64 {
        BOUNDS[i]
    }

    pub fn observe(&self, seconds: f64) {
        let i = BOUNDS.partition_point(|b| *b < seconds).min(39);
        self.buckets[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; 40] {
        std::array::from_fn(|i| self.buckets[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The `q` quantile (upper bucket bound, seconds) of the counts `now - before`.
    pub fn quantile(now: &[u64; 40], before: &[u64; 40], q: f64) -> Option<f64> {
        let d: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total: u64 = d.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, n) in d.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(Self::bound(i));
            }
        }
        None
    }
}

/// Handles for one route, resolved when the snapshot is built.
/// Every value a bounded label can take, so series of a removed identity can be removed.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const BREAKER_TO: [&str; 3] = ["open", "half_open", "closed"];
const HEALTH_TO: [&str; 3] = ["healthy", "degraded", "down"];
const OUTCOMES: [&str; 3] = ["success", "failure", "cancelled"];
const DECISIONS: [&str; 2] = ["allowed", "limited"];
/// Every reason an auth filter refuses with (`filter::api_key`, `filter::jwt`).
pub const AUTH_REASONS: [&str; 12] = [
    "missing_api_key",
    "ambiguous_credentials",
    "invalid_api_key",
    "missing_token",
    "invalid_token",
    "algorithm_not_allowed",
    "no_matching_key",
    "token_expired",
    "token_not_yet_valid",
    "invalid_issuer",
    "invalid_audience",
    "invalid_signature",
];

/// Every reason a request is refused before routing (`gatehouse_requests_rejected_total`).
pub const REJECTION_REASONS: [&str; 8] = [
    "invalid_path",
    "invalid_host",
    "invalid_header",
    "bad_framing",
    "unsupported_transfer_coding",
    "proxy_protocol",
    "malformed_request",
    "header_too_large",
];

/// The rejection counters, one per reason, resolved once: refusals come at a rate a client
/// chooses, so counting one must not allocate or look a series up.
pub struct Rejections {
    counters: Vec<(&'static str, Counter)>,
}

impl Rejections {
    fn new(family: &Family<Labels, Counter>) -> Self {
        Rejections {
            counters: REJECTION_REASONS
                .iter()
                .map(|r| (*r, family.get_or_create(&labels(&[("reason", r)])).clone()))
                .collect(),
        }
    }

    pub fn count(&self, reason: &str) {
        if let Some((_, c)) = self.counters.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }
}

/// One route's auth-failure counters: each (route, reason) series is looked up once, on its
/// first failure, then counted without allocating (failures come at a rate attackers choose).
pub struct AuthCounters {
    route: String,
    family: Family<Labels, Counter>,
    slots: [std::sync::OnceLock<Counter>; AUTH_REASONS.len()],
}

impl AuthCounters {
    pub fn new(m: &Metrics, route: &str) -> Self {
        AuthCounters {
            route: route.to_string(),
            family: m.auth_failures.clone(),
            slots: Default::default(),
        }
    }

    pub fn count(&self, reason: &str) {
        if let Some(i) = AUTH_REASONS.iter().position(|r| *r == reason) {
            self.slots[i]
                .get_or_init(|| {
                    self.family
                        .get_or_create(&labels(&[("route", &self.route), ("reason", reason)]))
                        .clone()
                })
                .inc();
        }
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    /// Removes every series of one endpoint.
    pub fn forget_endpoint(&self, cluster: &str, endpoint: &str) {
        let base = [("cluster", cluster), ("endpoint", endpoint)];
        for o in OUTCOMES {
            self.upstream_requests
                .remove(&labels(&[base[0], base[1], ("outcome", o)]));
        }
        for fam in [
            &self.endpoint_health,
            &self.endpoint_breaker,
            &self.endpoint_in_flight,
        ] {
            fam.remove(&labels(&base));
        }
        for to in BREAKER_TO {
            self.breaker_transitions
                .remove(&labels(&[base[0], base[1], ("to", to)]));
        }
        for to in HEALTH_TO {
            self.health_transitions
                .remove(&labels(&[base[0], base[1], ("to", to)]));
        }
    }

    /// Removes every series of one cluster (its endpoints are forgotten one by one).
    pub fn forget_cluster(&self, cluster: &str) {
        let l = labels(&[("cluster", cluster)]);
        self.upstream_duration.remove(&l);
        self.retries.remove(&l);
        self.retry_budget_exhausted.remove(&l);
        for limit in ["requests", "connections", "retries"] {
            self.cluster_overflow
                .remove(&labels(&[("cluster", cluster), ("limit", limit)]));
        }
    }

    /// Removes every series of one route.
    pub fn forget_route(&self, route: &str) {
        for class in STATUS_CLASSES {
            self.requests
                .remove(&labels(&[("route", route), ("status_class", class)]));
        }
        self.request_duration.remove(&labels(&[("route", route)]));
        for reason in AUTH_REASONS {
            self.auth_failures
                .remove(&labels(&[("route", route), ("reason", reason)]));
        }
    }

    /// Removes the decision series of one rate-limit filter.
    pub fn forget_limit(&self, route: &str, policy: &str) {
        for d in DECISIONS {
            self.rate_limit_decisions.remove(&labels(&[
                ("route", route),
                ("policy", policy),
                ("decision", d),
            ]));
        }
    }
}

#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    pub duration: Histogram,
    pub latency: std::sync::Arc<Latency>,
}

impl RouteMetrics {
    pub fn new(m: &Metrics, route: &str) -> Self {
        let c = |class: &str| {
            m.requests
                .get_or_create(&vec![
                    ("route", route.to_string()),
                    ("status_class", class.to_string()),
                ])
                .clone()
        };
        RouteMetrics {
            by_class: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
            duration: m
                .request_duration
                .get_or_create(&vec![("route", route.to_string())])
                .clone(),
            latency: std::sync::Arc::default(),
        }
    }

    /// (answered, 5xx) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.by_class.iter().map(Counter::get).sum(),
            self.by_class[4].get(),
        )
    }

    pub fn answered(&self, status: u16, seconds: f64) {
        let i = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_class[i].inc();
        self.duration.observe(seconds);
        self.latency.observe(seconds);
    }
}

/// Handles for one endpoint's tries, resolved when the snapshot is built.
#[derive(Clone)]
pub struct EndpointMetrics {
    pub success: Counter,
    pub failure: Counter,
    /// Tries that ended with neither an answer nor a failure charged to the endpoint (the
    /// client left or its upload failed, the try was moved off an endpoint ejected meanwhile,
    /// no connection was free): counted so the outcomes add up to the tries. A try the breaker
    /// had already marked slow is among them when it then ended so.
    pub cancelled: Counter,
    pub duration: Histogram,
}

impl EndpointMetrics {
    pub fn new(m: &Metrics, cluster: &str, endpoint: &str) -> Self {
        let c = |outcome: &str| {
            m.upstream_requests
                .get_or_create(&vec![
                    ("cluster", cluster.to_string()),
                    ("endpoint", endpoint.to_string()),
                    ("outcome", outcome.to_string()),
                ])
                .clone()
        };
        EndpointMetrics {
            success: c("success"),
            failure: c("failure"),
            cancelled: c("cancelled"),
            duration: m
                .upstream_duration
                .get_or_create(&vec![("cluster", cluster.to_string())])
                .clone(),
        }
    }
}

/// Feeds transition counters from the event bus (the one place transitions are announced).
pub fn count_events(events: &crate::observe::events::Events, m: std::sync::Arc<Metrics>) {
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        loop {
            let e = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let endpoint = || vec![("cluster", s("cluster")), ("endpoint", s("endpoint"))];
            match e.get("event").and_then(|v| v.as_str()).unwrap_or("") {
                "circuit_opened" | "circuit_half_opened" | "circuit_closed" => {
                    let to = match s("event").as_str() {
                        "circuit_opened" => "open",
                        "circuit_half_opened" => "half_open",
                        _ => "closed",
                    };
                    let mut l = endpoint();
                    l.push(("to", to.to_string()));
                    m.breaker_transitions.get_or_create(&l).inc();
                }
                "health_changed" => {
                    let mut l = endpoint();
                    l.push(("to", s("to").to_ascii_lowercase()));
                    m.health_transitions.get_or_create(&l).inc();
                }
                "config_reloaded" => {
                    m.reloads
                        .get_or_create(&vec![("result", "success".to_string())])
                        .inc();
                }
                "config_reload_failed" => {
                    m.reloads
                        .get_or_create(&vec![("result", "failure".to_string())])
                        .inc();
                }
                _ => {}
            }
        }
    });
}
