//! Which route wins, and which can never win. [`specificity`] is the route table's order (the
//! route table sorts by it, so the two cannot disagree); [`covers`] says whether one route
//! matches every request another matches. A route that some other route covers and outranks
//! can never match: usually a protected route behind an open one, so it is a config error.

use crate::schema::{Route, RouteMatch};
use crate::template::{parse_template, Segment};

/// Ordering key, compared field by field, larger is more specific: host (exact > wildcard,
/// longer suffix first > any), then path kind (exact > template > prefix > any), then the path's
/// literal length, then the number of header matches, then whether methods are restricted.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub struct Specificity(pub u8, pub usize, pub u8, pub usize, pub usize, pub bool);

enum Path {
    Any,
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
    /// Only `Any` and the prefix `/` are known to cover a regex route; a regex route covers
    /// nothing (proving regex inclusion is not worth it: a shadow check that misses one is a
    /// lost warning, one that is wrong refuses a good config).
    Regex,
}

fn path_of(m: &RouteMatch) -> Path {
    if let Some(p) = &m.path {
        Path::Exact(p.clone())
    } else if let Some(p) = &m.path_prefix {
        Path::Prefix(p.clone())
    } else if let Some(t) = &m.path_template {
        parse_template(t).map_or(Path::Exact(String::new()), Path::Template)
    } else if m.path_regex.is_some() {
        Path::Regex
    } else {
        Path::Any
    }
}

pub fn specificity(m: &RouteMatch) -> Specificity {
    let (hk, hl) = match &m.host {
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => (1, suffix.len()),
            None => (2, h.len()),
        },
        None => (0, 0),
    };
    let (pk, pl) = match path_of(m) {
        Path::Exact(p) => (4, p.len()),
        Path::Template(segs) => (
            3,
            segs.iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.len() + 1,
                    _ => 0,
                })
                .sum(),
        ),
        // Regex routes rank among themselves by config order.
        Path::Regex => (2, 0),
        Path::Prefix(p) => (1, p.len()),
        Path::Any => (0, 0),
    };
    // Client-certificate conditions rank like header matches; naming a subject or SAN is
    // narrower than asking for any certificate.
    let cert = m.client_cert.as_ref().map_or(0, |c| {
        usize::from(c.present.is_some())
            + 2 * (usize::from(c.subject.is_some()) + usize::from(c.san.is_some()))
    });
    let headers = m.headers.len()
        + m.query.len()
        + usize::from(!m.client_ip.is_empty())
        + usize::from(m.grpc)
        + cert;
    Specificity(hk, hl, pk, pl, headers, !m.methods.is_empty())
}

/// Whether `a` wins over `b` for a request both match (`i < j` are their config positions).
pub fn beats(a: &Route, i: usize, b: &Route, j: usize) -> bool {
    let (sa, sb) = (specificity(&a.matches), specificity(&b.matches));
    sa > sb || (sa == sb && i < j)
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// `prefix` as a route prefix matches `path` (segment-aware).
fn prefix_of(prefix: &str, path: &str, ic: bool) -> bool {
    path.get(..prefix.len()).is_some_and(|h| eq(h, prefix, ic))
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes()[prefix.len()] == b'/')
}

/// The literal segments a template starts with, as a path (`/api/{id}` → `/api`).
fn leading_literals(segs: &[Segment]) -> String {
    segs.iter()
        .map_while(|s| match s {
            Segment::Literal(l) => Some(format!("/{l}")),
            _ => None,
        })
        .collect()
}

/// Whether template `t` matches the concrete path `p`.
fn template_matches(t: &[Segment], p: &str, ic: bool) -> bool {
    let parts: Vec<&str> = p.strip_prefix('/').unwrap_or(p).split('/').collect();
    for (i, seg) in t.iter().enumerate() {
        match seg {
            Segment::CatchAll(_) => return true,
            Segment::Literal(l) => {
                if !parts.get(i).is_some_and(|x| eq(x, l, ic)) {
                    return false;
                }
            }
            Segment::Param(_) => {
                if parts.get(i).is_none_or(|x| x.is_empty()) {
                    return false;
                }
            }
        }
    }
    parts.len() == t.len()
}

