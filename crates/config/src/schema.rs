//! The config file's shape: plain serde types with `deny_unknown_fields` and documented defaults.
//! Values here are as written; `validate` checks what serde cannot (references, ranges, syntax
//! of addresses and paths) before anything is built from them.

use crate::units::{ByteSize, Dur, Percent, Window};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway accepts connections (at least one, unless `services:` gives the
    /// default).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The shorthand for the smallest setups: `{product: [http://localhost:9001, ...]}` is a
    /// cluster per service and the route `/v1/proxy/{service}/...` (see `docs/config.md`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How long in-flight requests may take to finish on shutdown (default 30s).
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Dur,
    /// Where the JSON access log goes (default stdout), which lines and which fields.
    #[serde(default)]
    #[schemars(with = "crate::access_log::AccessLogSchema")]
    pub access_log: AccessLog,
    #[serde(default)]
    pub consumers: Vec<crate::traffic::Consumer>,
    #[serde(default)]
    pub rate_limits: Vec<crate::traffic::RateLimit>,
    #[serde(default)]
    pub redis: Option<crate::traffic::Redis>,
    #[serde(default)]
    pub jwt_issuers: Vec<crate::traffic::JwtIssuer>,
    /// How the authenticated consumer reaches backends, and which client headers are removed.
    #[serde(default)]
    pub identity: crate::traffic::IdentityHeaders,
    /// The response cache's shared settings (the memory budget).
    #[serde(default)]
    pub cache: crate::cache::CacheSettings,
    /// OpenTelemetry tracing over OTLP (absent: off).
    #[serde(default)]
    pub tracing: Option<crate::telemetry::Tracing>,
    /// The DNS servers that `endpoints_from: {dns: ...}` asks (absent: the system's resolver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<crate::discovery::DnsSettings>,
    /// The etcd cluster that `endpoints_from: {etcd: ...}` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::discovery::EtcdSettings>,
    /// Values taken from the environment or from `*_file` keys, so that `GET /config` and
    /// messages can show where they came from instead of what they are.
    #[serde(skip)]
    #[schemars(skip)]
    pub secrets: Vec<crate::interpolate::Secret>,
}

impl Config {
    /// Makes relative file names absolute against `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let fix = |p: &mut Option<String>| {
            if let Some(s) = p {
                let path = std::path::Path::new(s.as_str());
                if path.is_relative() && !dir.as_os_str().is_empty() {
                    *s = dir.join(path).display().to_string();
                }
            }
        };
        for l in &mut self.listeners {
            for f in l.tls.iter_mut().flat_map(|t| t.files_mut()) {
                let mut o = Some(std::mem::take(f));
                fix(&mut o);
                *f = o.unwrap_or_default();
            }
        }
        for c in &mut self.clusters {
            for f in c.tls.iter_mut().flat_map(|t| t.files_mut()) {
                let mut o = Some(std::mem::take(f));
                fix(&mut o);
                *f = o.unwrap_or_default();
            }
        }
        fix(&mut self.access_log.path);
        for j in &mut self.jwt_issuers {
            fix(&mut j.key_file);
            fix(&mut j.keys_file);
            fix(&mut j.secret_file);
        }
        if let Some(r) = &mut self.redis {
            fix(&mut r.url_file);
        }
        if let Some(a) = &mut self.admin {
            fix(&mut a.token_file);
        }
    }
}

