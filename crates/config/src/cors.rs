//! The `cors` route filter's settings and their checks: which origins may read responses from a
//! browser, with which methods and headers, and for how long a preflight may be cached.

use crate::units::Dur;
use serde::{Deserialize, Serialize};

/// `cors: {allow_origins, allow_methods, allow_headers, expose_headers, allow_credentials,
/// max_age}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// `https://app.example.com`, `https://*.example.com` (any subdomain), or `*` (any origin,
    /// not with `allow_credentials`).
    pub allow_origins: Vec<String>,
    /// Default `[GET, HEAD, POST]`; `*` allows any.
    #[serde(default = "defaults::methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a page may send beyond the always-allowed ones; `*` allows any.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers a page may read beyond the always-exposed ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Cookies and HTTP authentication may go with requests.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer (omitted: the browser's default, 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
}

mod defaults {
    pub fn methods() -> Vec<String> {
        ["GET", "HEAD", "POST"].map(String::from).to_vec()
    }
}

/// Whether `o` is a valid `allow_origins` entry: `*`, or `scheme://host[:port]` where the host
/// may start with `*.`.
fn origin_ok(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let bad = || {
        format!("invalid origin {o:?}: expected scheme://host[:port] like https://app.example.com, https://*.example.com, or *")
    };
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.ends_with('/') {
        return Err(bad());
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let host_ok = !host.is_empty()
        && !host.contains('*')
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:[]".contains(c));
    let default_port = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    if host.ends_with(default_port) {
        return Err(format!(
            "invalid origin {o:?}: browsers leave the default port out of an origin: write {}",
            o.trim_end_matches(default_port)
        ));
    }
    if !host_ok {
        return Err(if host.chars().any(|c| c.is_ascii_uppercase()) {
            format!("invalid origin {o:?}: browsers send origins in lower case")
        } else {
            bad()
        });
    }
    Ok(())
}

/// Problems with the filter at `at` (`routes[0].filters[0].cors`).
pub fn check(c: &Cors, at: &str, out: &mut Vec<(String, String)>) {
    if c.allow_origins.is_empty() {
        out.push((
            format!("{at}.allow_origins"),
            "list at least one origin".into(),
        ));
    }
    for (j, o) in c.allow_origins.iter().enumerate() {
        if let Err(e) = origin_ok(o) {
            out.push((format!("{at}.allow_origins[{j}]"), e));
        }
    }
    if c.allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
        out.push((
            format!("{at}.allow_credentials"),
            "with allow_credentials any page could act as the signed-in user: list the origins instead of *".into(),
        ));
    }
    for (j, m) in c.allow_methods.iter().enumerate() {
        if m != "*" && (m.is_empty() || !m.chars().all(|ch| ch.is_ascii_uppercase())) {
            out.push((
                format!("{at}.allow_methods[{j}]"),
                format!("invalid method {m:?}: expected an upper-case name like PUT, or *"),
            ));
        }
    }
    for (key, list) in [
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        for (j, h) in list.iter().enumerate() {
            let token = !h.is_empty()
                && h.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch));
            if !token {
                out.push((
                    format!("{at}.{key}[{j}]"),
                    format!("invalid header name {h:?}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for good in [
            "*",
            "https://app.example.com",
            "https://*.example.com",
            "http://localhost:8080",
        ] {
            assert!(origin_ok(good).is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "ftp://x",
            "https://a.*.com",
            "https://App.example.com",
            "https://",
            "https://a.com:443",
            "http://a.com:80",
        ] {
            assert!(origin_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_need_listed_origins() {
        let c: Cors =
            serde_saphyr::from_str("{allow_origins: ['*'], allow_credentials: true}").unwrap();
        let mut out = Vec::new();
        check(&c, "f", &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(c.allow_methods, ["GET", "HEAD", "POST"]);
    }
}