/// Whether template `a` matches every path template `b` matches.
fn template_covers(a: &[Segment], b: &[Segment], ic: bool) -> bool {
    for (i, sa) in a.iter().enumerate() {
        let sb = b.get(i);
        match (sa, sb) {
            (Segment::CatchAll(_), _) => return true,
            (_, None) => return false,
            (Segment::Literal(x), Some(Segment::Literal(y))) if eq(x, y, ic) => {}
            (Segment::Param(_), Some(Segment::Literal(_) | Segment::Param(_))) => {}
            _ => return false,
        }
    }
    a.len() == b.len()
}

fn path_covers(a: &Path, b: &Path, ic: bool) -> bool {
    match (a, b) {
        (Path::Any, _) => true,
        (Path::Prefix(p), _) if p == "/" => true,
        (Path::Prefix(pa), Path::Exact(e)) | (Path::Prefix(pa), Path::Prefix(e)) => {
            prefix_of(pa, e, ic)
        }
        (Path::Prefix(pa), Path::Template(t)) => {
            let lits = leading_literals(t);
            // Templates match at least one segment past their literals; `/a/{*r}` matches `/a`.
            !lits.is_empty() && prefix_of(pa, &lits, ic)
        }
        (Path::Exact(x), Path::Exact(y)) => eq(x, y, ic),
        (Path::Exact(x), Path::Template(t)) => {
            t.iter().all(|s| matches!(s, Segment::Literal(_))) && eq(x, &leading_literals(t), ic)
        }
        (Path::Template(t), Path::Exact(e)) => template_matches(t, e, ic),
        (Path::Template(ta), Path::Template(tb)) => template_covers(ta, tb, ic),
        (Path::Template(t), Path::Prefix(pb)) => {
            // `/api/{*rest}` covers the prefix `/api`; `/{*rest}` covers everything.
            match t.split_last() {
                Some((Segment::CatchAll(_), lits))
                    if lits.iter().all(|s| matches!(s, Segment::Literal(_))) =>
                {
                    let l = leading_literals(lits);
                    l.is_empty() || prefix_of(&l, pb, ic)
                }
                _ => false,
            }
        }
        (Path::Template(t), Path::Any) => matches!(t.as_slice(), [Segment::CatchAll(_)]),
        _ => false,
    }
}

fn host_covers(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(x), Some(y)) => match (x.strip_prefix('*'), y.strip_prefix('*')) {
            (None, None) => x.eq_ignore_ascii_case(y),
            (Some(sx), None) => {
                y.len() > sx.len() && y.to_ascii_lowercase().ends_with(&sx.to_ascii_lowercase())
            }
            (Some(sx), Some(sy)) => sy.to_ascii_lowercase().ends_with(&sx.to_ascii_lowercase()),
            (None, Some(_)) => false,
        },
    }
}

/// Whether route `a` matches every request route `b` matches.
pub fn covers(a: &RouteMatch, b: &RouteMatch) -> bool {
    covers_given(a, b, &path_of(a), &path_of(b))
}

/// [`covers`] with the two routes' paths already parsed (the pairwise check parses each once).
fn covers_given(a: &RouteMatch, b: &RouteMatch, pa: &Path, pb: &Path) -> bool {
    if b.ignore_case && !a.ignore_case {
        return false;
    }
    // The path rejects most pairs: first.
    if !path_covers(pa, pb, a.ignore_case) {
        return false;
    }
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let headers = a.headers.iter().all(|(k, v)| {
        b.headers
            .iter()
            .any(|(bk, bv)| bk.eq_ignore_ascii_case(k) && bv == v)
    });
    // A query condition covers the same condition on the same parameter.
    let query = a.query.iter().all(|(k, v)| b.query.get(k) == Some(v));
    let client_ip = a.client_ip.is_empty() || ranges_cover(&a.client_ip, &b.client_ip);
    let grpc = !a.grpc || b.grpc;
    // A certificate condition covers only the same condition.
    let cert = a.client_cert.is_none() || a.client_cert == b.client_cert;
    methods && headers && query && client_ip && grpc && cert && host_covers(&a.host, &b.host)
}