pub use crate::access_log::{AccessLog, AccessOutput};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `IP:port`; port 0 picks a free port (tests).
    pub address: String,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-*` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// How request paths are made canonical before routing.
    #[serde(default)]
    pub path_normalization: crate::edge::PathNormalization,
    /// What request header names containing `_` do (default `drop`).
    #[serde(default)]
    pub headers_with_underscores: crate::edge::UnderscoreHeaders,
    /// Every connection starts with a PROXY protocol v1 or v2 header (from an L4 balancer),
    /// whose source address is then the connection's peer. Default false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// HTTPS on this listener (`docs/tls.md`); absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::ListenerTls>,
    /// A plain-HTTP listener answers every request with a 308 to the same host and path over
    /// `https` (default false).
    #[serde(default)]
    pub redirect_https: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers) accepted; larger gets 431 (default 64KiB).
    pub max_header_bytes: ByteSize,
    /// Most request headers accepted; more gets 431 (default 100).
    pub max_headers: usize,
    /// Largest request body accepted; larger gets 413 (default 10MiB).
    pub max_body_bytes: ByteSize,
    /// Time a client has to send a complete request head (default 10s).
    pub header_read_timeout: Dur,
    /// An idle keep-alive connection is closed after this (default 60s).
    pub idle_timeout: Dur,
    /// Open connections allowed at once; more are accepted and closed at once (default 10000).
    pub max_connections: usize,
    /// A request body that sends no bytes for this long is answered 408 and never charged to
    /// the backend (default 30s).
    pub body_read_timeout: Dur,
    /// Request bodies up to this size are read whole before an endpoint is picked, so a slow
    /// client never holds an upstream connection while it sends one (default 64KiB; 0 = off).
    pub request_buffering: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: ByteSize(64 << 10),
            max_headers: 100,
            max_body_bytes: ByteSize(10 << 20),
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_connections: 10_000,
            body_read_timeout: Dur::secs(30),
            request_buffering: ByteSize(64 << 10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
    /// An environment variable holding the bearer token the admin API requires.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `auto`: generate a random token at start, write it to `token_file` (readable only by
    /// this user) and print where it is. Instead of `token_env`.
    #[serde(default)]
    pub token: Option<AdminToken>,
    /// Without `token: auto`: a file holding the token (a Docker or Kubernetes secret). With
    /// it: where the generated token is written (default
    /// `$XDG_RUNTIME_DIR/gatehouse/admin-token`, else `$HOME/.gatehouse/admin-token`).
    #[serde(default)]
    pub token_file: Option<String>,
    /// The token read from `token_file` when the config was loaded.
    #[serde(skip)]
    #[schemars(skip)]
    pub token_value: Option<String>,
    /// Host names (besides `localhost` and IP literals) that requests to the admin listener may
    /// use in `Host`: anything else is refused, which stops DNS rebinding.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminToken {
    Auto,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn (weights ignored except for slow start and DEGRADED).
    #[default]
    RoundRobin,
    /// NGINX's smooth weighted round robin over effective weights.
    WeightedRoundRobin,
    /// Fewest requests in flight: power of two choices, normalised by weight.
    LeastRequest,
    /// Power of two choices over peak-EWMA latency × (in flight + 1) (Linkerd's algorithm).
    P2cEwma,
    /// Consistent hashing on a ring with virtual nodes, keyed by `hash_on`.
    RingHash,
    /// Maglev consistent hashing (a 65537-entry lookup table), keyed by `hash_on`.
    Maglev,
    /// Uniformly at random, weighted.
    Random,
}

impl LbPolicy {
    pub fn is_hashing(self) -> bool {
        matches!(self, LbPolicy::RingHash | LbPolicy::Maglev)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Headers set, added or removed on every request to this cluster's endpoints.
    #[serde(default)]
    pub request_headers: crate::reply::HeaderRules,
    /// Headers set, added or removed on every response from this cluster.
    #[serde(default)]
    pub response_headers: crate::reply::HeaderRules,
    #[serde(default)]
    pub lb: LbPolicy,
    /// What `ring_hash` and `maglev` hash: `header:NAME`, `cookie:NAME`, `client_ip` or `path`.
    /// A request without that key is balanced round robin.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// The endpoints, listed; or leave this out and say where to find them in `endpoints_from`.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Instead of `endpoints`: endpoints from DNS (`{dns: {name, port, type, refresh}}`),
    /// applied as a reload would, so unchanged endpoints keep their state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints_from: Option<crate::discovery::EndpointsFrom>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// A new or recovered endpoint's weight ramps from 10 % to 100 % over this (default 30s;
    /// `0s` turns slow start off).
    #[serde(default = "defaults::slow_start")]
    pub slow_start: Dur,
    #[serde(default)]
    pub retries: Retries,
    /// What the cluster takes at most at once (Envoy's circuit-breaker thresholds).
    #[serde(default)]
    pub limits: ClusterLimits,
    /// TLS to the endpoints (`docs/tls.md`); absent: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::UpstreamTls>,
}

/// `clusters[].limits`: beyond them requests get 503 `cluster_overloaded` at once instead of
/// piling onto a slow backend. Defaults are Envoy's (1024) where it has them.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterLimits {
    /// Upstream connections open at once, across the cluster's endpoints.
    pub max_connections: usize,
    /// Requests waiting for a connection (when `max_connections` are open); one more is 503.
    pub max_pending: usize,
    /// Requests in flight to the cluster (until their response body ends).
    pub max_requests: usize,
    /// Retries in flight at once; past it a retry is not made (the retry budget still applies).
    pub max_retries: usize,
    /// Idle keep-alive connections kept per endpoint. As many as may be open by default: a cap
    /// below the concurrency a cluster sees makes every burst close connections and dial them
    /// again (the idle timeout still closes the ones no longer needed).
    pub max_idle_per_endpoint: usize,
}

impl Default for ClusterLimits {
    fn default() -> Self {
        ClusterLimits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 128,
            max_idle_per_endpoint: 1024,
        }
    }
}

/// Active health checking. HTTP when `path` is set, else a TCP connect.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// `false` turns active checks off (endpoints are then always HEALTHY to them).
    pub enabled: bool,
    /// HTTP GET this path; unset means a TCP connect check.
    pub path: Option<String>,
    /// Statuses that pass (default: any 2xx). Entries are codes or ranges like `200-399`.
    pub expected_statuses: Vec<String>,
    pub interval: Dur,
    pub timeout: Dur,
    /// Each interval is stretched by up to this share at random, so probes don't align.
    pub jitter: Percent,
    /// Passing probes in a row that make a DOWN endpoint HEALTHY again.
    pub healthy_threshold: u32,
    /// Failing probes in a row that make an endpoint DOWN.
    pub unhealthy_threshold: u32,
    /// A passing probe slower than this marks the endpoint DEGRADED.
    pub degraded_latency: Option<Dur>,
    /// A response header that marks the endpoint DEGRADED when present with value `degraded`.
    pub degraded_header: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: None,
            expected_statuses: Vec::new(),
            interval: Dur::secs(5),
            timeout: Dur::secs(1),
            jitter: Percent(0.1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            degraded_latency: None,
            degraded_header: Some("x-health".into()),
        }
    }
}

/// The per-endpoint circuit breaker (also the outlier detector: an OPEN breaker ejects).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    pub enabled: bool,
    /// Failures in a row that open the breaker (0 = rule off).
    pub consecutive_failures: u32,
    /// Share of failed calls in the window that opens it (with `minimum_calls`).
    pub failure_rate: Option<Percent>,
    /// A call slower than this counts as slow.
    pub slow_call_duration: Dur,
    /// Share of slow calls in the window that opens it (with `minimum_calls`).
    pub slow_call_rate: Option<Percent>,
    pub window: Window,
    pub minimum_calls: u32,
    pub open_duration: Dur,
    pub max_open_duration: Dur,
    pub half_open_calls: u32,
    /// A half-open probe that has not finished after this counts as failed.
    pub probe_timeout: Dur,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: Some(Percent(0.5)),
            slow_call_duration: Dur::secs(2),
            // Every recent call slow: a frozen or hopelessly overloaded endpoint. With slow
            // calls counted when they cross the threshold, this ejects a hung backend in about
            // `slow_call_duration` plus the time it takes to see `window` tries.
            slow_call_rate: Some(Percent(1.0)),
            window: Window::Calls(20),
            minimum_calls: 10,
            open_duration: Dur::secs(10),
            max_open_duration: Dur::secs(300),
            half_open_calls: 1,
            probe_timeout: Dur::secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// At most this share of the cluster is ejected (breaker OPEN) at once; at least one may be.
    pub max_ejection_percent: Percent,
    /// When fewer than this share pass active health checks, active health is ignored.
    pub panic_threshold: Percent,
    /// A DEGRADED endpoint's weight is multiplied by this.
    pub degraded_weight: Percent,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            max_ejection_percent: Percent(0.5),
            panic_threshold: Percent(0.5),
            degraded_weight: Percent(0.5),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Retries after the first try (0 turns retries off).
    pub attempts: u32,
    /// Each try's own timeout, within the request timeout.
    pub per_try_timeout: Option<Dur>,
    /// `connect_failure`, `reset`, `timeout`, or status codes.
    pub on: Vec<String>,
    /// Retries allowed as a share of requests over the last 10 s.
    pub budget: Percent,
    /// Retries per second always allowed, however little traffic there is.
    pub min_retries_per_second: u32,
    /// Base of the jittered exponential backoff between tries.
    pub backoff: Dur,
    /// Request bodies up to this size are buffered so that they can be sent again.
    pub max_body_bytes: ByteSize,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            per_try_timeout: None,
            on: vec![
                "connect_failure".into(),
                "reset".into(),
                "502".into(),
                "503".into(),
                "504".into(),
            ],
            budget: Percent(0.2),
            min_retries_per_second: 3,
            backoff: Dur::millis(25),
            max_body_bytes: ByteSize(64 << 10),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port`; with `address` and the cluster's name this is the endpoint's identity.
    pub address: String,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect to an endpoint (default 5s).
    pub connect: Dur,
    /// From sending the request until the response head arrives (default 30s).
    pub request: Dur,
    /// A pooled upstream connection idle this long is closed (default 90s).
    pub idle: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Dur::secs(5),
            request: Dur::secs(30),
            idle: Dur::secs(90),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    #[serde(default)]
    pub cluster: Option<String>,
    /// A `path_template` parameter whose value names the cluster (`/v1/proxy/{service}`), and
    /// the clusters it may name.
    #[serde(default)]
    pub cluster_from_path: Option<ClusterFromPath>,
    /// Instead of `cluster`: a weighted split, `[{name: v1, weight: 95}, {name: v2, weight: 5}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<crate::forward::WeightedCluster>,
    /// With `clusters`: keep one client on one side (`header:NAME`, `cookie:NAME`, `client_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// A copy of the request to another cluster, fire and forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<crate::forward::Mirror>,
    /// The path the backend gets (after normalization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<crate::forward::Rewrite>,
    /// The `Host` the backend gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<crate::forward::HostRewrite>,
    /// Instead of a cluster: answer with a redirect.
    #[serde(default)]
    pub redirect: Option<crate::reply::Redirect>,
    /// Instead of a cluster: answer with this status and body.
    #[serde(default)]
    pub direct_response: Option<crate::reply::DirectResponse>,
    /// Overrides of the cluster's request timeout and the listener's body limit, for this route.
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    #[serde(default)]
    pub limits: RouteLimits,
    /// Headers set, added or removed on the request to the backend (after the cluster's).
    #[serde(default)]
    pub request_headers: crate::reply::HeaderRules,
    /// Headers set, added or removed on the response to the client (after the cluster's).
    #[serde(default)]
    pub response_headers: crate::reply::HeaderRules,
    /// Remove the matched prefix (or the template's matched part) before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Allow retries of non-idempotent methods (POST, PATCH) on this route.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Run in order on the request (auth, rate limits).
    #[serde(default)]
    pub filters: Vec<crate::traffic::Filter>,
}

