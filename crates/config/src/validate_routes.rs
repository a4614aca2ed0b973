//! Checks across routes: a route that can never match because an earlier one with the same
//! match always wins (an error: it is usually a protected route shadowed by an open one), a
//! rate limit keyed on who the client is placed before anything says who it is (an error), and
//! clusters reachable through routes with different authentication (a warning: often on purpose,
//! a public and a private route to one backend, but worth a look).

use crate::schema::{Config, Route};
use crate::traffic::{parse_limit_key, Filter, LimitKey};
use crate::validate::Problem;
use std::collections::{BTreeMap, BTreeSet};

/// What requests a route's match accepts, in a form where equal means "the same requests".
fn match_key(r: &Route) -> impl PartialEq + '_ {
    let m = &r.matches;
    let host = m.host.as_ref().map(|h| h.to_ascii_lowercase());
    // `path_prefix: /` matches every path, as no path match does.
    let prefix = m.path_prefix.as_deref().filter(|p| *p != "/");
    let mut methods: Vec<&str> = m.methods.iter().map(String::as_str).collect();
    methods.sort_unstable();
    methods.dedup();
    let headers: BTreeMap<String, &str> = m
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    (
        host,
        m.path.as_deref(),
        prefix,
        m.path_template.as_deref(),
        methods,
        headers,
        m.ignore_case,
    )
}

/// The auth filters of a route, as a comparable description.
fn auth_of(r: &Route) -> Vec<String> {
    r.filters
        .iter()
        .filter_map(|f| match f {
            Filter::Auth(a) => Some(match (&a.api_key, &a.jwt) {
                (Some(k), _) => format!("api_key(header {})", k.header),
                (_, Some(j)) => format!("jwt(issuer {})", j.issuer),
                _ => "auth".into(),
            }),
            _ => None,
        })
        .collect()
}

pub fn validate_routes(c: &Config, p: &mut impl FnMut(String, String)) {
    // Shadowed routes. Routes with equal match keys tie on specificity (or the later one
    // ranks lower, for `path_prefix: /` against no path), so config order decides: the first
    // always wins.
    for (j, r) in c.routes.iter().enumerate() {
        let key = match_key(r);
        if let Some((i, first)) = c
            .routes
            .iter()
            .enumerate()
            .take(j)
            .find(|(_, e)| match_key(e) == key)
        {
            let first_wins = !(first.matches.path_prefix.is_none()
                && first.matches.path.is_none()
                && first.matches.path_template.is_none()
                && r.matches.path_prefix.as_deref() == Some("/"));
            let (loser, winner, li, wi) = if first_wins {
                (r, first, j, i)
            } else {
                (first, r, i, j)
            };
            p(
                format!("routes[{li}].match"),
                format!(
                    "route {:?} can never match: route {:?} (routes[{wi}]) has the same match and always wins",
                    loser.name, winner.name
                ),
            );
        }
    }

    // Identity used before it is known.
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
                Filter::Fault(_) => {}
            }
        }
    }
}

/// Clusters that routes with different authentication reach (by `cluster` or a
/// `cluster_from_path` allow list). Reported by `check` and logged at load; not errors.
pub fn warnings(c: &Config) -> Vec<Problem> {
    let mut reach: BTreeMap<&str, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (i, r) in c.routes.iter().enumerate() {
        let auth = auth_of(r);
        let mut targets: Vec<&str> = r.cluster.iter().map(String::as_str).collect();
        if let Some(cfp) = &r.cluster_from_path {
            targets.extend(cfp.allow.iter().map(String::as_str));
        }
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
