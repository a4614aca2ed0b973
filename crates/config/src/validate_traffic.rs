//! Validation of consumers, rate limits, Redis, JWT issuers and route filters.

use crate::schema::Config;
use crate::traffic::{parse_limit_key, parse_rate, Algorithm, Filter, Store};
use crate::validate::did_you_mean;
use std::collections::HashSet;

/// Applies `rate_env` overrides from the environment (before validation, so an override is
/// validated like a written rate). Returns the fields that were overridden.
pub fn apply_env_overrides(c: &mut Config) -> Vec<String> {
    let mut applied = Vec::new();
    for (i, rl) in c.rate_limits.iter_mut().enumerate() {
        if let Some(var) = &rl.rate_env {
            if let Ok(v) = std::env::var(var) {
                rl.rate = v;
                applied.push(format!("rate_limits[{i}].rate"));
            }
        }
    }
    applied
}

pub fn validate_traffic(c: &Config, p: &mut impl FnMut(String, String)) {
    let mut problems = Vec::new();
    crate::cache::validate_settings(&c.cache, &mut problems);
    for (path, msg) in problems {
        p(path, msg);
    }
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    for (i, con) in c.consumers.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if con.name.is_empty() || !names.insert(con.name.as_str()) {
            p(
                format!("{at}.name"),
                format!("consumer name {:?} is empty or used twice", con.name),
            );
        }
        for (j, k) in con.api_keys.iter().enumerate() {
            let ok = k
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                p(
                    format!("{at}.api_keys[{j}]"),
                    "expected sha256:<64 hex digits> (print one with `gatehouse hash-key KEY`)"
                        .into(),
                );
            } else if !digests.insert(k.to_ascii_lowercase()) {
                p(
                    format!("{at}.api_keys[{j}]"),
                    "this key is listed twice".into(),
                );
            }
        }
    }

    let mut rl_names = HashSet::new();
    for (i, rl) in c.rate_limits.iter().enumerate() {
        let at = format!("rate_limits[{i}]");
        if rl.name.is_empty() || !rl_names.insert(rl.name.as_str()) {
            p(
                format!("{at}.name"),
                format!("rate limit name {:?} is empty or used twice", rl.name),
            );
        }
        if let Err(e) = parse_rate(&rl.rate) {
            let field = if rl
                .rate_env
                .as_ref()
                .is_some_and(|v| std::env::var(v).is_ok())
            {
                format!("{at}.rate_env")
            } else {
                format!("{at}.rate")
            };
            p(field, e);
        }
        if let Err(e) = parse_limit_key(&rl.key) {
            p(format!("{at}.key"), e);
        }
        if rl.burst == Some(0) {
            p(format!("{at}.burst"), "must be at least 1".into());
        }
        if rl.max_keys == 0 {
            p(format!("{at}.max_keys"), "must be at least 1".into());
        }
        if rl.store == Store::Redis {
            if c.redis.is_none() {
                p(
                    format!("{at}.store"),
                    "store: redis needs a top-level redis section".into(),
                );
            }
            if rl.algorithm == Algorithm::LeakyBucket {
                p(
                    format!("{at}.algorithm"),
                    "leaky_bucket delays requests locally and cannot use store: redis (use token_bucket or sliding_window)".into(),
                );
            }
        }
    }
    if c.redis
        .as_ref()
        .is_some_and(|r| r.url.is_empty() && r.url_file.is_none())
    {
        p(
            "redis".into(),
            "give url (redis://host:port) or url_file".into(),
        );
    }
    if let Some(r) = c.redis.as_ref().filter(|r| !r.url.is_empty()) {
        let host = r
            .url
            .split_once("://")
            .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, h)| h))
            .map(|h| h.split(['/', '?']).next().unwrap_or(""))
            .unwrap_or("");
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) || host.is_empty() {
            p(
                "redis.url".into(),
                format!("invalid url {:?}: expected redis://host:port", r.url),
            );
        }
        if r.timeout.0.is_zero() {
            p("redis.timeout".into(), "must be greater than 0".into());
        }
    }

    let mut issuers = HashSet::new();
    for (i, j) in c.jwt_issuers.iter().enumerate() {
        let at = format!("jwt_issuers[{i}]");
        if j.name.is_empty() || !issuers.insert(j.name.as_str()) {
            p(
                format!("{at}.name"),
                format!("issuer name {:?} is empty or used twice", j.name),
            );
        }
        if j.algorithms.is_empty() {
            p(
                format!("{at}.algorithms"),
                "list at least one of HS256, RS256, ES256".into(),
            );
        }
        if j.leeway.0 > std::time::Duration::from_secs(300) {
            p(
                format!("{at}.leeway"),
                format!("{} is too long: at most 5m of clock skew", j.leeway),
            );
        }
        let hs = j.algorithms.iter().any(|a| a == "HS256");
        let asym: Vec<&str> = j
            .algorithms
            .iter()
            .map(String::as_str)
            .filter(|a| *a == "RS256" || *a == "ES256")
            .collect();
        if hs && !asym.is_empty() {
            p(
                format!("{at}.algorithms"),
                "HS256 (a shared secret) cannot be mixed with RS256/ES256 (public keys) in one issuer: declare two issuers".into(),
            );
        }
        if asym.contains(&"RS256") && asym.contains(&"ES256") && j.keys_file.is_none() {
            p(
                format!("{at}.algorithms"),
                "RS256 and ES256 need keys of two families: use keys_file (a JWKS with both), or two issuers".into(),
            );
        }
        if !hs && (j.secret_env.is_some() || j.secret_file.is_some()) {
            p(
                format!("{at}.algorithms"),
                "secret_env and secret_file are the HS256 secret: list HS256, or remove them"
                    .into(),
            );
        }
        if j.key_file.is_some() && j.keys_file.is_some() {
            p(
                format!("{at}.key_file"),
                "use either key_file or keys_file, not both".into(),
            );
        }
        if j.issuer.as_deref() == Some("") {
            p(format!("{at}.issuer"), "must not be empty".into());
        }
        if j.audience.as_deref() == Some("") {
            p(format!("{at}.audience"), "must not be empty".into());
        }
        for (k, a) in j.algorithms.iter().enumerate() {
            match a.as_str() {
                "HS256" if j.secret_env.is_none() && j.secret_file.is_none() => p(
                    format!("{at}.algorithms[{k}]"),
                    "HS256 needs secret_env (the variable holding the shared secret) or secret_file".into(),
                ),
                "RS256" | "ES256" if j.key_file.is_none() && j.keys_file.is_none() => p(
                    format!("{at}.algorithms[{k}]"),
                    format!("{a} needs key_file (PEM) or keys_file (JWKS)"),
                ),
                "HS256" | "RS256" | "ES256" => {}
                other => p(
                    format!("{at}.algorithms[{k}]"),
                    format!("unsupported algorithm {other:?}: use HS256, RS256 or ES256"),
                ),
            }
        }
    }

    underscore_headers(c, p);

    let id = &c.identity;
    if !crate::validate::is_token(&id.consumer_header) {
        p(
            "identity.consumer_header".into(),
            format!("invalid header name {:?}", id.consumer_header),
        );
    }
    for (i, h) in id.strip_headers.iter().enumerate() {
        if !crate::validate::is_token(h) {
            p(
                format!("identity.strip_headers[{i}]"),
                format!("invalid header name {h:?}"),
            );
        }
    }

    let rl_known: Vec<&str> = c.rate_limits.iter().map(|r| r.name.as_str()).collect();
    let iss_known: Vec<&str> = c.jwt_issuers.iter().map(|r| r.name.as_str()).collect();
    for (i, r) in c.routes.iter().enumerate() {
        for (j, f) in r.filters.iter().enumerate() {
            let at = format!("routes[{i}].filters[{j}]");
            match f {
                Filter::RateLimit(name) if !rl_known.contains(&name.as_str()) => {
                    let hint = did_you_mean(name, &rl_known)
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    p(
                        format!("{at}.rate_limit"),
                        format!("no rate limit named {name:?}{hint}"),
                    );
                }
                Filter::RateLimit(_) => {}
                Filter::Cache(f) => {
                    let mut problems = Vec::new();
                    crate::cache::validate_filter(f, &at, c.redis.is_some(), &mut problems);
                    for (path, msg) in problems {
                        p(path, msg);
                    }
                    if r.filters[..j].iter().any(|f| matches!(f, Filter::Cache(_))) {
                        p(
                            format!("{at}.cache"),
                            "a route has at most one cache filter".into(),
                        );
                    }
                }
                Filter::Cors(f) => {
                    let mut problems = Vec::new();
                    crate::cors::check(f, &format!("{at}.cors"), &mut problems);
                    for (path, msg) in problems {
                        p(path, msg);
                    }
                    if r.filters[..j].iter().any(|f| matches!(f, Filter::Cors(_))) {
                        p(
                            format!("{at}.cors"),
                            "a route has at most one cors filter".into(),
                        );
                    }
                }
                Filter::Fault(f) => {
                    if f.abort.is_none() == f.delay.is_none() {
                        p(
                            format!("{at}.fault"),
                            "use exactly one of abort and delay".into(),
                        );
                    }
                    if f.abort.is_some_and(|s| !(200..=599).contains(&s)) {
                        p(
                            format!("{at}.fault.abort"),
                            "must be a status from 200 to 599".into(),
                        );
                    }
                }
                Filter::Auth(a) => {
                    if let Some(k) = &a.api_key {
                        if !crate::validate::is_token(&k.header) {
                            p(
                                format!("{at}.auth.api_key.header"),
                                format!("invalid header name {:?}", k.header),
                            );
                        }
                        if k.query
                            .as_deref()
                            .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#', '?', ' ']))
                        {
                            p(
                                format!("{at}.auth.api_key.query"),
                                "expected a query parameter name like api_key".into(),
                            );
                        }
                    }
                    let kinds = [
                        a.api_key.is_some(),
                        a.jwt.is_some(),
                        a.client_cert.is_some(),
                    ];
                    if kinds.iter().filter(|k| **k).count() != 1 {
                        p(
                            format!("{at}.auth"),
                            "use exactly one of api_key, jwt and client_cert".into(),
                        );
                    }
                    match (&a.api_key, &a.jwt) {
                        (None, Some(jwt)) if !iss_known.contains(&jwt.issuer.as_str()) => {
                            let hint = did_you_mean(&jwt.issuer, &iss_known)
                                .map(|s| format!(" (did you mean {s:?}?)"))
                                .unwrap_or_default();
                            p(
                                format!("{at}.auth.jwt.issuer"),
                                format!("no jwt issuer named {:?}{hint}", jwt.issuer),
                            )
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Header names with `_` that the config reads (API-key headers, limit keys, `hash_on`, route
/// header matches) while some listener drops or rejects such headers: they would never be seen.
fn underscore_headers(c: &Config, p: &mut impl FnMut(String, String)) {
    use crate::edge::UnderscoreHeaders;
    let Some(l) = c
        .listeners
        .iter()
        .position(|l| l.headers_with_underscores != UnderscoreHeaders::Allow)
    else {
        return;
    };
    let mut complain = |path: String, name: &str| {
        if name.contains('_') {
            p(
                path,
                format!("header {name:?} has '_': listeners[{l}] drops such headers before filters run (headers_with_underscores); use '-' or set it to allow"),
            );
        }
    };
    for (i, r) in c.routes.iter().enumerate() {
        for name in r.matches.headers.keys() {
            complain(format!("routes[{i}].match.headers.{name}"), name);
        }
        for (j, f) in r.filters.iter().enumerate() {
            if let Filter::Auth(a) = f {
                if let Some(k) = &a.api_key {
                    complain(
                        format!("routes[{i}].filters[{j}].auth.api_key.header"),
                        &k.header,
                    );
                }
            }
        }
    }
    for (i, rl) in c.rate_limits.iter().enumerate() {
        if let Ok(crate::traffic::LimitKey::Header(h)) = parse_limit_key(&rl.key) {
            complain(format!("rate_limits[{i}].key"), &h);
        }
    }
    for (i, cl) in c.clusters.iter().enumerate() {
        if let Some(Ok(crate::policy::HashOn::Header(h))) =
            cl.hash_on.as_deref().map(crate::policy::parse_hash_on)
        {
            complain(format!("clusters[{i}].hash_on"), &h);
        }
    }
}