/// Whether every range of `b` lies inside one of `a` (`b` empty: any client, not covered).
fn ranges_cover(a: &[String], b: &[String]) -> bool {
    let parse = |s: &String| crate::validate::parse_cidr(s);
    !b.is_empty()
        && b.iter().all(|nb| {
            parse(nb).is_some_and(|nb| a.iter().filter_map(parse).any(|na| na.contains(&nb)))
        })
}

/// For each route that can never match, the position of one route that always wins over it.
pub fn shadowed(routes: &[Route]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let paths: Vec<Path> = routes.iter().map(|r| path_of(&r.matches)).collect();
    for (j, b) in routes.iter().enumerate() {
        if let Some(i) = routes.iter().enumerate().position(|(i, a)| {
            i != j
                && covers_given(&a.matches, &b.matches, &paths[i], &paths[j])
                && beats(a, i, b, j)
        }) {
            out.push((j, i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(yaml: &str) -> Vec<Route> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn shadows(yaml: &str) -> Vec<(usize, usize)> {
        shadowed(&routes(yaml))
    }

    #[test]
    fn what_can_never_match() {
        let cases: &[(&str, &[(usize, usize)])] = &[
            ("[{name: a, match: {path_prefix: /x}, cluster: c}, {name: b, match: {path_prefix: /x}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_template: '/users/{id}'}, cluster: c}, {name: b, match: {path_template: '/users/{uid}'}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_template: '/admin'}, cluster: c}, {name: b, match: {path: /admin}, cluster: c}]", &[(0, 1)]),
            ("[{name: a, match: {path_prefix: /admin, ignore_case: true}, cluster: c}, {name: b, match: {path_prefix: /admin}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_prefix: /Admin, ignore_case: true}, cluster: c}, {name: b, match: {path_prefix: /admin, ignore_case: true}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_template: '/api/{*rest}'}, cluster: c}, {name: b, match: {path_prefix: /api}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_template: '/{*rest}'}, cluster: c}, {name: b, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {path_prefix: /api, methods: [GET, POST]}, cluster: c}, {name: b, match: {path_prefix: /api, methods: [GET]}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, cluster: c}, {name: b, match: {path_prefix: /}, cluster: c}]", &[(0, 1)]),
            // Not shadowed: more specific, or not covered.
            ("[{name: a, cluster: c}, {name: b, match: {path_prefix: /admin}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /admin}, cluster: c}, {name: b, match: {path_prefix: /admin, ignore_case: true}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /api, methods: [GET]}, cluster: c}, {name: b, match: {path_prefix: /api}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /api}, cluster: c}, {name: b, match: {path_prefix: /api, headers: {x-v: '2'}}, cluster: c}]", &[]),
            ("[{name: a, match: {path_template: '/users/{id}'}, cluster: c}, {name: b, match: {path: /users/me}, cluster: c}]", &[]),
            ("[{name: a, match: {host: '*.example.com'}, cluster: c}, {name: b, match: {host: api.example.com}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /api}, cluster: c}, {name: b, match: {path_prefix: /apix}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /}, cluster: c}, {name: b, match: {path_regex: '/x/[0-9]+'}, cluster: c}]", &[]),
            ("[{name: a, match: {path_regex: '/x/.*'}, cluster: c}, {name: b, match: {path_prefix: /x/1}, cluster: c}]", &[]),
            ("[{name: a, match: {path_regex: '/x/.*'}, cluster: c}, {name: b, match: {path_regex: '/x/.*'}, cluster: c}]", &[]),
            ("[{name: a, match: {client_ip: [10.0.0.0/8]}, cluster: c}, {name: b, match: {client_ip: [10.1.0.0/16]}, cluster: c}]", &[(1, 0)]),
            ("[{name: a, match: {client_ip: [10.1.0.0/16]}, cluster: c}, {name: b, match: {client_ip: [10.0.0.0/8]}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /a, grpc: true}, cluster: c}, {name: b, match: {path_prefix: /a}, cluster: c}]", &[]),
            ("[{name: a, match: {path_prefix: /a, query: {v: '2'}}, cluster: c}, {name: b, match: {path_prefix: /a, query: {v: '2'}}, cluster: c}]", &[(1, 0)]),
        ];
        for (yaml, want) in cases {
            assert_eq!(shadows(yaml), *want, "{yaml}");
        }
    }
}
