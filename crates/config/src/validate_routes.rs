//! Checks across routes: a route that can never match because another one matches all its
//! requests and always wins (an error: it is usually a protected route shadowed by an open
//! one; `shadow.rs`), a
//! rate limit keyed on who the client is placed before anything says who it is (an error), and
//! clusters reachable through routes with different authentication (a warning: often on purpose,
//! a public and a private route to one backend, but worth a look).

use crate::schema::{Config, Route};
use crate::template::{parse_template, Segment};
use crate::traffic::{parse_limit_key, Filter, LimitKey};
use crate::validate::Problem;
use std::collections::{BTreeMap, BTreeSet};

/// A `cluster_from_path` parameter must be a one-segment `{param}`, not the catch-all: the
/// rest of a path is never a cluster name.
fn check_cluster_param(r: &Route, i: usize, p: &mut impl FnMut(String, String)) {
    let (Some(cfp), Some(t)) = (&r.cluster_from_path, &r.matches.path_template) else {
        return;
    };
    if let Ok(segs) = parse_template(t) {
        if segs
            .iter()
            .any(|s| matches!(s, Segment::CatchAll(n) if *n == cfp.param))
        {
            p(
                format!("routes[{i}].cluster_from_path.param"),
                format!(
                    "{{*{}}} is the rest of the path, not a cluster name: use a one-segment {{{}}}",
                    cfp.param, cfp.param
                ),
            );
        }
    }
}

/// The auth filters of a route, as a comparable description.
fn auth_of(r: &Route) -> Vec<String> {
    r.filters
        .iter()
        .filter_map(|f| match f {
            Filter::Auth(a) => Some(match (&a.api_key, &a.jwt, &a.client_cert) {
                (Some(k), _, _) => format!("api_key(header {})", k.header),
                (_, Some(j), _) => format!("jwt(issuer {})", j.issuer),
                (_, _, Some(c)) => format!("client_cert(allow {:?})", c.allow),
                _ => "auth".into(),
            }),
            _ => None,
        })
        .collect()
}

pub fn validate_routes(c: &Config, p: &mut impl FnMut(String, String)) {
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(m) = &r.matches.client_cert {
            let at = format!("routes[{i}].match.client_cert");
            if m.present.is_none() && m.subject.is_none() && m.san.is_none() {
                p(at, "give at least one of present, subject and san".into());
            } else if m.present == Some(false) && (m.subject.is_some() || m.san.is_some()) {
                p(
                    at,
                    "present: false (no certificate) cannot also name a subject or san".into(),
                );
            }
        }
    }
    // Shadowed routes: another route matches every request this one does and always wins.
    for (j, i) in crate::shadow::shadowed(&c.routes) {
        p(
            format!("routes[{j}].match"),
            format!(
                "route {:?} can never match: route {:?} (routes[{i}]) matches every request it does and always wins",
                c.routes[j].name, c.routes[i].name
            ),
        );
    }

    for (i, r) in c.routes.iter().enumerate() {
        check_cluster_param(r, i, p);
    }
    for ((path, msg), _) in regex_overlaps(c)
        .into_iter()
        .filter(|(_, differs)| *differs)
    {
        p(path, msg);
    }

    // Routes matched on an identity header would see the client's forged copy: the gateway
    // removes it only after routing.
    let identity_names: Vec<String> = std::iter::once(&c.identity.consumer_header)
        .chain(&c.identity.strip_headers)
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for (i, r) in c.routes.iter().enumerate() {
        for name in r.matches.headers.keys() {
            if identity_names.contains(&name.to_ascii_lowercase()) {
                p(
                    format!("routes[{i}].match.headers.{name}"),
                    format!("{name:?} is an identity header: a client's copy is removed and only the gateway sets it, after routing; match on a route's auth filter instead"),
                );
            }
        }
    }

    // Identity used before it is known, or read from a header only the gateway sets.
    let identity: Vec<String> = std::iter::once(&c.identity.consumer_header)
        .chain(&c.identity.strip_headers)
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for (i, rl) in c.rate_limits.iter().enumerate() {
        if let Ok(LimitKey::Header(h)) = parse_limit_key(&rl.key) {
            if identity.contains(&h) {
                p(
                    format!("rate_limits[{i}].key"),
                    format!("{h:?} is an identity header the gateway removes from requests and sets only after filters run: key on consumer instead"),
                );
            }
        }
    }
    let keyed: BTreeMap<&str, LimitKey> = c
        .rate_limits
        .iter()
        .filter_map(|rl| Some((rl.name.as_str(), parse_limit_key(&rl.key).ok()?)))
        .collect();
    for (i, r) in c.routes.iter().enumerate() {
        let mut auth = false;
        let mut jwt = false;
        for (j, f) in r.filters.iter().enumerate() {
            match f {
                Filter::Auth(a) => {
                    auth = true;
                    jwt |= a.jwt.is_some();
                }
                Filter::RateLimit(name) => match keyed.get(name.as_str()) {
                    Some(LimitKey::Consumer) if !auth => p(
                        format!("routes[{i}].filters[{j}].rate_limit"),
                        format!("{name:?} is keyed on the consumer, but no auth filter runs before it on this route: put it after the auth filter"),
                    ),
                    Some(LimitKey::Claim(claim)) if !jwt => p(
                        format!("routes[{i}].filters[{j}].rate_limit"),
                        format!("{name:?} is keyed on the JWT claim {claim:?}, but no jwt auth filter runs before it on this route"),
                    ),
                    _ => {}
                },
                Filter::Fault(_) | Filter::Cache(_) | Filter::Cors(_) => {}
            }
        }
    }
}

