//! The route index: finds the route the ordered scan would find without trying every route.
//! Routes are bucketed by host (exact name, wildcard suffix, any), then within a bucket by
//! exact path, by prefix, and by a template's first literal segment; regex, any-path and
//! `ignore_case` routes sit in a list scanned in order. A lookup gathers the few candidate lists
//! a request can hit and returns the matching route that comes first in the table's order, so
//! it always agrees with the scan (`tests::index_agrees_with_the_scan` checks that on generated
//! tables).
//!
//! Host comes first in the table's order (exact > longer wildcard suffix > any), so the first
//! host bucket with a match holds the answer; within a bucket the candidate with the lowest
//! table position wins.

use super::{HostMatch, PathMatch, Route, RouteRequest};
use gatehouse_config::template::Segment;
use std::collections::HashMap;
use xxhash_rust::xxh3::Xxh3Builder;

/// Keys are config text; requests only look them up, so a fixed hash seed gives an attacker
/// nothing to collide.
type Map<V> = HashMap<String, V, Xxh3Builder>;

#[derive(Debug, Default)]
struct Bucket {
    exact: Map<Vec<u32>>,
    prefix: Map<Vec<u32>>,
    /// `prefix_len[n]`: some prefix is `n` bytes long (most path boundaries need no lookup).
    prefix_len: Vec<bool>,
    /// Templates by their first segment when it is a literal.
    template: Map<Vec<u32>>,
    /// Everything else: scanned in order.
    rest: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct Index {
    exact_host: Map<Bucket>,
    /// `*.example.com` as `.example.com`.
    wildcard: Map<Bucket>,
    any_host: Bucket,
}

impl Index {
    /// `routes` in the table's order (most specific first).
    pub fn new(routes: &[Route]) -> Self {
        let mut ix = Index::default();
        for (pos, r) in routes.iter().enumerate() {
            let bucket = match &r.host {
                HostMatch::Any => &mut ix.any_host,
                HostMatch::Exact(h) => ix.exact_host.entry(h.clone()).or_default(),
                HostMatch::Suffix(s) => ix.wildcard.entry(s.clone()).or_default(),
            };
            let pos = pos as u32;
            let list = match &r.path {
                _ if r.ignore_case => &mut bucket.rest,
                PathMatch::Exact(p) => bucket.exact.entry(p.clone()).or_default(),
                PathMatch::Prefix(p) => {
                    if bucket.prefix_len.len() <= p.len() {
                        bucket.prefix_len.resize(p.len() + 1, false);
                    }
                    bucket.prefix_len[p.len()] = true;
                    bucket.prefix.entry(p.clone()).or_default()
                }
                PathMatch::Template(segs) => match segs.first() {
                    Some(Segment::Literal(l)) => bucket.template.entry(l.clone()).or_default(),
                    _ => &mut bucket.rest,
                },
                PathMatch::Any | PathMatch::Regex(_) => &mut bucket.rest,
            };
            list.push(pos);
        }
        ix
    }

    /// The table position of the route for `req` (`host` without its port, lower case as the
    /// canonical request has it), if any.
    pub fn find(&self, routes: &[Route], req: &RouteRequest<'_>, host: &str) -> Option<usize> {
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(b) = self.exact_host.get(host) {
            if let Some(p) = b.find(routes, req, host) {
                return Some(p);
            }
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: the leftmost dot past the first label.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(b) = self.wildcard.get(&host[i..]) {
                    if let Some(p) = b.find(routes, req, host) {
                        return Some(p);
                    }
                }
            }
        }
        self.any_host.find(routes, req, host)
    }
}