/// `timeouts: {request}` on a route: instead of the cluster's `timeouts.request`.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default)]
    pub request: Option<Dur>,
    /// Longest silence between body bytes, either way (the request body from the client, the
    /// response body from the backend), instead of the listener's `body_read_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Dur>,
}

/// `limits: {max_body_bytes}` on a route: instead of the listener's `limits.max_body_bytes`.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
}

/// `cluster_from_path: {param: service, allow: [orders, users]}`. Only the listed clusters
/// can be reached through the route (any other name is 404): a cluster behind an authenticated
/// route must not be reachable through an open one by naming it in the path.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterFromPath {
    pub param: String,
    pub allow: Vec<String>,
}

impl<'de> Deserialize<'de> for ClusterFromPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            param: String,
            allow: Vec<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClusterFromPath;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{param: NAME, allow: [CLUSTER, ...]}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "cluster_from_path must list the clusters it may reach: {{param: {v}, allow: [CLUSTER, ...]}}"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let s = Spec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ClusterFromPath {
                    param: s.param,
                    allow: s.allow,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// `/users/{id}`; a last segment `{*rest}` matches the rest of the path.
    pub path_template: Option<String>,
    /// A regular expression the whole path must match (anchored; `regex` crate syntax).
    pub path_regex: Option<String>,
    /// `api.example.com` or `*.example.com`.
    pub host: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name to a value (exact) or `{exact | prefix | regex | present, invert}`.
    #[serde(default)]
    pub headers: BTreeMap<String, crate::matching::ValueMatch>,
    /// Query parameter name to a condition on its (percent-decoded) value, as for headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, crate::matching::ValueMatch>,
    /// The client's address (after `trusted_proxies`) is in one of these ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ip: Vec<String>,
    /// `true`: only gRPC requests (`content-type: application/grpc`, `+proto`, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
    /// Match the path's literal parts without regard to ASCII case (for backends that serve
    /// `/ADMIN` as `/admin`). Default false.
    #[serde(default)]
    pub ignore_case: bool,
    /// The connection's verified client certificate (a TLS listener with `client_auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<ClientCertMatch>,
}