/// Clusters that routes with different authentication reach (by `cluster` or a
/// `cluster_from_path` allow list). Reported by `check` and logged at load; not errors.
pub fn warnings(c: &Config) -> Vec<Problem> {
    let mut out = client_cert_warnings(c);
    out.extend(reach_warnings(c));
    out.extend(
        regex_overlaps(c)
            .into_iter()
            .filter(|(_, auth_differs)| !auth_differs)
            .map(|(p, _)| p),
    );
    out.extend(forwarding_header_warnings(c));
    out
}

/// A regex route outranks prefix routes (its path kind is more specific), so one that also
/// matches another route's paths takes them: `/api/v[0-9]+/.*` takes `/api/v1/admin` from a
/// protected prefix route. Probed with the other route's own path and one below it. `true`:
/// the two routes authenticate differently (an error: an open regex route takes a protected
/// route's paths); otherwise a warning.
fn regex_overlaps(c: &Config) -> Vec<(Problem, bool)> {
    let mut out = Vec::new();
    for (i, a) in c.routes.iter().enumerate() {
        let Some(re) = &a.matches.path_regex else {
            continue;
        };
        let Ok(re) = crate::matching::anchored_regex(re) else {
            continue;
        };
        for (j, b) in c.routes.iter().enumerate() {
            let m = &b.matches;
            let base = match (&m.path, &m.path_prefix, &m.path_template) {
                (Some(p), _, _) | (None, Some(p), _) => p.clone(),
                (None, None, Some(t)) => match parse_template(t) {
                    Ok(segs) => segs
                        .iter()
                        .map(|s| match s {
                            Segment::Literal(l) => format!("/{l}"),
                            _ => "/x".to_string(),
                        })
                        .collect(),
                    Err(_) => continue,
                },
                _ => continue,
            };
            let same_host = a.matches.host.is_none() || a.matches.host == m.host;
            if i == j || !same_host || !crate::shadow::beats(a, i, b, j) {
                continue;
            }
            let below = format!("{}/x", base.trim_end_matches('/'));
            let hit = [base, below].into_iter().find(|p| re.is_match(p));
            if let Some(hit) = hit {
                let differs = auth_of(a) != auth_of(b);
                let auth = if differs {
                    " (with different authentication)"
                } else {
                    ""
                };
                out.push(((
                    format!("routes[{i}].match.path_regex"),
                    format!(
                        "route {:?} also matches {hit:?}, a path of route {:?} (routes[{j}]), and wins over it{auth}: a regex outranks prefixes; narrow the regex, or match {:?} with a path_template (`{}/{{*rest}}` outranks a regex)",
                        a.name, b.name, b.name, base_of(m)
                    ),
                ), differs));
            }
        }
    }
    out
}