impl Bucket {
    fn find(&self, routes: &[Route], req: &RouteRequest<'_>, host: &str) -> Option<usize> {
        let mut best = u32::MAX;
        let mut consider = |list: Option<&Vec<u32>>| {
            for &p in list.into_iter().flatten() {
                if p >= best {
                    break;
                }
                if routes[p as usize].matches(req, host).is_some() {
                    best = p;
                    break;
                }
            }
        };
        let path = req.path;
        consider(self.exact.get(path));
        if !self.template.is_empty() {
            let first = path
                .get(1..)
                .map_or("", |p| p.split('/').next().unwrap_or(""));
            consider(self.template.get(first));
        }
        if !self.prefix.is_empty() {
            // Prefixes end where a segment does: at each '/', without it and with it, and at
            // the end of the path.
            let mut at = |n: usize| {
                if self.prefix_len.get(n).copied().unwrap_or(false) {
                    consider(self.prefix.get(&path[..n]));
                }
            };
            for (i, _) in path.match_indices('/') {
                if i > 0 {
                    at(i);
                }
                at(i + 1);
            }
            if !path.ends_with('/') {
                at(path.len());
            }
        }
        consider(Some(&self.rest));
        (best != u32::MAX).then_some(best as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RouteRequest, RouteTable};
    use http::{HeaderMap, Method};
    use proptest::prelude::*;

    const SEGS: &[&str] = &["a", "b", "api", "users", "42", "A"];
    const HOSTS: &[&str] = &["x.test", "y.x.test", "other.test", "X.test"];

    fn path_of(segs: &[usize], slash: bool) -> String {
        let mut p: String = segs.iter().map(|i| format!("/{}", SEGS[*i])).collect();
        if p.is_empty() || slash {
            p.push('/');
        }
        p
    }

    /// One route's YAML from generated choices.
    fn route(
        i: usize,
        (host, kind, segs, slash, ic, meth, hdr): (
            usize,
            usize,
            Vec<usize>,
            bool,
            bool,
            bool,
            bool,
        ),
    ) -> String {
        let host = match host {
            0 => String::new(),
            1 => "host: x.test, ".into(),
            2 => "host: '*.x.test', ".into(),
            _ => "host: other.test, ".into(),
        };
        let p = path_of(&segs, slash);
        let path = match kind {
            0 => format!("path: '{p}', "),
            1 => format!("path_prefix: '{p}', "),
            2 => {
                let t: String = segs
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        if j == 1 {
                            "/{id}".to_string()
                        } else {
                            format!("/{}", SEGS[*s])
                        }
                    })
                    .collect();
                format!(
                    "path_template: '{}{}', ",
                    if t.is_empty() { "/{id}" } else { &t },
                    if slash { "/{*rest}" } else { "" }
                )
            }
            3 => format!(
                "path_regex: '{}.*', ",
                path_of(&segs[..segs.len().min(1)], false)
            ),
            _ => String::new(),
        };
        let extra = format!(
            "{}{}{}",
            if ic { "ignore_case: true, " } else { "" },
            if meth { "methods: [POST], " } else { "" },
            if hdr {
                "headers: {x-v: {prefix: '1'}}, "
            } else {
                ""
            },
        );
        format!("- {{name: r{i}, match: {{{host}{path}{extra}}}, cluster: c}}\n")
    }

    fn route_strategy() -> impl Strategy<Value = (usize, usize, Vec<usize>, bool, bool, bool, bool)>
    {
        (
            0..4usize,
            0..5usize,
            prop::collection::vec(0..SEGS.len(), 0..4),
            any::<bool>(),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn index_agrees_with_the_scan(
            routes in prop::collection::vec(route_strategy(), 1..40),
            requests in prop::collection::vec(
                (0..HOSTS.len(), prop::collection::vec(0..SEGS.len(), 0..5), any::<bool>(), any::<bool>(), any::<bool>()),
                1..30,
            ),
        ) {
            let yaml: String = routes.into_iter().enumerate().map(|(i, r)| route(i, r)).collect();
            let configs: Vec<gatehouse_config::Route> = serde_saphyr::from_str(&yaml).unwrap();
            let table = RouteTable::new(&configs);
            for (h, segs, slash, post, hdr) in requests {
                let path = path_of(&segs, slash);
                let mut headers = HeaderMap::new();
                if hdr {
                    headers.insert("x-v", "12".parse().unwrap());
                }
                let method = if post { Method::POST } else { Method::GET };
                let req = RouteRequest {
                    host: HOSTS[h],
                    path: &path,
                    query: None,
                    method: &method,
                    headers: &headers,
                    client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                    cert: None,
                };
                let by_index = table.find_indexed(&req).map(|m| (m.route.name.clone(), m.upstream_path.to_string()));
                let by_scan = table.find_scan(&req).map(|m| (m.route.name.clone(), m.upstream_path.to_string()));
                prop_assert_eq!(by_index, by_scan, "{} {} in\n{}", HOSTS[h], path, yaml);
            }
        }
    }
}