/// `match.client_cert`: every condition given must hold.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ClientCertMatch {
    /// `true`: the connection has a verified client certificate; `false`: it has none.
    #[serde(default)]
    pub present: Option<bool>,
    /// The certificate's subject, as the access log writes it (`CN=alice, O=Example`).
    #[serde(default)]
    pub subject: Option<String>,
    /// One of the certificate's subjectAltNames (DNS name, URI or e-mail address).
    #[serde(default)]
    pub san: Option<String>,
}

impl ClientCertMatch {
    /// Whether a connection's certificate (`subject`, `sans`), or its absence, matches.
    pub fn matches(&self, cert: Option<(&str, &[String])>) -> bool {
        match cert {
            None => self.present != Some(true) && self.subject.is_none() && self.san.is_none(),
            Some((subject, sans)) => {
                self.present != Some(false)
                    && self.subject.as_deref().is_none_or(|s| s == subject)
                    && self
                        .san
                        .as_deref()
                        .is_none_or(|s| sans.iter().any(|x| x == s))
            }
        }
    }
}

mod defaults {
    use crate::units::Dur;
    pub fn weight() -> u32 {
        1
    }
    pub fn drain_timeout() -> Dur {
        Dur::secs(30)
    }
    pub fn slow_start() -> Dur {
        Dur::secs(30)
    }
}
