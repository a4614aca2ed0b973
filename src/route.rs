//! The route table: host / path / method / header matching, compiled once per snapshot.
//! Pure: no I/O. Most specific route wins (`gatehouse_config::shadow::specificity`); ties go to
//! config order.
//!
//! Path prefixes match on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
//! Paths arrive normalized (`canonical::path`): the path a route matches is the path its
//! backend receives. `match.ignore_case` compares the literal parts without ASCII case.

pub mod conditions;
pub mod forward;
pub mod headers;
mod index;

use gatehouse_config::shadow::Specificity;
use gatehouse_config::template::{parse_template, Segment};
use gatehouse_config::Route as RouteConfig;
use http::{HeaderMap, Method};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any name ending in it.
    Suffix(String),
}

#[derive(Debug)]
enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
    Regex(regex::Regex),
}

/// Where a matched route sends the request.
#[derive(Debug, Clone)]
pub enum Target {
    Cluster(Arc<str>),
    /// A weighted split between clusters (`clusters: [{name, weight}]`).
    Split(Arc<forward::Split>),
    /// The cluster is named by the template parameter `param`, and must be one of `allow`.
    FromPath {
        param: String,
        allow: Vec<Arc<str>>,
    },
    /// The gateway answers with a redirect (`proxy::reply`).
    Redirect(Arc<gatehouse_config::reply::Redirect>),
    /// The gateway answers with this status, content type and body (`proxy::reply`).
    Direct {
        status: http::StatusCode,
        content_type: http::HeaderValue,
        body: bytes::Bytes,
    },
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// Position in the config's `routes` (the snapshot keeps per-route filters by it).
    pub index: usize,
    host: HostMatch,
    path: PathMatch,
    methods: Vec<Method>,
    conditions: conditions::Conditions,
    pub target: Target,
    pub rewrite: Option<forward::PathRewrite>,
    pub host_rewrite: Option<forward::HostRewrite>,
    pub mirror: Option<Arc<forward::Mirror>>,
    pub strip_prefix: bool,
    pub retry_non_idempotent: bool,
    /// `timeouts.request` and `limits.max_body_bytes` of the route, over the cluster's and the
    /// listener's.
    pub request_timeout: Option<std::time::Duration>,
    pub max_body_bytes: Option<u64>,
    /// `timeouts.idle`: the longest silence between body bytes either way.
    pub idle_timeout: Option<std::time::Duration>,
    /// `request_headers` / `response_headers` (applied after the cluster's).
    pub request_headers: Option<Arc<headers::HeaderOps>>,
    pub response_headers: Option<Arc<headers::HeaderOps>>,
    ignore_case: bool,
    client_cert: Option<gatehouse_config::schema::ClientCertMatch>,
    /// The table's order: `gatehouse_config::shadow::specificity`, shared with the check that
    /// refuses routes that can never match.
    rank: Specificity,
}

/// The outcome of a match.
#[derive(Debug)]
pub struct Matched<'t, 'p> {
    pub route: &'t Route,
    /// Set for `cluster_from_path` routes: the cluster name taken from the path.
    pub cluster_from_path: Option<&'p str>,
    /// The path (without query) to send upstream.
    pub upstream_path: Cow<'p, str>,
}

/// What routes look at in a request.
#[derive(Clone, Copy)]
pub struct RouteRequest<'a> {
    /// May include a port.
    pub host: &'a str,
    /// Normalized, without `;` parameters.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The client (after `trusted_proxies`).
    pub client_ip: std::net::IpAddr,
    /// The connection's verified client certificate (subject, subjectAltNames), if any.
    pub cert: Option<(&'a str, &'a [String])>,
}

/// Tables up to this size are scanned, bigger ones looked up in the index.
const SCAN_MAX: usize = 24;

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    index: index::Index,
}

impl RouteTable {
    /// Compiles validated route configs. Validation has already rejected bad templates, so a
    /// template that fails to parse here is treated as matching nothing.
    pub fn new(configs: &[RouteConfig]) -> Self {
        let mut routes: Vec<Route> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| compile(i, c))
            .collect();
        // Stable sort keeps config order among equally specific routes.
        routes.sort_by_key(|r| std::cmp::Reverse(r.rank));
        let index = index::Index::new(&routes);
        RouteTable { routes, index }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the most specific route for a request.
    pub fn find<'t, 'p>(&'t self, req: &RouteRequest<'p>) -> Option<Matched<'t, 'p>> {
        // Up to a few dozen routes, trying each in order is faster than the index's lookups
        // (`benches/hot_paths.rs`: 49 ns against 210 ns at 3 routes, even at 30).
        if self.routes.len() <= SCAN_MAX {
            return self.find_scan(req);
        }
        self.find_indexed(req)
    }

