//! Where a cluster's endpoints come from when the file does not list them:
//! `endpoints_from: {dns: {name, port, type, refresh}}` (A, AAAA or SRV records, re-resolved on
//! their TTL) or `endpoints_from: {etcd: {prefix}}` (keys under a prefix, watched), and the
//! top-level `dns: {servers}` and `etcd: {endpoints}` that say who answers. The gateway
//! turns each answer into the cluster's endpoint list and applies it as a reload would.

use crate::units::Dur;
use serde::{Deserialize, Serialize};

/// `clusters[].endpoints_from`: instead of `endpoints`, where to find them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFrom {
    /// Endpoints from DNS records, re-resolved when their TTL runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSource>,
    /// Endpoints registered in etcd under a key prefix, watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSource>,
}

/// `endpoints_from.etcd`: each key under `prefix` is an endpoint, the rest of the key its
/// address (`/services/shop/10.0.0.1:8080`); a value, if any, is JSON such as `{"weight": 2}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdSource {
    /// The key prefix, e.g. `/services/shop/`.
    pub prefix: String,
}

/// Top-level `etcd`: the etcd cluster that `endpoints_from: {etcd: ...}` reads.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSettings {
    /// Client URLs (`http://10.0.0.5:2379`), tried in order.
    pub endpoints: Vec<String>,
}

/// `endpoints_from.dns`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsSource {
    /// The name to resolve (`shop.service.internal`; for SRV, `_http._tcp.shop.internal`).
    pub name: String,
    /// The endpoints' port, for A and AAAA records (SRV records carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `A` (default), `AAAA` or `SRV` (ports and weights from the records).
    #[serde(default, rename = "type")]
    pub record: RecordType,
    /// The longest time between two resolutions (default 30s): an answer is used until its
    /// TTL or this, whichever is shorter, runs out. After a failure the next try comes after
    /// the shorter of this and 5s.
    #[serde(default = "default_refresh")]
    pub refresh: Dur,
    /// An answer with no records empties the cluster (its requests then get 503). By default
    /// it is treated as a failure: the last good endpoints stay.
    #[serde(default)]
    pub allow_empty: bool,
}

fn default_refresh() -> Dur {
    Dur::secs(30)
}

/// Which records a [`DnsSource`] asks for.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum RecordType {
    #[default]
    A,
    AAAA,
    SRV,
}

/// Top-level `dns`: the servers `endpoints_from: {dns: ...}` asks. Absent or empty: the
/// system's resolver (`/etc/resolv.conf`).
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// `IP` or `IP:port` (port 53 when left out), asked in this order.
    pub servers: Vec<String>,
}

impl DnsSettings {
    /// The servers as socket addresses; `Err` names the first that is not one.
    pub fn addresses(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.servers.iter().map(|s| parse_server(s)).collect()
    }
}

/// `10.0.0.2`, `10.0.0.2:5353`, `[::1]:53` or `::1`.
pub fn parse_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid DNS server {s:?}: expected IP or IP:port"))
}

/// Problems of one cluster's `endpoints_from` (field paths relative to the cluster);
/// `etcd_configured`: the top level has `etcd.endpoints`.
pub fn validate(from: &EndpointsFrom, etcd_configured: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(etcd) = &from.etcd {
        if from.dns.is_some() {
            out.push((
                "endpoints_from".into(),
                "one source: dns or etcd, not both".into(),
            ));
        }
        if etcd.prefix.is_empty() {
            out.push((
                "endpoints_from.etcd.prefix".into(),
                "must not be empty (it would take every key)".into(),
            ));
        }
        if !etcd_configured {
            out.push((
                "endpoints_from.etcd".into(),
                "needs the top-level etcd: {endpoints: [http://HOST:2379]}".into(),
            ));
        }
        return out;
    }
    let Some(dns) = &from.dns else {
        out.push((
            "endpoints_from".into(),
            "name a source: endpoints_from: {dns: {name, port}} or {etcd: {prefix}}".into(),
        ));
        return out;
    };
    let at = "endpoints_from.dns";
    if !valid_name(&dns.name) {
        out.push((
            format!("{at}.name"),
            format!(
                "invalid DNS name {:?}: letters, digits, '-', '_' and '.' in labels of 1 to 63",
                dns.name
            ),
        ));
    }
    match (dns.record, dns.port) {
        (RecordType::SRV, Some(_)) => out.push((
            format!("{at}.port"),
            "SRV records carry their own ports: leave port out".into(),
        )),
        (RecordType::A | RecordType::AAAA, None) => out.push((
            format!("{at}.port"),
            "A and AAAA records carry no port: say which (port: 8080)".into(),
        )),
        (_, Some(0)) => out.push((format!("{at}.port"), "must be 1 to 65535".into())),
        _ => {}
    }
    if dns.refresh.0 < std::time::Duration::from_millis(100) {
        out.push((format!("{at}.refresh"), "must be at least 100ms".into()));
    }
    out
}

fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(name: &str, record: RecordType, port: Option<u16>) -> EndpointsFrom {
        EndpointsFrom {
            etcd: None,
            dns: Some(DnsSource {
                name: name.into(),
                port,
                record,
                refresh: default_refresh(),
                allow_empty: false,
            }),
        }
    }

    fn validate_one(from: &EndpointsFrom) -> Vec<(String, String)> {
        validate(from, false)
    }

    #[test]
    fn ports_follow_the_record_type() {
        assert!(validate_one(&dns("shop.internal", RecordType::A, Some(80))).is_empty());
        assert!(validate_one(&dns("_http._tcp.shop", RecordType::SRV, None)).is_empty());
        let e = validate_one(&dns("shop", RecordType::A, None));
        assert_eq!(e[0].0, "endpoints_from.dns.port");
        let e = validate_one(&dns("shop", RecordType::SRV, Some(80)));
        assert_eq!(e[0].0, "endpoints_from.dns.port");
        let e = validate_one(&dns("bad name", RecordType::A, Some(80)));
        assert_eq!(e[0].0, "endpoints_from.dns.name");
        assert!(!validate(
            &EndpointsFrom {
                dns: None,
                etcd: None
            },
            false
        )
        .is_empty());
        let etcd = EndpointsFrom {
            dns: None,
            etcd: Some(EtcdSource {
                prefix: "/s/".into(),
            }),
        };
        assert!(validate(&etcd, true).is_empty());
        assert_eq!(validate(&etcd, false)[0].0, "endpoints_from.etcd");
    }

    #[test]
    fn servers_take_port_53_by_default() {
        assert_eq!(parse_server("10.0.0.2").unwrap().port(), 53);
        assert_eq!(parse_server("[::1]:5353").unwrap().port(), 5353);
        assert!(parse_server("dns.local").is_err());
    }
}
