//! The config file's shape: plain serde types with `deny_unknown_fields` and documented defaults.
//! Values here are as written; `validate` checks what serde cannot (references, ranges, syntax
//! of addresses and paths) before anything is built from them.

use crate::units::{ByteSize, Dur};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How long in-flight requests may take to finish on shutdown (default 30s).
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Dur,
    /// Where the JSON access log goes (default stdout).
    #[serde(default)]
    pub access_log: AccessLog,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLog {
    #[default]
    Stdout,
    Off,
}

#[derive(Clone, Debug, Deserialize)]
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
}

#[derive(Clone, Debug, Deserialize)]
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: ByteSize(64 << 10),
            max_headers: 100,
            max_body_bytes: ByteSize(10 << 20),
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub lb: LbPolicy,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port`; with `address` and the cluster's name this is the endpoint's identity.
    pub address: String,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    #[serde(default)]
    pub cluster: Option<String>,
    /// Name of a `path_template` parameter whose value names the cluster (`/v1/proxy/{service}`).
    #[serde(default)]
    pub cluster_from_path: Option<String>,
    /// Remove the matched prefix (or the template's matched part) before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// `/users/{id}`; a last segment `{*rest}` matches the rest of the path.
    pub path_template: Option<String>,
    /// `api.example.com` or `*.example.com`.
    pub host: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name to exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

mod defaults {
    use crate::units::Dur;
    pub fn weight() -> u32 {
        1
    }
    pub fn drain_timeout() -> Dur {
        Dur::secs(30)
    }
}
