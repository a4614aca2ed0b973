//! Semantic validation: everything serde cannot check. Collects every problem with its field
//! path; `lib.rs` attaches file positions. Pure: no I/O, no network.

use crate::schema::{Config, Route};
use crate::template::{param_names, parse_template, Segment};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// One problem: the field's path and what is wrong.
pub type Problem = (String, String);

pub fn validate(c: &Config) -> Vec<Problem> {
    let mut v = Vec::new();
    let mut p = |path: String, msg: String| v.push((path, msg));

    if c.listeners.is_empty() {
        p(
            "listeners".into(),
            "at least one listener is required (or services:, which adds one on 0.0.0.0:8080)"
                .into(),
        );
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        check_name(
            &mut p,
            &format!("{at}.name"),
            &l.name,
            &mut names,
            "listener",
        );
        match l.address.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !addrs.insert(a) => {
                p(
                    format!("{at}.address"),
                    format!("address {a} is used by another listener"),
                );
            }
            Ok(_) => {}
            Err(_) => p(
                format!("{at}.address"),
                format!(
                    "invalid address {:?}: expected IP:port, like 127.0.0.1:8080",
                    l.address
                ),
            ),
        }
        for (j, t) in l.trusted_proxies.iter().enumerate() {
            if parse_cidr(t).is_none() {
                p(
                    format!("{at}.trusted_proxies[{j}]"),
                    format!("invalid value {t:?}: expected an IP address or CIDR like 10.0.0.0/8"),
                );
            }
        }
        let lim = &l.limits;
        if lim.max_header_bytes.0 < 8192 {
            p(
                format!("{at}.limits.max_header_bytes"),
                "must be at least 8KiB (the HTTP/1 read buffer's minimum)".into(),
            );
        }
        if lim.request_buffering.0 > 64 << 20 {
            p(
                format!("{at}.limits.request_buffering"),
                "at most 64MiB (bodies are held in memory)".into(),
            );
        }
        if lim.max_connections == 0 {
            p(
                format!("{at}.limits.max_connections"),
                "must be at least 1".into(),
            );
        }
        if lim.max_headers == 0 {
            p(
                format!("{at}.limits.max_headers"),
                "must be at least 1".into(),
            );
        }
        for (field, d) in [
            ("header_read_timeout", lim.header_read_timeout),
            ("idle_timeout", lim.idle_timeout),
            ("body_read_timeout", lim.body_read_timeout),
        ] {
            if d.0.is_zero() {
                p(
                    format!("{at}.limits.{field}"),
                    "must be greater than 0".into(),
                );
            }
        }
        if let Some(t) = &l.tls {
            validate_tls(&mut p, &at, t);
            if l.redirect_https {
                p(
                    format!("{at}.redirect_https"),
                    "a TLS listener is already HTTPS: redirect_https is for plain-HTTP listeners"
                        .into(),
                );
            }
        }
    }
    if let Some(a) = &c.admin {
        validate_admin(&mut p, a);
    }
    for (i, u) in c.etcd.iter().flat_map(|e| e.endpoints.iter()).enumerate() {
        let host = u.strip_prefix("http://").map(|h| h.trim_end_matches('/'));
        if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
            p(
                format!("etcd.endpoints[{i}]"),
                format!("invalid etcd endpoint {u:?}: expected http://HOST:PORT"),
            );
        }
    }
    for (i, s) in c.dns.iter().flat_map(|d| d.servers.iter()).enumerate() {
        if let Err(msg) = crate::discovery::parse_server(s) {
            p(format!("dns.servers[{i}]"), msg);
        }
    }

    let mut cluster_names = HashSet::new();
    for (i, cl) in c.clusters.iter().enumerate() {
        let at = format!("clusters[{i}]");
        check_name(
            &mut p,
            &format!("{at}.name"),
            &cl.name,
            &mut cluster_names,
            "cluster",
        );
        match (&cl.endpoints_from, cl.endpoints.is_empty()) {
            (None, true) => p(
                format!("{at}.endpoints"),
                "a cluster needs at least one endpoint (or endpoints_from)".into(),
            ),
            (Some(_), false) => p(
                format!("{at}.endpoints_from"),
                "either endpoints or endpoints_from, not both".into(),
            ),
            (Some(from), true) => {
                let etcd = c.etcd.as_ref().is_some_and(|e| !e.endpoints.is_empty());
                for (field, msg) in crate::discovery::validate(from, etcd) {
                    p(format!("{at}.{field}"), msg);
                }
            }
            (None, false) => {}
        }
        let mut seen = HashSet::new();
        for (j, e) in cl.endpoints.iter().enumerate() {
            let ep = format!("{at}.endpoints[{j}]");
            if let Err(msg) = check_host_port(&e.address) {
                p(format!("{ep}.address"), msg);
            } else if !seen.insert(e.address.as_str()) {
                p(
                    format!("{ep}.address"),
                    format!("endpoint {} is listed twice", e.address),
                );
            }
            if e.weight == 0 {
                p(
                    format!("{ep}.weight"),
                    "invalid value 0: expected a positive integer".into(),
                );
            }
        }
        for (field, d) in [
            ("connect", cl.timeouts.connect),
            ("request", cl.timeouts.request),
            ("idle", cl.timeouts.idle),
        ] {
            if d.0.is_zero() {
                p(
                    format!("{at}.timeouts.{field}"),
                    "must be greater than 0".into(),
                );
            }
        }
        validate_resilience(&mut p, &at, cl);
        for (field, v) in [
            ("max_connections", cl.limits.max_connections),
            ("max_requests", cl.limits.max_requests),
        ] {
            if v == 0 {
                p(format!("{at}.limits.{field}"), "must be at least 1".into());
            }
        }
    }

    let known: Vec<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
    let mut route_names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        check_name(
            &mut p,
            &format!("{at}.name"),
            &r.name,
            &mut route_names,
            "route",
        );
        validate_route(&mut p, &at, r, &known);
    }
    v
}

