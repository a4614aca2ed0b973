//! A route's conditions beyond host, path and method, compiled once per snapshot: header and
//! query-parameter value conditions, client address ranges, gRPC. Pure: no I/O.
//!
//! A header or parameter that occurs more than once matches only when every occurrence does
//! (`gatehouse_config::matching`): a request that two backends could read two ways is not
//! routed as either one's special case.

use gatehouse_config::matching::{anchored_bytes_regex, ValueMatch};
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;

#[derive(Debug)]
enum Test {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(regex::bytes::Regex),
    Present(bool),
}

/// One compiled value condition.
#[derive(Debug)]
pub struct ValueCond {
    test: Test,
    invert: bool,
}

impl ValueCond {
    /// From a validated condition; a regex that no longer compiles matches nothing.
    pub fn compile(v: &ValueMatch) -> Self {
        let test = if let Some(e) = &v.exact {
            Test::Exact(e.as_bytes().to_vec())
        } else if let Some(p) = &v.prefix {
            Test::Prefix(p.as_bytes().to_vec())
        } else if let Some(r) = &v.regex {
            anchored_bytes_regex(r).map_or(Test::Present(false), Test::Regex)
        } else {
            Test::Present(v.present.unwrap_or(true))
        };
        ValueCond {
            test,
            invert: v.invert,
        }
    }

    /// Whether the condition holds for every occurrence of the value (`values`).
    pub fn holds<'v>(&self, values: impl Iterator<Item = &'v [u8]>) -> bool {
        let mut seen = false;
        let mut all = true;
        for v in values {
            seen = true;
            all &= match &self.test {
                Test::Exact(e) => v == e.as_slice(),
                Test::Prefix(p) => v.starts_with(p),
                Test::Regex(r) => r.is_match(v),
                Test::Present(_) => true,
            };
        }
        let result = match self.test {
            Test::Present(want) => seen == want,
            _ => seen && all,
        };
        result != self.invert
    }
}

/// What a route asks of a request besides host, path and method.
#[derive(Debug, Default)]
pub struct Conditions {
    headers: Vec<(HeaderName, ValueCond)>,
    query: Vec<(String, ValueCond)>,
    client_ip: Vec<ipnet::IpNet>,
    grpc: bool,
}

impl Conditions {
    pub fn compile(m: &gatehouse_config::RouteMatch) -> Self {
        Conditions {
            headers: m
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        ValueCond::compile(v),
                    ))
                })
                .collect(),
            query: m
                .query
                .iter()
                .map(|(k, v)| (k.clone(), ValueCond::compile(v)))
                .collect(),
            client_ip: m
                .client_ip
                .iter()
                .filter_map(|c| gatehouse_config::validate::parse_cidr(c))
                .collect(),
            grpc: m.grpc,
        }
    }

    pub fn hold(&self, headers: &HeaderMap, query: Option<&str>, client: IpAddr) -> bool {
        if self.grpc && !is_grpc(headers) {
            return false;
        }
        if !self.client_ip.is_empty() && !self.client_ip.iter().any(|n| n.contains(&client)) {
            return false;
        }
        let header_ok = |(name, cond): &(HeaderName, ValueCond)| {
            cond.holds(
                headers
                    .get_all(name)
                    .iter()
                    .map(http::HeaderValue::as_bytes),
            )
        };
        if !self.headers.iter().all(header_ok) {
            return false;
        }
        self.query.iter().all(|(name, cond)| {
            let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
            let values: Vec<_> = pairs.filter(|(k, _)| k == name).map(|(_, v)| v).collect();
            cond.holds(values.iter().map(|v| v.as_bytes()))
        })
    }
}

/// A gRPC request: `content-type: application/grpc`, or `application/grpc+proto` and the like.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    // Every line, as for other conditions: `application/grpc` with a second `text/html` line is
    // not a request two backends would read the same way.
    let mut lines = headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .peekable();
    lines.peek().is_some()
        && lines.all(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(yaml: &str) -> ValueCond {
        ValueCond::compile(&serde_saphyr::from_str(yaml).unwrap())
    }

    #[test]
    fn every_occurrence_must_match() {
        let c = cond("beta");
        assert!(c.holds([&b"beta"[..]].into_iter()));
        assert!(!c.holds([&b"beta"[..], b"stable"].into_iter()));
        assert!(!c.holds(std::iter::empty()));
        let inv = cond("{exact: beta, invert: true}");
        assert!(inv.holds(std::iter::empty()));
        assert!(inv.holds([&b"stable"[..]].into_iter()));
        assert!(!inv.holds([&b"beta"[..]].into_iter()));
        let absent = cond("{present: false}");
        assert!(absent.holds(std::iter::empty()));
        assert!(!absent.holds([&b""[..]].into_iter()));
        let re = cond("{regex: 'v[0-9]+'}");
        assert!(re.holds([&b"v12"[..]].into_iter()));
        assert!(!re.holds([&b"xv12"[..]].into_iter()));
        let pre = cond("{prefix: 'Bearer '}");
        assert!(pre.holds([&b"Bearer x"[..]].into_iter()));
    }

    #[test]
    fn grpc_content_types() {
        let mut h = HeaderMap::new();
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=x", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        // Every line must say gRPC.
        h.insert(
            http::header::CONTENT_TYPE,
            "application/grpc".parse().unwrap(),
        );
        assert!(is_grpc(&h));
        h.append(http::header::CONTENT_TYPE, "text/html".parse().unwrap());
        assert!(!is_grpc(&h));
        h.clear();
        assert!(!is_grpc(&h));
    }

    #[test]
    fn query_values_are_decoded() {
        let m: gatehouse_config::RouteMatch =
            serde_saphyr::from_str("{query: {q: 'a b', v: {present: true}}}").unwrap();
        let c = Conditions::compile(&m);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let h = HeaderMap::new();
        assert!(c.hold(&h, Some("q=a+b&v"), ip));
        assert!(c.hold(&h, Some("v=1&q=a%20b"), ip));
        assert!(!c.hold(&h, Some("q=a+b"), ip));
        assert!(!c.hold(&h, Some("q=a+b&q=c&v"), ip));
        assert!(!c.hold(&h, None, ip));
    }
}
