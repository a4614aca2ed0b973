//! Routes that answer themselves instead of naming a cluster: `redirect` and
//! `direct_response`, and their validation.

use crate::validate::Problem;
use serde::{Deserialize, Serialize};

/// `redirect: {status, scheme, host, port, path, strip_query}`: what is not given is the
/// request's own (its scheme, host, port, normalized path and query).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308 (default 302).
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// The path to send the client to (absolute: `/new/home`).
    #[serde(default)]
    pub path: Option<String>,
    /// Leave the request's query off the location.
    #[serde(default)]
    pub strip_query: bool,
}

/// `direct_response: {status, body, content_type}`: the gateway answers, no backend.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// 200–599 (default 200).
    #[serde(default = "defaults::direct_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// Default `text/plain; charset=utf-8`.
    #[serde(default = "defaults::content_type")]
    pub content_type: String,
}

mod defaults {
    pub fn redirect_status() -> u16 {
        302
    }
    pub fn direct_status() -> u16 {
        200
    }
    pub fn content_type() -> String {
        "text/plain; charset=utf-8".into()
    }
}

/// The most a `direct_response` body may hold: it is kept in every snapshot.
pub const MAX_DIRECT_BODY: usize = 64 << 10;

pub fn validate_redirect(r: &Redirect, at: &str, out: &mut Vec<Problem>) {
    if ![301, 302, 303, 307, 308].contains(&r.status) {
        out.push((
            format!("{at}.redirect.status"),
            format!(
                "{} is not a redirect: use 301, 302, 303, 307 or 308",
                r.status
            ),
        ));
    }
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            out.push((
                format!("{at}.redirect.scheme"),
                format!("expected http or https, not {s:?}"),
            ));
        }
    }
    if let Some(h) = &r.host {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            out.push((
                format!("{at}.redirect.host"),
                format!("expected a host name like www.example.com (no port or path), not {h:?}"),
            ));
        }
    }
    if r.port == Some(0) {
        out.push((format!("{at}.redirect.port"), "must be 1 to 65535".into()));
    }
    if let Some(p) = &r.path {
        let ok = p.starts_with('/')
            && !p.contains(['?', '#', ' '])
            && p.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            out.push((
                format!("{at}.redirect.path"),
                format!(
                    "expected an absolute path like /new/home (no query or fragment), not {p:?}"
                ),
            ));
        }
    }
}

pub fn validate_direct(d: &DirectResponse, at: &str, out: &mut Vec<Problem>) {
    if !(200..=599).contains(&d.status) {
        out.push((
            format!("{at}.direct_response.status"),
            "must be a status from 200 to 599".into(),
        ));
    }
    if d.body.len() > MAX_DIRECT_BODY {
        out.push((
            format!("{at}.direct_response.body"),
            format!("{} bytes: at most 64 KiB", d.body.len()),
        ));
    }
    if d.content_type.is_empty()
        || !d
            .content_type
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        out.push((
            format!("{at}.direct_response.content_type"),
            format!("not a header value: {:?}", d.content_type),
        ));
    }
}

/// `request_headers` / `response_headers: {set, add, remove}` on a route or a cluster. Values
/// may hold `%{client_ip}`, `%{request_id}`, `%{route}`, `%{consumer}` (empty when unknown).
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRules {
    /// Replace (or create) these headers.
    pub set: std::collections::BTreeMap<String, String>,
    /// Append these (a further line when the header is there).
    pub add: std::collections::BTreeMap<String, String>,
    /// Remove these.
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// The variables a header value may name.
pub const HEADER_VARIABLES: [&str; 4] = ["client_ip", "request_id", "route", "consumer"];

/// Headers only the gateway frames: setting them would break the message or its routing.
const FRAMING: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

/// The `%{name}` variables in `v`, or the error for a bad one.
pub fn variables(v: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find("%{") {
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed %{{ in {v:?}"))?;
        let name = &after[..end];
        if !HEADER_VARIABLES.contains(&name) {
            return Err(format!(
                "unknown variable %{{{name}}}: use one of {}",
                HEADER_VARIABLES.map(|n| format!("%{{{n}}}")).join(", ")
            ));
        }
        out.push(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// A route's or a cluster's `request_headers` and `response_headers` (at `at`).
pub fn validate_header_pair(
    (request, response): (&HeaderRules, &HeaderRules),
    at: &str,
    out: &mut Vec<Problem>,
) {
    validate_header_rules(request, &format!("{at}.request_headers"), out);
    validate_header_rules(response, &format!("{at}.response_headers"), out);
}

fn validate_header_rules(h: &HeaderRules, at: &str, out: &mut Vec<Problem>) {
    let name_ok = |n: &str| {
        crate::validate::is_token(n) && !FRAMING.contains(&n.to_ascii_lowercase().as_str())
    };
    for (kind, map) in [("set", &h.set), ("add", &h.add)] {
        for (n, v) in map {
            if !name_ok(n) {
                out.push((
                    format!("{at}.{kind}.{n}"),
                    format!("{n:?} is not a header name the gateway lets you set"),
                ));
            }
            if let Err(e) = variables(v) {
                out.push((format!("{at}.{kind}.{n}"), e));
            } else if !v
                .bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
            {
                out.push((
                    format!("{at}.{kind}.{n}"),
                    format!("not a header value: {v:?}"),
                ));
            }
        }
    }
    for (i, n) in h.remove.iter().enumerate() {
        if !name_ok(n) {
            out.push((
                format!("{at}.remove[{i}]"),
                format!("{n:?} is not a header name the gateway lets you remove"),
            ));
        }
    }
}