/// The admin listener's settings, as `run` checks them: a token (from the environment, or
/// generated) is required off loopback; the variable must be set.
fn validate_admin(p: &mut impl FnMut(String, String), a: &crate::schema::Admin) {
    let addr = match a.address.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p(
                "admin.address".into(),
                format!(
                    "invalid address {:?}: expected IP:port, like 127.0.0.1:9901",
                    a.address
                ),
            );
            None
        }
    };
    if a.token_env.is_some() && a.token.is_some() {
        p(
            "admin.token".into(),
            "use either token_env or token: auto, not both".into(),
        );
    }
    if let Some(var) = &a.token_env {
        match std::env::var(var) {
            Ok(t) if t.len() >= 16 => {}
            Ok(t) if !t.is_empty() => p(
                "admin.token_env".into(),
                format!("the token in {var} is {} bytes; use at least 16", t.len()),
            ),
            _ => p(
                "admin.token_env".into(),
                format!("the variable {var} is not set"),
            ),
        }
    }
    if let Some(t) = a.token_value.as_deref().filter(|t| t.len() < 16) {
        p(
            "admin.token_file".into(),
            format!(
                "the token in the file is {} bytes; use at least 16",
                t.len()
            ),
        );
    }
    if let Some(addr) = addr {
        let no_token = a.token_env.is_none() && a.token.is_none() && a.token_file.is_none();
        if !addr.ip().is_loopback() && no_token {
            p(
                "admin.address".into(),
                format!("{addr} is not loopback: set admin.token_env, token_file or token: auto to require a bearer token"),
            );
        }
    }
    for (i, h) in a.allowed_hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            p(
                format!("admin.allowed_hosts[{i}]"),
                format!("invalid host name {h:?} (a name like gatehouse.internal, no port)"),
            );
        }
    }
}