    fn find_indexed<'t, 'p>(&'t self, req: &RouteRequest<'p>) -> Option<Matched<'t, 'p>> {
        let host = strip_port(req.host);
        let pos = self.index.find(&self.routes, req, host)?;
        self.routes[pos].matches(req, host)
    }

    /// [`RouteTable::find`] by trying every route in order: what the index must agree with
    /// (tests and benchmarks compare the two).
    pub fn find_scan<'t, 'p>(&'t self, req: &RouteRequest<'p>) -> Option<Matched<'t, 'p>> {
        let host = strip_port(req.host);
        self.routes.iter().find_map(|r| r.matches(req, host))
    }
}

impl Route {
    /// This route's match for `req` (`host` without its port), if it matches.
    fn matches<'t, 'p>(&'t self, req: &RouteRequest<'p>, host: &str) -> Option<Matched<'t, 'p>> {
        if self
            .client_cert
            .as_ref()
            .is_some_and(|c| !c.matches(req.cert))
        {
            return None;
        }
        if !host_matches(&self.host, host) {
            return None;
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return None;
        }
        // The path first: conditions may parse the query, which a client can make long.
        let m = path_match(self, req.path)?;
        self.conditions
            .hold(req.headers, req.query, req.client_ip)
            .then_some(m)
    }

    /// The path the backend gets when it is not `real` (the request's normalized path):
    /// `strip_prefix` or `rewrite` applied. `match_path` is what routes saw when it differs
    /// from `real` (`;` parameters removed).
    pub fn upstream_path(
        &self,
        real: &str,
        match_path: Option<&str>,
        matched: &Matched<'_, '_>,
    ) -> Result<Option<String>, forward::Refused> {
        if let Some(rw) = &self.rewrite {
            return rw.apply(real, match_path);
        }
        Ok(match match_path {
            // Routes matched the path without `;` parameters; strip the same segments from the
            // path the backend gets, parameters and all.
            Some(m) if self.strip_prefix => Some(strip_like(real, m, &matched.upstream_path)),
            Some(_) => None,
            None if matched.upstream_path.as_ref() == real => None,
            None => Some(matched.upstream_path.to_string()),
        })
    }
}

fn compile(index: usize, c: &RouteConfig) -> Route {
    let m = &c.matches;
    let host = match &m.host {
        None => HostMatch::Any,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
            None => HostMatch::Exact(h.to_ascii_lowercase()),
        },
    };
    let path = if let Some(p) = &m.path {
        PathMatch::Exact(p.clone())
    } else if let Some(p) = &m.path_prefix {
        PathMatch::Prefix(p.clone())
    } else if let Some(t) = &m.path_template {
        parse_template(t).map_or(PathMatch::Exact(String::new()), PathMatch::Template)
    } else if let Some(re) = &m.path_regex {
        let re = if m.ignore_case {
            format!("(?i:{re})")
        } else {
            re.clone()
        };
        // Validation compiled it; one that fails now matches nothing.
        gatehouse_config::matching::anchored_regex(&re)
            .map_or(PathMatch::Exact(String::new()), PathMatch::Regex)
    } else {
        PathMatch::Any
    };
    Route {
        name: c.name.as_str().into(),
        index,
        host,
        path,
        methods: m
            .methods
            .iter()
            .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
            .collect(),
        conditions: conditions::Conditions::compile(m),
        target: match (&c.cluster, &c.redirect, &c.direct_response) {
            (Some(name), _, _) => Target::Cluster(name.as_str().into()),
            _ if !c.clusters.is_empty() => Target::Split(Arc::new(forward::Split::new(
                &c.clusters,
                c.hash_on.as_ref(),
            ))),
            (None, Some(r), _) => Target::Redirect(Arc::new(r.clone())),
            (None, None, Some(d)) => Target::Direct {
                status: http::StatusCode::from_u16(d.status).unwrap_or(http::StatusCode::OK),
                content_type: http::HeaderValue::from_str(&d.content_type)
                    .unwrap_or(http::HeaderValue::from_static("text/plain; charset=utf-8")),
                body: bytes::Bytes::from(d.body.clone()),
            },
            (None, None, None) => {
                let cfp = c.cluster_from_path.as_ref();
                Target::FromPath {
                    param: cfp.map(|c| c.param.clone()).unwrap_or_default(),
                    allow: cfp
                        .map(|c| c.allow.iter().map(|a| Arc::from(a.as_str())).collect())
                        .unwrap_or_default(),
                }
            }
        },
        rewrite: c
            .rewrite
            .as_ref()
            .and_then(|rw| forward::PathRewrite::compile(rw, m, m.ignore_case)),
        host_rewrite: c
            .host_rewrite
            .as_ref()
            .and_then(forward::HostRewrite::compile),
        mirror: c
            .mirror
            .as_ref()
            .map(|mr| Arc::new(forward::Mirror::new(mr))),
        idle_timeout: c.timeouts.idle.map(|d| d.0),
        strip_prefix: c.strip_prefix,
        retry_non_idempotent: c.retry_non_idempotent,
        request_timeout: c.timeouts.request.map(|d| d.0),
        max_body_bytes: c.limits.max_body_bytes.map(|b| b.0),
        request_headers: headers::HeaderOps::compile(&c.request_headers),
        response_headers: headers::HeaderOps::compile(&c.response_headers),
        ignore_case: m.ignore_case,
        client_cert: m.client_cert.clone(),
        rank: gatehouse_config::shadow::specificity(m),
    }
}

