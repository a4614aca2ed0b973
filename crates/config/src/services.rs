//! The `services:` shorthand, for the smallest setups:
//! `services: {product: [http://localhost:9001, http://localhost:9002]}` is one cluster per
//! service (round robin, the default health checks, breaker and retries) and one route,
//! `GET /v1/proxy/{service}/...`, that reaches them with the service's prefix stripped; without
//! `listeners:` there is one on `0.0.0.0:8080`. The expansion is ordinary config: `check`
//! validates it like the rest and `GET /config` shows it.

use crate::validate::Problem;
use crate::{Cluster, Config, Listener, Route};
use serde_json::json;

/// The route the shorthand adds.
pub const ROUTE_NAME: &str = "services";
/// The listener the shorthand adds when the file has none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// Names the service a problem found in the expansion is about: `clusters[i]` and `routes[j]`
/// past the file's own (`user`: how many clusters and routes the file had) are the shorthand's.
pub fn locate(path: &str, config: &Config, user: (usize, usize)) -> Option<String> {
    let index = |p: &str, kind: &str| -> Option<usize> {
        p.strip_prefix(kind)?
            .strip_prefix('[')?
            .split(']')
            .next()?
            .parse()
            .ok()
    };
    if let Some(i) = index(path, "clusters").filter(|&i| i >= user.0) {
        return config
            .clusters
            .get(i)
            .map(|c| format!("services.{}", c.name));
    }
    index(path, "routes")
        .filter(|&j| j >= user.1)
        .map(|_| "services".to_string())
}

/// Expands `config.services` into clusters, a route and (if needed) a listener.
pub fn expand(config: &mut Config, problems: &mut Vec<Problem>) {
    if config.services.is_empty() {
        return;
    }
    let mut names = Vec::new();
    for (name, urls) in &config.services {
        let at = format!("services.{name}");
        if config.clusters.iter().any(|c| &c.name == name) {
            problems.push((
                at,
                format!("a cluster named {name:?} is also declared under clusters: rename one"),
            ));
            continue;
        }
        if urls.is_empty() {
            problems.push((
                at,
                "list at least one URL, like http://localhost:9001".into(),
            ));
            continue;
        }
        if !crate::validate::valid_name(name) {
            problems.push((
                at,
                format!("invalid service name {name:?}: use letters, digits, '-', '_' and '.'"),
            ));
            continue;
        }
        let mut endpoints = Vec::new();
        let before = problems.len();
        for (i, url) in urls.iter().enumerate() {
            match endpoint_address(url) {
                Ok(a) => endpoints.push(json!({ "address": a })),
                Err(m) => problems.push((format!("{at}[{i}]"), m)),
            }
        }
        if problems.len() > before {
            // Reported at the URL; a cluster without it would only add echoes of that.
            continue;
        }
        let cluster = json!({ "name": name, "endpoints": endpoints });
        match serde_json::from_value::<Cluster>(cluster) {
            Ok(c) => config.clusters.push(c),
            Err(e) => problems.push((at, e.to_string())),
        }
        names.push(name.clone());
    }
    if names.is_empty() {
        return;
    }
    if config.routes.iter().any(|r| r.name == ROUTE_NAME) {
        problems.push((
            "services".into(),
            format!("the shorthand adds a route named {ROUTE_NAME:?}, and routes: has one too: rename yours"),
        ));
        return;
    }
    let route = json!({
        "name": ROUTE_NAME,
        "match": { "path_template": "/v1/proxy/{service}/{*rest}" },
        "cluster_from_path": { "param": "service", "allow": names },
        "strip_prefix": true,
    });
    match serde_json::from_value::<Route>(route) {
        Ok(r) => config.routes.push(r),
        Err(e) => problems.push(("services".into(), e.to_string())),
    }
    if config.listeners.is_empty() {
        if let Ok(l) = serde_json::from_value::<Listener>(
            json!({ "name": "default", "address": DEFAULT_LISTEN }),
        ) {
            config.listeners.push(l);
        }
    }
}

/// `http://host:port` (or `host:port`) as an endpoint address.
fn endpoint_address(url: &str) -> Result<String, String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        return Err(format!(
            "{url:?}: for TLS to a backend use the full form (clusters: with tls:, docs/tls.md)"
        ));
    } else if url.contains("://") {
        return Err(format!("{url:?}: only http:// URLs (or host:port)"));
    } else {
        url
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{url:?}: give only the scheme, host and port (the route forwards the rest of the path)"
        ));
    }
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    // Without a port, http's own: endpoints are always host:port.
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint_address as a;

    #[test]
    fn urls_become_addresses() {
        assert_eq!(a("http://localhost:9001").unwrap(), "localhost:9001");
        assert_eq!(a("http://localhost:9001/").unwrap(), "localhost:9001");
        assert_eq!(a("localhost:9001").unwrap(), "localhost:9001");
        assert_eq!(a("http://api.internal").unwrap(), "api.internal:80");
        assert_eq!(a("http://[::1]:9001").unwrap(), "[::1]:9001");
        assert_eq!(a("http://[::1]").unwrap(), "[::1]:80");
        assert!(a("https://x:1").is_err());
        assert!(a("http://x:1/api").is_err());
        assert!(a("http://").is_err());
    }
}