fn validate_resilience(p: &mut impl FnMut(String, String), at: &str, cl: &crate::schema::Cluster) {
    let mut problems = Vec::new();
    crate::reply::validate_header_pair(
        (&cl.request_headers, &cl.response_headers),
        at,
        &mut problems,
    );
    for (path, msg) in problems {
        p(path, msg);
    }
    match (&cl.hash_on, cl.lb.is_hashing()) {
        (Some(h), true) => {
            if let Err(e) = crate::policy::parse_hash_on(h) {
                p(format!("{at}.hash_on"), e);
            }
        }
        (None, true) => p(
            format!("{at}.lb"),
            "ring_hash and maglev need hash_on (header:NAME, cookie:NAME, client_ip or path)"
                .into(),
        ),
        (Some(_), false) => p(
            format!("{at}.hash_on"),
            "hash_on is only used by lb: ring_hash or maglev".into(),
        ),
        (None, false) => {}
    }
    let hc = &cl.health_check;
    let h = format!("{at}.health_check");
    for (field, d) in [("interval", hc.interval), ("timeout", hc.timeout)] {
        if d.0.is_zero() {
            p(format!("{h}.{field}"), "must be greater than 0".into());
        }
    }
    if hc.timeout > hc.interval {
        p(
            format!("{h}.timeout"),
            format!("must not exceed the interval ({})", hc.interval),
        );
    }
    for (field, v) in [
        ("healthy_threshold", hc.healthy_threshold),
        ("unhealthy_threshold", hc.unhealthy_threshold),
    ] {
        if v == 0 {
            p(format!("{h}.{field}"), "must be at least 1".into());
        }
    }
    if let Some(path) = &hc.path {
        if !path.starts_with('/') {
            p(format!("{h}.path"), format!("{path:?} must start with '/'"));
        }
    }
    if let Err(e) = crate::policy::parse_statuses(&hc.expected_statuses) {
        p(format!("{h}.expected_statuses"), e);
    }
    let cb = &cl.circuit_breaker;
    let b = format!("{at}.circuit_breaker");
    if cb.half_open_calls == 0 {
        p(format!("{b}.half_open_calls"), "must be at least 1".into());
    }
    if cb.minimum_calls == 0 {
        p(format!("{b}.minimum_calls"), "must be at least 1".into());
    }
    for (field, d) in [
        ("open_duration", cb.open_duration),
        ("slow_call_duration", cb.slow_call_duration),
        ("probe_timeout", cb.probe_timeout),
    ] {
        if d.0.is_zero() {
            p(format!("{b}.{field}"), "must be greater than 0".into());
        }
    }
    if cb.max_open_duration < cb.open_duration {
        p(
            format!("{b}.max_open_duration"),
            format!("must be at least open_duration ({})", cb.open_duration),
        );
    }
    if let crate::units::Window::Time(d) = cb.window {
        if d.is_zero() {
            p(format!("{b}.window"), "must be greater than 0".into());
        }
    }
    let r = &cl.retries;
    if r.attempts > 10 {
        p(
            format!("{at}.retries.attempts"),
            "at most 10 retries".into(),
        );
    }
    if r.per_try_timeout.is_some_and(|d| d.0.is_zero()) {
        p(
            format!("{at}.retries.per_try_timeout"),
            "must be greater than 0".into(),
        );
    }
    for (j, cond) in r.on.iter().enumerate() {
        if let Err(e) = crate::policy::parse_retry_on(cond) {
            p(format!("{at}.retries.on[{j}]"), e);
        }
    }
}