fn base_of(m: &crate::schema::RouteMatch) -> String {
    m.path
        .as_deref()
        .or(m.path_prefix.as_deref())
        .unwrap_or("/prefix")
        .trim_end_matches('/')
        .to_string()
}

/// Header conditions on headers a client can forge and the gateway rewrites for the backend:
/// routes see the client's copy.
fn forwarding_header_warnings(c: &Config) -> Vec<Problem> {
    const FORWARDING: [&str; 5] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    ];
    let mut out = Vec::new();
    for (i, r) in c.routes.iter().enumerate() {
        for name in r.matches.headers.keys() {
            if FORWARDING.contains(&name.to_ascii_lowercase().as_str()) {
                out.push((
                    format!("routes[{i}].match.headers.{name}"),
                    format!("{name:?} is matched as the client sent it, from anyone, before the gateway rewrites it: match the client's address with match.client_ip instead"),
                ));
            }
        }
    }
    out
}

/// Client-certificate conditions where no listener verifies client certificates: they could
/// never hold (a route that never matches, an auth filter that always answers 401).
fn client_cert_warnings(c: &Config) -> Vec<Problem> {
    let verified = c
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()));
    if verified {
        return Vec::new();
    }
    let mut out = Vec::new();
    let why = "no listener verifies client certificates (tls.client_auth), so this never sees one";
    for (i, r) in c.routes.iter().enumerate() {
        if r.matches.client_cert.is_some() {
            out.push((format!("routes[{i}].match.client_cert"), why.to_string()));
        }
        for (j, f) in r.filters.iter().enumerate() {
            if matches!(f, Filter::Auth(a) if a.client_cert.is_some()) {
                out.push((
                    format!("routes[{i}].filters[{j}].auth.client_cert"),
                    why.to_string(),
                ));
            }
        }
    }
    for (i, rl) in c.rate_limits.iter().enumerate() {
        if rl.key.trim() == "client_cert" {
            out.push((format!("rate_limits[{i}].key"), why.to_string()));
        }
    }
    out
}

fn reach_warnings(c: &Config) -> Vec<Problem> {
    let mut reach: BTreeMap<&str, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (i, r) in c.routes.iter().enumerate() {
        let auth = auth_of(r);
        let mut targets: Vec<&str> = r.cluster.iter().map(String::as_str).collect();
        if let Some(cfp) = &r.cluster_from_path {
            targets.extend(cfp.allow.iter().map(String::as_str));
        }
        targets.extend(r.clusters.iter().map(|w| w.name.as_str()));
        targets.extend(r.mirror.iter().map(|m| m.cluster.as_str()));
        targets.sort_unstable();
        targets.dedup();
        for t in targets {
            reach.entry(t).or_default().push((i, auth.clone()));
        }
    }
    let mut out = Vec::new();
    for (cluster, routes) in reach {
        let kinds: BTreeSet<&Vec<String>> = routes.iter().map(|(_, a)| a).collect();
        if kinds.len() < 2 {
            continue;
        }
        let describe: Vec<String> = routes
            .iter()
            .map(|(i, a)| {
                let auth = if a.is_empty() {
                    "no auth".to_string()
                } else {
                    a.join(" + ")
                };
                format!("{} ({auth})", c.routes[*i].name)
            })
            .collect();
        let open = routes.iter().find(|(_, a)| a.is_empty()).map(|(i, _)| *i);
        let at = open.unwrap_or(routes[0].0);
        out.push((
            format!("routes[{at}]"),
            format!(
                "cluster {cluster:?} is reachable through routes with different authentication: {}",
                describe.join(", ")
            ),
        ));
    }
    out
}