fn same(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// `prefix` removed from the start of `path`, comparing as the route does.
fn strip<'p>(path: &'p str, prefix: &str, ignore_case: bool) -> Option<&'p str> {
    let head = path.get(..prefix.len())?;
    same(head, prefix, ignore_case).then(|| &path[prefix.len()..])
}

/// Applies to `real` the prefix stripping that turned `matched` into `upstream`: removes as
/// many leading segments. Used when routes matched a path without `;` parameters and the
/// backend must get the remaining segments with theirs.
pub fn strip_like(real: &str, matched: &str, upstream: &str) -> String {
    let slashes = |s: &str| s.bytes().filter(|b| *b == b'/').count();
    let drop = slashes(matched).saturating_sub(slashes(upstream));
    let mut rest = real;
    for _ in 0..drop {
        rest = match rest.get(1..).and_then(|r| r.find('/')) {
            Some(i) => &rest[i + 1..],
            None => "",
        };
    }
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn host_matches(m: &HostMatch, host: &str) -> bool {
    match m {
        HostMatch::Any => true,
        HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
        HostMatch::Suffix(s) => {
            host.len() > s.len()
                && host.is_char_boundary(host.len() - s.len())
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
    }
}

fn path_match<'t, 'p>(r: &'t Route, path: &'p str) -> Option<Matched<'t, 'p>> {
    let done = |upstream_path: Cow<'p, str>, cluster_from_path| Matched {
        route: r,
        cluster_from_path,
        upstream_path,
    };
    match &r.path {
        PathMatch::Any => Some(done(Cow::Borrowed(path), None)),
        PathMatch::Exact(p) => {
            same(p, path, r.ignore_case).then(|| done(Cow::Borrowed(path), None))
        }
        PathMatch::Regex(re) => re.is_match(path).then(|| done(Cow::Borrowed(path), None)),
        PathMatch::Prefix(p) => {
            let rest = strip(path, p, r.ignore_case)?;
            if !(rest.is_empty() || rest.starts_with('/') || p.ends_with('/')) {
                return None;
            }
            if !r.strip_prefix {
                return Some(done(Cow::Borrowed(path), None));
            }
            Some(done(rooted(rest), None))
        }
        PathMatch::Template(segs) => {
            let mut rest = path.strip_prefix('/')?;
            let mut cluster = None;
            let wanted = match &r.target {
                Target::FromPath { param, .. } => Some(param.as_str()),
                Target::Cluster(_)
                | Target::Split(_)
                | Target::Redirect(_)
                | Target::Direct { .. } => None,
            };
            for (i, seg) in segs.iter().enumerate() {
                if let Segment::CatchAll(_) = seg {
                    let up = if r.strip_prefix {
                        rooted_with_slash(rest)
                    } else {
                        Cow::Borrowed(path)
                    };
                    return Some(done(up, cluster));
                }
                let (part, tail) = match rest.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (rest, None),
                };
                match seg {
                    Segment::Literal(l) if !same(l, part, r.ignore_case) => return None,
                    Segment::Param(name) => {
                        if part.is_empty() {
                            return None;
                        }
                        if Some(name.as_str()) == wanted {
                            cluster = Some(part);
                        }
                    }
                    _ => {}
                }
                let last = i + 1 == segs.len();
                match (tail, last) {
                    (None, true) => {
                        let up = if r.strip_prefix {
                            Cow::Borrowed("/")
                        } else {
                            Cow::Borrowed(path)
                        };
                        return Some(done(up, cluster));
                    }
                    (Some(t), false) => rest = t,
                    // A catch-all may still match an empty rest: "/a/{*rest}" matches "/a".
                    (None, false) if matches!(segs[i + 1], Segment::CatchAll(_)) => {
                        let up = if r.strip_prefix {
                            Cow::Borrowed("/")
                        } else {
                            Cow::Borrowed(path)
                        };
                        return Some(done(up, cluster));
                    }
                    _ => return None,
                }
            }
            None
        }
    }
}

fn rooted(rest: &str) -> Cow<'_, str> {
    if rest.starts_with('/') {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(format!("/{rest}"))
    }
}

fn rooted_with_slash(rest: &str) -> Cow<'_, str> {
    Cow::Owned(format!("/{rest}"))
}

#[cfg(test)]
mod tests;