fn validate_route(p: &mut impl FnMut(String, String), at: &str, r: &Route, known: &[&str]) {
    let m = &r.matches;
    let kinds = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_template.is_some(),
        m.path_regex.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        p(
            format!("{at}.match"),
            "use only one of path, path_prefix, path_template and path_regex".into(),
        );
    }
    let mut problems = Vec::new();
    crate::matching::check_match(m, at, &mut problems);
    for (path, msg) in problems {
        p(path, msg);
    }
    for (field, val) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if let Some(v) = val {
            if !v.starts_with('/') {
                p(
                    format!("{at}.match.{field}"),
                    format!("{v:?} must start with '/'"),
                );
            } else if let Err(e) = normal_route_path(v) {
                p(format!("{at}.match.{field}"), e);
            }
        }
    }
    let mut params: Vec<String> = Vec::new();
    if let Some(t) = &m.path_template {
        match parse_template(t) {
            Ok(segs) => {
                params = param_names(&segs).map(str::to_string).collect();
                let literal: String = segs
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(l) => format!("/{l}"),
                        _ => "/x".to_string(),
                    })
                    .collect();
                if let Err(e) = normal_route_path(&literal) {
                    p(format!("{at}.match.path_template"), e);
                }
            }
            Err(e) => p(format!("{at}.match.path_template"), e),
        }
    }
    if let Some(h) = &m.host {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.ends_with('.') || bare.contains(':') {
            // Request hosts lose their trailing dot and port before routing: this would never match.
            p(
                format!("{at}.match.host"),
                format!("invalid host {h:?}: write the name without a port or trailing dot (requests are matched on the name alone)"),
            );
        } else if bare.is_empty()
            || bare.contains('*')
            || bare.split('.').any(str::is_empty)
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            p(
                format!("{at}.match.host"),
                format!(
                    "invalid host {h:?}: expected a name like api.example.com or *.example.com"
                ),
            );
        }
    }
    for (j, meth) in m.methods.iter().enumerate() {
        if meth.is_empty() || !meth.chars().all(|c| c.is_ascii_uppercase()) {
            p(
                format!("{at}.match.methods[{j}]"),
                format!("invalid method {meth:?}: expected an upper-case name like GET"),
            );
        }
    }
    for name in m.headers.keys() {
        if http_token(name).is_none() {
            p(
                format!("{at}.match.headers.{name}"),
                format!("invalid header name {name:?}"),
            );
        }
    }
    let answers = usize::from(r.redirect.is_some()) + usize::from(r.direct_response.is_some());
    let mut problems = Vec::new();
    crate::reply::validate_header_pair(
        (&r.request_headers, &r.response_headers),
        at,
        &mut problems,
    );
    if let Some(rd) = &r.redirect {
        crate::reply::validate_redirect(rd, at, &mut problems);
    }
    if let Some(d) = &r.direct_response {
        crate::reply::validate_direct(d, at, &mut problems);
    }
    for (path, msg) in problems {
        p(path, msg);
    }
    if r.timeouts.request.is_some_and(|d| d.0.is_zero()) {
        p(
            format!("{at}.timeouts.request"),
            "must be more than 0s".into(),
        );
    }
    if answers > 0 && r.strip_prefix {
        p(
            format!("{at}.strip_prefix"),
            "a redirect or direct_response route forwards nothing to strip".into(),
        );
    }
    let mut problems = Vec::new();
    crate::forward::check(r, at, known, &mut problems);
    for (path, msg) in problems {
        p(path, msg);
    }
    if r.timeouts.idle.is_some_and(|d| d.0.is_zero()) {
        p(format!("{at}.timeouts.idle"), "must be more than 0s".into());
    }
    let targets = answers
        + usize::from(r.cluster.is_some())
        + usize::from(r.cluster_from_path.is_some())
        + usize::from(!r.clusters.is_empty());
    match (&r.cluster, &r.cluster_from_path) {
        _ if targets > 1 => p(
            format!("{at}.cluster"),
            "use one of cluster, clusters, cluster_from_path, redirect and direct_response".into(),
        ),
        _ if targets == 0 => p(
            format!("{at}.cluster"),
            "missing field: a route needs cluster, clusters, cluster_from_path, redirect or direct_response"
                .into(),
        ),
        (Some(c), None) if !known.contains(&c.as_str()) => {
            let hint = did_you_mean(c, known)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            p(
                format!("{at}.cluster"),
                format!("no cluster named {c:?}{hint}"),
            );
        }
        (None, Some(cfp)) => {
            if !params.contains(&cfp.param) {
                p(
                    format!("{at}.cluster_from_path.param"),
                    format!(
                        "{:?} is not a parameter of this route's path_template",
                        cfp.param
                    ),
                );
            }
            if cfp.allow.is_empty() {
                p(
                    format!("{at}.cluster_from_path.allow"),
                    "list at least one cluster this route may reach".into(),
                );
            }
            let mut seen = HashSet::new();
            for (j, c) in cfp.allow.iter().enumerate() {
                if !known.contains(&c.as_str()) {
                    let hint = did_you_mean(c, known)
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    p(
                        format!("{at}.cluster_from_path.allow[{j}]"),
                        format!("no cluster named {c:?}{hint}"),
                    );
                } else if !seen.insert(c.as_str()) {
                    p(
                        format!("{at}.cluster_from_path.allow[{j}]"),
                        format!("{c:?} is listed twice"),
                    );
                }
            }
        }
        _ => {}
    }
    if r.strip_prefix && m.path_prefix.is_none() && m.path_template.is_none() {
        p(
            format!("{at}.strip_prefix"),
            "strip_prefix needs path_prefix or path_template".into(),
        );
    }
    if let Some(t) = &m.path_template {
        if r.strip_prefix {
            if let Ok(segs) = parse_template(t) {
                if !matches!(segs.last(), Some(Segment::CatchAll(_)))
                    && r.cluster_from_path.is_none()
                {
                    // Stripping a whole template would leave nothing to forward but "/".
                    p(
                        format!("{at}.strip_prefix"),
                        "with a path_template, strip_prefix needs a last segment {*rest}".into(),
                    );
                }
            }
        }
    }
}

