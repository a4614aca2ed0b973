//! The client's address. From an untrusted peer it is the peer, whatever the request's
//! `X-Forwarded-For` says. From a trusted proxy it is found by walking `X-Forwarded-For` from
//! the right while the address that wrote each entry is itself a trusted proxy (Envoy's
//! `xff_num_trusted_hops`, NGINX's `real_ip_recursive`): the leftmost entries are whatever the
//! client typed and are never believed. The same address feeds rate limits, hashing, logs and
//! the forwarded `X-Forwarded-For`, whose first entry it becomes.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client and the `X-Forwarded-For` to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// `client, trusted hops…, peer`: the entries from the client rightwards, then the peer.
    pub forwarded_for: HeaderValue,
}

/// One `X-Forwarded-For` entry: an IP, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// Resolves the client of a request that came from `peer`. `peer_value` is the peer's address
/// as a header value (made once per connection).
pub fn resolve(
    peer: IpAddr,
    peer_value: &HeaderValue,
    trusted: impl Fn(IpAddr) -> bool,
    h: &HeaderMap,
) -> Client {
    let peer = peer.to_canonical();
    if !trusted(peer) {
        return Client {
            ip: peer,
            forwarded_for: peer_value.clone(),
        };
    }
    let mut client = peer;
    let mut kept: Vec<IpAddr> = Vec::new();
    {
        // Split the raw bytes: a line with one non-UTF-8 entry still has the trusted proxy's
        // own entry at its end (nginx appends to whatever the client sent).
        let entries = h
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .collect::<Vec<_>>();
        for e in entries.iter().rev() {
            if !trusted(client) {
                break;
            }
            match std::str::from_utf8(e).ok().and_then(parse_entry) {
                Some(ip) => {
                    kept.push(ip);
                    client = ip;
                }
                // Garbage written by a trusted hop: the hop itself is the best we know.
                None => break,
            }
        }
    }
    let mut list = String::new();
    for ip in kept.iter().rev().chain(std::iter::once(&peer)) {
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push_str(&ip.to_string());
    }
    Client {
        ip: client,
        // Digits, dots, colons and ", ": always a valid header value.
        forwarded_for: HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static("")),
    }
}

/// A peer's address as an `X-Forwarded-For` value.
pub fn peer_header(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_canonical().to_string()).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(peer: &str, xff: &[&str], trusted: &[&str]) -> (String, String) {
        let nets: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        let peer: IpAddr = peer.parse().unwrap();
        let value = peer_header(peer);
        let c = resolve(peer, &value, |ip| nets.iter().any(|n| n.contains(&ip)), &h);
        (
            c.ip.to_string(),
            c.forwarded_for.to_str().unwrap().to_string(),
        )
    }

    #[test]
    fn a_non_utf8_entry_does_not_hide_the_proxys_own() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\x80, 7.7.7.7").unwrap(),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let c = resolve(peer, &peer_header(peer), |ip| ip.is_loopback(), &h);
        assert_eq!(c.ip.to_string(), "7.7.7.7");
        assert_eq!(c.forwarded_for, "7.7.7.7, 127.0.0.1");
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let lb = ["10.0.0.0/8"];
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], (&'a str, &'a str));
        let cases: &[Case] = &[
            // An untrusted peer's header is ignored and replaced.
            ("1.2.3.4", &["9.9.9.9"], &lb, ("1.2.3.4", "1.2.3.4")),
            // Behind one trusted proxy: its entry is the client; what the client wrote is not.
            (
                "10.0.0.1",
                &["6.6.6.6, 1.2.3.4"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.1"),
            ),
            (
                "10.0.0.1",
                &["6.6.6.6", "1.2.3.4"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.1"),
            ),
            // Two trusted hops.
            (
                "10.0.0.1",
                &["6.6.6.6, 1.2.3.4, 10.0.0.2"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.2, 10.0.0.1"),
            ),
            // A trusted peer without the header is the client.
            ("10.0.0.1", &[], &lb, ("10.0.0.1", "10.0.0.1")),
            // Every entry trusted: the leftmost one.
            (
                "10.0.0.1",
                &["10.0.0.3, 10.0.0.2"],
                &lb,
                ("10.0.0.3", "10.0.0.3, 10.0.0.2, 10.0.0.1"),
            ),
            // Garbage stops the walk at the hop that wrote it; so does a non-UTF-8 entry, but only
            // where it is.
            (
                "10.0.0.1",
                &["\u{80}x, 1.2.3.4"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.1"),
            ),
            (
                "10.0.0.1",
                &["1.2.3.4, \u{80}"],
                &lb,
                ("10.0.0.1", "10.0.0.1"),
            ),
            (
                "10.0.0.1",
                &["1.2.3.4, junk"],
                &lb,
                ("10.0.0.1", "10.0.0.1"),
            ),
            // Ports and IPv6.
            (
                "10.0.0.1",
                &["1.2.3.4:5678"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.1"),
            ),
            (
                "10.0.0.1",
                &["[2001:db8::1]:443"],
                &lb,
                ("2001:db8::1", "2001:db8::1, 10.0.0.1"),
            ),
            // An IPv4-mapped peer is trusted like its IPv4 address.
            (
                "::ffff:10.0.0.1",
                &["1.2.3.4"],
                &lb,
                ("1.2.3.4", "1.2.3.4, 10.0.0.1"),
            ),
        ];
        for (peer, xff, trusted, (ip, list)) in cases {
            assert_eq!(
                resolve_with(peer, xff, trusted),
                (ip.to_string(), list.to_string()),
                "{peer} {xff:?}"
            );
        }
    }
}