/// A route's path literal must already be in the normal form requests are brought to before
/// routing, or the route could never match (and its filters never run).
fn normal_route_path(path: &str) -> Result<(), String> {
    use crate::edge::{Backslash, EscapedDelimiters, EscapedSlashes, PathParameters};
    let o = crate::edge::PathNormalization {
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Keep,
        escaped_delimiters: EscapedDelimiters::Keep,
        backslash: Backslash::Reject,
        path_parameters: PathParameters::Reject,
        redirect: false,
    };
    match crate::normalize::normalize(path, &o) {
        Ok(n) if n.changed() => Err(format!(
            "{path:?} is not in normal form, so no request could match it: requests are routed after normalization; write {:?}",
            n.path
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{path:?} can never match: {}", e.detail())),
    }
}

/// A name of a listener, cluster, route or service: letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check_name(
    p: &mut impl FnMut(String, String),
    path: &str,
    name: &str,
    seen: &mut HashSet<String>,
    what: &str,
) {
    if !valid_name(name) {
        p(
            path.into(),
            format!("invalid {what} name {name:?}: use letters, digits, '-', '_' or '.'"),
        );
    } else if !seen.insert(name.to_string()) {
        p(path.into(), format!("{what} name {name:?} is used twice"));
    }
}

/// An HTTP token (RFC 9110 §5.6.2): what a header name or method may be.
pub fn is_token(s: &str) -> bool {
    http_token(s).is_some()
}

fn http_token(s: &str) -> Option<&str> {
    (!s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
    .then_some(s)
}

/// `host:port` with a numeric port; the host may be an IP, `[v6]` or a DNS name (also how
/// discovery checks addresses from etcd keys).
pub fn check_host_port(a: &str) -> Result<(), String> {
    if a.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("invalid address {a:?}: expected host:port, like 127.0.0.1:9001");
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(bad());
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(bad());
    }
    Ok(())
}

/// An IP or CIDR (`10.0.0.0/8`) as a network.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The closest known name within a small edit distance.
pub fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn validate_tls(p: &mut impl FnMut(String, String), at: &str, t: &crate::tls::ListenerTls) {
    if t.certificates.is_empty() && t.acme.is_none() {
        p(
            format!("{at}.tls.certificates"),
            "at least one certificate/key pair is required (or `acme` to get one)".into(),
        );
    }
    if let Some(a) = &t.acme {
        validate_acme(p, &format!("{at}.tls.acme"), a);
    }
    for (j, pair) in t.certificates.iter().enumerate() {
        for (field, v) in [("cert", &pair.cert), ("key", &pair.key)] {
            if v.trim().is_empty() {
                p(
                    format!("{at}.tls.certificates[{j}].{field}"),
                    "a file name is required".into(),
                );
            }
        }
    }
    if let Some(ca) = &t.client_auth {
        if ca.ca.trim().is_empty() {
            p(
                format!("{at}.tls.client_auth.ca"),
                "a CA bundle file is required".into(),
            );
        }
    }
    if t.handshake_timeout.0.is_zero() {
        p(
            format!("{at}.tls.handshake_timeout"),
            "must be greater than 0".into(),
        );
    }
    if t.max_handshakes == 0 {
        p(
            format!("{at}.tls.max_handshakes"),
            "must be at least 1".into(),
        );
    }
}

fn validate_acme(p: &mut impl FnMut(String, String), at: &str, a: &crate::tls::Acme) {
    let rest = a
        .directory
        .strip_prefix("https://")
        .or_else(|| a.directory.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or(""));
    if host.is_none_or(|h| h.is_empty()) || a.directory.contains(char::is_whitespace) {
        p(
            format!("{at}.directory"),
            format!(
                "{:?} is not an http(s) URL of an ACME directory (Let's Encrypt's is https://acme-v02.api.letsencrypt.org/directory)",
                a.directory
            ),
        );
    }
    if a.domains.is_empty() {
        p(
            format!("{at}.domains"),
            "at least one domain is required".into(),
        );
    }
    for (i, d) in a.domains.iter().enumerate() {
        if d.starts_with("*.") {
            p(
                format!("{at}.domains[{i}]"),
                format!("{d:?}: a wildcard needs the dns-01 challenge, which is not supported; list the names"),
            );
        } else if !dns_name(d) {
            p(
                format!("{at}.domains[{i}]"),
                format!("{d:?} is not a DNS name"),
            );
        }
    }
    if a.storage.trim().is_empty() {
        p(format!("{at}.storage"), "a directory is required".into());
    }
    if let Some(e) = &a.email {
        if !e.contains('@') || e.contains(char::is_whitespace) {
            p(
                format!("{at}.email"),
                format!("{e:?} is not an email address"),
            );
        }
    }
    if a.renew_before.is_some_and(|d| d.0.is_zero()) {
        p(
            format!("{at}.renew_before"),
            "must be greater than 0".into(),
        );
    }
}

/// Letters, digits and `-` in dot-separated labels of 1 to 63 bytes, at most 253 in all.
fn dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
